"""Real Slurm jobs on a local single-node Slurm (started by launch.slurm_cluster, as root):
multi_worker and Horovod training with 2 tasks each (same weights as launch.local), and the
job's self-requeue on exit code 75 and on the time-limit warning."""

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

from launch import slurm
from launch import slurm_cluster

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FINAL_STATES = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY',
                'PREEMPTED', 'BOOT_FAIL', 'DEADLINE')


@pytest.fixture(scope='session')
def slurm_cluster_up():
  """The local Slurm: started if needed, and stopped at the end only if this fixture started it.

  Skipped when not root, or when apt-get cannot install the packages, except in CI (CI=true),
  where these tests must run and such a machine is an error.
  """
  cluster = slurm_cluster.Cluster()
  try:
    started = slurm_cluster.start(cluster, timeout_seconds=120)
  except (slurm_cluster.NotRootError, slurm_cluster.PackagesUnavailableError) as e:
    if os.environ.get('CI'):
      pytest.fail(f'CI must run the Slurm tests, but: {e}')
    pytest.skip(f'no local Slurm: {e}')
  yield cluster
  if started:
    slurm_cluster.stop(cluster)


def job_info(job_id):
  """`scontrol show job` of `job_id` as a dict (the fields without spaces are enough here)."""
  result = subprocess.run(['scontrol', 'show', 'job', '-o', str(job_id)], capture_output=True,
                          text=True, timeout=30, check=False)
  return dict(re.findall(r'(\w+)=(\S*)', result.stdout))


def wait_for(job_id, predicate, timeout, output=None):
  """Polls the job until `predicate(info)`; fails with the job's output after `timeout` s."""
  deadline = time.monotonic() + timeout
  info = {}
  while time.monotonic() < deadline:
    info = job_info(job_id)
    if predicate(info):
      return info
    time.sleep(1)
  pytest.fail(f'job {job_id} timed out in state {info.get("JobState")} after {timeout} s\n'
              f'{read(output)}')


def read(path):
  """The file's text (the job's output), or a note why not."""
  if path is None:
    return ''
  try:
    with open(path, errors='replace') as f:
      return f'--- {path} ---\n{f.read()[-8000:]}'
  except OSError as e:
    return f'(no output file {path}: {e.strerror})'


def wait_until_done(job_id, output, timeout=600):
  """Waits for the job's end; asserts it COMPLETED with exit code 0; returns its output."""
  info = wait_for(job_id, lambda i: i.get('JobState') in FINAL_STATES, timeout, output)
  assert (info['JobState'], info['ExitCode']) == ('COMPLETED', '0:0'), read(output)
  with open(output) as f:
    return f.read()


@pytest.mark.parametrize('engine', ['multi_worker', 'horovod'])
def test_two_task_job_trains_like_the_local_launcher(engine, slurm_cluster_up, tmp_path, helpers,
                                                    local_tiny_run):
  del slurm_cluster_up
  # A workdir with a space and shell syntax: it must reach the trainer literally.
  workdir, output = tmp_path / 'slurm run $(touch pwned);x', tmp_path / 'job-%j.out'
  args = (f'--config=configs/{engine}.py', f'--workdir={workdir}', *helpers.tiny_args)
  submitted = subprocess.run(
      [sys.executable, '-m', 'launch.slurm', 'submit', '--tasks_per_node=2', '--time=00:10:00',
       '--warning_seconds=60', f'--job_name=convoy-test-{engine}', f'--output={output}', '--',
       *args], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert submitted.returncode == 0, submitted.stderr
  job_id = submitted.stdout.strip()
  assert job_id.isdigit(), submitted.stdout
  log = wait_until_done(job_id, str(output).replace('%j', job_id))
  assert f'convoy: job {job_id} (restart 0) on ' in log and '2 task(s)' in log
  assert 'the tasks ended with exit code 0' in log and 'requeueing' not in log

  summary = helpers.assert_one_tiny_run(workdir, engine, 2)
  assert summary['workdir'] == str(workdir)
  assert not os.path.exists(os.path.join(REPO, 'pwned')) and not (tmp_path / 'pwned').exists()

  # The same arguments through launch.local (run once per session, shared with tests/trainer).
  local, _ = local_tiny_run(engine)
  helpers.assert_same_weights(helpers.checkpoint_weights(str(workdir)),
                              helpers.checkpoint_weights(str(local)))


# A stand-in for the trainer of the preemption issue: on SIGTERM it "checkpoints" and exits 75; on
# the first run it can also ask for a requeue at once. After a requeue it succeeds.
FAKE_TRAINER = textwrap.dedent('''\
    import os, signal, sys, time
    rank, restart = os.environ['SLURM_PROCID'], int(os.environ.get('SLURM_RESTART_COUNT', 0))
    def preempted(signum, frame):
      print(f'rank {rank}: SIGTERM, checkpointing', flush=True)
      sys.exit(75)
    signal.signal(signal.SIGTERM, preempted)
    print(f'rank {rank}: restart {restart}', flush=True)
    if restart == 0 and sys.argv[1] == 'exit75':
      sys.exit(75)
    if restart == 0 and sys.argv[1] == 'wait':
      time.sleep(600)
    ''')


def submit_fake_job(tmp_path, mode, time_limit='00:10:00', warning_seconds=60):
  (tmp_path / 'convoy_fake_trainer.py').write_text(FAKE_TRAINER)
  output = tmp_path / 'job.out'
  spec = slurm.JobSpec(trainer_args=(mode,), engine='multi_worker', tasks_per_node=2,
                       time=time_limit, warning_seconds=warning_seconds,
                       job_name=f'convoy-test-{mode}', output=str(output),
                       module='convoy_fake_trainer',
                       setup_lines=(f'export PYTHONPATH={shlex.quote(str(tmp_path))}',))
  return slurm.submit(spec), str(output)


def start_requeued_job_now(job_id, output, cluster):
  """A requeued job waits ~2 minutes (BeginTime) before it may run again; start it sooner.

  Not at once: slurmd rejects a job credential issued in the same second as the requeue revoked the
  old one ("Job credential revoked"), so wait for the old run to be gone and a bit more.
  """
  wait_for(job_id, lambda i: i.get('Restarts') == '1' and i.get('JobState') == 'PENDING', 180,
           output)
  deadline = time.monotonic() + 60
  while slurm_cluster.node_state(cluster) != 'idle' and time.monotonic() < deadline:
    time.sleep(0.5)
  time.sleep(2)
  subprocess.run(['scontrol', 'update', f'JobId={job_id}', 'StartTime=now'], check=True,
                 timeout=30)


def test_step_exit_75_requeues_the_job_which_then_completes(slurm_cluster_up, tmp_path):
  job_id, output = submit_fake_job(tmp_path, 'exit75')
  start_requeued_job_now(job_id, output, slurm_cluster_up)
  log = wait_until_done(job_id, output, timeout=300)
  assert f'requeueing job {job_id} (step exit code 75)' in log
  for rank in (0, 1):  # Both ranks ran twice.
    assert f'rank {rank}: restart 0' in log and f'rank {rank}: restart 1' in log, log
  assert job_info(job_id)['Restarts'] == '1'


def test_time_limit_warning_checkpoints_tasks_and_requeues(slurm_cluster_up, tmp_path):
  # A 2-minute limit with a 100 s warning: Slurm's USR1 comes within the first minute.
  job_id, output = submit_fake_job(tmp_path, 'wait', time_limit='00:02:00', warning_seconds=100)
  start_requeued_job_now(job_id, output, slurm_cluster_up)
  log = wait_until_done(job_id, output, timeout=300)
  assert 'time-limit warning (SIGUSR1)' in log
  assert 'rank 0: SIGTERM, checkpointing' in log and 'rank 1: SIGTERM, checkpointing' in log
  assert f'requeueing job {job_id} (step exit code 75)' in log
  assert 'rank 0: restart 1' in log and 'rank 1: restart 1' in log


def test_cluster_cli_status_reports_the_idle_node(slurm_cluster_up):
  result = subprocess.run([sys.executable, '-m', 'launch.slurm_cluster', 'status'], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'munge: ok' in result.stdout
  assert f'node {slurm_cluster_up.hostname}: ' in result.stdout
  started_again = subprocess.run([sys.executable, '-m', 'launch.slurm_cluster', 'start'], cwd=REPO,
                                 capture_output=True, text=True, timeout=120)
  assert started_again.returncode == 0, started_again.stderr
  assert 'already running' in started_again.stdout


# Long enough that the warning (sent once step 20 is logged) always comes well before the end.
PREEMPTIBLE_RUN = ('--config.train.num_train_steps=200', '--config.train.log_every_steps=5',
                   '--config.train.eval_every_steps=200', '--config.train.checkpoint_every_steps=200')


@pytest.mark.parametrize('engine', ['multi_worker', 'horovod'])
def test_trainer_checkpoints_at_the_warning_and_resumes_after_requeue(engine, slurm_cluster_up,
                                                                      tmp_path, helpers):
  # The real trainer: the batch shell gets USR1 (as from --signal), the tasks get SIGTERM, save a
  # checkpoint at the next step boundary and exit 75; the job requeues and the rerun resumes.
  workdir, output = tmp_path / 'run', str(tmp_path / 'job.out')
  spec = slurm.JobSpec(
      trainer_args=(f'--config=configs/{engine}.py', f'--workdir={workdir}', *helpers.tiny_args,
                    *PREEMPTIBLE_RUN),
      engine=engine, tasks_per_node=2, time='00:10:00', warning_seconds=60,
      job_name=f'convoy-test-preempt-{engine}', output=output)
  job_id = slurm.submit(spec)
  wait_for(job_id, lambda i: 'step 20/200' in read(output) or i.get('JobState') in FINAL_STATES,
           300, output)
  subprocess.run(['scancel', '--signal=USR1', '--batch', job_id], check=True, timeout=30)
  start_requeued_job_now(job_id, output, slurm_cluster_up)
  log = wait_until_done(job_id, output)
  assert 'time-limit warning (SIGUSR1)' in log and 'SIGTERM received' in log
  stopped = int(log.split('preempted: stopped at step ')[1].split()[0])
  assert 20 <= stopped < 200 and stopped % 5 == 0
  assert f'requeueing job {job_id} (step exit code 75)' in log
  assert f'convoy: job {job_id} (restart 1)' in log and 'Resumed from' in log
  summary = json.loads((workdir / 'summary.json').read_text())
  assert (summary['start_step'], summary['steps'], summary['num_workers']) == (stopped, 200, 2)
