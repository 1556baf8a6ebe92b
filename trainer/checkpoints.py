"""Checkpoints of model and optimizer: the chief writes to the workdir; every worker resumes from it."""

import os

from absl import logging
import tensorflow as tf


class CheckpointError(ValueError):
  """A checkpoint cannot be restored; the message names it and says what to do."""


class Checkpointer:
  """Saves and restores model + optimizer (the step is `optimizer.iterations`).

  Checkpoints go through `tf.train.CheckpointManager`, which updates its index file only after a
  checkpoint is complete, so the latest entry always names a whole checkpoint. Every worker restores
  from the chief's directory `workdir/checkpoints`; only workers for which the engine names a
  directory write (the chief; MultiWorkerMirroredStrategy's other workers write to a temporary one
  because saving is a collective there).
  """

  def __init__(self, engine, workdir, model, optimizer, max_to_keep, extras=None):
    """Args: the engine, workdir, model and optimizer to save, checkpoints kept, and `extras`: a
    dict of other trackables saved beside them (loss scale, counters)."""
    self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **(extras or {}))
    self.optimizer = optimizer
    self.directory = os.path.join(workdir, 'checkpoints')
    write_dir = engine.checkpoint_dir(workdir)
    self.is_private = write_dir is not None and os.path.abspath(write_dir) != os.path.abspath(
        self.directory)
    self.manager = None
    if write_dir is not None:
      self.manager = tf.train.CheckpointManager(self.checkpoint, write_dir, max_to_keep=max_to_keep,
                                                step_counter=optimizer.iterations)

  def restore_latest(self):
    """Restores the chief's latest checkpoint, if any; returns its path or None.

    Raises:
      CheckpointError: if the checkpoint is unreadable (truncated, corrupt) or does not match the
        model, saying which checkpoint and what to do.
    """
    latest = tf.train.latest_checkpoint(self.directory)
    if latest:
      try:
        self.checkpoint.restore(latest).assert_existing_objects_matched()
      except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as e:
        # TensorFlow reports a damaged file as OpError, IndexError or ValueError depending on
        # which part is damaged; all mean this checkpoint cannot be used.
        others = sorted(set(self._all_checkpoints()) - {latest})
        raise CheckpointError(
            f'cannot restore {latest}: {getattr(e, "message", str(e)).splitlines()[0]}. Nothing was '
            'trained. If the file is damaged, delete its files (' + latest + '.*) and its line in '
            f'{self.directory}/checkpoint to resume from an earlier one'
            f'{" (" + ", ".join(others) + ")" if others else ""}; if it belongs to another model, '
            'use a new --workdir.') from e
      logging.info('Resumed from %s at step %d', latest, int(self.optimizer.iterations.numpy()))
    return latest

  def _all_checkpoints(self):
    state = tf.train.get_checkpoint_state(self.directory)
    return list(state.all_model_checkpoint_paths) if state else []

  def save(self, step):
    """Saves a checkpoint for `step` unless this worker writes none or it exists already."""
    if self.manager is None:
      return
    latest = self.manager.latest_checkpoint
    if latest and latest.endswith(f'-{step}'):
      return
    path = self.manager.save(checkpoint_number=step)
    logging.info('Saved checkpoint %s', path)

  def latest_path(self):
    """Absolute path of the latest checkpoint this worker wrote in the workdir, or None."""
    if self.manager is None or self.is_private or not self.manager.latest_checkpoint:
      return None
    return os.path.abspath(self.manager.latest_checkpoint)

  def close(self):
    """Removes a non-chief worker's private checkpoint directory (its copies are never read)."""
    if self.is_private and tf.io.gfile.exists(self.manager.directory):
      tf.io.gfile.rmtree(self.manager.directory)
