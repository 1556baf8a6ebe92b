"""Pins this process to its share of the CPUs (by local rank), then execs a command.

    python -m launch.pin --num_workers=2 -- python -m trainer.train ...

The local rank comes from --local_rank, else HOROVOD_LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK or
SLURM_LOCALID.

It parses its own arguments with argparse rather than absl flags: it imports launch.local, whose
absl flags (--num_workers among them) would otherwise be defined twice in one process.
"""

import argparse
import os
import sys

from launch import local


def local_rank(environ):
  """This process's index among the workers of its machine."""
  for name in ('HOROVOD_LOCAL_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK', 'SLURM_LOCALID'):
    if name in environ:
      return int(environ[name])
  raise ValueError('no local rank: set --local_rank, or run under horovodrun or srun')


def parse_args(argv):
  """Returns (num_workers, local rank or None, command) from `argv` (without the program name)."""
  parser = argparse.ArgumentParser(prog='python -m launch.pin', description=__doc__.split('\n')[0],
                                   usage='%(prog)s [--num_workers=N] [--local_rank=R] -- COMMAND')
  parser.add_argument('--num_workers', type=int, default=1, help='Workers sharing this machine.')
  parser.add_argument('--local_rank', type=int, default=None,
                      help='This worker\'s index on the machine (default: from the environment).')
  if '--' not in argv:
    parser.error('give the command to run after --')
  split = argv.index('--')
  args, command = parser.parse_args(argv[:split]), argv[split + 1:]
  if not command:
    parser.error('give the command to run after --')
  if args.num_workers < 1:
    parser.error(f'--num_workers must be at least 1, not {args.num_workers}')
  return args.num_workers, args.local_rank, command


def main(argv):
  num_workers, rank, command = parse_args(argv)
  if rank is None:
    rank = local_rank(os.environ)
  if not 0 <= rank < num_workers:
    sys.exit(f'launch.pin: local rank {rank} is not in [0, {num_workers})')
  cpus = local.cpu_shares(num_workers, os.sched_getaffinity(0))[rank]
  os.sched_setaffinity(0, cpus)
  os.execvp(command[0], command)


if __name__ == '__main__':
  main(sys.argv[1:])
