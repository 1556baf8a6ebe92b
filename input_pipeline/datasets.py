"""tf.data pipelines that feed per-replica batches to both training loops on every engine.

In-memory sources hold decoded images (the decoded data is cached once, see sources.py) and are
augmented here per example (`data.train_augment`). Training reads a *global example stream*: position p of the stream is example
`permutation_e[p mod N]` of epoch `e = p // N`, with one seeded permutation per epoch computed on the
fly (`tf.random.experimental.index_shuffle`). Optimizer step t consumes positions
[t * B, (t + 1) * B) of the stream, B being the global batch, split into contiguous slices: one per
input pipeline (worker), and within a worker one per replica. Hence:

* every topology (1 device, N replicas, N workers) sees the same global batch at every step, so
  runs on different replica counts are comparable to round-off;
* each epoch covers every training example exactly once across all workers;
* resuming is exact and free: the stream simply starts at the position reached (t * B after t
  steps of B), which the checkpoint records, so a run may resume with another global batch or
  number of workers and still see each example of the epoch once.
"""

from absl import logging
import tensorflow as tf

from input_pipeline import preprocess
from input_pipeline import sources
from input_pipeline import streaming


examples_per_step = streaming.examples_per_step


def _autotune(value):
  return tf.data.AUTOTUNE if value == -1 else value


def _pipeline_layout(batch_size, input_context):
  """Returns (per-replica batch, examples per input pipeline, this pipeline's offset in a batch)."""
  per_replica = input_context.get_per_replica_batch_size(batch_size)
  replicas_per_pipeline = input_context.num_replicas_in_sync // input_context.num_input_pipelines
  pipeline_batch = per_replica * replicas_per_pipeline
  return per_replica, pipeline_batch, input_context.input_pipeline_id * pipeline_batch


def train_example_ids(positions, num_examples, seed):
  """Maps global stream positions (an int64 scalar or vector tensor) to example indices of the
  training split: position p is `permutation_e[p mod N]` of epoch `e = p // N`.

  Vectorized: a batch of positions costs one shuffle op per epoch it spans (one, or two at an
  epoch boundary), not one per example.
  """
  positions = tf.cast(positions, tf.int64)
  epochs = positions // num_examples
  offsets = positions % num_examples

  def shuffle_epoch(epoch, ids):
    shuffled = tf.random.experimental.index_shuffle(
        offsets, seed=tf.stack([tf.constant(seed, tf.int64), epoch]), max_index=num_examples - 1)
    return epoch + 1, tf.where(tf.equal(epochs, epoch), tf.cast(shuffled, tf.int64), ids)

  _, ids = tf.while_loop(lambda epoch, _: epoch <= tf.reduce_max(epochs), shuffle_epoch,
                         (tf.reduce_min(epochs), tf.zeros_like(offsets)))
  return ids


def create_train_dataset(config, source, input_context, start_position=0):
  """Builds the infinite training dataset of one input pipeline, from global stream position
  `start_position` (training examples consumed so far by all workers).

  Args:
    config: the experiment config (uses `seed`, `examples_per_step(config)`, `data.*`).
    source: an `ArraySource` (in memory) or a `FileSource` (streamed; see sources.py).
    input_context: the `tf.distribute.InputContext` of this pipeline.
    start_position: examples of the global stream already consumed (resume point). Counted in
      examples, not steps, so a run resumed with another global batch or worker count continues
      the same stream: no example of the epoch is skipped or repeated.

  Returns:
    A dataset of `(images, labels)` batches of the per-replica batch size.
  """
  if isinstance(source, sources.FileSource):
    return streaming.create_train_stream(config, source, input_context, start_position)
  global_batch = examples_per_step(config)
  per_replica, pipeline_batch, offset = _pipeline_layout(global_batch, input_context)
  num_examples = source.num_train_examples
  images = tf.constant(source.train_images)
  labels = tf.constant(source.train_labels)
  image_size = config.data.image_size

  replicas_per_pipeline = pipeline_batch // per_replica

  def positions_of_batch(index):
    # Element `index` of this pipeline is the batch of replica `index % r` at step `index // r`.
    step, replica = index // replicas_per_pipeline, index % replicas_per_pipeline
    start = start_position + step * global_batch + offset + replica * per_replica
    return start + tf.range(per_replica, dtype=tf.int64)  # A static shape: [per_replica].

  height, width, channels = source.image_shape
  out_shape = (height, width, channels) if image_size == -1 else (image_size, image_size, channels)
  augment = config.data.train_augment

  def load_batch(index):
    positions = positions_of_batch(index)
    examples = train_example_ids(positions, num_examples, config.seed)
    # Seeded by the global stream position: the same augmentation on every topology.
    seeds = tf.stack([tf.fill([per_replica], tf.constant(config.seed, tf.int64)),
                      tf.zeros([per_replica], tf.int64), positions], axis=1)
    batch = preprocess.augment_decoded_batch(tf.gather(images, examples), out_shape, augment,
                                             seeds)
    return batch, tf.gather(labels, examples)

  # One element per per-replica batch, built whole (gathers and shuffles on vectors): per-example
  # tf.data elements cost ~45 us each on a core here, a fifth of the small CNN's step per image.
  dataset = tf.data.Dataset.counter().map(load_batch, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(_autotune(config.data.prefetch)).with_options(_options(config))


def eval_shard(num_examples, input_context):
  """The [start, stop) range of eval examples read by this input pipeline (contiguous shards)."""
  pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
  return num_examples * index // pipelines, num_examples * (index + 1) // pipelines


def num_eval_steps(num_examples, global_batch_size, num_replicas, num_pipelines, balanced=True):
  """Distributed steps needed to see every eval example: the most any input pipeline needs.

  Pipelines with fewer batches hand empty batches to their replicas in the last steps. With
  `balanced=False` (streams sharded by file, whose pipelines may hold unequal shares) this is an
  upper bound: a pipeline's batches one replica at a time; loops stop when the data runs out.
  """
  per_replica = global_batch_size // num_replicas
  if not balanced:
    return -(-num_examples // per_replica)
  replicas_per_pipeline = num_replicas // num_pipelines
  steps = 0
  for index in range(num_pipelines):
    context = tf.distribute.InputContext(num_pipelines, index, num_replicas)
    start, stop = eval_shard(num_examples, context)
    batches = -(-(stop - start) // per_replica)
    steps = max(steps, -(-batches // replicas_per_pipeline))
  return steps


def create_eval_dataset(config, source, input_context):
  """Builds the finite evaluation dataset of one input pipeline: each example once over all workers.

  The last batch is kept even when partial (no example is dropped); replicas left without data in
  the last step receive empty batches, which the eval step counts as zero examples.
  """
  if isinstance(source, sources.FileSource):
    return streaming.create_eval_stream(config, source, input_context)
  per_replica = input_context.get_per_replica_batch_size(config.train.global_batch_size)
  start, stop = eval_shard(source.num_eval_examples, input_context)
  dataset = tf.data.Dataset.from_tensor_slices(
      (source.eval_images[start:stop], source.eval_labels[start:stop]))
  height, width, channels = source.image_shape
  size = config.data.image_size
  out_shape = (height, width, channels) if size == -1 else (size, size, channels)
  dataset = dataset.batch(per_replica, drop_remainder=False)
  dataset = dataset.map(lambda x, y: (preprocess.eval_decoded(x, out_shape,
                                                              config.data.train_augment), y))
  logging.log_first_n(logging.INFO, 'Eval pipeline %d/%d reads examples [%d, %d)', 4,
                      input_context.input_pipeline_id, input_context.num_input_pipelines,
                      start, stop)
  return dataset.prefetch(_autotune(config.data.prefetch)).with_options(_options(config))


def _options(config):
  return streaming.pipeline_options(config)
