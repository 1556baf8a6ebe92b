"""Preemption and bad numbers: SIGTERM checkpoints at a step boundary and the resumed run ends with
the weights of an uninterrupted one; a NaN loss stops without overwriting the last good checkpoint."""

import logging
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from trainer import experiment

LONG_RUN = ('--config.train.num_train_steps=40', '--config.train.log_every_steps=5',
            '--config.train.eval_every_steps=20', '--config.train.checkpoint_every_steps=20')


def _start(helpers, workdir, *args):
  return subprocess.Popen(
      [sys.executable, '-m', 'trainer.train', f'--workdir={workdir}', *helpers.tiny_args,
       *LONG_RUN, *args], cwd=helpers.repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def _run_until_step_then_terminate(process, step):
  """Reads the progress log until `step/40` is reached, sends SIGTERM, returns (code, output)."""
  lines = []
  deadline = time.monotonic() + 300
  for line in process.stdout:
    lines.append(line)
    if f'step {step}/40' in line:
      process.send_signal(signal.SIGTERM)
      break
    assert time.monotonic() < deadline
  lines += process.stdout.readlines()
  return process.wait(timeout=120), ''.join(lines)


@pytest.mark.slow
@pytest.mark.parametrize('engine,replicas', [('default', 1), ('mirrored', 2)])
@pytest.mark.parametrize('loop', ['custom', 'fit'])
def test_sigterm_at_random_step_then_resume_matches_uninterrupted(engine, replicas, loop, tmp_path,
                                                                   helpers, caplog):
  args = (f'--config.loop={loop}', f'--config.engine.name={engine}',
          f'--config.engine.num_replicas={replicas}')
  config = helpers.make_tiny_config()
  config.loop, config.engine.name, config.engine.num_replicas = loop, engine, replicas
  config.train.num_train_steps, config.train.log_every_steps = 40, 5
  config.train.eval_every_steps, config.train.checkpoint_every_steps = 20, 20
  experiment.train_and_evaluate(config, str(tmp_path / 'straight'))

  stop_after = random.Random().choice([5, 10, 15, 25, 30])
  code, output = _run_until_step_then_terminate(_start(helpers, tmp_path / 'run', *args),
                                                stop_after)
  assert code == 75, output[-3000:]
  assert 'SIGTERM received' in output and 'preempted: stopped at step' in output
  stopped = int(output.split('preempted: stopped at step ')[1].split()[0])
  assert stopped > stop_after - 5 and stopped % 5 == 0  # The next step boundary.
  assert os.path.exists(tmp_path / 'run' / 'checkpoints' / f'ckpt-{stopped}.index')

  # The rerun, in this process (the same config as the command line above; the command-line
  # resume itself is checked in test_train_cli.py and test_worker_loss.py).
  with caplog.at_level(logging.INFO, logger='absl'):
    resumed = experiment.train_and_evaluate(config, str(tmp_path / 'run'))
  assert any(r.getMessage().startswith('Resumed from') for r in caplog.records)
  assert (resumed['start_step'], resumed['steps']) == (stopped, 40)
  helpers.assert_same_weights(
      helpers.checkpoint_weights(str(tmp_path / 'run'), 40, include_optimizer=True),
      helpers.checkpoint_weights(str(tmp_path / 'straight'), 40, include_optimizer=True))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, helpers):
  workdir = tmp_path / 'run'
  config = helpers.make_tiny_config()  # The command line's tiny run, in this process.
  config.train.num_train_steps = 10
  experiment.train_and_evaluate(config, str(workdir))
  good = helpers.checkpoint_weights(str(workdir), 10)
  # Resume the same run with an absurd constant learning rate: the loss diverges to NaN/Inf.
  result = helpers.run_cli(f'--workdir={workdir}', *helpers.tiny_args,
                           '--config.train.base_learning_rate=1000',
                           '--config.train.lr_schedule=constant', '--config.train.warmup_steps=0',
                           '--config.train.num_train_steps=60')
  assert result.returncode == 5, result.stderr[-3000:]
  assert 'training loss is' in result.stderr and 'stopped without saving' in result.stderr
  assert f'Last good checkpoint: {workdir}/checkpoints/ckpt-10 (kept)' in result.stderr
  assert 'Traceback' not in result.stderr
  assert sorted(n for n in os.listdir(workdir / 'checkpoints') if n.endswith('.index')) == [
      'ckpt-10.index']
  helpers.assert_same_weights(helpers.checkpoint_weights(str(workdir)), good)
  assert all(np.isfinite(w).all() for w in good.values())
