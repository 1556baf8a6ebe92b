"""Weak scaling of a compute-bound CNN: ResNet-20, 1 and 2 workers, both engines and loops, paired.

    python -m launch.sweep --config=configs/sweep_resnet_cifar.py --out_dir=/tmp/sweep_resnet20

The default model (small_cnn on 8x8 digits) does 8 MFLOP of training work per image for a 0.62 MB
gradient, so on a fast CPU its step is short next to the all-reduce and the wait for the slower
peer that every step pays. This sweep measures the engines on a network whose step is long next to
its communication, as in real data-parallel training: ResNet-20 (`resnet_cifar`, width 16, with
squeeze-and-excitation) on synthetic 32x32 images, 64 images per worker, per-replica batch norm (a
synchronized one would add one all-reduce per batch-norm layer to every step), in 3 paired rounds
(each run's efficiency against the 1-worker run of its own round). 24 runs of 1-2 minutes each on
the 2-core development machine.
"""

from configs import resnet_cifar_synthetic


def get_config():
  """The ResNet-20 preset (configs/resnet_cifar_synthetic.py) with per-replica batch norm."""
  config = resnet_cifar_synthetic.get_config()
  config.model.batch_norm = 'local'
  return config


def get_sweep():
  """Horovod and multi_worker x 1, 2 workers x 64 images per worker x both loops, 3 rounds."""
  return {
      'engines': ['horovod', 'multi_worker'],
      'workers': [1, 2],
      'scaling': ['weak'],
      'batch_sizes': [64],  # Per worker.
      'loops': ['custom', 'fit'],
      'grid': {},
      'steps': 20,  # Two windows of train.steps_per_loop = 10.
      'warmup_steps': 10,
      'repeats': 2,
      'rounds': 3,
      'pin_cpus': True,
  }
