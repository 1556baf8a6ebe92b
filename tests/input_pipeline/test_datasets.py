"""Tests for input_pipeline.datasets: the global example stream (training) and the eval shards.

Most tests use a synthetic `ArraySource` whose images encode their own index (image[0, 0, 0] = i,
label = i % 10), so the example ids can be read back from the batches that the real pipelines
produce. Workers are simulated with one `tf.distribute.InputContext` per input pipeline; replicas
of a worker are the consecutive per-replica batches of its dataset (this is how tf.distribute hands
them out, which `test_mirrored_strategy_hands_consecutive_train_batches_to_replicas_in_order`
checks).
"""

import trainer  # noqa: F401  # pylint: disable=unused-import  # Selects tf-keras first.
from input_pipeline import datasets
from input_pipeline import sources

import numpy as np
import pytest
import tensorflow as tf

from configs import default

NUM_CLASSES = 10

# (workers, replicas per worker): 1 to 4 input pipelines, 1 or 2 replicas each.
TOPOLOGIES = [(n, r) for n in (1, 2, 3, 4) for r in (1, 2)]


def _indexed_source(num_train, num_eval, image_size=2):
  """An ArraySource whose example i has image[0, 0, 0] == i and label i % NUM_CLASSES."""
  def split(count):
    images = np.zeros((count, image_size, image_size, 1), np.float32)
    images[:, 0, 0, 0] = np.arange(count)
    images[:, -1, -1, 0] = 0.5  # Something else in the image, to check images travel intact.
    return images, (np.arange(count) % NUM_CLASSES).astype(np.int32)
  train_images, train_labels = split(num_train)
  eval_images, eval_labels = split(num_eval)
  return sources.ArraySource(train_images, train_labels, eval_images, eval_labels, NUM_CLASSES)


def _config(global_batch, seed=0, image_size=-1):
  config = default.get_config()
  config.seed = seed
  config.train.global_batch_size = global_batch
  config.data.image_size = image_size
  return config


def _context(num_pipelines, pipeline_id, replicas_per_pipeline):
  return tf.distribute.InputContext(
      num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id,
      num_replicas_in_sync=num_pipelines * replicas_per_pipeline)


def _ids(images):
  """Example ids encoded in a batch of indexed images."""
  ids = np.asarray(images)[:, 0, 0, 0]
  np.testing.assert_array_equal(ids, np.round(ids))
  return ids.astype(np.int64)


def _replica_batches(config, source, num_pipelines, replicas_per_pipeline, num_steps,
                     start_step=0, start_position=None):
  """Per-replica (images, labels) batches: result[step][pipeline * r + replica].

  The stream starts at `start_position` examples, or by default after `start_step` steps.
  """
  if start_position is None:
    start_position = start_step * datasets.examples_per_step(config)
  per_pipeline = []
  for pipeline_id in range(num_pipelines):
    context = _context(num_pipelines, pipeline_id, replicas_per_pipeline)
    dataset = datasets.create_train_dataset(config, source, context, start_position=start_position)
    per_pipeline.append(list(dataset.take(num_steps * replicas_per_pipeline).as_numpy_iterator()))
  return [[per_pipeline[p][step * replicas_per_pipeline + replica]
           for p in range(num_pipelines) for replica in range(replicas_per_pipeline)]
          for step in range(num_steps)]


def _global_batches(config, source, num_pipelines, replicas_per_pipeline, num_steps, start_step=0):
  """The global (images, labels) batch of each step: all replicas' batches concatenated in order."""
  steps = _replica_batches(config, source, num_pipelines, replicas_per_pipeline, num_steps,
                           start_step)
  return [(np.concatenate([images for images, _ in replicas]),
           np.concatenate([labels for _, labels in replicas])) for replicas in steps]


def _stream_ids(config, source, num_pipelines=1, replicas_per_pipeline=1, num_steps=1,
                start_step=0):
  """The example ids of the global stream, in order, for `num_steps` steps from `start_step`."""
  batches = _global_batches(config, source, num_pipelines, replicas_per_pipeline, num_steps,
                            start_step)
  return np.concatenate([_ids(images) for images, _ in batches])


def _mapped_ids(start, stop, num_examples, seed):
  """`train_example_ids` of every position in [start, stop)."""
  dataset = tf.data.Dataset.range(start, stop).map(
      lambda position: datasets.train_example_ids(position, num_examples, seed))
  return np.concatenate(list(dataset.batch(4096).as_numpy_iterator()))


def _assert_permutation(ids, num_examples):
  assert len(ids) == num_examples
  np.testing.assert_array_equal(np.sort(ids), np.arange(num_examples))


def _ceil_div(a, b):
  return -(-a // b)


# --- Training: the example-id mapping ---------------------------------------------------------


@pytest.mark.parametrize('num_examples', [1, 2, 7, 100, 1437])
def test_train_example_ids_are_a_permutation_within_each_epoch(num_examples):
  ids = _mapped_ids(0, 3 * num_examples, num_examples, seed=0)

  for epoch in range(3):
    _assert_permutation(ids[epoch * num_examples:(epoch + 1) * num_examples], num_examples)


def test_train_example_ids_reshuffles_each_epoch_and_depends_on_the_seed():
  num_examples = 500
  seed0 = _mapped_ids(0, 2 * num_examples, num_examples, seed=0)
  seed0_again = _mapped_ids(0, 2 * num_examples, num_examples, seed=0)
  seed1 = _mapped_ids(0, num_examples, num_examples, seed=1)

  np.testing.assert_array_equal(seed0, seed0_again)
  assert not np.array_equal(seed0[:num_examples], seed0[num_examples:])  # epoch 0 vs epoch 1
  assert not np.array_equal(seed0[:num_examples], np.arange(num_examples))  # actually shuffled
  assert not np.array_equal(seed0[:num_examples], seed1)


@pytest.mark.parametrize('start,stop', [(0, 1), (90, 130), (95, 330), (0, 400)])
def test_train_example_ids_of_a_vector_equal_those_of_each_position(start, stop):
  # Vectors spanning up to 4 epochs of 100 examples; each position mapped alone is the reference.
  ids = datasets.train_example_ids(tf.range(start, stop, dtype=tf.int64), 100, 3).numpy()

  np.testing.assert_array_equal(ids, _mapped_ids(start, stop, 100, 3))


# --- Training: end to end through create_train_dataset -----------------------------------------


def _coverage_cases():
  cases = []
  for num_pipelines, replicas in TOPOLOGIES:
    # 480 = 10 batches of 48 exactly; 1437 (the digits' train split) is no multiple of 48 or 64.
    cases.append((num_pipelines, replicas, 480, 48))
    cases.append((num_pipelines, replicas, 1437, 48))
    if 64 % (num_pipelines * replicas) == 0:
      cases.append((num_pipelines, replicas, 1437, 64))
  return cases


@pytest.mark.parametrize('num_pipelines,replicas,num_train,global_batch', _coverage_cases())
def test_each_epoch_covers_every_train_example_exactly_once_across_workers_and_replicas(
    num_pipelines, replicas, num_train, global_batch):
  source = _indexed_source(num_train, 4)
  config = _config(global_batch)
  # Two epochs' worth of positions, so that an epoch boundary falls inside a batch when the batch
  # does not divide the split.
  num_steps = _ceil_div(2 * num_train, global_batch)

  steps = _replica_batches(config, source, num_pipelines, replicas, num_steps)
  stream = np.concatenate([_ids(images) for replicas_of_step in steps
                           for images, _ in replicas_of_step])

  per_replica = global_batch // (num_pipelines * replicas)
  for replicas_of_step in steps:
    assert len(replicas_of_step) == num_pipelines * replicas
    for images, labels in replicas_of_step:
      assert images.shape == (per_replica, 2, 2, 1)
      np.testing.assert_array_equal(labels, _ids(images) % NUM_CLASSES)  # labels follow images
      np.testing.assert_array_equal(images[:, -1, -1, 0], 0.5)
  _assert_permutation(stream[:num_train], num_train)
  _assert_permutation(stream[num_train:2 * num_train], num_train)
  # The pipelines read exactly the positions of the documented stream.
  np.testing.assert_array_equal(stream, _mapped_ids(0, len(stream), num_train, config.seed))


@pytest.mark.parametrize('num_pipelines,replicas', [t for t in TOPOLOGIES if t != (1, 1)])
def test_global_batch_at_each_step_is_the_same_on_every_topology(num_pipelines, replicas):
  source = _indexed_source(100, 4)
  config = _config(24)  # 100 is no multiple of 24: epoch boundaries fall inside batches.
  num_steps = 10

  single_device = _global_batches(config, source, 1, 1, num_steps)
  distributed = _global_batches(config, source, num_pipelines, replicas, num_steps)

  for step in range(num_steps):
    np.testing.assert_array_equal(distributed[step][0], single_device[step][0], err_msg=step)
    np.testing.assert_array_equal(distributed[step][1], single_device[step][1], err_msg=step)


@pytest.mark.parametrize('num_pipelines,replicas', [(1, 1), (2, 1), (1, 2), (3, 2), (4, 2)])
@pytest.mark.parametrize('start_step', [1, 4, 9])
def test_resuming_at_step_k_yields_the_batches_of_the_stream_from_step_k(
    num_pipelines, replicas, start_step):
  source = _indexed_source(100, 4)
  config = _config(24)  # Steps 4 and 8 straddle epoch boundaries (positions 100 and 200).
  num_steps = 4

  from_zero = _replica_batches(config, source, num_pipelines, replicas, start_step + num_steps)
  resumed = _replica_batches(config, source, num_pipelines, replicas, num_steps,
                             start_step=start_step)

  for step in range(num_steps):
    for replica, (images, labels) in enumerate(resumed[step]):
      expected_images, expected_labels = from_zero[start_step + step][replica]
      np.testing.assert_array_equal(images, expected_images, err_msg=(step, replica))
      np.testing.assert_array_equal(labels, expected_labels, err_msg=(step, replica))


def test_same_seed_gives_the_same_order_and_another_seed_another_order():
  source = _indexed_source(96, 4)
  num_steps = 4  # One epoch of 96 examples.

  first = _stream_ids(_config(24, seed=3), source, num_pipelines=2, num_steps=num_steps)
  again = _stream_ids(_config(24, seed=3), source, num_pipelines=2, num_steps=num_steps)
  other_seed = _stream_ids(_config(24, seed=4), source, num_pipelines=2, num_steps=num_steps)

  np.testing.assert_array_equal(first, again)
  _assert_permutation(other_seed, 96)
  assert not np.array_equal(first, other_seed)


def test_each_epoch_is_reshuffled():
  source = _indexed_source(96, 4)
  stream = _stream_ids(_config(24), source, num_steps=12)  # Three epochs.

  epochs = stream.reshape(3, 96)
  for epoch in epochs:
    _assert_permutation(epoch, 96)
  assert not np.array_equal(epochs[0], np.arange(96))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])
  assert not np.array_equal(epochs[0], epochs[2])


def test_train_batches_have_a_static_per_replica_shape():
  source = _indexed_source(50, 4)
  dataset = datasets.create_train_dataset(_config(24), source, _context(2, 1, 2))

  images_spec, labels_spec = dataset.element_spec
  assert images_spec.shape.as_list() == [6, 2, 2, 1]
  assert labels_spec.shape.as_list() == [6]
  assert images_spec.dtype == tf.float32 and labels_spec.dtype == tf.int32


def test_global_batch_not_divisible_by_the_replicas_is_rejected():
  with pytest.raises(ValueError):
    datasets.create_train_dataset(_config(10), _indexed_source(50, 4), _context(1, 0, 4))


# --- Evaluation ------------------------------------------------------------------------------


def _eval_cases():
  cases = []
  for num_pipelines, replicas in TOPOLOGIES:
    # 360: the digits' eval split; 37 and 97 are prime; 5 leaves some pipelines or replicas empty.
    for num_eval in (360, 97, 37, 5):
      cases.append((num_pipelines, replicas, num_eval, 24))
  return cases


@pytest.mark.parametrize('num_pipelines,replicas,num_eval,global_batch', _eval_cases())
def test_eval_covers_every_example_once_and_num_eval_steps_matches_the_pipelines(
    num_pipelines, replicas, num_eval, global_batch):
  source = _indexed_source(10, num_eval)
  config = _config(global_batch)
  per_replica = global_batch // (num_pipelines * replicas)

  all_ids, expected_steps = [], 0
  for pipeline_id in range(num_pipelines):
    dataset = datasets.create_eval_dataset(config, source,
                                           _context(num_pipelines, pipeline_id, replicas))
    batches = list(dataset.as_numpy_iterator())
    for images, labels in batches:
      assert 1 <= len(labels) <= per_replica
      np.testing.assert_array_equal(labels, _ids(images) % NUM_CLASSES)
      all_ids.append(_ids(images))
    # Only the last batch of a pipeline may be partial.
    assert all(len(labels) == per_replica for _, labels in batches[:-1])
    expected_steps = max(expected_steps, _ceil_div(len(batches), replicas))

  _assert_permutation(np.concatenate(all_ids) if all_ids else np.array([], np.int64), num_eval)
  assert datasets.num_eval_steps(num_eval, global_batch, num_pipelines * replicas,
                                 num_pipelines) == expected_steps


@pytest.mark.parametrize('num_pipelines', [1, 2, 3, 4])
def test_eval_shards_are_contiguous_disjoint_and_cover_the_split(num_pipelines):
  for num_eval in (0, 1, 3, 37, 360):
    shards = [datasets.eval_shard(num_eval, _context(num_pipelines, i, 1))
              for i in range(num_pipelines)]
    assert shards[0][0] == 0 and shards[-1][1] == num_eval
    for (_, stop), (start, _) in zip(shards, shards[1:]):
      assert stop == start
    sizes = [stop - start for start, stop in shards]
    assert max(sizes) - min(sizes) <= 1  # balanced


def test_num_eval_steps_on_the_digits_eval_split():
  # 360 eval examples, global batch 64 on 2 replicas of one worker: 12 batches of 32, 6 steps.
  assert datasets.num_eval_steps(360, 64, 2, 1) == 6
  # One replica: 360 / 64 -> 6 batches (the last one partial).
  assert datasets.num_eval_steps(360, 64, 1, 1) == 6
  # 4 workers of 2 replicas, per-replica 8: shards of 90 -> 12 batches -> 6 steps.
  assert datasets.num_eval_steps(360, 64, 8, 4) == 6


@pytest.mark.parametrize('num_pipelines,replicas', TOPOLOGIES)
def test_num_eval_steps_is_the_eval_split_over_the_global_batch_rounded_up(num_pipelines, replicas):
  # Balanced shards (sizes differ by at most 1) lose no step to the per-pipeline rounding.
  for num_eval in (1, 5, 23, 24, 25, 37, 97, 360):
    assert datasets.num_eval_steps(num_eval, 24, num_pipelines * replicas,
                                   num_pipelines) == _ceil_div(num_eval, 24), num_eval


# --- End to end with MirroredStrategy over the 2 logical CPU devices ------------------------------


@pytest.fixture(scope='module')
def mirrored_strategy():
  devices = [device.name for device in tf.config.list_logical_devices('CPU')[:2]]
  assert len(devices) == 2, 'conftest splits the CPU into 2 logical devices'
  return tf.distribute.MirroredStrategy(devices)


@pytest.mark.parametrize('num_eval,global_batch', [
    (360, 64),  # The digits' eval split, default batch: divides into full batches.
    (37, 8),  # Last step: 4 examples on replica 0, 1 on replica 1.
    (35, 8),  # Last step: 3 examples on replica 0, an empty batch on replica 1.
    (1, 8),  # A single example: replica 1 never gets any data.
])
def test_mirrored_eval_sees_every_eval_example_once(mirrored_strategy, num_eval, global_batch):
  strategy = mirrored_strategy
  source = _indexed_source(10, num_eval)
  config = _config(global_batch)
  per_replica = global_batch // 2

  distributed = strategy.distribute_datasets_from_function(
      lambda context: datasets.create_eval_dataset(config, source, context))
  ids, counts, num_steps = [], [0, 0], 0
  for images, labels in distributed:
    num_steps += 1
    replica_images = strategy.experimental_local_results(images)
    replica_labels = strategy.experimental_local_results(labels)
    assert len(replica_images) == 2
    for replica, (x, y) in enumerate(zip(replica_images, replica_labels)):
      assert x.shape[0] == y.shape[0] <= per_replica
      counts[replica] += int(y.shape[0])
      ids.append(_ids(x.numpy()))

  assert sum(counts) == num_eval
  _assert_permutation(np.concatenate(ids), num_eval)
  assert num_steps == datasets.num_eval_steps(num_eval, global_batch, 2, 1)


def test_mirrored_strategy_hands_consecutive_train_batches_to_replicas_in_order(mirrored_strategy):
  strategy = mirrored_strategy
  source = _indexed_source(100, 4)
  config = _config(24)
  num_steps = 6

  distributed = strategy.distribute_datasets_from_function(
      lambda context: datasets.create_train_dataset(config, source, context))
  single_device = _global_batches(config, source, 1, 1, num_steps)
  iterator = iter(distributed)
  for step in range(num_steps):
    images, labels = next(iterator)
    replica_images = [x.numpy() for x in strategy.experimental_local_results(images)]
    replica_labels = [y.numpy() for y in strategy.experimental_local_results(labels)]
    assert [len(y) for y in replica_labels] == [12, 12]
    np.testing.assert_array_equal(np.concatenate(replica_images), single_device[step][0])
    np.testing.assert_array_equal(np.concatenate(replica_labels), single_device[step][1])


# --- Preprocessing: image_size ----------------------------------------------------------------


def test_image_size_resizes_train_and_eval_batches():
  source = sources.load_digits(0.2)
  config = _config(64, image_size=16)
  context = _context(1, 0, 2)

  train_images, train_labels = next(iter(datasets.create_train_dataset(config, source, context)))
  eval_images, eval_labels = next(iter(datasets.create_eval_dataset(config, source, context)))

  assert train_images.shape == (32, 16, 16, 1) and train_labels.shape == (32,)
  assert eval_images.shape == (32, 16, 16, 1) and eval_labels.shape == (32,)
  for images in (train_images, eval_images):
    assert images.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    assert float(tf.reduce_max(images)) > 0.5  # Not blank.


def test_image_size_of_the_source_size_or_minus_one_leaves_images_unchanged():
  source = sources.load_digits(0.2)
  context = _context(1, 0, 1)
  native = datasets.create_eval_dataset(_config(16, image_size=-1), source, context)
  same_size = datasets.create_eval_dataset(_config(16, image_size=8), source, context)
  eval_native, eval_same = next(iter(native)), next(iter(same_size))

  np.testing.assert_array_equal(eval_native[0], source.eval_images[:16])
  np.testing.assert_array_equal(eval_same[0], source.eval_images[:16])
  np.testing.assert_array_equal(eval_native[1], source.eval_labels[:16])


@pytest.mark.parametrize('first, second', [((2, 1, 32), (1, 1, 16)), ((1, 1, 16), (2, 1, 32)),
                                           ((2, 2, 40), (1, 1, 8)), ((1, 2, 8), (4, 1, 12))])
def test_resuming_with_another_topology_and_batch_covers_the_epoch_exactly_once(first, second):
  # (workers, replicas per worker, global batch) before and after the resume: the stream resumes at
  # the examples consumed, so the two runs together read each example of the epoch once.
  num_examples = 120
  source = _indexed_source(num_examples, 4)
  pipelines, replicas, batch = first
  steps_before = 2
  before = _stream_ids(_config(batch), source, pipelines, replicas, steps_before)
  position = steps_before * batch
  pipelines, replicas, batch = second
  steps_after = -(-(num_examples - position) // batch)
  after = [_ids(images) for replicas_of_step in _replica_batches(
      _config(batch), source, pipelines, replicas, steps_after, start_position=position)
           for images, _ in replicas_of_step]
  epoch = np.concatenate([before, *after])[:num_examples]
  _assert_permutation(epoch, num_examples)
  # And the resumed run reads exactly the positions the uninterrupted stream would.
  np.testing.assert_array_equal(epoch, _mapped_ids(0, num_examples, num_examples, 0))


@pytest.mark.parametrize('augment', ['flip_crop', 'random_resized_crop'])
def test_in_memory_images_are_augmented_the_same_on_every_topology(augment):
  rng = np.random.RandomState(0)
  images = rng.rand(40, 16, 16, 3).astype(np.float32)
  labels = (np.arange(40) % NUM_CLASSES).astype(np.int32)
  source = sources.ArraySource(images, labels, images[:8], labels[:8], NUM_CLASSES)
  config = _config(8)
  config.data.train_augment = augment
  one = _global_batches(config, source, 1, 1, 2)
  four = _global_batches(config, source, 2, 2, 2)
  for (a, _), (b, _) in zip(one, four):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert a.shape == (8, 16, 16, 3)
  # The augmented batch is not the raw images of the stream.
  ids = _mapped_ids(8, 16, 40, 0)
  assert not np.allclose(a, images[ids])
  # Evaluation is not augmented (random_resized_crop: a central crop, resized back).
  eval_images, _ = next(datasets.create_eval_dataset(config, source, _context(1, 0, 1))
                        .as_numpy_iterator())
  if augment == 'flip_crop':
    np.testing.assert_allclose(eval_images, images[:8])
  else:
    assert eval_images.shape == (8, 16, 16, 3) and not np.allclose(eval_images, images[:8])
