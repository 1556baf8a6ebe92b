"""kill -9 never leaves a partial checkpoint in use; a killed worker stops its peers within a bounded
time, naming it, and relaunching resumes from the last checkpoint."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def _args(steps):
  """A run of `steps` steps that checkpoints every 5 steps (evaluated once, at the end)."""
  return (f'--config.train.num_train_steps={steps}', '--config.train.steps_per_loop=5',
          '--config.train.log_every_steps=5', '--config.train.eval_every_steps=400',
          '--config.train.checkpoint_every_steps=5', '--config.train.warmup_steps=5',
          '--config.train.export=False', '--config.train.max_checkpoints_to_keep=2')


ARGS = _args(400)
# The 2-process jobs are killed right after their first checkpoint (step 5): 100 steps leave them
# ample time to still be training then, and keep the relaunch (the same command) short.
JOB_ARGS = _args(100)


def _wait_for(path, text, timeout=180):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if os.path.exists(path) and text in open(path, errors='replace').read():
      return
    time.sleep(0.2)
  raise AssertionError(f'{text!r} never appeared in {path}')


def test_kill_9_at_random_moments_always_resumes_from_a_complete_checkpoint(tmp_path, helpers):
  workdir = tmp_path / 'run'
  rng = random.Random()
  for trial in range(3):
    log = tmp_path / f'trial{trial}.log'
    with open(log, 'w') as out:
      process = subprocess.Popen([sys.executable, '-m', 'trainer.train', f'--workdir={workdir}',
                                  *ARGS], cwd=helpers.repo, stdout=out, stderr=subprocess.STDOUT)
      _wait_for(log, 'Saved checkpoint')  # Checkpoints are written every 5 steps from now on.
      time.sleep(rng.uniform(0.0, 1.5))  # A random moment: often in the middle of a save.
      process.send_signal(signal.SIGKILL)
      process.wait()
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    latest = tf.train.latest_checkpoint(str(workdir / 'checkpoints'))
    assert latest and tf.train.load_checkpoint(latest)  # The index names a complete checkpoint.
  # Resume from it and train on for two more windows (the length past it checks nothing more).
  last_step = int(latest.rsplit('-', 1)[1])
  result = helpers.run_cli(f'--workdir={workdir}', *_args(last_step + 10))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from' in result.stderr
  assert json.loads((workdir / 'summary.json').read_text())['steps'] == last_step + 10


def _worker_env(ports, index):
  return dict(os.environ, TF_CONFIG=json.dumps({
      'cluster': {'worker': [f'localhost:{p}' for p in ports]},
      'task': {'type': 'worker', 'index': index}}))


def test_killed_multi_worker_peer_stops_survivor_naming_it_and_relaunch_resumes(tmp_path, helpers):
  from launch import local  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  args = ['--config=configs/multi_worker.py', f'--workdir={workdir}', *JOB_ARGS,
          # The survivor notices either at once (connection reset) or when the dead peer's
          # heartbeat or a collective times out: short timeouts keep that wait short.
          '--config.engine.collective_timeout_seconds=15', '--config.engine.peer_timeout_seconds=15']
  ports = local.free_ports(2)
  logs = [tmp_path / f'worker{i}.log' for i in range(2)]
  processes = [subprocess.Popen([sys.executable, '-m', 'trainer.train', *args], cwd=helpers.repo,
                                env=_worker_env(ports, i), stdout=open(logs[i], 'w'),
                                stderr=subprocess.STDOUT) for i in range(2)]
  _wait_for(logs[0], 'Saved checkpoint')
  processes[1].send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  code = processes[0].wait(timeout=120)
  assert time.monotonic() - killed_at < 90  # Bounded by the collective timeout, never a hang.
  output = logs[0].read_text()
  assert code == 3, output[-3000:]
  assert f'lost worker 1 (localhost:{ports[1]})' in output
  assert 'Relaunch all workers' in output

  result = helpers.run_launcher('multi_worker', 2, *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from' in result.stderr
  assert json.loads((workdir / 'summary.json').read_text())['steps'] == 100


def test_killed_horovod_rank_stops_the_job_and_relaunch_resumes(tmp_path, helpers):
  workdir = tmp_path / 'run'
  args = ['--config=configs/horovod.py', f'--workdir={workdir}', *JOB_ARGS]
  log = tmp_path / 'job.log'
  with open(log, 'w') as out:
    job = subprocess.Popen([sys.executable, '-m', 'launch.local', '--engine=horovod',
                            '--num_workers=2', '--', *args], cwd=helpers.repo, stdout=out,
                           stderr=subprocess.STDOUT)
    _wait_for(log, 'Saved checkpoint')
    ranks = [int(p) for p in subprocess.run(['pgrep', '-f', f'workdir={workdir}'],
                                            capture_output=True, text=True).stdout.split()]
    victims = [p for p in ranks if 'HOROVOD_RANK=1' in open(f'/proc/{p}/environ', 'rb').read()
               .replace(b'\0', b'\n').decode(errors='replace')]
    assert victims, 'rank 1 not found'
    os.kill(victims[0], signal.SIGKILL)
    killed_at = time.monotonic()
    code = job.wait(timeout=180)
  assert time.monotonic() - killed_at < 120
  assert code != 0
  assert 'exit with status code' in log.read_text() or 'exited with code' in log.read_text()
  result = helpers.run_launcher('horovod', 2, *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((workdir / 'summary.json').read_text())['steps'] == 100


_TIMED_OUT_PEER = r'''
import os, sys, time
import tensorflow as tf
from configs import multi_worker
from trainer import engines
config = multi_worker.get_config()
config.engine.collective_timeout_seconds = 5
engine = engines.create_engine(config.engine)
engine.barrier()
# Worker 1 leaves only once worker 0 is through the first barrier: worker 0 may still be pulling
# worker 1's buffer for it after worker 1's own side has finished.
through = os.environ['CONVOY_TEST_THROUGH_FIRST_BARRIER']
if engine.worker_index == 1:
  deadline = time.monotonic() + 120
  while not os.path.exists(through) and time.monotonic() < deadline:
    time.sleep(0.05)
  os._exit(0)  # Gone without a word, as after kill -9.
open(through, 'w').close()
time.sleep(2)
try:
  engine.barrier()
except tf.errors.OpError as error:
  # The timed-out collective's text, stripped of task names: as when it names nobody.
  bare = type(error)(None, None, 'Collective has timed out waiting for other workers.')
  print('TRANSLATED:', engine.translate_error(bare))
'''


def test_a_timed_out_collective_that_names_nobody_still_names_the_dead_worker(tmp_path, helpers):
  from launch import local  # pylint: disable=g-import-not-at-top
  ports = local.free_ports(2)
  through = tmp_path / 'worker-0-through-first-barrier'
  processes = [subprocess.Popen([sys.executable, '-c', _TIMED_OUT_PEER], cwd=helpers.repo,
                                env=dict(_worker_env(ports, i),
                                         CONVOY_TEST_THROUGH_FIRST_BARRIER=str(through)),
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for i in range(2)]
  output = processes[0].communicate(timeout=180)[0]
  processes[1].wait(timeout=60)
  assert f'TRANSLATED: worker 0: lost worker 1 (localhost:{ports[1]})' in output, output[-3000:]
