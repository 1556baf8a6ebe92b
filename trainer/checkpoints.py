"""Checkpoints of model and optimizer: chief writes to the workdir, resume from the latest one."""

import os

from absl import logging
import tensorflow as tf


def create_checkpoint_manager(engine, workdir, model, optimizer, max_to_keep):
  """Creates a CheckpointManager over the model and optimizer (step = optimizer.iterations).

  Checkpoints are written with `tf.train.CheckpointManager`, which updates its index file only after
  a checkpoint is complete, so the latest entry always names a whole checkpoint.

  Args:
    engine: the Engine; it decides where this process writes (the chief: `workdir/checkpoints`).
    workdir: the experiment directory.
    model: the Keras model.
    optimizer: the optimizer, already built (`optimizer.build(variables)`) so its slots restore now.
    max_to_keep: how many recent checkpoints to keep.

  Returns:
    A `tf.train.CheckpointManager`.
  """
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  return tf.train.CheckpointManager(checkpoint, engine.checkpoint_dir(workdir),
                                    max_to_keep=max_to_keep, step_counter=optimizer.iterations)


def restore_latest(manager):
  """Restores the latest checkpoint of `manager`, if any, and returns its step (0 if none)."""
  latest = manager.latest_checkpoint
  if not latest:
    return 0
  manager.checkpoint.restore(latest).assert_existing_objects_matched()
  step = int(manager.checkpoint.optimizer.iterations.numpy())
  logging.info('Resumed from %s at step %d', latest, step)
  return step


def save(manager, step):
  """Saves a checkpoint for `step` unless one exists already; returns its path."""
  if manager.latest_checkpoint and manager.latest_checkpoint.endswith(f'-{step}'):
    return manager.latest_checkpoint
  path = manager.save(checkpoint_number=step)
  logging.info('Saved checkpoint %s', path)
  return path


def checkpoint_path_for_summary(manager):
  """The latest checkpoint's path, absolute, or None."""
  latest = manager.latest_checkpoint
  return os.path.abspath(latest) if latest else None
