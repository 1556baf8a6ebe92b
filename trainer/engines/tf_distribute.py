"""Engines backed by tf.distribute strategies: 'default' (no strategy) and 'mirrored'."""

import json
import os
import re
import socket
import tempfile
import time

from absl import logging
import tensorflow as tf
from tensorflow.python.eager import context  # Peer health probe: no public API.

from trainer.engines import base
from trainer.engines import cluster


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


class MultiWorkerEngine(StrategyEngine):
  """MultiWorkerMirroredStrategy: the replicas of several processes (machines) in sync."""

  def __init__(self, strategy, devices, tf_config):
    super().__init__('multi_worker', strategy, devices)
    self.tf_config = tf_config

  @property
  def num_workers(self):
    return len(self.tf_config['cluster']['worker']) if self.tf_config else 1

  @property
  def worker_index(self):
    return self.tf_config['task']['index'] if self.tf_config else 0


  def barrier(self):
    # A cross-worker all-reduce of a dummy value: nobody passes until everybody arrives.
    self._all_reduce_sum(tf.constant(1.0))

  def any_worker(self, flag):
    # The flags of all workers, summed: one tiny all-reduce per window of steps.
    return float(self._all_reduce_sum(tf.constant(float(flag)))) > 0

  @tf.function
  def _all_reduce_sum(self, value):
    # Every local replica contributes value / local replicas: each worker counts once.
    share = value / len(self.devices)
    return self.reduce_sum(self.strategy.run(lambda: tf.identity(share)))

  def translate_error(self, error):
    # A dead peer surfaces as an RPC error of a collective, naming its task somewhere in the text.
    if not isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                              tf.errors.AbortedError, tf.errors.CancelledError,
                              tf.errors.InternalError)) or not self.tf_config:
      return None
    workers = self.tf_config['cluster']['worker']
    lost = sorted({int(i) for i in re.findall(r'task:(\d+)', error.message)} - {self.worker_index})
    if not lost:  # A timed-out collective names nobody: ask each peer directly.
      lost = [i for i in range(len(workers)) if i != self.worker_index and not _peer_alive(i)]
    names = ', '.join(f'worker {i} ({workers[i]})' for i in lost if i < len(workers)) or 'a peer'
    return base.PeerLostError(
        f'worker {self.worker_index}: lost {names} during training ({type(error).__name__}). '
        'Relaunch all workers with the same command: they resume from the last checkpoint.')

  def checkpoint_dir(self, workdir):
    # Saving is a collective under this strategy: every worker must save, but only the chief's
    # copy is kept; the others write to a private temporary directory.
    if self.is_chief:
      return f'{workdir}/checkpoints'
    return tempfile.mkdtemp(prefix=f'convoy-worker{self.worker_index}-ckpt-')


def _peer_alive(index, timeout_seconds=5):
  """Whether worker `index` still answers a collective health probe (False when it is down)."""
  try:
    context.context().check_collective_ops_peer_health(
        f'/job:worker/replica:0/task:{index}', timeout_in_ms=timeout_seconds * 1000)
    return True
  except (tf.errors.UnavailableError, tf.errors.FailedPreconditionError,
          tf.errors.DeadlineExceededError):
    return False
  except Exception:  # pylint: disable=broad-except
    return True  # The probe itself failed: name nobody rather than the wrong worker.


_COLLECTIVES = {
    'auto': tf.distribute.experimental.CommunicationImplementation.AUTO,
    'ring': tf.distribute.experimental.CommunicationImplementation.RING,
    'nccl': tf.distribute.experimental.CommunicationImplementation.NCCL,
}


def wait_for_peers(workers, own_index, timeout_seconds):
  """Waits until every other worker's server accepts TCP connections, or raises naming the missing.

  MultiWorkerMirroredStrategy itself waits forever for a missing peer (tensorflow#35878); this
  bounds the wait.

  Raises:
    EngineStartupError: naming each worker index and address that could not be reached in time.
  """
  deadline = time.monotonic() + timeout_seconds
  pending = {i: address for i, address in enumerate(workers) if i != own_index}
  while pending:
    for index, address in list(pending.items()):
      host, port = address.rsplit(':', 1)
      try:
        with socket.create_connection((host, int(port)), timeout=1.0):
          del pending[index]
      except OSError:
        pass
    if pending and time.monotonic() > deadline:
      missing = ', '.join(f'worker {i} at {a}' for i, a in sorted(pending.items()))
      raise base.EngineStartupError(
          f'worker {own_index}: could not reach {missing} within engine.peer_timeout_seconds='
          f'{timeout_seconds}. Check that every worker was started and that TF_CONFIG (or the '
          'Slurm allocation) lists the right hosts and ports.')
    if pending:
      time.sleep(0.5)


def rendezvous(workers, own_index, timeout_seconds):
  """Waits until every worker of `workers` is up, or raises naming those that are not.

  MultiWorkerMirroredStrategy's constructor blocks inside TensorFlow's C++ runtime until every
  worker has joined, forever and holding the GIL (tensorflow#35878), so the wait is bounded here,
  before it: each worker listens on its own address while it probes the others'. A peer that already
  moved on is reached through its TensorFlow server on the same port.

  Raises:
    EngineStartupError: naming each worker that could not be reached, or if our own port is taken.
  """
  port = int(workers[own_index].rsplit(':', 1)[1])
  listener = socket.socket()
  listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    listener.bind(('', port))
  except OSError as e:
    listener.close()
    raise base.EngineStartupError(f'worker {own_index}: cannot listen on port {port} of {workers[own_index]} '
                       f'({e.strerror}); another process uses it') from e
  listener.listen(64)
  try:
    wait_for_peers(workers, own_index, timeout_seconds)
  finally:
    listener.close()


def _configure_coordination_service(tf_config, peer_timeout_seconds):
  """Configures TF's coordination service as MultiWorkerMirroredStrategy would, but with deadlines.

  Without a registration deadline, a worker waits forever for a peer that never starts
  (tensorflow#35878); with a heartbeat deadline, the survivors of a dead worker stop instead of
  hanging. The strategy skips its own configuration when one exists.
  """
  from tensorflow.tsl.protobuf import coordination_config_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
  if context.context().coordination_service is not None:
    return
  context.context().configure_coordination_service(
      service_type='standalone',
      service_leader='/job:worker/replica:0/task:0',
      coordinated_jobs=[coordination_config_pb2.CoordinatedJob(
          name='worker', num_tasks=len(tf_config['cluster']['worker']))],
      cluster_register_timeout_in_ms=peer_timeout_seconds * 1000,
      heartbeat_timeout_in_ms=peer_timeout_seconds * 1000)


def create_multi_worker_engine(engine_config):
  """MultiWorkerMirroredStrategy with roles from TF_CONFIG or Slurm's environment.

  Without either, it runs as a single worker (useful to test a config). Collective implementation
  and timeout come from `engine.collective` and `engine.collective_timeout_seconds`.
  """
  tf_config = cluster.resolve_tf_config()
  if tf_config is not None:
    os.environ['TF_CONFIG'] = json.dumps(tf_config)
  else:
    logging.warning('multi_worker engine without TF_CONFIG or Slurm: running as a single worker')
  timeout = engine_config.collective_timeout_seconds or None
  if tf_config is not None:
    _configure_coordination_service(tf_config, engine_config.peer_timeout_seconds)
    rendezvous(tf_config['cluster']['worker'], tf_config['task']['index'],
               engine_config.peer_timeout_seconds)
  strategy = tf.distribute.MultiWorkerMirroredStrategy(
      communication_options=tf.distribute.experimental.CommunicationOptions(
          implementation=_COLLECTIVES[engine_config.collective], timeout_seconds=timeout))
  devices = strategy.extended.worker_devices
  logging.info('MultiWorkerMirroredStrategy: worker %s, local devices %s',
               tf_config and tf_config['task']['index'], list(devices))
  return MultiWorkerEngine(strategy, devices, tf_config)
