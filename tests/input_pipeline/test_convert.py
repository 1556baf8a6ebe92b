"""Tests for input_pipeline.convert: sources to TFRecord shards in the records.py layout."""

import trainer  # noqa: F401  # pylint: disable=unused-import  # Selects tf-keras first.

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from input_pipeline import convert
from input_pipeline import records
from input_pipeline import sources
from input_pipeline import tfds_digits

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def digits():
  return sources.load_digits(0.2)


@pytest.fixture(scope='module')
def digits_png(tmp_path_factory):
  """The digits' train split converted to 4 PNG shards: (output_dir, manifest)."""
  output_dir = tmp_path_factory.mktemp('digits_png')
  manifest = convert.convert(convert.iter_digits('train'), str(output_dir), 'train', 4, 'png',
                             progress=False)
  return output_dir, manifest


def _read_shard(path):
  """[(encoded bytes, decoded image, label, id)] of one shard file, in file order."""
  dataset = tf.data.TFRecordDataset(str(path)).map(records.parse_record)
  return [(encoded.numpy(), tf.io.decode_image(encoded, expand_animations=False).numpy(),
           int(label), int(example_id)) for encoded, label, example_id in dataset]


def _read_split(output_dir, split, num_shards):
  """Every example of the split's shards, sorted by id: (encoded list, images, labels, ids)."""
  rows = []
  for index in range(num_shards):
    rows.extend(_read_shard(os.path.join(output_dir, records.shard_name(split, index, num_shards))))
  rows.sort(key=lambda row: row[3])
  return ([row[0] for row in rows], [row[1] for row in rows], np.array([row[2] for row in rows]),
          np.array([row[3] for row in rows]))


def _uint8(images):
  return np.round(images * 255.0).astype(np.uint8)


def test_digits_png_shards_read_back_exactly(digits_png, digits):
  output_dir, _ = digits_png
  _, images, labels, ids = _read_split(output_dir, 'train', 4)
  np.testing.assert_array_equal(ids, np.arange(1437))
  np.testing.assert_array_equal(np.stack(images), _uint8(digits.train_images))
  np.testing.assert_array_equal(labels, digits.train_labels)


def test_digits_are_distributed_round_robin(digits_png):
  output_dir, _ = digits_png
  for index in range(4):
    rows = _read_shard(os.path.join(output_dir, records.shard_name('train', index, 4)))
    assert [row[3] for row in rows] == list(range(index, 1437, 4))
  files = tf.data.Dataset.from_tensor_slices(
      [str(output_dir / records.shard_name('train', i, 4)) for i in range(4)])
  interleaved = files.interleave(tf.data.TFRecordDataset, cycle_length=4, block_length=1)
  ids = [int(record[2]) for record in interleaved.map(records.parse_record)]
  assert ids == list(range(1437))  # Reading the shards interleaved gives back the source order.


def test_manifest_describes_the_shards(digits_png, digits):
  output_dir, manifest = digits_png
  with open(output_dir / 'manifest.json', encoding='utf-8') as f:
    assert json.load(f) == manifest
  assert manifest['source'] == 'digits' and manifest['split'] == 'train'
  assert manifest['num_shards'] == 4 and manifest['image_format'] == 'png'
  assert manifest['distribution'] == 'round_robin'
  assert manifest['total'] == manifest['num_examples'] == 1437
  assert manifest['shards'] == [records.shard_name('train', i, 4) for i in range(4)]
  assert manifest['shard_counts'] == [360, 359, 359, 359]
  assert sum(manifest['shard_counts']) == 1437
  expected_counts = np.bincount(digits.train_labels, minlength=10)
  assert manifest['class_counts'] == {str(c): int(n) for c, n in enumerate(expected_counts)}
  assert sum(manifest['class_counts'].values()) == 1437
  assert manifest['num_classes'] == 10
  assert manifest['image_shapes'] == [[8, 8, 1]]
  assert isinstance(manifest['created'], str) and manifest['created'].startswith('20')
  assert isinstance(manifest['convoy_version'], str) and manifest['convoy_version']
  assert list(manifest['splits']) == ['train']
  assert (output_dir / 'labels.txt').read_text().splitlines()[:2] == ['0\t0', '1\t1']


def test_manifest_counts_are_read_by_the_tfrecord_source(digits_png):
  output_dir, _ = digits_png
  files = [str(output_dir / records.shard_name('train', i, 4)) for i in range(4)]
  assert sources._manifest_counts(files) == 1437  # pylint: disable=protected-access


def test_digits_jpeg_round_trip_is_close(tmp_path, digits):
  manifest = convert.convert(convert.iter_digits('test'), str(tmp_path), 'test', 2, 'jpeg',
                             jpeg_quality=95, progress=False)
  assert manifest['num_examples'] == 360 and manifest['jpeg_quality'] == 95
  encoded, images, labels, ids = _read_split(tmp_path, 'test', 2)
  assert all(e.startswith(b'\xff\xd8') for e in encoded)  # JPEG magic.
  images = np.stack(images)
  assert images.shape == (360, 8, 8, 1)  # Grayscale stays 1 channel.
  error = np.abs(images.astype(np.float32) - _uint8(digits.eval_images).astype(np.float32))
  assert error.mean() < 4.0, error.mean()
  np.testing.assert_array_equal(labels, digits.eval_labels)
  np.testing.assert_array_equal(ids, np.arange(360))


def test_a_second_split_keeps_the_first_in_the_manifest(tmp_path):
  convert.convert(convert.iter_digits('train'), str(tmp_path), 'train', 2, 'png', progress=False)
  manifest = convert.convert(convert.iter_digits('test'), str(tmp_path), 'test', 1, 'png',
                             progress=False)
  assert manifest['split'] == 'test' and manifest['num_examples'] == 360
  assert {name: s['total'] for name, s in manifest['splits'].items()} == {
      'test': 360, 'train': 1437}


def _save(path, array, image_format):
  Image.fromarray(array).save(path, image_format)


@pytest.fixture
def class_folder(tmp_path):
  """3 class folders (created out of order) of small PNG (gray, RGBA) and JPEG (RGB) images."""
  rng = np.random.default_rng(0)
  root = tmp_path / 'photos'
  for name in ('zebra', 'ant', 'cat'):
    (root / name).mkdir(parents=True)
    _save(root / name / 'b_gray.png', rng.integers(0, 256, (6, 5), np.uint8), 'PNG')
    _save(root / name / 'a_rgb.JPG', rng.integers(0, 256, (7, 4, 3), np.uint8), 'JPEG')
    _save(root / name / 'c_rgba.png', rng.integers(0, 256, (5, 5, 4), np.uint8), 'PNG')
  (root / 'ant' / 'notes.txt').write_text('not an image')
  return root


def test_folder_labels_follow_sorted_folder_names(class_folder, tmp_path):
  output_dir = tmp_path / 'out'
  manifest = convert.convert(convert.iter_folder(str(class_folder)), str(output_dir), 'train', 2,
                             'png', progress=False)
  encoded, images, labels, ids = _read_split(output_dir, 'train', 2)
  np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])  # ant, cat, zebra.
  np.testing.assert_array_equal(ids, np.arange(9))
  assert (output_dir / 'labels.txt').read_text() == '0\tant\n1\tcat\n2\tzebra\n'
  assert manifest['class_names'] == ['ant', 'cat', 'zebra']
  assert manifest['class_counts'] == {'0': 3, '1': 3, '2': 3}
  assert manifest['source'] == f'folder:{class_folder}'
  # Per class, files sorted by name: a_rgb.JPG (re-encoded), b_gray.png (copied), c_rgba.png (RGB).
  assert encoded[1] == (class_folder / 'ant' / 'b_gray.png').read_bytes()
  assert [image.shape for image in images[:3]] == [(7, 4, 3), (6, 5, 1), (5, 5, 3)]
  np.testing.assert_array_equal(images[1][..., 0],
                                np.asarray(Image.open(class_folder / 'ant' / 'b_gray.png')))
  assert manifest['copied_examples'] == 3
  assert manifest['image_shapes'] == [[5, 5, 3], [6, 5, 1], [7, 4, 3]]


def test_folder_to_jpeg_copies_jpeg_files_as_they_are(class_folder, tmp_path):
  manifest = convert.convert(convert.iter_folder(str(class_folder)), str(tmp_path / 'out'),
                             'train', 1, 'jpeg', progress=False)
  encoded, images, _, _ = _read_split(tmp_path / 'out', 'train', 1)
  assert encoded[0] == (class_folder / 'ant' / 'a_rgb.JPG').read_bytes()
  assert manifest['copied_examples'] == 3
  assert images[1].shape == (6, 5, 1)  # Gray PNG re-encoded as a gray JPEG.


def test_tfds_convoy_digits_source(tmp_path, digits):
  data_dir = tmp_path / 'tfds'
  tfds_digits.prepare(data_dir)
  stream = convert.iter_tfds('convoy_digits', 'test', str(data_dir))
  manifest = convert.convert(stream, str(tmp_path / 'out'), 'test', 3, 'png', progress=False)
  assert manifest['source'] == 'tfds:convoy_digits' and manifest['num_examples'] == 360
  assert manifest['copied_examples'] == 360  # TFDS stores PNG: the bytes are copied.
  assert manifest['class_names'] == [str(i) for i in range(10)]
  _, images, labels, ids = _read_split(tmp_path / 'out', 'test', 3)
  np.testing.assert_array_equal(np.stack(images), _uint8(digits.eval_images))
  np.testing.assert_array_equal(labels, digits.eval_labels)
  np.testing.assert_array_equal(ids, np.arange(360))


def test_synthetic_jpeg_shards_are_varied_natural_looking_images(tmp_path):
  manifest = convert.write_synthetic_jpeg_shards(str(tmp_path / 'a'), num_examples=6,
                                                 image_size=224, num_classes=5, num_shards=2,
                                                 seed=7)
  assert manifest['num_examples'] == 6 and manifest['image_format'] == 'jpeg'
  assert manifest['image_shapes'] == [[224, 224, 3]]
  encoded, images, labels, _ = _read_split(tmp_path / 'a', 'train', 2)
  assert all(0 <= label < 5 for label in labels)
  for image in images:
    assert image.shape == (224, 224, 3) and image.std() > 10  # Not constant.
    # Smooth: neighbouring pixels are much closer than random pairs.
    neighbour = np.abs(np.diff(image.astype(np.float32), axis=1)).mean()
    assert neighbour < 0.5 * np.abs(image.astype(np.float32) - image[::-1, ::-1]).mean()
  assert len({e for e in encoded}) == 6
  convert.write_synthetic_jpeg_shards(str(tmp_path / 'b'), 6, 224, 5, 2, seed=7)
  assert _read_split(tmp_path / 'b', 'train', 2)[0] == encoded  # Same seed, same bytes.


def test_missing_folder_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / 'nope')):
    convert.iter_folder(str(tmp_path / 'nope'))


def test_folder_without_class_folders_is_named(tmp_path):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(convert.ConvertError, match=f'{tmp_path / "empty"}: no class sub-folders'):
    convert.iter_folder(str(tmp_path / 'empty'))


def test_class_folder_without_images_is_named(tmp_path):
  (tmp_path / 'root' / 'cat').mkdir(parents=True)
  (tmp_path / 'root' / 'cat' / 'readme.txt').write_text('x')
  with pytest.raises(convert.ConvertError, match=f'{tmp_path / "root" / "cat"} holds no'):
    convert.iter_folder(str(tmp_path / 'root'))


@pytest.mark.parametrize('num_shards', [0, -1])
def test_bad_num_shards(tmp_path, num_shards):
  with pytest.raises(convert.ConvertError, match=f'--num_shards={num_shards}: must be an integer'):
    convert.convert(convert.iter_digits('test'), str(tmp_path), 'test', num_shards, 'png')


@pytest.mark.parametrize('source', ['imagenet', 'tfds:', 'folder:', 'digits:x'])
def test_unknown_source_form(source):
  with pytest.raises(convert.ConvertError, match="must be 'digits', 'tfds:NAME' or 'folder:PATH'"):
    convert.parse_source(source, 'train')


def test_bad_image_format_and_digits_split(tmp_path):
  with pytest.raises(convert.ConvertError, match='--image_format=.gif.: must be one of jpeg, png'):
    convert.convert(convert.iter_digits('test'), str(tmp_path), 'test', 1, 'gif')
  with pytest.raises(convert.ConvertError, match="splits 'train' and 'test'"):
    convert.iter_digits('eval')


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(FileNotFoundError, match='tfds_digits.prepare'):
    convert.iter_tfds('convoy_digits', 'train', str(tmp_path))
  with pytest.raises(FileNotFoundError, match='tfds build mnist'):
    convert.iter_tfds('mnist', 'train', str(tmp_path))
  assert not os.listdir(tmp_path)  # Nothing was downloaded or created.
  with pytest.raises(convert.ConvertError, match='unknown TFDS dataset'):
    convert.iter_tfds('no_such_dataset_xyz', 'train', str(tmp_path))


def test_existing_shards_need_overwrite(tmp_path):
  convert.convert(convert.iter_digits('test'), str(tmp_path), 'test', 3, 'png', progress=False)
  with pytest.raises(convert.ConvertError, match='--overwrite'):
    convert.convert(convert.iter_digits('test'), str(tmp_path), 'test', 2, 'png', progress=False)
  convert.convert(convert.iter_digits('test'), str(tmp_path), 'test', 2, 'png', overwrite=True,
                  progress=False)
  assert sorted(p for p in os.listdir(tmp_path) if p.startswith('test')) == [
      'test-00000-of-00002', 'test-00001-of-00002']


@pytest.fixture(scope='module')
def cli_runs(tmp_path_factory):
  """Two runs of `python -m input_pipeline.convert`, started together: {name: (result, dir)}."""
  good, bad = tmp_path_factory.mktemp('cli_good'), tmp_path_factory.mktemp('cli_bad')
  commands = {
      'digits': ('--source=digits', f'--output_dir={good}', '--num_shards=2'),
      'missing_folder': (f'--source=folder:{bad / "missing"}', f'--output_dir={bad}'),
  }
  processes = {name: subprocess.Popen(
      [sys.executable, '-m', 'input_pipeline.convert', *args], cwd=REPO, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name, args in commands.items()}
  results = {}
  try:
    for name, process in processes.items():
      stdout, stderr = process.communicate(timeout=180)
      results[name] = (subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                                   stderr), good if name == 'digits' else bad)
  finally:
    for process in processes.values():
      process.kill()
  return results


def test_cli_converts_digits(cli_runs):
  result, output_dir = cli_runs['digits']
  assert result.returncode == 0, result.stderr
  manifest = json.loads((output_dir / 'manifest.json').read_text())
  assert manifest['total'] == 1437 and manifest['num_shards'] == 2
  assert manifest['shard_counts'] == [719, 718]
  assert '1437' in result.stdout and '100%' in result.stderr  # Summary and progress bar.


def test_cli_reports_a_bad_option_with_exit_code_2(cli_runs):
  result, output_dir = cli_runs['missing_folder']
  assert result.returncode == 2
  assert (f'convert: error: folder source {output_dir / "missing"}: no such directory'
          in result.stderr)
  assert not os.listdir(output_dir)


def test_labels_outside_the_classes_are_refused_and_nothing_is_left(tmp_path):
  examples = [convert.SourceExample(label, i, image=np.zeros((4, 4, 1), np.uint8), origin=f'#{i}')
              for i, label in enumerate([0, 1, 3])]
  with pytest.raises(convert.ConvertError, match=r'#2: label 3 outside \[0, 3\)'):
    convert.convert(examples, str(tmp_path), 'train', 2, 'png', class_names=['a', 'b', 'c'],
                    progress=False)
  assert not os.listdir(tmp_path)
