"""Horovod engine: one replica per process, gradients all-reduced by Horovod (Gloo, MPI or NCCL).

Every line specific to Horovod carries a `# Horovod:` note, as in Horovod's own examples.
"""

import os

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import cpu_budget
from trainer.engines import base

INSTALL_HINT = (
    "engine.name='horovod' needs Horovod 0.28.1 built against this TensorFlow. `make setup` builds "
    'it; by hand: HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 pip install --no-build-isolation '
    "--no-cache-dir horovod==0.28.1 (needs g++ and cmake). Check with `horovodrun --check-build`.")


def import_horovod():
  """Imports horovod.tensorflow and its Keras module, or raises EngineStartupError saying how to install."""
  try:
    import horovod.tensorflow as hvd  # pylint: disable=g-import-not-at-top
    import horovod.tensorflow.keras as hvd_keras  # pylint: disable=g-import-not-at-top
  except Exception as e:  # ImportError, or a build against another TensorFlow (NotFoundError).
    raise base.EngineStartupError(f'{INSTALL_HINT} (import failed: {e})') from e
  return hvd, hvd_keras


def _thread_ids():
  """The ids of this process's threads (Linux), or an empty set where /proc is missing."""
  try:
    return {int(tid) for tid in os.listdir('/proc/self/task')}
  except OSError:
    return set()


def resolve_thread_priority(setting, allowed_cpus):
  """The priority `engine.horovod_threads` means for a process allowed `allowed_cpus` CPUs.

  'auto' is 'idle' for a rank pinned to one CPU (`launch.local --pin_cpus`, Slurm's binding,
  taskset), where Horovod's threads can only run by preempting the step's, and 'normal' otherwise:
  a GPU node's ranks have several cores, and on cores shared with other processes a starved
  background thread would hold back every all-reduce.
  """
  if setting != 'auto':
    return setting
  return 'idle' if allowed_cpus == 1 else 'normal'


def set_thread_priority(thread_ids, priority):
  """Gives each thread of `thread_ids` the scheduling `priority` ('normal', 'low' or 'idle').

  'normal' leaves the threads as they are; 'low' sets nice 19; 'idle' sets SCHED_IDLE (the lowest
  weight: in practice the thread runs when no other thread of its core wants to). Linux only;
  elsewhere nothing is changed.

  Returns:
    The number of threads it was applied to.
  """
  applied = 0
  for tid in sorted(thread_ids):
    try:
      if priority == 'low':
        os.setpriority(os.PRIO_PROCESS, tid, 19)
      elif priority == 'idle':
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
      else:
        continue
      applied += 1
    except (OSError, AttributeError) as e:  # The thread ended, or no such call on this system.
      logging.warning('engine.horovod_threads=%r: thread %d left as is (%s)', priority, tid, e)
  return applied


class HorovodEngine(base.Engine):
  """Data parallelism across Horovod ranks; started by `horovodrun` (or launch/local.py)."""

  name = 'horovod'

  def __init__(self, engine_config):
    self.hvd, self.hvd_keras = import_horovod()
    # Horovod: initialize before any other TensorFlow work.
    before = _thread_ids()
    self.hvd.init()
    # Horovod: its background thread (negotiation every HOROVOD_CYCLE_TIME ms) and Gloo's threads
    # are the ones hvd.init() started; on a rank's only core they run at the step's expense.
    self.thread_ids = _thread_ids() - before
    self.thread_priority = resolve_thread_priority(engine_config.horovod_threads,
                                                   cpu_budget.affinity_cpus())
    applied = set_thread_priority(self.thread_ids, self.thread_priority)
    logging.info("Horovod's %d thread(s): %s priority, set on %d (engine.horovod_threads=%r)",
                 len(self.thread_ids), self.thread_priority, applied,
                 engine_config.horovod_threads)
    # Horovod: pin one GPU per process, chosen by local rank (untested here: no GPU in CI).
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
      gpu = gpus[self.hvd.local_rank() % len(gpus)]
      tf.config.experimental.set_memory_growth(gpu, True)
      tf.config.set_visible_devices(gpu, 'GPU')
    self._device = '/gpu:0' if gpus else '/cpu:0'

  @property
  def num_replicas(self):
    return self.hvd.size()

  @property
  def num_workers(self):
    return self.hvd.size()

  @property
  def worker_index(self):
    return self.hvd.rank()

  @property
  def devices(self):
    return (self._device,)

  def distribute_dataset(self, dataset_fn):
    # Horovod: each rank is one input pipeline and one replica; the pipeline shards by rank.
    return dataset_fn(tf.distribute.InputContext(
        num_input_pipelines=self.hvd.size(), input_pipeline_id=self.hvd.rank(),
        num_replicas_in_sync=self.hvd.size()))

  def run(self, step_fn, args=()):
    return step_fn(*args)

  def reduce_sum(self, per_replica_value):
    return self.hvd.allreduce(per_replica_value, op=self.hvd.Sum)

  def average_loss(self, per_example_loss, global_batch_size):
    # Divide by the global batch; `reduce_gradients` then sums over ranks (as tf.distribute does).
    return tf.reduce_sum(per_example_loss) / tf.cast(global_batch_size, per_example_loss.dtype)

  def scale_regularization_loss(self, regularization_loss):
    # Every rank adds the full weight decay; the summed gradient must count it once.
    return regularization_loss / self.hvd.size()

  def all_reduce_sum(self, value):
    return self.hvd.allreduce(value, op=self.hvd.Sum, name='convoy_all_reduce_sum')

  def reduce_gradients(self, gradients):
    # Horovod: one grouped all-reduce (sum) of all gradients per step.
    return self.hvd.grouped_allreduce(list(gradients), op=self.hvd.Sum)

  def sync_initial_state(self, model, optimizer):
    # Horovod: every rank starts from rank 0's weights, optimizer slots and step (after a restore
    # too, so ranks that could not read the checkpoint directory still resume).
    self.hvd.broadcast_variables(model.variables, root_rank=0)
    self.hvd.broadcast_variables(optimizer.variables(), root_rank=0)

  def any_worker(self, flag):
    # Horovod: the ranks' flags, summed.
    return float(self.hvd.allreduce(tf.constant(float(flag)), op=self.hvd.Sum,
                                    name='convoy_any_worker')) > 0

  def translate_error(self, error):
    # Horovod: a rank that died makes the survivors' collectives fail.
    if type(error).__name__ not in ('HorovodInternalError', 'UnavailableError', 'AbortedError'):
      return None
    return base.PeerLostError(
        f'rank {self.hvd.rank()}: a Horovod collective failed, another rank stopped ({error}). '
        'Relaunch all ranks with the same command: they resume from the last checkpoint.')

  def barrier(self):
    # Horovod: a tiny all-reduce every rank must join.
    self.hvd.allreduce(tf.constant(0.0), name='convoy_barrier')

  def prepare_optimizer(self, optimizer):
    # Horovod: for fit, the distributed optimizer averages gradients in `minimize`. Its
    # `apply_gradients` does not reduce, so the custom loop's explicit all-reduce is not doubled.
    # groups=1: all gradients in one grouped all-reduce, as in the custom loop. Without it each
    # gradient is its own Horovod request, and one step costs several negotiation cycles.
    return self.hvd_keras.DistributedOptimizer(optimizer, groups=1)

  def aggregate_metrics(self, results, count_key):
    # Horovod: metrics are per rank; weight each rank's means by its example count.
    keys = [k for k in results if k != count_key]
    count = results[count_key]
    local = np.array([results[k] * count for k in keys] + [count], np.float64)
    total = self.hvd.allreduce(tf.constant(local), op=self.hvd.Sum,
                               name=f'convoy_metrics_{count_key}').numpy()
    combined = {k: float(total[i] / total[-1]) if total[-1] else 0.0 for i, k in enumerate(keys)}
    combined[count_key] = float(total[-1])
    return combined


def create_horovod_engine(engine_config):
  """Creates the Horovod engine (one replica per process; `engine.num_replicas` is ignored)."""
  return HorovodEngine(engine_config)
