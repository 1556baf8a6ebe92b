"""Shared fixtures: 2 simulated GPUs (logical CPU devices), tiny configs, checkpoint readers."""

import trainer  # noqa: F401  (Keras 2 must be selected before TensorFlow is imported)

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from trainer.engines import tf_distribute

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Split the CPU before any test touches TensorFlow's devices, so 'mirrored' can use 2 replicas.
tf_distribute.split_cpu(2)


# The command-line equivalent of `tiny_config`, for runs in separate processes.
TINY_ARGS = ('--config.deterministic=True', '--config.train.num_train_steps=20',
             '--config.train.steps_per_loop=5', '--config.train.log_every_steps=10',
             '--config.train.eval_every_steps=20', '--config.train.checkpoint_every_steps=10',
             '--config.train.warmup_steps=5', '--config.train.export=False')


def run_launcher(engine, num_workers, *trainer_args, timeout=420, env=None):
  """Starts `num_workers` real workers with `python -m launch.local`; returns CompletedProcess."""
  return subprocess.run(
      [sys.executable, '-m', 'launch.local', f'--engine={engine}', f'--num_workers={num_workers}',
       f'--timeout_seconds={timeout - 20}', '--', *trainer_args],
      cwd=REPO, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def make_tiny_config():
  """The default experiment shortened to 20 deterministic steps with frequent checkpoints."""
  config = default.get_config()
  config.deterministic = True
  config.train.num_train_steps = 20
  config.train.steps_per_loop = 5
  config.train.log_every_steps = 10
  config.train.eval_every_steps = 20
  config.train.checkpoint_every_steps = 10
  config.train.warmup_steps = 5
  config.train.export = False
  return config


@pytest.fixture
def tiny_config():
  """A fresh `make_tiny_config()` for each test."""
  return make_tiny_config()


def checkpoint_weights(workdir, step=None, include_optimizer=False):
  """Variables of the latest (or given step's) checkpoint in `workdir`, by checkpoint key.

  Model variables only, unless `include_optimizer` (then also step counter and slots).
  """
  directory = os.path.join(workdir, 'checkpoints')
  path = (os.path.join(directory, f'ckpt-{step}') if step is not None
          else tf.train.latest_checkpoint(directory))
  reader = tf.train.load_checkpoint(path)
  wanted = ('model/', 'optimizer/') if include_optimizer else ('model/',)
  return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
          if key.startswith(wanted) and 'OPTIMIZER_SLOT' not in key}


def assert_same_weights(a, b, rtol=1e-5, atol=1e-6, norm_rtol=None):
  """Asserts two checkpoint weight dicts have the same keys and values within tolerance.

  With `norm_rtol`, each tensor is compared as a whole: ||a - b|| <= norm_rtol * ||b||
  (for computations such as batch-norm statistics, where round-off reorders per element).
  """
  assert sorted(a) == sorted(b)
  for key in a:
    if norm_rtol is not None:
      error = np.linalg.norm(np.asarray(a[key], np.float64) - b[key])
      assert error <= norm_rtol * max(np.linalg.norm(np.asarray(b[key], np.float64)), 1e-12), (
          f'{key}: relative error {error / max(np.linalg.norm(b[key]), 1e-12):.3g}')
    else:
      np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


def assert_one_tiny_run(workdir, engine, num_workers):
  """Asserts `workdir` holds exactly what one tiny run (20 steps) writes: one checkpoint directory
  (steps 10 and 20) and one summary, written by the chief only; returns the summary."""
  import json  # pylint: disable=g-import-not-at-top
  workdir = str(workdir)
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'config.json', 'summary.json',
                                         'tensorboard']
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == [
      'checkpoint', 'ckpt-10.data-00000-of-00001', 'ckpt-10.index', 'ckpt-20.data-00000-of-00001',
      'ckpt-20.index']
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert (summary['engine'], summary['num_workers'], summary['num_replicas']) == (
      engine, num_workers, num_workers)
  assert summary['steps'] == 20 and summary['eval_examples'] == 360
  return summary


def run_cli(*args, timeout=600, env=None):
  """Runs `python -m trainer.train ARGS` in a fresh process; returns the CompletedProcess."""
  return subprocess.run([sys.executable, '-m', 'trainer.train', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, **(env or {})))


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
  """Workdir of `make_tiny_config()` trained in this process (20 steps, custom loop, 2 mirrored
  replicas): the reference many tests compare with. Trained once per session; only read after."""
  from trainer import experiment  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('tiny_run'))
  experiment.train_and_evaluate(make_tiny_config(), workdir)
  return workdir


@pytest.fixture(scope='session')
def local_tiny_run(tmp_path_factory):
  """`local_tiny_run(engine)`: the tiny run (custom loop) of `configs/{engine}.py` on 2 local workers
  through `launch.local`; returns (workdir, CompletedProcess).

  Launched at most once per engine and session, then shared by the tests that check or compare
  with it (the workdir is only read, never written, after the run).
  """
  runs = {}

  def get(engine):
    if engine not in runs:
      workdir = tmp_path_factory.mktemp(f'local_{engine}') / 'run'
      runs[engine] = workdir, run_launcher(engine, 2, f'--config=configs/{engine}.py',
                                           f'--workdir={workdir}', *TINY_ARGS,
                                           '--config.loop=custom')
    workdir, result = runs[engine]
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, result
  return get


@pytest.fixture(scope='session')
def helpers():
  """Test helpers as a namespace (conftest is not importable under --import-mode=importlib)."""
  class Helpers:
    checkpoint_weights = staticmethod(checkpoint_weights)
    assert_same_weights = staticmethod(assert_same_weights)
    run_cli = staticmethod(run_cli)
    assert_one_tiny_run = staticmethod(assert_one_tiny_run)
    run_launcher = staticmethod(run_launcher)
    tiny_args = TINY_ARGS
    make_tiny_config = staticmethod(make_tiny_config)
    repo = REPO
  return Helpers
