"""The Engine interface: the only thing the training loops know about distribution."""

import abc
import contextlib


class EngineStartupError(RuntimeError):
  """The engine cannot start here (missing package, unreachable peers); the message says why."""


class PeerLostError(RuntimeError):
  """Another worker stopped during training; the message names it and how to resume."""


class Engine(abc.ABC):
  """Runs replica steps on some set of devices and workers, and reduces across them.

  The loops (trainer/loops.py) and steps (trainer/steps.py) call only these methods, so a new
  backend is a new subclass and never a change to a loop. Methods say which context they run in:
  *replica* (inside the step function passed to `run`) or *cross-replica* (the loop's own code).
  """

  name: str = 'abstract'

  @property
  @abc.abstractmethod
  def num_replicas(self):
    """Replicas that each compute one slice of the global batch (devices x workers)."""

  @property
  def num_workers(self):
    """Processes taking part in training (1 unless multi-worker or Horovod)."""
    return 1

  @property
  def worker_index(self):
    """This process's index among `num_workers` (0 for the chief)."""
    return 0

  @property
  def is_chief(self):
    """True on the one process that writes checkpoints, summaries, logs and the export."""
    return self.worker_index == 0

  @property
  def devices(self):
    """Device strings this process computes on, for logging."""
    return ()

  def scope(self):
    """Cross-replica. The context in which model, optimizer and metrics must be created."""
    return contextlib.nullcontext()

  @abc.abstractmethod
  def distribute_dataset(self, dataset_fn):
    """Cross-replica. Builds this process's input from `dataset_fn(input_context)`.

    Args:
      dataset_fn: called with a `tf.distribute.InputContext` (one per input pipeline); returns a
        `tf.data.Dataset` batched with the per-replica batch size.

    Returns:
      Something to iterate that yields one batch per replica per step (a distributed dataset).
    """

  @abc.abstractmethod
  def run(self, step_fn, args=()):
    """Cross-replica, inside tf.function. Runs `step_fn(*args)` once on every local replica.

    Returns:
      The per-replica outputs of `step_fn` (reduce them with `reduce_sum` / `reduce_mean`).
    """

  @abc.abstractmethod
  def reduce_sum(self, per_replica_value):
    """Cross-replica. Sums a per-replica value (from `run`) over all replicas and workers."""

  @abc.abstractmethod
  def average_loss(self, per_example_loss, global_batch_size):
    """Replica. This replica's share of the mean loss over the global batch.

    With `reduce_gradients`, guarantees that the applied gradient equals the single-device gradient
    of the mean loss over `global_batch_size` examples, whatever the number of replicas.
    """

  @abc.abstractmethod
  def scale_regularization_loss(self, regularization_loss):
    """Replica. This replica's share of a loss that every replica computes in full (weight decay)."""

  def reduce_gradients(self, gradients):
    """Replica. Combines the replicas' gradients before `apply_gradients` (identity by default).

    tf.distribute optimizers sum gradients across replicas inside `apply_gradients`; engines without
    that (Horovod) sum them here.
    """
    return gradients

  def all_reduce_sum(self, value):
    """Replica. The sum of `value` over all replicas and workers, returned on every replica."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (this package imports without TF)
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)

  def sync_initial_state(self, model, optimizer):
    """Cross-replica. Makes every worker start from the same state, before the first step.

    A no-op for tf.distribute (variables are mirrored at creation); Horovod broadcasts rank 0's
    model and optimizer variables, also after a restore.
    """
    del model, optimizer

  def prepare_optimizer(self, optimizer):
    """Cross-replica. Returns the optimizer both loops will use (Horovod wraps it for fit).

    Called once, before the optimizer is built or restored, so checkpoints see the same object.
    """
    return optimizer

  def fit_callbacks(self):
    """Extra Keras callbacks the engine needs in model.fit (none by default)."""
    return []

  def aggregate_metrics(self, results, count_key):
    """Cross-replica, eager. Turns this process's metric results into global ones.

    Args:
      results: dict of Python floats, means over this process's examples, plus a count.
      count_key: the key of `results` holding the number of examples they cover.

    Returns:
      The same keys over all workers' examples. tf.distribute metrics are already global, so the
      default returns `results` unchanged; per-process engines weight means by their counts.
    """
    del count_key
    return dict(results)

  def any_worker(self, flag):
    """Cross-replica, eager. True on every worker if `flag` is true on any (one worker: `flag`).

    Lets all workers agree to stop at the same step when a signal reached only some of them.
    """
    return bool(flag)

  def translate_error(self, error):
    """Returns a clearer exception for `error` raised by training (a lost peer), or None."""
    del error
    return None

  def barrier(self):
    """Cross-replica, eager. Returns once every worker has reached it (no-op for one worker).

    Called before exiting, so that no worker leaves while a peer still needs it for a collective.
    """

  def checkpoint_dir(self, workdir):
    """Where this process writes checkpoints, or None if it writes none (default: chief only)."""
    return f'{workdir}/checkpoints' if self.is_chief else None
