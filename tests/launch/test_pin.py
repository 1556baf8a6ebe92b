"""Tests of launch/pin.py: local rank detection and pinning a command to its share of the CPUs."""

import importlib
import io
import os
import subprocess
import sys

import pytest

from launch import local

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALLOWED_CPUS = sorted(os.sched_getaffinity(0))
needs_two_cpus = pytest.mark.skipif(len(ALLOWED_CPUS) < 2, reason='needs at least 2 usable CPUs')
SHOW_CPUS = 'import os; print(sorted(os.sched_getaffinity(0)))'
RANK_VARIABLES = ('HOROVOD_LOCAL_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK', 'SLURM_LOCALID')


@pytest.fixture
def pin():
  # Imported here (after launch.local, as pin.py itself does) so an import error fails each test.
  return importlib.import_module('launch.pin')


def run_pin(*args, env=None):
  clean = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
  return subprocess.run([sys.executable, '-m', 'launch.pin', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=60, env=dict(clean, **(env or {})))


def test_local_rank_prefers_horovod_then_openmpi_then_slurm(pin):
  everything = {'HOROVOD_LOCAL_RANK': '1', 'OMPI_COMM_WORLD_LOCAL_RANK': '2', 'SLURM_LOCALID': '3'}
  assert pin.local_rank(everything) == 1
  assert pin.local_rank({'OMPI_COMM_WORLD_LOCAL_RANK': '2', 'SLURM_LOCALID': '3'}) == 2
  assert pin.local_rank({'SLURM_LOCALID': '3', 'UNRELATED': '9'}) == 3


def test_local_rank_without_any_variable_is_a_value_error(pin):
  with pytest.raises(ValueError, match='local rank'):
    pin.local_rank({'RANK': '1', 'LOCAL_RANK': '1'})


@needs_two_cpus
def test_pin_cli_runs_command_on_its_share_of_cpus():
  result = run_pin('--num_workers=2', '--local_rank=1', '--', sys.executable, '-c', SHOW_CPUS)
  assert result.returncode == 0, result.stderr
  assert result.stdout == f'{local.cpu_shares(2, ALLOWED_CPUS)[1]}\n'


@needs_two_cpus
def test_pin_cli_reads_local_rank_from_horovod_environment():
  result = run_pin('--num_workers=2', '--', sys.executable, '-c', SHOW_CPUS,
                   env={'HOROVOD_LOCAL_RANK': '0'})
  assert result.returncode == 0, result.stderr
  assert result.stdout == f'{local.cpu_shares(2, ALLOWED_CPUS)[0]}\n'


def test_pin_cli_passes_exit_code_of_command_through():
  result = run_pin('--num_workers=1', '--local_rank=0', '--', sys.executable, '-c',
                   'import sys; sys.exit(7)')
  assert result.returncode == 7, result.stderr


@needs_two_cpus
def test_horovod_pin_wrapper_pins_each_rank():
  # The argv local.horovod_processes gives horovodrun, with the trainer swapped for a probe; run
  # as horovodrun would run rank 1 (HOROVOD_LOCAL_RANK=1).
  (w,) = local.horovod_processes(2, [], python=sys.executable, pin=True)
  command = w.argv[w.argv.index('--gloo') + 1:]
  wrapper = command[:command.index('--') + 1]
  result = subprocess.run([*wrapper, sys.executable, '-c', SHOW_CPUS], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, HOROVOD_LOCAL_RANK='1'))
  assert result.returncode == 0, result.stderr
  assert result.stdout == f'{local.cpu_shares(2, ALLOWED_CPUS)[1]}\n'


@needs_two_cpus
def test_horovodrun_ranks_pin_themselves_through_local_run():
  # Real horovodrun (it imports TensorFlow, ~5 s; no training): checks that it sets the local
  # rank launch.pin reads. The trainer is swapped for a probe printing each rank's CPUs.
  try:
    (w,) = local.horovod_processes(2, [], python=sys.executable, pin=True)
  except FileNotFoundError:
    pytest.skip('horovodrun is not installed')
  gloo = w.argv.index('--gloo') + 1
  wrapper = w.argv[gloo:][:w.argv[gloo:].index('--') + 1]
  probe = local.Worker(w.label, [*w.argv[:gloo], *wrapper, sys.executable, '-c', SHOW_CPUS], {})
  out = io.StringIO()
  code = local.run([probe], timeout_seconds=100, out=out, err=io.StringIO())
  assert code == 0, out.getvalue()
  shares = local.cpu_shares(2, ALLOWED_CPUS)
  lines = out.getvalue().splitlines()
  for rank in (0, 1):
    assert f'[horovodrun] [{rank}]<stdout>:{shares[rank]}' in lines, lines
