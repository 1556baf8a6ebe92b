"""Engines backed by tf.distribute strategies: 'default' (no strategy) and 'mirrored'."""

from absl import logging
import tensorflow as tf

from trainer.engines import base


class StrategyEngine(base.Engine):
  """Wraps one `tf.distribute.Strategy`; every collective goes through the strategy."""

  def __init__(self, name, strategy, devices):
    self.name = name
    self.strategy = strategy
    self._devices = tuple(devices)

  @property
  def num_replicas(self):
    return self.strategy.num_replicas_in_sync

  @property
  def devices(self):
    return self._devices

  def scope(self):
    return self.strategy.scope()

  def distribute_dataset(self, dataset_fn):
    # Each input pipeline builds its own dataset with the per-replica batch size; the strategy
    # hands consecutive batches to the replicas it feeds.
    return self.strategy.distribute_datasets_from_function(dataset_fn)

  def run(self, step_fn, args=()):
    return self.strategy.run(step_fn, args=args)

  def reduce_sum(self, per_replica_value):
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_value, axis=None)

  def average_loss(self, per_example_loss, global_batch_size):
    # Divide by the *global* batch: the optimizer then sums the replicas' gradients, which gives
    # the gradient of the global-batch mean.
    return tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)

  def scale_regularization_loss(self, regularization_loss):
    # Every replica adds the full weight decay; summing N replicas' gradients would count it N times.
    return tf.nn.scale_regularization_loss(regularization_loss)


def _local_devices(num_replicas, device):
  """Chooses `num_replicas` devices: GPUs when asked or available, else logical CPU devices."""
  gpus = tf.config.list_physical_devices('GPU')
  if device == 'gpu' or (device == 'auto' and len(gpus) >= num_replicas):
    if len(gpus) < num_replicas:
      raise ValueError(f'engine.num_replicas={num_replicas} but TensorFlow sees {len(gpus)} GPU(s); '
                       "use engine.device='cpu' to simulate replicas on the CPU")
    for gpu in gpus:
      tf.config.experimental.set_memory_growth(gpu, True)
    return [f'/gpu:{i}' for i in range(num_replicas)], 'gpu'
  split_cpu(num_replicas)
  return [f'/cpu:{i}' for i in range(num_replicas)], 'cpu'


def split_cpu(num_devices):
  """Splits the CPU into `num_devices` logical devices (simulated GPUs), if not already split.

  Must run before TensorFlow initializes its devices; afterwards the existing split is used when it
  has enough devices.

  Raises:
    RuntimeError: if TensorFlow is initialized with fewer logical CPU devices than needed.
  """
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    if len(tf.config.get_logical_device_configuration(cpu) or []) < num_devices:
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
  except RuntimeError:
    pass  # Already initialized; checked below.
  available = len(tf.config.list_logical_devices('CPU'))
  if available < num_devices:
    raise RuntimeError(
        f'{num_devices} CPU replicas requested but TensorFlow was initialized with {available} logical '
        'CPU device(s); create the engine before running any TensorFlow op')


_CROSS_DEVICE_OPS = {
    'nccl': lambda: tf.distribute.NcclAllReduce(),
    'hierarchical_copy': lambda: tf.distribute.HierarchicalCopyAllReduce(),
    'reduction_to_one': lambda: tf.distribute.ReductionToOneDevice(),
}


def create_default_engine(engine_config):
  """One device, no strategy: TensorFlow's default strategy (zero overhead)."""
  del engine_config
  gpus = tf.config.list_logical_devices('GPU')
  return StrategyEngine('default', tf.distribute.get_strategy(),
                        [gpus[0].name if gpus else '/cpu:0'])


def create_mirrored_engine(engine_config):
  """MirroredStrategy over `num_replicas` GPUs of this machine, or logical CPU devices without them.

  GPU path (NCCL all-reduce, one replica per GPU) is written for GPUs but untested here: this
  workplace has no GPU, so CI exercises the CPU path only.
  """
  devices, kind = _local_devices(engine_config.num_replicas, engine_config.device)
  cross_device_ops = (_CROSS_DEVICE_OPS[engine_config.all_reduce]() if kind == 'gpu'
                      else tf.distribute.ReductionToOneDevice())
  logging.info('MirroredStrategy on %s (%s all-reduce)', devices, type(cross_device_ops).__name__)
  return StrategyEngine('mirrored', tf.distribute.MirroredStrategy(
      devices=devices, cross_device_ops=cross_device_ops), devices)
