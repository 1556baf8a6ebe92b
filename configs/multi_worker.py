"""The default experiment on MultiWorkerMirroredStrategy. Start N workers with
`python -m launch.local --num_workers=N -- --config=configs/multi_worker.py ...` or under Slurm."""

from configs import default


def get_config():
  """Default experiment with engine 'multi_worker' (roles from TF_CONFIG or Slurm)."""
  config = default.get_config()
  config.engine.name = 'multi_worker'
  config.engine.num_replicas = 1
  config.engine.collective_timeout_seconds = 300
  return config
