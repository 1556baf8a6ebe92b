"""The default experiment on Horovod: one replica per rank. Start N ranks with horovodrun or
`python -m launch.local --engine=horovod --num_workers=N`."""

from configs import default


def get_config():
  """Default experiment with engine 'horovod' (global batch split over the ranks)."""
  config = default.get_config()
  config.engine.name = 'horovod'
  config.engine.num_replicas = 1
  return config
