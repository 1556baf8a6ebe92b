"""A small scaling sweep of the default model: every engine, 1 and 2 replicas, weak scaling.

    python -m launch.sweep --config=configs/sweep_small.py --out_dir=/tmp/sweep_small

`get_config()` is the experiment every run starts from (the default one, with windows of 10
steps); `get_sweep()` is the grid and measurement plan of `launch.sweep` (flags given on the
command line override its keys, `--grid` entries its fields). 7 runs of about 30-60 s each here.
"""

from configs import default


def get_config():
  """The default experiment (small_cnn on the digits, TFDS convoy_digits) with 10-step windows."""
  config = default.get_config()
  config.train.steps_per_loop = 10
  config.train.num_train_steps = 600
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 300
  config.train.checkpoint_every_steps = 300
  config.train.export = False
  return config


def get_sweep():
  """The grid (engines x workers x scaling x batch sizes x loops x grid fields) and the plan."""
  return {
      'engines': ['default', 'mirrored', 'multi_worker', 'horovod'],
      'workers': [1, 2],  # `default` runs with 1 only.
      'scaling': ['weak'],  # Per-replica batch fixed; on this machine each worker on its own core.
      'batch_sizes': [32],  # Per replica (weak).
      'loops': ['custom'],
      # Any config field, e.g. {'train.precision': ['float32', 'mixed_bfloat16']}.
      'grid': {},
      'steps': 200,
      'warmup_steps': 20,
      'repeats': 3,
      'pin_cpus': True,
  }
