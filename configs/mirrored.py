"""MirroredStrategy over 4 replicas (4 GPUs, or 4 logical CPU devices on a CPU-only machine)."""

from configs import default


def get_config():
  """Default experiment on 4 mirrored replicas with the global batch scaled to match."""
  config = default.get_config()
  config.engine.name = 'mirrored'
  config.engine.num_replicas = 4
  config.train.global_batch_size = 128
  return config
