"""Streamed pipelines over record files (TFRecord shards, TFDS): shard, interleave, shuffle, decode,
augment, batch, prefetch.

Sharding across input pipelines (workers or Horovod ranks) is by file when the files divide evenly
among the pipelines (at least one each, and the same number each, so that pipelines hold equal
shares of examples when files are equal, as the converter writes them), else by example (each
pipeline reads every file and keeps every P-th record); the choice is logged. In deterministic order (`data.deterministic_order`), the stream is
a pure function of the seed, so a resumed run skips the records already consumed (without decoding
them) and continues exactly. Evaluation reads each example once across all pipelines.
"""

from absl import logging
import tensorflow as tf

from input_pipeline import preprocess


def examples_per_step(config):
  """Training examples one optimizer step consumes: global batch x gradient-accumulation steps."""
  return config.train.global_batch_size * config.train.get('accumulation_steps', 1)


def pipeline_options(config):
  """tf.data options shared by every pipeline, set deliberately (see README "Input pipeline")."""
  data = config.data
  options = tf.data.Options()
  options.deterministic = data.deterministic_order
  # Sharding is done by hand; tf.distribute must not shard again.
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  options.autotune.enabled = True
  options.autotune.ram_budget = data.ram_budget_mb * 2**20
  if data.private_threadpool_size > 0:
    options.threading.private_threadpool_size = data.private_threadpool_size
  if data.max_intra_op_parallelism > 0:
    # The map runs examples in parallel; one op splitting its work over the intra-op pool as well
    # costs hand-offs and context switches (measured: ~15% more CPU per image on 2 cores).
    options.threading.max_intra_op_parallelism = data.max_intra_op_parallelism
  options.experimental_optimization.map_and_batch_fusion = True
  options.experimental_optimization.map_parallelization = True
  return options


def shard_files(files, input_context):
  """Returns (this pipeline's files, 'file' or 'example' sharding) per the rule above."""
  pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
  if pipelines == 1:
    return list(files), 'none'
  if len(files) % pipelines == 0:
    return list(files[index::pipelines]), 'file'
  return list(files), 'example'


def _records(files, config, sharding, input_context):
  """Interleaved `(serialized, file_name)` records of `files` (a string tensor), sharded by example
  if asked."""
  cycle = max(1, min(config.data.interleave_cycle_length, int(files.shape[0])))
  def read(file_name):
    dataset = tf.data.TFRecordDataset(file_name)
    if config.data.skip_corrupt:
      dataset = dataset.ignore_errors()  # A damaged file ends where its damage starts.
    return dataset.map(lambda r: (r, file_name))

  dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
      read, cycle_length=cycle, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if sharding == 'example':
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  return dataset


def _train_windows(files, config, sharding, input_context):
  """Returns `epoch -> dataset` of one epoch of this pipeline's records, in windows.

  Each element is (window seed, records of the window): consecutive `data.shuffle_buffer` records
  (the last window of an epoch may be shorter), to be permuted by `_permute_window`. The file
  order is seeded by (seed, epoch), so every pipeline agrees on it (needed for example sharding)
  and an epoch is the same whenever it is rebuilt; the window seed is (seed, epoch, window index).
  """
  files = tf.constant(files)
  seed = tf.constant(config.seed, tf.int64)

  def epoch_windows(epoch):
    order = tf.argsort(tf.random.stateless_uniform([files.shape[0]], seed=tf.stack([seed, epoch])))
    dataset = _records(tf.gather(files, order), config, sharding, input_context)
    return dataset.batch(config.data.shuffle_buffer).enumerate().map(
        lambda index, records: (tf.stack([seed * 1000003 + epoch, index]), records))

  return epoch_windows


def _permute_window(window_seed, records):
  """The records of one window in a permutation seeded by `window_seed`, one by one.

  `Dataset.shuffle` cannot take a per-epoch tensor seed once a global seed is set (as Keras's
  `set_random_seed` does); a seeded permutation of each window is deterministic at any seed.
  """
  count = tf.shape(records[0])[0]
  order = tf.argsort(tf.random.stateless_uniform([count], seed=window_seed))
  return tf.data.Dataset.from_tensor_slices(tuple(tf.gather(r, order) for r in records))


def _skip_errors(dataset, config):
  """With `data.skip_corrupt`, drops examples whose record cannot be parsed or decoded."""
  return dataset.ignore_errors(log_warning=True) if config.data.skip_corrupt else dataset


def count_unreadable(files, parse_fn, channels):
  """Scans `files` once: returns (readable examples, unreadable records, damaged files).

  Used with `data.skip_corrupt` to report in the summary what the pipeline will skip. A record
  with a bad checksum ends its file for the reader, so the records after it count as unreadable
  only as far as the reader can still see them.
  """
  readable, unreadable, damaged = 0, 0, []
  for path in files:
    raw = tf.data.TFRecordDataset(path).ignore_errors().reduce(0, lambda n, _: n + 1)
    good = tf.data.TFRecordDataset(path).ignore_errors().map(
        lambda r: tf.shape(preprocess.decode(parse_fn(r)[0], channels))).ignore_errors().reduce(
            0, lambda n, _: n + 1)
    raw, good = int(raw), int(good)
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
      truncated = False
    except tf.errors.DataLossError:
      truncated = True
    readable += good
    unreadable += raw - good
    if truncated or raw > good:
      damaged.append(path)
  return readable, unreadable, damaged


def create_train_stream(config, source, input_context, start_position=0):
  """The infinite training stream of one input pipeline, resumed at global position `start_position`.

  Streams are sharded by file or by example per pipeline, so a resume is exact when the layout
  (workers and global batch) is the one that reached `start_position`; with another layout each
  pipeline skips its share of the examples consumed (start_position / number of pipelines), which
  keeps the epoch boundary but not exactly which examples of the epoch were seen (see README).
  """
  per_replica = input_context.get_per_replica_batch_size(examples_per_step(config))
  files, sharding = shard_files(source.train_files, input_context)
  logging.info('Train pipeline %d/%d: %s sharding over %d of %d files of %s',
               input_context.input_pipeline_id, input_context.num_input_pipelines, sharding,
               len(files), len(source.train_files), source.name)
  # Epoch after epoch, each shuffled within itself: an epoch of this pipeline reads each of its
  # examples once. The next window of records is read while the current one is decoded (one
  # window ahead, across epoch boundaries too): without it, decoding stops at every window
  # boundary until the whole next window has been read.
  dataset = tf.data.Dataset.counter().flat_map(
      _train_windows(files, config, sharding, input_context)).prefetch(1).flat_map(_permute_window)
  # Number records before skipping, so each keeps its augmentation seed after a resume.
  dataset = dataset.enumerate().skip(start_position // input_context.num_input_pipelines)
  seed = (config.seed, input_context.input_pipeline_id)

  def decode(index, record):
    serialized, _ = record
    image, label, _ = source.parse_fn(serialized)
    image = preprocess.preprocess_for_train(image, source.image_shape, config.data.train_augment,
                                            tf.stack([seed[0], seed[1], index]))
    return image, tf.cast(label, tf.int32)

  dataset = _skip_errors(dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE), config)
  dataset = dataset.batch(per_replica, drop_remainder=True)
  return dataset.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options(config))


def create_eval_stream(config, source, input_context):
  """The finite eval stream of one input pipeline; all pipelines together read each example once.

  With file sharding every pipeline reads whole files; with example sharding every pipeline reads
  all files and keeps every P-th record. Either way nothing is dropped (the last batch is partial).
  """
  per_replica = input_context.get_per_replica_batch_size(config.train.global_batch_size)
  files, sharding = shard_files(source.eval_files, input_context)
  dataset = _records(tf.constant(files), config, sharding, input_context)

  def decode(serialized, _):
    image, label, _ = source.parse_fn(serialized)
    image = preprocess.preprocess_for_eval(image, source.image_shape, config.data.train_augment)
    return image, tf.cast(label, tf.int32)

  dataset = _skip_errors(dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE), config)
  dataset = dataset.batch(per_replica, drop_remainder=False)
  return dataset.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options(config))


def find_corrupt_files(files, parse_fn, channels):
  """Reads and decodes every record of `files`; returns {file: error message} for the bad ones."""
  bad = {}
  for path in files:
    dataset = tf.data.TFRecordDataset(path).map(
        lambda r: tf.shape(preprocess.decode(parse_fn(r)[0], channels)))
    try:
      for _ in dataset:
        pass
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      bad[path] = e.message.splitlines()[0]
  return bad


def raise_if_corrupt(source, error):
  """After a data error in training, finds the corrupt file(s) and raises DataError naming them.

  Returns without raising when no file is found corrupt (the error came from elsewhere).
  """
  from input_pipeline import sources  # pylint: disable=g-import-not-at-top
  logging.error('Data error while training (%s); scanning the files of %s', error.message,
                source.name)
  bad = find_corrupt_files(source.train_files + source.eval_files, source.parse_fn,
                           source.image_shape[-1])
  if bad:
    listing = '; '.join(f'{path}: {message}' for path, message in bad.items())
    raise sources.DataError(f'corrupt record(s) in {len(bad)} file(s): {listing}. Re-create these '
                            'shards (python -m input_pipeline.convert), remove them from the '
                            'pattern, or set data.skip_corrupt=True to skip what cannot be read '
                            '(counted in summary.json).') from error
