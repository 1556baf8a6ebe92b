"""ResNet-20-style CNN with squeeze-and-excitation on synthetic 32x32 images (compute only)."""

from configs import default


def get_config():
  """A short compute-bound run: synthetic data, ResNet for 32x32, synchronized batch norm."""
  config = default.get_config()
  config.model.name = 'resnet_cifar'
  config.model.batch_norm = 'sync'
  config.model.width = 16
  config.data.source = 'synthetic'
  config.data.synthetic_image_size = 32
  config.train.global_batch_size = 64
  config.train.num_train_steps = 40
  config.train.steps_per_loop = 10
  config.train.log_every_steps = 10
  config.train.eval_every_steps = 40
  config.train.checkpoint_every_steps = 40
  config.train.warmup_steps = 10
  return config
