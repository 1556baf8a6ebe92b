"""multi_worker and horovod with 2 real local processes: the weights of mirrored x2, one checkpoint
and one summary, resume, and clear failures (missing Horovod, a worker that never starts)."""

import json
import os
import shutil
import time

import pytest
import tensorflow as tf

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def mirrored_workdir(tiny_run):
  """The tiny deterministic run on mirrored x2 (custom loop), trained in this process (shared)."""
  return tiny_run


def _launch(helpers, engine, workdir, *extra):
  result = helpers.run_launcher(engine, 2, f'--config=configs/{engine}.py', f'--workdir={workdir}',
                                *helpers.tiny_args, *extra)
  assert result.returncode == 0, result.stderr[-4000:]
  return result


@pytest.mark.parametrize('engine', ['multi_worker', 'horovod'])
@pytest.mark.parametrize('loop', ['custom', 'fit'])
def test_two_workers_match_mirrored_two_replicas(engine, loop, mirrored_workdir, tmp_path, helpers,
                                                 local_tiny_run):
  if loop == 'custom':  # The session's shared run of this very command (tests/launch compares too).
    workdir, _ = local_tiny_run(engine)
  else:
    workdir = tmp_path / 'run'
    _launch(helpers, engine, workdir, f'--config.loop={loop}')
  helpers.assert_same_weights(helpers.checkpoint_weights(str(workdir)),
                              helpers.checkpoint_weights(mirrored_workdir))
  helpers.assert_one_tiny_run(workdir, engine, 2)


def test_horovod_resume_continues_with_identical_state(tmp_path, helpers, local_tiny_run):
  straight, _ = local_tiny_run('horovod')  # 20 straight steps on 2 ranks (shared, only read here).
  resumed = tmp_path / 'resumed'
  os.makedirs(resumed / 'checkpoints')
  for name in os.listdir(straight / 'checkpoints'):
    if name.startswith('ckpt-10.'):
      shutil.copy(straight / 'checkpoints' / name, resumed / 'checkpoints')
  tf.compat.v1.train.update_checkpoint_state(str(resumed / 'checkpoints'),
                                             str(resumed / 'checkpoints' / 'ckpt-10'))
  result = _launch(helpers, 'horovod', resumed)
  # Both ranks start from step 10 (rank 0 restores, then broadcasts).
  assert result.stdout.count('Resumed from') + result.stderr.count('Resumed from') >= 1
  assert json.loads((resumed / 'summary.json').read_text())['start_step'] == 10
  helpers.assert_same_weights(helpers.checkpoint_weights(str(resumed), include_optimizer=True),
                              helpers.checkpoint_weights(str(straight), include_optimizer=True))


def test_missing_horovod_fails_at_once_saying_how_to_install(tmp_path, helpers):
  shim = tmp_path / 'shim' / 'horovod'
  shim.mkdir(parents=True)
  (shim / '__init__.py').write_text('raise ImportError("horovod is not installed")\n')
  result = helpers.run_cli(f'--workdir={tmp_path / "run"}', '--config=configs/horovod.py',
                           env={'PYTHONPATH': f'{shim.parent}{os.pathsep}{helpers.repo}'},
                           timeout=120)
  assert result.returncode == 3, result.stderr[-3000:]
  assert 'make setup' in result.stderr and 'horovodrun --check-build' in result.stderr
  assert 'Traceback' not in result.stderr


def test_worker_whose_peer_never_starts_fails_within_timeout(tmp_path, helpers):
  from launch import local  # pylint: disable=g-import-not-at-top
  ports = local.free_ports(2)
  tf_config = {'cluster': {'worker': [f'localhost:{p}' for p in ports]},
               'task': {'type': 'worker', 'index': 0}}
  start = time.monotonic()
  result = helpers.run_cli(f'--workdir={tmp_path}', '--config=configs/multi_worker.py',
                           '--config.engine.peer_timeout_seconds=5',
                           env={'TF_CONFIG': json.dumps(tf_config)}, timeout=120)
  elapsed = time.monotonic() - start
  assert result.returncode == 3, result.stderr[-3000:]
  assert f'could not reach worker 1 at localhost:{ports[1]}' in result.stderr
  assert 'engine.peer_timeout_seconds=5' in result.stderr
  assert elapsed < 60  # Bounded: start-up plus the 5 s timeout, never a hang.
