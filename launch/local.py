"""Starts N workers of one experiment on this machine: multi_worker (TF_CONFIG) or Horovod ranks.

    python -m launch.local --engine=multi_worker --num_workers=2 -- --config=configs/multi_worker.py --workdir=/tmp/run
    python -m launch.local --engine=horovod --num_workers=2 --pin_cpus -- --config=configs/horovod.py --workdir=/tmp/run

Everything after `--` goes to `python -m trainer.train`, followed by `--config.engine.name=ENGINE
--config.engine.num_replicas=1` unless given (every process must run the engine it was started for). Each worker's output lines are prefixed
with its rank; when a worker fails, the others are stopped and the launcher exits with the first
failure's exit code; Ctrl-C stops all of them.
"""

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

_GRACE_SECONDS = 10
_ENGINE = _NUM_WORKERS = _PIN_CPUS = _TIMEOUT = None  # Flags, defined by define_flags().


@dataclasses.dataclass
class Worker:
  """One process to start: its label, argv, extra environment and CPUs (None: not pinned)."""
  label: str
  argv: list
  env: dict
  cpus: object = None


def free_ports(count):
  """Returns `count` distinct TCP ports that are free on localhost right now."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(('localhost', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def cpu_shares(num_workers, cpus):
  """Splits `cpus` (sorted ids) into `num_workers` equal contiguous shares (at least one CPU each).

  Raises:
    ValueError: if there are fewer CPUs than workers.
  """
  cpus = sorted(cpus)
  if len(cpus) < num_workers:
    raise ValueError(f'--pin_cpus needs at least one CPU per worker: {num_workers} workers, '
                     f'{len(cpus)} CPUs available ({cpus})')
  per_worker = len(cpus) // num_workers
  return [cpus[i * per_worker:(i + 1) * per_worker] for i in range(num_workers)]


def with_engine_args(trainer_args, engine):
  """`trainer_args` plus `--config.engine.name=ENGINE --config.engine.num_replicas=1`, unless set.

  The processes started are the engine's workers, so they must run that engine: otherwise each
  would train alone (e.g. the default config's 'mirrored'), all in one workdir.
  """
  extra = [f'--config.engine.{field}={value}' for field, value in (('name', engine),
                                                                    ('num_replicas', 1))
           if not any(a.startswith(f'--config.engine.{field}=') for a in trainer_args)]
  return [*trainer_args, *extra]  # After any --config=FILE, which must come first.


def trainer_argv(python, trainer_args):
  """The command line of one trainer process."""
  return [python, '-m', 'trainer.train', *trainer_args]


def multi_worker_processes(num_workers, trainer_args, python=sys.executable, ports=None,
                           pin=False, cpus=None):
  """One process per worker, each with a TF_CONFIG naming all workers on localhost and its index."""
  ports = ports or free_ports(num_workers)
  workers = [f'localhost:{port}' for port in ports]
  shares = cpu_shares(num_workers, cpus or os.sched_getaffinity(0)) if pin else [None] * num_workers
  return [
      Worker(f'worker {i}', trainer_argv(python, trainer_args),
             {'TF_CONFIG': json.dumps({'cluster': {'worker': workers},
                                       'task': {'type': 'worker', 'index': i}})}, shares[i])
      for i in range(num_workers)
  ]


def horovod_processes(num_workers, trainer_args, python=sys.executable, pin=False):
  """One `horovodrun --gloo` process that starts the ranks (it prefixes their output itself)."""
  horovodrun = shutil.which('horovodrun', path=os.path.dirname(python) + os.pathsep +
                            os.environ.get('PATH', ''))
  if horovodrun is None:
    raise FileNotFoundError('horovodrun not found next to the Python interpreter or on PATH; '
                            'Horovod is not installed (run `make setup`)')
  command = trainer_argv(python, trainer_args)
  if pin:
    # Each rank pins itself by its local rank before exec'ing the trainer.
    command = [python, '-m', 'launch.pin', f'--num_workers={num_workers}', '--', *command]
  return [Worker('horovodrun', [horovodrun, '-np', str(num_workers), '-H',
                                f'localhost:{num_workers}', '--gloo', *command], {})]


def _pump(stream, sink, prefix):
  for line in iter(stream.readline, ''):
    sink.write(f'{prefix}{line}')
    sink.flush()
  stream.close()


def _stop(processes, sig):
  for process in processes:
    if process.poll() is None:
      try:
        os.killpg(process.pid, sig)
      except ProcessLookupError:
        pass


def _kill_and_reap(processes):
  """Kills `processes` (and their process groups) and waits for each to exit."""
  _stop(processes, signal.SIGKILL)
  for process in processes:
    process.wait()


def run(workers, timeout_seconds=0, out=None, err=None):
  """Starts `workers`, relays their prefixed output, and returns the launcher's exit code.

  Returns 0 if all succeed; else the exit code of the first worker to fail (the others are sent
  SIGTERM, then SIGKILL after a grace period); 130 after Ctrl-C, 124 after `timeout_seconds`.
  """
  out, err = out or sys.stdout, err or sys.stderr
  processes, pumps = [], []
  try:
    for worker in workers:
      cpus = worker.cpus
      # errors='replace': one undecodable byte must not kill the relay (the worker would then
      # block forever on a full pipe).
      process = subprocess.Popen(
          worker.argv, env=dict(os.environ, **worker.env), stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True, errors='replace', bufsize=1, start_new_session=True,
          preexec_fn=(lambda c=cpus: os.sched_setaffinity(0, c)) if cpus else None)
      processes.append(process)
      for stream, sink in ((process.stdout, out), (process.stderr, err)):
        pump = threading.Thread(target=_pump, args=(stream, sink, f'[{worker.label}] '),
                                daemon=True)
        pump.start()
        pumps.append(pump)
  except KeyboardInterrupt:
    err.write('[launch] interrupted while starting; stopping all workers\n')
    _kill_and_reap(processes)
    return 130  # As for Ctrl-C once all are running.
  except BaseException:
    # A worker could not be started (bad argv, CPUs): do not orphan those already running.
    _kill_and_reap(processes)
    raise
  code = _wait(workers, processes, timeout_seconds, err)
  for pump in pumps:
    pump.join(timeout=5)
  return code


def _wait(workers, processes, timeout_seconds, err):
  """Waits for the processes; stops all of them at the first failure, Ctrl-C or timeout."""
  deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
  code = 0
  try:
    while any(p.poll() is None for p in processes):
      failed = [(w, p) for w, p in zip(workers, processes) if p.poll() not in (None, 0)]
      if failed:
        worker, process = failed[0]
        code = process.returncode if process.returncode > 0 else 128 - process.returncode
        err.write(f'[launch] {worker.label} exited with code {process.returncode}; stopping the '
                  'others\n')
        break
      if deadline and time.monotonic() > deadline:
        err.write(f'[launch] timeout after {timeout_seconds} s; stopping all workers\n')
        code = 124
        break
      time.sleep(0.2)
  except KeyboardInterrupt:
    err.write('[launch] interrupted; stopping all workers\n')
    code = 130
  _stop(processes, signal.SIGTERM)
  grace = time.monotonic() + _GRACE_SECONDS
  while any(p.poll() is None for p in processes) and time.monotonic() < grace:
    time.sleep(0.2)
  _stop(processes, signal.SIGKILL)
  for process in processes:
    process.wait()
  if code == 0:
    failed = [p.returncode for p in processes if p.returncode != 0]
    code = (failed[0] if failed[0] > 0 else 128 - failed[0]) if failed else 0
  return code


def define_flags():
  """Defines the command-line flags (only when run as a program, so that importing this module
  next to other launchers defines no flag twice)."""
  global _ENGINE, _NUM_WORKERS, _PIN_CPUS, _TIMEOUT  # pylint: disable=global-statement
  _ENGINE = flags.DEFINE_enum('engine', 'multi_worker', ['multi_worker', 'horovod'],
                              'Which kind of workers to start.')
  _NUM_WORKERS = flags.DEFINE_integer('num_workers', 2, 'Number of worker processes (ranks).',
                                      lower_bound=1)
  _PIN_CPUS = flags.DEFINE_bool('pin_cpus', False, 'Give each worker its own share of the CPUs this '
                                'process may use (for fair scaling measurements).')
  _TIMEOUT = flags.DEFINE_integer('timeout_seconds', 0, 'Stop every worker after this long (0: never).',
                                  lower_bound=0)


def main(argv):
  """Starts the workers named by the flags; returns the exit code."""
  trainer_args = argv[1:]
  if trainer_args and trainer_args[0] == '--':
    trainer_args = trainer_args[1:]
  trainer_args = with_engine_args(trainer_args, _ENGINE.value)
  from trainer import doctor  # pylint: disable=g-import-not-at-top  (doctor imports launch.local)
  problems = doctor.check_launch(f'local-{_ENGINE.value}')
  if problems:
    print(f'launch: error: {doctor.format_problems(problems)}', file=sys.stderr)
    return doctor.STARTUP_ERROR
  try:
    if _ENGINE.value == 'horovod':
      workers = horovod_processes(_NUM_WORKERS.value, trainer_args, pin=_PIN_CPUS.value)
    else:
      workers = multi_worker_processes(_NUM_WORKERS.value, trainer_args, pin=_PIN_CPUS.value)
  except (ValueError, FileNotFoundError) as e:
    print(f'launch: error: {e}', file=sys.stderr)
    return 2
  return run(workers, _TIMEOUT.value)


if __name__ == '__main__':
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
