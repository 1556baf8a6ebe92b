"""Pins this process to its share of the CPUs (by local rank), then execs a command.

    python -m launch.pin --num_workers=2 -- python -m trainer.train ...

The local rank comes from HOROVOD_LOCAL_RANK, SLURM_LOCALID or --local_rank.
"""

import os
import sys

from absl import app
from absl import flags

from launch import local

_NUM_WORKERS = flags.DEFINE_integer('num_workers', 1, 'Workers sharing this machine.', lower_bound=1)
_LOCAL_RANK = flags.DEFINE_integer('local_rank', None, 'This worker\'s index on the machine '
                                   '(default: HOROVOD_LOCAL_RANK or SLURM_LOCALID).')


def local_rank(environ):
  """This process's index among the workers of its machine."""
  for name in ('HOROVOD_LOCAL_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK', 'SLURM_LOCALID'):
    if name in environ:
      return int(environ[name])
  raise ValueError('no local rank: set --local_rank, or run under horovodrun or srun')


def main(argv):
  command = argv[1:]
  if command and command[0] == '--':
    command = command[1:]
  if not command:
    raise app.UsageError('give the command to run after --')
  rank = _LOCAL_RANK.value if _LOCAL_RANK.value is not None else local_rank(os.environ)
  cpus = local.cpu_shares(_NUM_WORKERS.value, os.sched_getaffinity(0))[rank]
  os.sched_setaffinity(0, cpus)
  os.execvp(command[0], command)


if __name__ == '__main__':
  app.run(main)
