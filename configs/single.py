"""The default experiment on one device, without any distribution strategy."""

from configs import default


def get_config():
  """Default experiment with engine 'default' (1 replica)."""
  config = default.get_config()
  config.engine.name = 'default'
  config.engine.num_replicas = 1
  return config
