"""Learning-rate schedules and optimizers, identical for both loops and every engine."""

import math

import tensorflow as tf
import tf_keras


def peak_learning_rate(train_config):
  """The linear scaling rule: `base_learning_rate` is for 256 images per optimizer step.

  The batch is the effective one (global batch x accumulation steps), and it is the current run's:
  a run resumed with another number of workers or batch gets its own learning rate. With
  `lr_scaling='none'` the base rate is used as is.
  """
  if train_config.get('lr_scaling', 'linear') == 'none':
    return train_config.base_learning_rate
  examples = train_config.global_batch_size * train_config.get('accumulation_steps', 1)
  return train_config.base_learning_rate * examples / 256.0


@tf_keras.utils.register_keras_serializable(package='convoy')
class WarmupSchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0 to `peak`, then 'constant', 'cosine' (to 0) or 'step' decay.

  The schedule is a function of the optimizer's step counter, so it counts optimizer steps and
  resumes exactly from a checkpoint.
  """

  def __init__(self, peak, warmup_steps, total_steps, kind='cosine', boundaries=(0.5, 0.75)):
    super().__init__()
    self.peak = float(peak)
    self.warmup_steps = int(warmup_steps)
    self.total_steps = int(total_steps)
    self.kind = kind
    self.boundaries = tuple(float(b) for b in boundaries)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    decay_steps = max(self.total_steps - self.warmup_steps, 1)
    progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
    if self.kind == 'cosine':
      decayed = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
    elif self.kind == 'step':
      decays = tf.add_n([tf.cast(progress >= b, tf.float32) for b in self.boundaries] + [0.0])
      decayed = self.peak * tf.pow(0.1, decays)
    else:
      decayed = tf.constant(self.peak)
    if self.warmup_steps == 0:
      return decayed
    warm = self.peak * step / self.warmup_steps
    return tf.where(step < self.warmup_steps, warm, decayed)

  def get_config(self):
    return dict(peak=self.peak, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                kind=self.kind, boundaries=self.boundaries)


def create_learning_rate_fn(train_config, total_steps):
  """Builds the schedule of `train_config` for a run of `total_steps` optimizer steps."""
  return WarmupSchedule(peak_learning_rate(train_config), train_config.warmup_steps, total_steps,
                        train_config.lr_schedule, train_config.lr_boundaries)


# Loss scaling that never changes the numbers (a scale of 1 that never grows; the dynamic state
# floors it at 1) but makes the optimizer skip, on every replica, a step whose combined gradients
# are not finite: train.nonfinite='skip' in float32 and bfloat16.
_SKIP_ONLY_SCALE = dict(initial_scale=1.0, dynamic_growth_steps=2**31 - 1)


def wrap_for_numerics(train_config, optimizer):
  """Wraps `optimizer` in a LossScaleOptimizer when the config needs one, else returns it.

  'mixed_float16' gets dynamic loss scaling from `initial_loss_scale`; train.nonfinite='skip' in the other
  precisions gets a scale of 1 that only skips non-finite steps.
  """
  if train_config.precision == 'mixed_float16':
    return tf_keras.mixed_precision.LossScaleOptimizer(
        optimizer, initial_scale=train_config.initial_loss_scale)
  if train_config.nonfinite == 'skip':
    return tf_keras.mixed_precision.LossScaleOptimizer(optimizer, **_SKIP_ONLY_SCALE)
  return optimizer


def checkpointed_state(optimizer):
  """(optimizer to checkpoint, extra trackables): the same checkpoint layout in every precision.

  A LossScaleOptimizer is saved as its inner optimizer plus its loss-scale state, so a workdir can
  be read the same way whatever wraps the optimizer.
  """
  if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
    # `_loss_scale` holds the dynamic scale and its counter (no public accessor in tf-keras 2.18).
    return optimizer.inner_optimizer, {'loss_scale': optimizer._loss_scale}  # pylint: disable=protected-access
  return optimizer, {}


def create_optimizer(train_config, learning_rate):
  """Creates the optimizer named by `train_config.optimizer` ('sgd' with momentum, or 'adam')."""
  if train_config.optimizer == 'sgd':
    return tf_keras.optimizers.SGD(learning_rate, momentum=train_config.momentum,
                                   nesterov=train_config.nesterov)
  if train_config.optimizer == 'adam':
    return tf_keras.optimizers.Adam(learning_rate)
  raise ValueError(f"train.optimizer={train_config.optimizer!r}: must be 'sgd' or 'adam'")
