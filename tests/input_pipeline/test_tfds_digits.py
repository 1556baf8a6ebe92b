"""Tests for input_pipeline.tfds_digits: the `convoy_digits` TFDS dataset, prepared offline."""

import trainer  # noqa: F401  # pylint: disable=unused-import  # Selects tf-keras first.

import fcntl
import glob
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from input_pipeline import sources
from input_pipeline import tfds_digits

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_VERSION_DIR = os.path.join('convoy_digits', '1.0.0')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """A data_dir with convoy_digits prepared once for the module."""
  path = tmp_path_factory.mktemp('tfds')
  tfds_digits.prepare(path)
  return path


@pytest.fixture(scope='module')
def digits():
  return sources.load_digits(0.2)


def _load(data_dir, split):
  """Images, labels and ids of one split, as read by `tfds.load`."""
  examples = list(tfds.as_numpy(tfds.load(
      'convoy_digits', split=split, data_dir=data_dir, download=False)))
  return (np.stack([e['image'] for e in examples]), np.array([e['label'] for e in examples]),
          np.array([e['id'] for e in examples]))


def _files(directory):
  """{path: (inode, mtime_ns)} of every file under `directory`."""
  result = {}
  for root, _, names in os.walk(directory):
    for name in names:
      stat = os.stat(os.path.join(root, name))
      result[os.path.join(root, name)] = (stat.st_ino, stat.st_mtime_ns)
  return result


def test_builder_is_registered_with_the_declared_features(data_dir):
  builder = tfds.builder('convoy_digits', data_dir=data_dir)
  assert isinstance(builder, tfds_digits.ConvoyDigits)
  assert str(builder.info.version) == '1.0.0' and '1.0.0' in tfds_digits.ConvoyDigits.RELEASE_NOTES
  features = builder.info.features
  assert features['image'].shape == (8, 8, 1) and features['image'].np_dtype == np.uint8
  assert features['label'].num_classes == 10
  assert features['id'].np_dtype == np.int64
  assert builder.info.supervised_keys == ('image', 'label')
  assert 'archive.ics.uci.edu' in builder.info.homepage
  assert 'Optical Recognition of Handwritten Digits' in builder.info.citation
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
      'train': 1437, 'test': 360}


@pytest.mark.parametrize('split, half', [('train', 'train'), ('test', 'eval')])
def test_splits_are_the_load_digits_partition_in_the_same_order(data_dir, digits, split, half):
  images, labels, ids = _load(data_dir, split)
  expected_images = getattr(digits, f'{half}_images')
  assert images.dtype == np.uint8 and images.shape == expected_images.shape
  np.testing.assert_array_equal(images, np.round(expected_images * 255.0).astype(np.uint8))
  np.testing.assert_array_equal(labels, getattr(digits, f'{half}_labels'))
  np.testing.assert_array_equal(ids, np.arange(len(labels)))


def test_pixels_are_the_sklearn_counts_scaled_to_0_255(data_dir):
  images, _, _ = _load(data_dir, 'test')
  allowed = {round(v * 255 / 16) for v in range(17)}
  assert set(np.unique(images)) <= allowed
  assert images.min() == 0 and images.max() == 255


def test_tfds_load_as_supervised_gives_image_label_pairs(data_dir):
  dataset = tfds.load('convoy_digits', split='test', data_dir=data_dir, download=False,
                      as_supervised=True)
  image, label = next(iter(tfds.as_numpy(dataset)))
  assert image.shape == (8, 8, 1) and 0 <= label < 10


@pytest.mark.parametrize('split', ['train', 'test'])
def test_each_split_has_shard_files_on_disk(data_dir, split):
  builder = tfds.builder('convoy_digits', data_dir=data_dir)
  shards = glob.glob(os.path.join(data_dir, _VERSION_DIR, f'convoy_digits-{split}.tfrecord-*'))
  assert len(shards) >= 1
  assert len(shards) == builder.info.splits[split].num_shards
  assert all(os.path.getsize(path) > 0 for path in shards)


def test_preparing_again_is_a_noop(data_dir, monkeypatch):
  before = _files(data_dir / 'convoy_digits')

  def fail(*args, **kwargs):
    raise AssertionError('download_and_prepare called on a prepared dataset')

  monkeypatch.setattr(tfds_digits.ConvoyDigits, 'download_and_prepare', fail)
  builder = tfds_digits.prepare(data_dir)
  assert builder.info.splits['train'].num_examples == 1437
  assert _files(data_dir / 'convoy_digits') == before


def test_prepare_without_data_dir_uses_the_tfds_default(data_dir, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(data_dir))
  builder = tfds_digits.prepare(None)
  assert os.path.samefile(builder.data_dir, data_dir / _VERSION_DIR)
  assert builder.info.splits['test'].num_examples == 360


def test_prepare_waits_for_the_lock_held_by_another_preparer(tmp_path):
  lock_path = tmp_path / '.convoy_digits.lock'
  done = []
  with open(lock_path, 'a', encoding='utf-8') as lock:
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    thread = threading.Thread(target=lambda: done.append(tfds_digits.prepare(tmp_path)))
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive() and not done
    assert not os.path.exists(tmp_path / _VERSION_DIR)
    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
  thread.join(timeout=120)
  assert done and done[0].is_prepared()


# Each process imports everything, says it is ready, waits for 'go', then prepares: both call
# prepare() at the same moment.
_PREPARE_SCRIPT = """
import os, sys, time
import trainer
from input_pipeline import tfds_digits
data_dir, ready, go = sys.argv[1:4]
open(ready, 'w').close()
while not os.path.exists(go):
  time.sleep(0.01)
builder = tfds_digits.prepare(data_dir)
print('SPLITS', builder.info.splits['train'].num_examples, builder.info.splits['test'].num_examples)
"""


def test_two_processes_preparing_at_once_give_one_valid_dataset(tmp_path, digits):
  data_dir, go = tmp_path / 'data', tmp_path / 'go'
  ready = [tmp_path / f'ready{i}' for i in range(2)]
  processes = [subprocess.Popen(
      [sys.executable, '-c', _PREPARE_SCRIPT, str(data_dir), str(path), str(go)], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for path in ready]
  try:
    deadline = time.time() + 120
    while not all(path.exists() for path in ready) and time.time() < deadline:
      time.sleep(0.05)
    go.touch()
    outputs = [process.communicate(timeout=180)[0] for process in processes]
  finally:
    for process in processes:
      process.kill()
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output
    assert 'SPLITS 1437 360' in output, output
  assert sum('downloaded and prepared' in output for output in outputs) == 1, outputs
  assert os.listdir(data_dir / 'convoy_digits') == ['1.0.0']  # No leftover incomplete.* folder.
  images, labels, _ = _load(data_dir, 'test')
  np.testing.assert_array_equal(images, np.round(digits.eval_images * 255.0).astype(np.uint8))
  np.testing.assert_array_equal(labels, digits.eval_labels)
