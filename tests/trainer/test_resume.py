"""Resume: K steps, stop, resume to 2K ends with the weights of 2K straight, for both loops."""

import os
import shutil

import pytest
import tensorflow as tf

from trainer import experiment


def _keep_only_checkpoint(source_workdir, target_workdir, step):
  """Makes `target_workdir` look like a run of `source_workdir` stopped right after `step`."""
  source = os.path.join(source_workdir, 'checkpoints')
  target = os.path.join(target_workdir, 'checkpoints')
  os.makedirs(target)
  for name in os.listdir(source):
    if name.startswith(f'ckpt-{step}.'):
      shutil.copy(os.path.join(source, name), target)
  tf.compat.v1.train.update_checkpoint_state(target, os.path.join(target, f'ckpt-{step}'))


@pytest.mark.parametrize('first_loop,second_loop', [('custom', 'custom'), ('fit', 'fit'),
                                                     ('custom', 'fit')])
def test_resume_from_half_way_matches_uninterrupted_run(tiny_config, tmp_path, helpers, tiny_run,
                                                        first_loop, second_loop):
  tiny_config.loop = first_loop
  if first_loop == 'custom':  # The tiny config as it is: the session's shared run (only read).
    straight = tiny_run
  else:
    straight = str(tmp_path / 'straight')
    experiment.train_and_evaluate(tiny_config, straight)
  resumed = str(tmp_path / 'resumed')
  _keep_only_checkpoint(straight, resumed, 10)

  tiny_config.loop = second_loop
  summary = experiment.train_and_evaluate(tiny_config, resumed)

  assert summary['start_step'] == 10 and summary['steps'] == 20
  # A fit run and a custom run compute the same steps (see test_loop_parity), so a checkpoint
  # written by one loop resumes in the other.
  # Model and optimizer state (step counter, momentum slots, current learning rate) all match.
  resumed_state = helpers.checkpoint_weights(resumed, 20, include_optimizer=True)
  assert resumed_state['optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE'] == 20
  helpers.assert_same_weights(resumed_state,
                              helpers.checkpoint_weights(straight, 20, include_optimizer=True))
