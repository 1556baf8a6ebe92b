"""Streamed record pipelines: coverage per epoch across workers (file and example sharding), eval
exactly once, exact resume, deterministic order, and clear errors for missing or corrupt data."""

import trainer  # noqa: F401

import collections

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import datasets
from input_pipeline import records
from input_pipeline import sources
from input_pipeline import streaming


def _write_shards(directory, split, num_examples, num_shards):
  """Writes PNG records whose pixel (0, 0) encodes the example id (id % 256, id // 256)."""
  directory.mkdir(parents=True, exist_ok=True)
  writers = [tf.io.TFRecordWriter(str(directory / records.shard_name(split, i, num_shards)))
             for i in range(num_shards)]
  for example_id in range(num_examples):
    image = np.zeros((4, 4, 3), np.uint8)
    image[0, 0, 0], image[0, 0, 1] = example_id % 256, example_id // 256
    png = tf.io.encode_png(image).numpy()
    writers[example_id % num_shards].write(records.make_example(png, 'PNG', example_id % 10, 4, 4,
                                                                example_id))
  for writer in writers:
    writer.close()
  return str(directory / f'{split}-*')


def _config(tiny_config, train_pattern, eval_pattern, batch):
  config = tiny_config
  config.data.source = 'tfrecord'
  config.data.train_files = train_pattern
  config.data.eval_files = eval_pattern
  config.data.num_classes = 10
  config.data.image_size = 4
  config.data.shuffle_buffer = 64
  config.train.global_batch_size = batch
  return config


def _ids(images):
  pixels = np.round(images[:, 0, 0, :2] * 255).astype(int)
  return list(pixels[:, 0] + 256 * pixels[:, 1])


def _contexts(num_workers, replicas_per_worker):
  return [tf.distribute.InputContext(num_workers, i, num_workers * replicas_per_worker)
          for i in range(num_workers)]


@pytest.fixture
def shards(tmp_path):
  return (_write_shards(tmp_path / 'data', 'train', 96, 4),
          _write_shards(tmp_path / 'data', 'test', 37, 3))


@pytest.mark.parametrize('num_workers', [1, 2, 3, 4, 6])
def test_each_training_epoch_covers_every_example_once(tiny_config, shards, num_workers):
  # 4 files of 24: 2 and 4 workers shard by file, 3 and 6 by example.
  config = _config(tiny_config, *shards, batch=12)
  source = sources.load_tfrecords(config.data)
  steps_per_epoch = 96 // 12
  seen = collections.Counter()
  for context in _contexts(num_workers, 1):
    dataset = datasets.create_train_dataset(config, source, context)
    for images, _ in dataset.take(steps_per_epoch):
      seen.update(_ids(images.numpy()))
  assert sorted(seen) == list(range(96)) and set(seen.values()) == {1}


@pytest.mark.parametrize('num_workers,expected', [(1, 'none'), (2, 'file'), (4, 'file'),
                                                  (3, 'example'), (5, 'example')])
def test_sharding_is_by_file_when_files_divide_evenly_else_by_example(num_workers, expected):
  files = [f'f{i}' for i in range(4)]
  chosen = [streaming.shard_files(files, c) for c in _contexts(num_workers, 1)]
  assert {policy for _, policy in chosen} == {expected}


@pytest.mark.parametrize('num_workers,replicas', [(1, 1), (1, 2), (2, 1), (3, 1), (4, 1)])
def test_evaluation_reads_every_example_exactly_once(tiny_config, shards, num_workers, replicas):
  config = _config(tiny_config, *shards, batch=8 * replicas * num_workers)
  source = sources.load_tfrecords(config.data)
  seen = collections.Counter()
  for context in _contexts(num_workers, replicas):
    for images, _ in datasets.create_eval_dataset(config, source, context):
      seen.update(_ids(images.numpy()))
  assert sorted(seen) == list(range(37)) and set(seen.values()) == {1}


def test_resume_continues_the_stream_exactly(tiny_config, shards):
  config = _config(tiny_config, *shards, batch=8)
  source = sources.load_tfrecords(config.data)
  context = tf.distribute.InputContext()
  straight = [_ids(x.numpy()) for x, _ in datasets.create_train_dataset(config, source,
                                                                        context).take(20)]
  resumed = [_ids(x.numpy()) for x, _ in datasets.create_train_dataset(config, source, context,
                                                                       start_position=13 * 8).take(7)]
  assert resumed == straight[13:]


def test_same_seed_same_order_other_seed_other_order(tiny_config, shards):
  config = _config(tiny_config, *shards, batch=8)
  source = sources.load_tfrecords(config.data)
  context = tf.distribute.InputContext()
  order = lambda: [_ids(x.numpy()) for x, _ in datasets.create_train_dataset(config, source,
                                                                             context).take(12)]
  first = order()
  assert order() == first
  config.seed = 7
  assert order() != first


def test_augmentation_keeps_shape_and_range(tiny_config, shards):
  config = _config(tiny_config, *shards, batch=8)
  config.data.image_size = 8
  for augment in ('flip_crop', 'random_resized_crop'):
    config.data.train_augment = augment
    source = sources.load_tfrecords(config.data)
    images, labels = next(iter(datasets.create_train_dataset(config, source,
                                                             tf.distribute.InputContext())))
    assert images.shape == (8, 8, 8, 3) and labels.shape == (8,)
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0


def test_empty_glob_and_missing_directory_fail_before_training(tiny_config, shards, tmp_path):
  config = _config(tiny_config, str(tmp_path / 'data' / 'nothing-*'), shards[1], batch=8)
  with pytest.raises(sources.DataError, match="data.train_files='.*nothing-\\*' matches no file "
                     r'\(no file matches in an existing directory\)'):
    sources.load_tfrecords(config.data)
  config.data.train_files = str(tmp_path / 'absent' / 'train-*')
  with pytest.raises(sources.DataError, match='the directory does not exist'):
    sources.load_tfrecords(config.data)


def test_corrupt_record_is_reported_with_its_file(tiny_config, shards, tmp_path):
  config = _config(tiny_config, *shards, batch=8)
  source = sources.load_tfrecords(config.data)
  bad_file = source.train_files[2]
  with open(bad_file, 'r+b') as f:  # Flip bytes in the middle: the record's CRC no longer matches.
    f.seek(200)
    f.write(b'\xff' * 16)
  with pytest.raises(sources.DataError, match=f'corrupt record.*{bad_file}'):
    try:
      for _ in datasets.create_train_dataset(config, source, tf.distribute.InputContext()).take(50):
        pass
    except tf.errors.OpError as e:
      streaming.raise_if_corrupt(source, e)


def test_skip_corrupt_skips_and_counts_what_cannot_be_decoded(tiny_config, shards, tmp_path):
  config = _config(tiny_config, *shards, batch=8)
  config.data.skip_corrupt = True
  source = sources.load_tfrecords(config.data)
  bad_file = source.eval_files[0]
  with tf.io.TFRecordWriter(bad_file) as writer:  # Replace one shard: 2 good records, 1 bad image.
    for example_id, payload in ((0, None), (1, b'not an image'), (2, None)):
      png = tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)).numpy() if payload is None else payload
      writer.write(records.make_example(png, 'PNG', 1, 4, 4, example_id))
  readable, unreadable, damaged = streaming.count_unreadable(source.eval_files, source.parse_fn, 3)
  assert (unreadable, damaged) == (1, [bad_file])
  seen = sum(int(x.shape[0]) for x, _ in datasets.create_eval_dataset(
      config, source, tf.distribute.InputContext()))
  assert seen == readable


def test_training_on_tfrecords_end_to_end_under_a_global_seed(tiny_config, shards, tmp_path):
  # The trainer sets a global seed before building its pipelines (Keras's set_random_seed).
  from trainer import experiment  # pylint: disable=g-import-not-at-top
  config = _config(tiny_config, *shards, batch=8)
  tf.random.set_seed(0)
  summary = experiment.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['steps'] == 20 and summary['eval_examples'] == 37


def test_pipeline_options_follow_the_config(tiny_config):
  options = streaming.pipeline_options(tiny_config)
  assert options.threading.max_intra_op_parallelism == 1  # The default: one thread per op.
  assert options.threading.private_threadpool_size is None
  tiny_config.data.max_intra_op_parallelism = 0
  tiny_config.data.private_threadpool_size = 3
  options = streaming.pipeline_options(tiny_config)
  assert options.threading.max_intra_op_parallelism is None  # TensorFlow's default.
  assert options.threading.private_threadpool_size == 3
