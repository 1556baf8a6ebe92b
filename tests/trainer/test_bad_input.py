"""Bad input fails before any work is lost, with a message saying what is wrong and what to do:
corrupt or truncated checkpoints, a workdir of another experiment, an unwritable workdir, missing data."""

import os

import pytest

SHORT = ('--config.train.num_train_steps=10',)


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory, helpers):
  """A workdir with checkpoints at steps 5 and 10 (steps_per_loop 5, checkpoint every 5): the
  command line's tiny run with those flags, trained in this process."""
  from trainer import experiment  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('trained')
  config = helpers.make_tiny_config()
  config.train.num_train_steps = 10
  config.train.checkpoint_every_steps = 5
  experiment.train_and_evaluate(config, str(workdir))
  return workdir


def _copy(src, dst):
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(src, dst)
  return dst


def _assert_clear_failure(result, code, *fragments):
  assert result.returncode == code, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize('damage', ['truncate_data', 'truncate_index', 'garbage_index'])
def test_damaged_checkpoint_fails_naming_it_and_changes_nothing(damage, trained_workdir, tmp_path,
                                                                 helpers):
  workdir = _copy(trained_workdir, tmp_path / 'run')
  target = workdir / 'checkpoints' / ('ckpt-10.data-00000-of-00001' if damage == 'truncate_data'
                                      else 'ckpt-10.index')
  content = target.read_bytes()
  target.write_bytes(content[:len(content) // 2] if damage.startswith('truncate') else b'\x00' * 64)
  before = sorted(os.listdir(workdir / 'checkpoints'))
  result = helpers.run_cli(f'--workdir={workdir}', *helpers.tiny_args, '--config.train.num_train_steps=20')
  _assert_clear_failure(result, 2, f'cannot restore {workdir}/checkpoints/ckpt-10',
                        'Nothing was trained', 'ckpt-5')
  assert sorted(os.listdir(workdir / 'checkpoints')) == before


def test_workdir_of_another_model_is_refused(trained_workdir, tmp_path, helpers):
  workdir = _copy(trained_workdir, tmp_path / 'run')
  result = helpers.run_cli(f'--workdir={workdir}', *helpers.tiny_args, *SHORT,
                           '--config.model.width=16')
  _assert_clear_failure(result, 2, 'holds a run of a different experiment',
                        "'width': 32", 'Use a new --workdir')


def test_unwritable_workdir_is_refused(tmp_path, helpers):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  result = helpers.run_cli(f'--workdir={blocker}/run', *helpers.tiny_args, *SHORT)
  _assert_clear_failure(result, 2, f'--workdir={blocker}/run is not writable')


def test_missing_dataset_path_fails_before_training(tmp_path, helpers):
  result = helpers.run_cli(f'--workdir={tmp_path / "run"}', *helpers.tiny_args, *SHORT,
                           '--config.data.source=tfrecord', '--config.data.num_classes=10',
                           '--config.data.image_size=8',
                           f'--config.data.train_files={tmp_path}/absent/train-*',
                           f'--config.data.eval_files={tmp_path}/absent/test-*')
  _assert_clear_failure(result, 4, 'matches no file (the directory does not exist)')
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path, helpers):
  result = helpers.run_cli(f'--workdir={tmp_path / "run"}', *helpers.tiny_args, *SHORT,
                           '--config.data.source=tfds', '--config.data.tfds_name=imagenet2012',
                           f'--config.data.data_dir={tmp_path / "tfds"}')
  _assert_clear_failure(result, 4, "TFDS dataset 'imagenet2012' is not prepared",
                        'download_and_prepare', 'manual download')
