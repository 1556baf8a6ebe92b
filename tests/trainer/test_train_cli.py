"""The command line: a short real run writes the documented summary; bad input exits 2 at once."""

import json
import os
import subprocess
import sys

import pytest

SUMMARY_KEYS = {
    'schema_version', 'engine', 'loop', 'model', 'num_replicas', 'num_workers', 'global_batch_size', 'steps',
    'start_step', 'train_loss', 'train_accuracy', 'train_examples', 'learning_rate', 'eval_loss',
    'eval_accuracy', 'eval_examples', 'images_per_second', 'train_seconds', 'wall_seconds',
    'checkpoint', 'export', 'workdir'}

SHORT_RUN = ['--config.train.num_train_steps=40', '--config.train.steps_per_loop=10',
             '--config.train.log_every_steps=10', '--config.train.eval_every_steps=20',
             '--config.train.checkpoint_every_steps=20', '--config.train.warmup_steps=5']


@pytest.fixture(scope='module')
def cli_run(tmp_path_factory):
  """One real 40-step run of the default experiment (mirrored, 2 replicas) through the CLI."""
  workdir = tmp_path_factory.mktemp('cli')
  result = subprocess.run([sys.executable, '-m', 'trainer.train', f'--workdir={workdir}',
                           *SHORT_RUN], cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                               os.path.abspath(__file__)))), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def test_run_writes_documented_summary(cli_run):
  workdir, _ = cli_run
  summary = json.loads((workdir / 'summary.json').read_text())
  assert SUMMARY_KEYS <= set(summary)
  assert (summary['engine'], summary['loop'], summary['num_replicas']) == ('mirrored', 'custom', 2)
  assert summary['steps'] == 40 and summary['global_batch_size'] == 64
  assert summary['eval_examples'] == 360  # Every held-out example once, no tail dropped.
  assert summary['images_per_second'] > 0
  assert summary['malloc']['setting'] == 'retain'  # The default allocator setting, applied.
  assert os.path.exists(summary['checkpoint'] + '.index')
  assert os.path.isdir(summary['export'])


def test_run_shows_progress_and_final_summary(cli_run):
  _, result = cli_run
  assert 'step 10/40 (25%)' in result.stderr and 'ETA' in result.stderr
  assert 'eval:  loss' in result.stdout and 'images/s' in result.stdout
  assert 'checkpoint:' in result.stdout and 'export:' in result.stdout


def test_run_writes_tensorboard_scalars(cli_run):
  workdir, _ = cli_run
  import trainer  # noqa: F401  pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tags = set()
  for event_file in (workdir / 'tensorboard').iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      tags.update(value.tag for value in event.summary.value)
  assert {'train/loss', 'train/accuracy', 'train/learning_rate', 'train/images_per_second',
          'eval/accuracy', 'eval/loss'} <= tags


def test_export_loads_and_predicts_in_fresh_process(cli_run):
  workdir, _ = cli_run
  summary = json.loads((workdir / 'summary.json').read_text())
  script = (
      'import tensorflow as tf, numpy as np\n'
      'from sklearn.datasets import load_digits\n'
      'd = load_digits()\n'
      'x = (d.images[:200] / 16.0).astype(np.float32)[..., None]\n'
      f'm = tf.saved_model.load({summary["export"]!r})\n'
      'out = m.signatures["serving_default"](images=tf.constant(x))\n'
      'print(float(np.mean(out["classes"].numpy() == d.target[:200])))\n')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert float(result.stdout.strip().splitlines()[-1]) > 0.8  # 40 steps already learn digits.


def test_rerun_of_finished_workdir_resumes_without_training(cli_run, helpers):
  workdir, _ = cli_run
  result = helpers.run_cli(f'--workdir={workdir}', *SHORT_RUN)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from' in result.stderr
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['start_step'] == 40 and summary['steps'] == 40
  assert summary['eval_examples'] == 360


BAD_COMMAND_LINES = [
    (['--config.train.global_batch_size=63'], 'train.global_batch_size=63: must be divisible'),
    (['--config.train.bogus=1'], 'unknown config field'),
    (['--config.trian.steps=1'], 'Did you mean "train"'),
    (['--config.train.global_batch_size=abc'], "invalid literal for int() with base 10: 'abc'"),
    (['--config=configs/does_not_exist.py'], 'could not load --config'),
    (['--config.loop=keras'], "loop='keras': must be one of 'fit', 'custom'"),
    (['--config.engine.name=tpu'], "engine.name='tpu': must be one of"),
    (['--config.train.num_train_steps=-5'], 'train.num_train_steps=-5: must be a positive'),
    (['stray_argument'], 'unexpected arguments: stray_argument'),
    (['--no_such_flag=1'], 'Unknown command line flag'),
]


@pytest.mark.parametrize('args,message', BAD_COMMAND_LINES, ids=[a[0] for a, _ in BAD_COMMAND_LINES])
def test_bad_command_line_exits_2_with_one_clear_line(args, message, tmp_path, helpers):
  result = helpers.run_cli(f'--workdir={tmp_path}', *args, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert message in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'checkpoints').exists()


def test_missing_workdir_is_a_usage_error(helpers):
  result = helpers.run_cli(timeout=120)
  assert result.returncode == 2 and '--workdir is required' in result.stderr
