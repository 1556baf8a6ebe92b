"""SE-ResNet-50 on synthetic 224x224 images: the compute benchmark model (slow on a CPU)."""

from configs import default


def get_config():
  """ResNet-50 at 224x224, synthetic data, a handful of steps."""
  config = default.get_config()
  config.model.name = 'resnet50'
  config.model.batch_norm = 'sync'
  config.model.se_ratio = 0.0625
  config.engine.name = 'default'
  config.engine.num_replicas = 1
  config.data.source = 'synthetic'
  config.data.synthetic_image_size = 224
  config.data.synthetic_examples = 256
  config.data.synthetic_num_classes = 1000
  config.train.global_batch_size = 16
  config.train.num_train_steps = 20
  config.train.steps_per_loop = 5
  config.train.log_every_steps = 5
  config.train.eval_every_steps = 20
  config.train.checkpoint_every_steps = 20
  config.train.warmup_steps = 5
  return config
