"""Checks a workdir before training: writable, and not written by an incompatible experiment."""

import json
import os
import uuid

import tensorflow as tf

# Fields that decide what a checkpoint contains: a workdir trained with other values cannot resume.
IDENTITY_FIELDS = ('model', 'data.source', 'data.tfds_name', 'data.image_size', 'data.channels',
                   'train.optimizer')


class WorkdirError(ValueError):
  """The workdir cannot be used as asked; the message says why and what to do."""


def _get(config_dict, field):
  node = config_dict
  for part in field.split('.'):
    node = node.get(part) if isinstance(node, dict) else None
  return node


def check_writable(workdir):
  """Creates `workdir` if needed and proves it is writable, or raises WorkdirError."""
  try:
    tf.io.gfile.makedirs(workdir)
    probe = os.path.join(workdir, f'.convoy-write-test-{uuid.uuid4().hex}')
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    raise WorkdirError(f'--workdir={workdir} is not writable ({getattr(e, "message", e)}); choose '
                       'a directory you can write, e.g. under $HOME or /tmp') from e


def check_compatible(config, workdir):
  """Raises WorkdirError if `workdir/config.json` was written by an experiment whose checkpoints
  this config cannot resume (another model, data shape or optimizer)."""
  path = os.path.join(workdir, 'config.json')
  if not tf.io.gfile.exists(path):
    return
  try:
    with tf.io.gfile.GFile(path) as f:
      previous = json.load(f)
  except (ValueError, tf.errors.OpError) as e:
    raise WorkdirError(f'{path} is unreadable ({e}); it does not look like a Convoy workdir. Use a '
                       'new --workdir.') from e
  current = config.to_dict()
  changed = [f'{field}: {_get(previous, field)!r} -> {_get(current, field)!r}'
             for field in IDENTITY_FIELDS if _get(previous, field) != _get(current, field)]
  if changed:
    raise WorkdirError(
        f'--workdir={workdir} holds a run of a different experiment, whose checkpoints this config '
        f'cannot resume ({"; ".join(changed)}). Use a new --workdir, or the original settings.')
