"""Runs a scaling study: a grid of measured runs, locally or as Slurm jobs, then writes its report.

    python -m launch.sweep --out_dir=DIR [--config=configs/sweep_small.py]
        [--config.FIELD=VALUE ...]
        [--engines=default,mirrored,multi_worker,horovod] [--workers=1,2] [--scaling=weak,strong]
        [--batch_sizes=32] [--loops=custom,fit] [--grid=FIELD=V1,V2 ...]
        [--steps=N] [--warmup_steps=N] [--repeats=3] [--rounds=1] [--[no]pin_cpus]
        [--timeout_seconds=1800]
        [--slurm [--time=01:00:00] [--partition=P] [--account=A] [--cpus_per_task=N] [--nowait]]
        [--dry_run] [--report_only] [--show_output]

The grid is engines x workers x scaling x batch sizes x loops x every `--grid` field (any config
field, e.g. `--grid=train.precision=float32,mixed_bfloat16 --grid=train.jit_compile=[False,True]`).
`workers` is the replica count: replicas (logical devices or GPUs) of `mirrored` in one process,
processes of `multi_worker` and `horovod` (one replica each); `default` runs only with 1. With
`--scaling=weak` a batch size is per replica (global batch = batch x replicas); with `strong` it is
the global batch, divided among the replicas.

The `--config` file is the experiment every run starts from (with `--config.FIELD=VALUE`
overrides); if it also defines `get_sweep()`, that dict gives this command's settings (keys:
engines, workers, scaling, batch_sizes, loops, grid {field: [values]}, steps, warmup_steps,
repeats, rounds, pin_cpus, peak_matmul_size, peak_repeats, timeout_seconds), and flags given on the
command line override them (`--grid` entries per field). See configs/sweep_small.py.

`--rounds=N` runs the whole grid N times, round after round, each cell's worker counts in
alternating order (1,2 then 2,1, ...), so that every N-replica run has a 1-replica run of its own
round next to it in time; each round's efficiency is computed against that run, and the report
gives the median of these paired efficiencies with their range: on a machine whose speed drifts
between runs, a figure that does not hang on one pair of runs.

Each run is measured by `trainer.benchmarks.scaling` in fresh processes, started locally as
`trainer.benchmarks.engines.worker_processes` starts them (`launch.local`'s TF_CONFIG and
horovodrun set-ups), or as one Slurm job per run (`launch.slurm.render_sbatch`, submitted with
sbatch; `--dry_run` prints the scripts). Everything a run leaves is in `OUT/runs/<run-id>/`:
spec.json (what was asked), log.txt (the workers' output, locally), each worker's figures, and
result.json (status 'ok' with the figures, or 'failed' with the error). The run id names the cell
and ends with a hash of everything that defines the run, so rerunning the same command skips the
runs that succeeded (and reruns failed ones, unless --norerun_failed). A failing run does not stop
the sweep; the exit code is 1 if any run failed, 2 for a bad command line (nothing run), 130 after
Ctrl-C (rerun to continue).

Locally, with `--pin_cpus` (default), each replica gets its own share of this process's CPUs
(usable CPUs // the largest worker count of the grid), so a 1-replica run uses one share and an
N-replica run N shares, with 1 intra-op thread per process and 1 inter-op thread per local replica
(`trainer.benchmarks.engines.configure_threads`): weak scaling on one machine compares like with
like. At the start of each session that runs something, the machine's float32 matmul peak is
measured in a fresh process with every CPU.

Outputs (`trainer.benchmarks.report`): OUT/results.csv, OUT/results.json, OUT/throughput.png,
OUT/efficiency.png, OUT/breakdown.png and OUT/report.md.
"""

import collections
import contextlib
import dataclasses
import datetime
import functools
import getpass
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import types

from absl import app
from absl import flags
from ml_collections import config_flags

from configs import validation
from launch import local
from launch import slurm
from trainer.benchmarks import engines as engines_bench
from trainer.benchmarks import loops as loops_bench
from trainer.benchmarks import report as report_lib
from trainer.benchmarks import scaling

_COMMAND = 'python -m launch.sweep'
_DEFAULT_CONFIG = 'configs/default.py'
USAGE_ERROR = 2  # Bad flags, config or grid: nothing was run.
FAILED = 1  # At least one run failed; the others are reported.
INTERRUPTED = 130
ENGINES = engines_bench.DEFAULT_ENGINES
SCALING_MODES = ('weak', 'strong')
# Config fields that the sweep's own axes set in every run.
RESERVED_FIELDS = {'engine.name': '--engines', 'engine.num_replicas': '--workers',
                   'train.global_batch_size': '--batch_sizes with --scaling', 'loop': '--loops'}
DEFAULTS = {
    'engines': list(ENGINES), 'workers': [1, 2], 'scaling': ['weak'], 'batch_sizes': [32],
    'loops': ['custom'], 'grid': {}, 'steps': None, 'warmup_steps': None, 'repeats': 3, 'rounds': 1,
    'pin_cpus': True, 'peak_matmul_size': 4096, 'peak_repeats': 3, 'timeout_seconds': 1800,
}
# launch.slurm's flags that the sweep sets per run.
_PER_RUN_SLURM_FLAGS = ('engine', 'nodes', 'output', 'error')
_SLURM_ONLY_FLAGS = ('time', 'partition', 'account', 'gpus_per_task', 'cpus_per_task',
                     'sbatch_line', 'setup_line', 'warning_seconds', 'max_requeues', 'job_name',
                     'tasks_per_node')
_POLL_SECONDS = 10
DEFAULT_STEPS = 100  # Measured steps per variant when --steps is not given (rounded up to windows).


@dataclasses.dataclass(frozen=True)
class SweepPlan:
  """The resolved settings of a sweep (see DEFAULTS and the flags)."""
  engines: tuple
  workers: tuple
  scaling: tuple
  batch_sizes: tuple
  loops: tuple
  grid: tuple  # ((field, (value, ...)), ...)
  steps: object  # int, or None: per run, the smallest multiple of steps_per_loop >= DEFAULT_STEPS.
  warmup_steps: object  # int, or None: per run, one window of steps_per_loop steps.
  repeats: int
  rounds: int  # The whole grid is run this many times (see the module docstring).
  pin_cpus: bool
  peak_matmul_size: int
  peak_repeats: int
  timeout_seconds: int


@dataclasses.dataclass
class Run:
  """One cell of the grid: what to run, its id and arguments, or why it cannot run."""
  run_id: str
  engine: str
  workers: int
  processes: int
  replicas: int
  scaling: str
  batch_size: int
  global_batch_size: int
  loop: str
  fields: dict
  worker_args: list  # Arguments of `python -m trainer.benchmarks.scaling` (before --worker).
  error: object = None  # The config problem that stops this run before it starts, if any.
  digest: str = ''  # Hash of what defines the measurement (runs with equal digests measure alike).
  sweep_round: int = 1  # Which of the sweep's --rounds this run belongs to.

  def spec(self):
    """The JSON description of the run (spec.json, and `spec` in its result)."""
    per_replica = (self.global_batch_size // self.replicas
                   if self.global_batch_size % self.replicas == 0 else None)
    return {'run_id': self.run_id, 'engine': self.engine, 'workers': self.workers,
            'processes': self.processes, 'replicas': self.replicas, 'scaling': self.scaling,
            'batch_size': self.batch_size, 'global_batch_size': self.global_batch_size,
            'per_replica_batch_size': per_replica, 'loop': self.loop, 'fields': self.fields,
            'round': self.sweep_round, 'worker_args': self.worker_args}


# ---------------------------------------------------------------------------------------------
# The grid.


def split_values(text):
  """Splits `text` at the commas outside brackets and quotes: 'a,(1,2),"x,y"' -> 3 items."""
  items, depth, quote, current = [], 0, None, ''
  for char in text:
    if quote:
      quote = None if char == quote else quote
    elif char in '\'"':
      quote = char
    elif char in '([{':
      depth += 1
    elif char in ')]}':
      depth -= 1
    elif char == ',' and depth == 0:
      items.append(current.strip())
      current = ''
      continue
    current += char
  items.append(current.strip())
  return items


def parse_value(field, text, current):
  """The value of `text` for a config field whose current value is `current` (its type decides).

  Raises:
    ValueError: naming the field, the text and the type expected.
  """
  import ast  # pylint: disable=g-import-not-at-top
  unquoted = text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"' else text
  try:
    if isinstance(current, bool):
      lowered = text.lower()
      if lowered not in ('true', 'false', '1', '0'):
        raise ValueError
      return lowered in ('true', '1')
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return unquoted
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    kind = 'True or False' if isinstance(current, bool) else f'a {type(current).__name__}'
    raise ValueError(f'--grid {field}: {text!r} is not {kind} (the field\'s current value is '
                     f'{current!r})') from None


def get_field(config, field):
  """The value of dotted `field` in `config`.

  Raises:
    KeyError: naming the field, if the config has no such field.
  """
  node = config
  for part in field.split('.'):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      raise KeyError(field) from None
  return node


def set_field(config, field, value):
  """Sets dotted `field` of `config` (a ConfigDict checks the value's type)."""
  *parents, last = field.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[last] = value


def parse_grid_entry(entry, config):
  """`FIELD=V1,V2` or `FIELD=[V1, V2]` -> (field, values), values typed like the field in `config`.

  Raises:
    ValueError: naming the entry and the problem (unknown or reserved field, no value, bad value).
  """
  field, sep, text = entry.partition('=')
  field, text = field.strip(), text.strip()
  if not sep or not field:
    raise ValueError(f'--grid={entry!r}: must be FIELD=V1,V2 or FIELD=[V1,V2] (e.g. '
                     'train.precision=float32,mixed_bfloat16)')
  if text.startswith('[') and text.endswith(']'):
    text = text[1:-1]
  current = check_field(field, config)
  values = [parse_value(field, item, current) for item in split_values(text) if item != '']
  if not values:
    raise ValueError(f'--grid={entry!r}: give at least one value')
  return field, values


def check_field(field, config):
  """The current value of a grid `field`, after checking that it may vary.

  Raises:
    ValueError: if the field is unknown or set by the sweep's own axes.
  """
  if field in RESERVED_FIELDS:
    raise ValueError(f'grid field {field!r}: set by the sweep itself; use '
                     f'{RESERVED_FIELDS[field]}')
  try:
    value = get_field(config, field)
  except KeyError:
    raise ValueError(f'grid field {field!r}: unknown config field (configs/default.py lists '
                     'every field)') from None
  if hasattr(value, 'keys'):
    raise ValueError(f'grid field {field!r}: is a section, not a field; name a field in it '
                     f'({", ".join(sorted(value.keys()))})')
  return value


def check_values(field, values, config):
  """Checks that each value can be assigned to `field` (ConfigDict's type check).

  Raises:
    ValueError: naming the field and the value.
  """
  probe = config.copy_and_resolve_references()
  for value in values:
    try:
      set_field(probe, field, value)
    except (TypeError, ValueError) as e:
      raise ValueError(f'grid field {field!r}: value {value!r} does not fit the field '
                       f'({e})') from None


def load_sweep_spec(config_file):
  """The `get_sweep()` dict of the experiment config file, or {} if it defines none.

  Raises:
    ValueError: if get_sweep() fails or returns something else than a dict of known keys.
  """
  path = config_file.split(':', 1)[0]
  module_spec = importlib.util.spec_from_file_location('convoy_sweep_config', path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  (the user's file)
    raise ValueError(f'--config={config_file}: cannot load it: {e}') from e
  if not hasattr(module, 'get_sweep'):
    return {}
  sweep = module.get_sweep()
  if not isinstance(sweep, dict):
    raise ValueError(f'{path}: get_sweep() must return a dict, not {type(sweep).__name__}')
  unknown = sorted(set(sweep) - set(DEFAULTS))
  if unknown:
    raise ValueError(f'{path}: get_sweep() has unknown key(s) {", ".join(unknown)} (known: '
                     f'{", ".join(DEFAULTS)})')
  return sweep


def _int_list(name, values, problems):
  result = []
  for value in values:
    try:
      number = int(value)
    except (TypeError, ValueError):
      number = 0
    if number <= 0 or isinstance(value, bool):
      problems.append(f'--{name}: {value!r} is not a positive integer')
    else:
      result.append(number)
  return result


def _choices(name, values, allowed, problems):
  for value in values:
    if value not in allowed:
      problems.append(f'--{name}: unknown value {value!r} (choose among {", ".join(allowed)})')
  return [str(v) for v in values]


def create_plan(settings, grid_entries, config, usable_cpus):
  """Checks the sweep's settings and returns its `SweepPlan`.

  Args:
    settings: dict of DEFAULTS's keys (defaults, then get_sweep(), then the flags given).
    grid_entries: `--grid` strings, which override `settings['grid']` field by field.
    config: the base experiment config (fields and their types).
    usable_cpus: CPUs this process may use (for --pin_cpus), or None not to check.

  Raises:
    ValueError: listing every problem ('Invalid sweep: ...').
  """
  problems = []
  axes = {}
  for name in ('engines', 'workers', 'scaling', 'batch_sizes', 'loops'):
    values = list(settings[name])
    if not values:
      problems.append(f'--{name}: empty; give at least one value')
    elif len(set(map(str, values))) != len(values):
      problems.append(f'--{name}={",".join(map(str, values))}: give each value once')
    axes[name] = values
  axes['engines'] = _choices('engines', axes['engines'], ENGINES, problems)
  axes['scaling'] = _choices('scaling', axes['scaling'], SCALING_MODES, problems)
  axes['loops'] = _choices('loops', axes['loops'], validation.LOOPS, problems)
  axes['workers'] = _int_list('workers', axes['workers'], problems)
  axes['batch_sizes'] = _int_list('batch_sizes', axes['batch_sizes'], problems)
  grid = {}
  for field, values in dict(settings['grid']).items():
    try:
      check_field(field, config)
      values = list(values) if isinstance(values, (list, tuple)) else [values]
      if not values:
        raise ValueError(f'grid field {field!r}: give at least one value')
      check_values(field, values, config)
      grid[field] = values
    except ValueError as e:
      problems.append(str(e))
  for entry in grid_entries:
    try:
      field, values = parse_grid_entry(entry, config)
      check_values(field, values, config)
      grid[field] = values
    except ValueError as e:
      problems.append(str(e))
  for name in ('steps', 'warmup_steps', 'repeats', 'rounds', 'peak_matmul_size', 'peak_repeats'):
    if settings[name] is not None or name in ('repeats', 'rounds', 'peak_matmul_size',
                                              'peak_repeats'):
      _int_list(name, [settings[name]], problems)
  if not isinstance(settings['timeout_seconds'], int) or settings['timeout_seconds'] < 0:
    problems.append(f"--timeout_seconds={settings['timeout_seconds']!r}: must be >= 0 (0: none)")
  if (settings['pin_cpus'] and usable_cpus is not None and axes['workers'] and
      max(axes['workers']) > len(usable_cpus)):
    problems.append(f'--pin_cpus needs one CPU per worker: --workers up to '
                    f'{max(axes["workers"])}, {len(usable_cpus)} usable CPU(s); use fewer workers '
                    'or --nopin_cpus')
  if (not problems and 'default' in axes['engines'] and len(axes['engines']) == 1 and
      1 not in axes['workers']):
    problems.append('the grid has no run: the default engine runs only with --workers=1')
  if problems:
    raise ValueError('Invalid sweep:\n  ' + '\n  '.join(problems))
  return SweepPlan(
      engines=tuple(axes['engines']), workers=tuple(axes['workers']),
      scaling=tuple(axes['scaling']), batch_sizes=tuple(axes['batch_sizes']),
      loops=tuple(axes['loops']), grid=tuple((f, tuple(v)) for f, v in grid.items()),
      steps=settings['steps'] and int(settings['steps']),
      warmup_steps=settings['warmup_steps'] and int(settings['warmup_steps']),
      repeats=int(settings['repeats']), rounds=int(settings['rounds']),
      pin_cpus=bool(settings['pin_cpus']),
      peak_matmul_size=int(settings['peak_matmul_size']),
      peak_repeats=int(settings['peak_repeats']), timeout_seconds=settings['timeout_seconds'])


def format_value(value):
  """A config value as the text of a `--config.FIELD=` flag."""
  if isinstance(value, str):
    return value
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return repr(value)


def base_arguments(config_file, overrides):
  """`--config=FILE` (absolute) and the base `--config.FIELD=VALUE` overrides, sorted by field."""
  return [f'--config={os.path.abspath(config_file)}'] + [
      f'--config.{field}={format_value(value)}' for field, value in sorted(overrides.items())]


def create_run_config(config, engine, workers, overrides):
  """The experiment config of one cell: `config` with the engine, its replicas and `overrides`."""
  config = engines_bench.with_engine(config, engine, workers)
  for field, value in overrides.items():
    set_field(config, field, value)
  return config


def measured_steps(plan, window):
  """(warm-up, measured) steps of a run whose windows have `window` steps."""
  steps = plan.steps or window * max(1, math.ceil(DEFAULT_STEPS / window))
  return plan.warmup_steps or window, steps


def check_run_config(config, workers, warmup_steps, steps, repeats):
  """The config problem of one cell's config (None if it can run): validation, topology, plan."""
  loops = [config.loop] + (['custom'] if config.loop != 'custom' else [])
  try:
    loops_bench.validate_config(config)
    validation.validate_topology(config, workers)
    loops_bench.make_plan(config, loops, steps, warmup_steps, None, repeats)
  except ValueError as e:  # validation.ConfigError is a ValueError.
    return str(e)
  return None


def create_run(plan, config, base_args, engine, workers, scaling_mode, batch, loop, fields, mode,
               sweep_round=1):
  """The `Run` of one cell in one round (with `error` set if its config cannot run).

  With `--rounds` above 1 the round is part of the run's id and digest (each round is measured
  anew); with 1 round the ids are those of a sweep without rounds.
  """
  processes = engines_bench.layout(engine, workers)[0]
  global_batch = batch * workers if scaling_mode == 'weak' else batch
  overrides = {'loop': loop, 'train.global_batch_size': global_batch, **fields}
  run_config = create_run_config(config, engine, workers, overrides)
  window = run_config.train.steps_per_loop
  warmup, steps = measured_steps(plan, window if isinstance(window, int) and window > 0 else 1)
  worker_args = [*base_args, *(f'--config.{f}={format_value(v)}' for f, v in overrides.items()),
                 f'--steps={steps}', f'--warmup_steps={warmup}', f'--repeats={plan.repeats}',
                 f'--peak_matmul_size={plan.peak_matmul_size}',
                 f'--peak_repeats={plan.peak_repeats}']
  identity = {'engine': engine, 'workers': workers, 'args': worker_args, 'mode': mode,
              'pin_cpus': plan.pin_cpus and mode == 'local'}
  in_round = ''
  if plan.rounds > 1:
    identity['round'] = sweep_round
    in_round = f'-r{sweep_round}'
  digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
  return Run(run_id=f'{engine}-x{workers}-{scaling_mode}{batch}-{loop}{in_round}-{digest}',
             engine=engine,
             workers=workers, processes=processes, replicas=workers, scaling=scaling_mode,
             batch_size=batch, global_batch_size=global_batch, loop=loop, fields=dict(fields),
             worker_args=worker_args,
             error=check_run_config(run_config, workers, warmup, steps, plan.repeats),
             digest=digest, sweep_round=sweep_round)


def create_runs(plan, config, base_args, mode='local'):
  """Every run of the grid, in order (workers innermost); `default` only with 1 worker.

  With `plan.rounds` above 1 the grid comes that many times, round after round; in even rounds
  each cell's worker counts come in reverse order, so that a drift of the machine's speed during
  the sweep does not always favour the same worker count.
  """
  fields = [field for field, _ in plan.grid]
  runs = []
  for sweep_round in range(1, plan.rounds + 1):
    order = plan.workers if sweep_round % 2 else tuple(reversed(plan.workers))
    for engine, scaling_mode, batch, loop, values in itertools.product(
        plan.engines, plan.scaling, plan.batch_sizes, plan.loops,
        itertools.product(*[values for _, values in plan.grid])):
      for workers in order:
        if engine == 'default' and workers != 1:
          continue
        runs.append(create_run(plan, config, base_args, engine, workers, scaling_mode, batch,
                               loop, dict(zip(fields, values)), mode, sweep_round))
  return runs


# ---------------------------------------------------------------------------------------------
# Run directories and results.


def run_dir(out_dir, run):
  """OUT/runs/<run id>."""
  return os.path.join(out_dir, 'runs', run.run_id)


def write_json(path, data):
  """Writes JSON atomically."""
  with open(f'{path}.tmp', 'w') as f:
    f.write(json.dumps(data, indent=2, sort_keys=True, default=str) + '\n')
  os.replace(f'{path}.tmp', path)


def read_json(path):
  """The JSON in `path`, or None if it is missing or unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_result(out_dir, run):
  """The run's result.json, or None."""
  return read_json(os.path.join(run_dir(out_dir, run), scaling.RESULT_FILE))


def prepare_run_dir(out_dir, run, session, mode):
  """Empties the run's directory (an earlier attempt's files) and writes its spec.json."""
  directory = run_dir(out_dir, run)
  shutil.rmtree(directory, ignore_errors=True)
  os.makedirs(directory)
  write_json(os.path.join(directory, scaling.SPEC_FILE),
             dict(run.spec(), session=session, mode=mode))
  return directory


def failed_result(run, error, exit_code=None, tail=(), session=None, mode='local'):
  """The result of a run that did not produce figures."""
  return {'schema_version': scaling.SCHEMA_VERSION, 'status': 'failed', 'run_id': run.run_id,
          'spec': dict(run.spec(), session=session, mode=mode), 'error': error,
          'exit_code': exit_code, 'error_tail': list(tail)}


# Lines that say why a run failed, most telling first: Convoy's own error line, the last line of a
# Python traceback, the launcher's verdict.
_ERROR_PATTERNS = (
    re.compile(r'\b(convoy|launch[.\w]*): error: '),
    re.compile(r'(^|[\]>:]\s?)([A-Za-z_]\w*\.)*[A-Za-z_]\w*(Error|Exception|Exit)(:|$)'),
    re.compile(r'^\[launch\] '),
)
_MAX_ERROR_CHARS = 600


def is_error_line(line):
  """Whether an output line may say why a run failed (see `_ERROR_PATTERNS`)."""
  return any(pattern.search(line) for pattern in _ERROR_PATTERNS)


def extract_error(lines, exit_code):
  """One line for a failed run: its exit code and the most telling line of `lines`."""
  lines = [line.strip() for line in lines if line.strip()]
  best = lines[-1] if lines else 'no output'
  for pattern in _ERROR_PATTERNS:
    matches = [line for line in lines if pattern.search(line)]
    if matches:
      best = matches[-1]
      break
  if len(best) > _MAX_ERROR_CHARS:
    best = best[:_MAX_ERROR_CHARS] + ' [...]'
  return f'exit code {exit_code}: {best}'


class LogSink:
  """A text sink for `launch.local.run`: appends to the run's log, keeps the last lines, and may
  echo to the terminal. Sinks sharing one log must share `lock` (the pumps are threads)."""

  def __init__(self, log, lock, echo=None, keep=60):
    self._log, self._lock, self._echo = log, lock, echo
    self.tail = collections.deque(maxlen=keep)
    self.errors = collections.deque(maxlen=keep)  # Error-like lines, kept however long the output.

  def write(self, text):
    with self._lock:
      self._log.write(text)
      lines = text.splitlines()
      self.tail.extend(lines)
      self.errors.extend(line for line in lines if is_error_line(line))
      if self._echo:
        self._echo.write(text)

  def flush(self):
    with self._lock:
      self._log.flush()
      if self._echo:
        self._echo.flush()


# ---------------------------------------------------------------------------------------------
# Local runs.


def cpus_per_worker(plan, usable_cpus):
  """CPUs of each worker's share under --pin_cpus: usable CPUs // the grid's most workers."""
  return max(1, len(usable_cpus) // max(plan.workers))


def run_cpus(run, plan, usable_cpus):
  """The CPUs a pinned run may use (its workers split them), or None when not pinning."""
  if not plan.pin_cpus:
    return None
  return sorted(usable_cpus)[:cpus_per_worker(plan, usable_cpus) * run.workers]


@contextlib.contextmanager
def cpu_allocation(cpus):
  """Restricts this thread's CPUs (and so its children's) to `cpus` in the block (None: all).

  `launch.local` and `launch.pin` split the CPUs they see among the workers, so this gives an
  N-worker run N shares and a 1-worker run one share.
  """
  if cpus is None:
    yield
    return
  previous = os.sched_getaffinity(0)
  os.sched_setaffinity(0, cpus)
  try:
    yield
  finally:
    os.sched_setaffinity(0, previous)


def create_worker_processes(run, directory, pin_cpus):
  """The `launch.local.Worker`s of a run: the engine benchmark's, running the scaling module."""
  return engines_bench.worker_processes(run.engine, run.workers, run.worker_args, directory,
                                        pin_cpus, module=scaling.MODULE)


def run_local(run, out_dir, plan, session, usable_cpus, show_output=False):
  """Runs one grid cell in fresh local processes and returns its result (also in result.json).

  Raises:
    KeyboardInterrupt: after Ctrl-C (the workers are stopped; no result is written).
  """
  directory = prepare_run_dir(out_dir, run, session, 'local')
  result_path = os.path.join(directory, scaling.RESULT_FILE)
  started = time.monotonic()
  if run.error:
    result = failed_result(run, run.error, session=session)
  else:
    lock = threading.Lock()
    with open(os.path.join(directory, 'log.txt'), 'w') as log:
      out = LogSink(log, lock, sys.stdout if show_output else None)
      err = LogSink(log, lock, sys.stderr if show_output else None)
      try:
        with cpu_allocation(run_cpus(run, plan, usable_cpus)):
          workers = create_worker_processes(run, directory, plan.pin_cpus)
          code = local.run(workers, plan.timeout_seconds, out=out, err=err)
      except (FileNotFoundError, ValueError) as e:  # No horovodrun, too few CPUs.
        code = None
        err.write(f'[launch] cannot start the workers: {e}\n')
    if code == INTERRUPTED:
      raise KeyboardInterrupt
    result = read_json(result_path) if code == 0 else None
    if result is None:
      error = extract_error([*out.errors, *err.errors] or [*out.tail, *err.tail], code)
      if code == 0:
        error = f'the workers exited 0 but wrote no {scaling.RESULT_FILE}'
      result = failed_result(run, error, code, list(err.tail)[-20:], session)
  result['run_seconds'] = time.monotonic() - started
  write_json(result_path, result)
  return result


def reuse_result(run, twin, out_dir):
  """Stores for `run` the result of `twin`, a run with the same digest (the same measurement)."""
  directory = prepare_run_dir(out_dir, run, twin['spec'].get('session'), 'local')
  result = dict(twin, run_id=run.run_id, same_measurement_as=twin['run_id'],
                spec=dict(run.spec(), session=twin['spec'].get('session'), mode='local'))
  write_json(os.path.join(directory, scaling.RESULT_FILE), result)
  return result


def measure_machine_peak(out_dir, plan):
  """The machine's float32 matmul peak, measured now in a fresh process with every CPU.

  Returns:
    The `scaling.run_peak_only` dict (also in OUT/machine.json), or None if it failed.
  """
  path = os.path.join(out_dir, 'machine.json')
  command = [sys.executable, '-m', scaling.MODULE, '--peak_only', f'--json_out={path}',
             f'--peak_matmul_size={plan.peak_matmul_size}', f'--peak_repeats={plan.peak_repeats}']
  try:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
  except subprocess.TimeoutExpired:
    completed = None
  if completed is None or completed.returncode != 0:
    detail = completed.stderr.strip().splitlines()[-1:] if completed else ['timeout']
    print(f'[sweep] warning: could not measure the machine\'s peak ({" ".join(detail)}); '
          'fractions of it are left empty', file=sys.stderr, flush=True)
    return None
  return read_json(path)


def format_duration(seconds):
  """'1h02m', '3m05s' or '12s'."""
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  if seconds >= 60:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds}s'


def describe_run(run):
  """One line: the run's layout and settings."""
  layout = f'{run.processes} process(es) x {run.replicas // run.processes} replica(s)'
  fields = ''.join(f', {field}={value}' for field, value in run.fields.items())
  return (f'{run.engine}, {layout}, {run.scaling} scaling, global batch {run.global_batch_size}, '
          f'{run.loop}{fields}')


def describe_result(result):
  """One line: the run's images/s, or its error."""
  if result.get('status') == 'ok':
    rates = result['images_per_second']
    return (f"ok: {rates['median']:.0f} images/s [{rates['min']:.0f}-{rates['max']:.0f}], step "
            f"{result['step_ms']:.2f} ms")
  return f"FAILED: {result.get('error')}"


def is_done(result, rerun_failed):
  """Whether a stored result means the run need not run again."""
  return bool(result) and (result.get('status') == 'ok' or
                           (result.get('status') == 'failed' and not rerun_failed))


def run_local_sweep(runs, out_dir, plan, rerun_failed, show_output=False, out=None):
  """Runs every unfinished run locally, one after the other, printing progress with an ETA.

  Returns:
    The results in the order of `runs`.

  Raises:
    KeyboardInterrupt: after Ctrl-C (finished runs keep their results).
  """
  out = out or sys.stdout
  usable = sorted(os.sched_getaffinity(0))
  stored = [read_result(out_dir, run) for run in runs]
  todo = [i for i, r in enumerate(stored) if not is_done(r, rerun_failed)]
  print(f'[sweep] {len(runs)} run(s): {len(runs) - len(todo)} finished earlier (skipped), '
        f'{len(todo)} to run; results in {out_dir}', file=out, flush=True)
  session = {'started': datetime.datetime.now().isoformat(timespec='seconds')}
  if todo:
    peak = measure_machine_peak(out_dir, plan)
    session['machine_peak_flops_per_second'] = (peak or {}).get('machine_peak_flops_per_second')
    if peak:
      print(f"[sweep] machine peak: {peak['machine_peak_flops_per_second'] / 1e9:.1f} GFLOP/s "
            f"(float32 {plan.peak_matmul_size}^2 matmul, {len(usable)} CPU(s))", file=out,
            flush=True)
  durations = []
  for i, run in enumerate(runs):
    label = f'[sweep] run {i + 1}/{len(runs)} {run.run_id}'
    if i not in todo:
      print(f'{label}: skipped, {describe_result(stored[i])}', file=out, flush=True)
      continue
    twin = next((r for j, r in enumerate(stored) if j != i and runs[j].digest == run.digest and
                 r and r.get('status') == 'ok'), None)
    if twin:  # E.g. 1 replica in weak and strong scaling: the same processes, the same figures.
      stored[i] = reuse_result(run, twin, out_dir)
      print(f"{label}: same measurement as {twin['run_id']}, {describe_result(twin)}", file=out,
            flush=True)
      continue
    print(f'{label}: {describe_run(run)}', file=out, flush=True)
    start = time.monotonic()
    stored[i] = run_local(run, out_dir, plan, session, usable, show_output)
    durations.append(time.monotonic() - start)
    left = sum(1 for j in todo if j > i)
    eta = f', ETA {format_duration(left * sum(durations) / len(durations))}' if left else ''
    print(f'{label}: {describe_result(stored[i])} ({format_duration(durations[-1])}; {left} '
          f'left{eta})', file=out, flush=True)
  return stored


# ---------------------------------------------------------------------------------------------
# Slurm runs.


def create_job_spec(run, directory, flag_values=None):
  """The `launch.slurm.JobSpec` of a run: one task per worker process, running the scaling module.

  Slurm options come from launch.slurm's flags (--time, --partition, --account, --cpus_per_task,
  --gpus_per_task, --setup_line, --sbatch_line, ...). --tasks_per_node, if given, is the most tasks
  per node (the run then spans several nodes); --job_name prefixes the run id.

  Raises:
    ValueError: if the run's processes do not fill whole nodes, or an option is invalid.
  """
  flag_values = flag_values or flags.FLAGS
  args = [*run.worker_args, '--worker', f'--result_dir={directory}', '--pin_cpus=False',
          *engines_bench.engine_overrides(run.engine, run.workers)]
  per_node = (flag_values.tasks_per_node if flag_values['tasks_per_node'].present
              else run.processes)
  nodes = math.ceil(run.processes / per_node)
  if nodes * per_node != run.processes and nodes > 1:
    raise ValueError(f'run {run.run_id}: {run.processes} processes do not fill nodes of '
                     f'--tasks_per_node={per_node}')
  name = (f'{flag_values.job_name}-' if flag_values['job_name'].present else 'sweep-') + run.run_id
  spec = dataclasses.replace(
      slurm.spec_from_flags(args), engine=run.engine, nodes=nodes,
      tasks_per_node=min(per_node, run.processes), module=scaling.MODULE, job_name=name[:128],
      output=os.path.join(directory, 'slurm-%j.out'), error=None)
  slurm.render_sbatch(spec)  # Validates every field.
  return spec


def slurm_jobs_in_queue(user=None):
  """Job ids of `user` (default: this user) that Slurm still lists (pending, running, requeued)."""
  result = subprocess.run(['squeue', '-h', '-o', '%i', '-u', user or getpass.getuser()],
                          capture_output=True, text=True, timeout=60, check=False)
  if result.returncode != 0:
    raise RuntimeError(f'squeue failed: {result.stderr.strip()}')
  return set(result.stdout.split())


def slurm_failure(run, directory, job_id):
  """The failed result of a Slurm run that ended without result.json (from its output file)."""
  path = os.path.join(directory, f'slurm-{job_id}.out')
  try:
    with open(path, errors='replace') as f:
      lines = f.read().splitlines()
  except OSError:
    lines = [f'no output file {path}']
  exit_lines = [line for line in lines if 'the tasks ended with exit code' in line]
  code = int(exit_lines[-1].split()[-1]) if exit_lines else None
  error = extract_error([line for line in lines if is_error_line(line)] or lines, code)
  return failed_result(run, f'job {job_id}: {error}', code, lines[-20:], mode='slurm')


def run_slurm_sweep(runs, out_dir, rerun_failed, dry_run, wait, out=None, submit=slurm.submit,
                    in_queue=slurm_jobs_in_queue):
  """Submits one Slurm job per unfinished run (or prints the scripts); optionally waits for them.

  Jobs still queued or running from an earlier invocation are not submitted again. Every script is
  rendered (and validated) before the first is submitted.

  Returns:
    The results in the order of `runs` ({'status': 'missing', ...} for jobs not finished).

  Raises:
    ValueError: if a script cannot be rendered (a bad Slurm option): nothing was submitted.
  """
  out = out or sys.stdout
  stored = [read_result(out_dir, run) for run in runs]
  jobs = {}  # index -> job id, of runs whose job is (or was) in Slurm's hands.
  queued = set() if dry_run else None
  specs = {}
  for i, run in enumerate(runs):
    if is_done(stored[i], rerun_failed):
      continue
    job = read_json(os.path.join(run_dir(out_dir, run), 'job.json'))
    if job and not dry_run:
      queued = in_queue() if queued is None else queued
      if job['job_id'] in queued:
        jobs[i] = job['job_id']
        continue
    if not run.error:
      specs[i] = create_job_spec(run, os.path.abspath(run_dir(out_dir, run)))
  for i, run in enumerate(runs):
    label = f'[sweep] run {i + 1}/{len(runs)} {run.run_id}'
    if is_done(stored[i], rerun_failed):
      print(f'{label}: skipped, {describe_result(stored[i])}', file=out, flush=True)
    elif i in jobs:
      print(f'{label}: still in Slurm as job {jobs[i]}', file=out, flush=True)
    elif dry_run:
      print(f'# {label}: {describe_run(run)}', file=out)
      out.write(f'# not submitted: {run.error}\n' if run.error else
                slurm.render_sbatch(specs[i]))
      out.flush()
    elif run.error:
      directory = prepare_run_dir(out_dir, run, {}, 'slurm')
      stored[i] = failed_result(run, run.error, mode='slurm')
      write_json(os.path.join(directory, scaling.RESULT_FILE), stored[i])
      print(f'{label}: {describe_result(stored[i])}', file=out, flush=True)
    else:
      directory = prepare_run_dir(out_dir, run, {}, 'slurm')
      with open(os.path.join(directory, 'job.sbatch'), 'w') as f:
        f.write(slurm.render_sbatch(specs[i]))
      jobs[i] = submit(specs[i])
      write_json(os.path.join(directory, 'job.json'),
                 {'job_id': jobs[i], 'submitted': datetime.datetime.now().isoformat()})
      print(f'{label}: submitted as job {jobs[i]} ({describe_run(run)})', file=out, flush=True)
  if dry_run:
    return stored
  started = time.monotonic()
  while wait and jobs:
    queued = in_queue()
    pending = {i: job for i, job in jobs.items() if job in queued}
    for i in sorted(set(jobs) - set(pending)):
      directory = run_dir(out_dir, runs[i])
      stored[i] = read_result(out_dir, runs[i]) or slurm_failure(runs[i], directory, jobs[i])
      write_json(os.path.join(directory, scaling.RESULT_FILE), stored[i])
      print(f'[sweep] run {i + 1}/{len(runs)} {runs[i].run_id}: job {jobs[i]} ended, '
            f'{describe_result(stored[i])} ({len(pending)} job(s) left, '
            f'{format_duration(time.monotonic() - started)} so far)', file=out, flush=True)
    jobs = pending
    if jobs:
      time.sleep(_POLL_SECONDS)
  for i in jobs:
    stored[i] = {'status': 'missing', 'run_id': runs[i].run_id, 'spec': runs[i].spec(),
                 'error': f'still in Slurm as job {jobs[i]}: rerun the command to collect it'}
  return stored


# ---------------------------------------------------------------------------------------------
# The report.


def describe_machine():
  """Host, CPU model and count, memory, bfloat16 support, versions: for the report."""
  info = {'host': socket.gethostname(), 'platform': platform.platform()}
  try:
    with open('/proc/cpuinfo') as f:
      cpuinfo = f.read()
    models = re.findall(r'^model name\s*:\s*(.*)$', cpuinfo, re.M)
    info['cpu'] = models[0] if models else platform.processor()
    info['avx512_bf16'] = 'yes' if 'avx512_bf16' in cpuinfo else 'no'
  except OSError:
    pass
  info['cpus'] = f'{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable by the sweep)'
  try:
    with open('/proc/meminfo') as f:
      kib = int(re.search(r'MemTotal:\s*(\d+)', f.read()).group(1))
    info['memory'] = f'{kib / 2 ** 20:.1f} GiB'
  except (OSError, AttributeError):
    pass
  info['python'] = platform.python_version()
  for package in ('tensorflow', 'tf-keras', 'horovod'):
    try:
      info[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  info['load average'] = ' '.join(f'{x:.2f}' for x in os.getloadavg()) + ' (1, 5, 15 min, now)'
  return info


def create_meta(plan, command, config_file, overrides, mode, out_dir, usable_cpus):
  """The sweep's description for the report (see `report.create_markdown`)."""
  grid = {'engines': plan.engines, 'workers': plan.workers, 'scaling': plan.scaling,
          'batch sizes (per replica if weak, global if strong)': plan.batch_sizes,
          'loops': plan.loops, **{field: values for field, values in plan.grid}}
  return {
      'command': command, 'created': datetime.datetime.now().isoformat(timespec='seconds'),
      'mode': mode, 'machine': describe_machine(),
      'machine_peak': None,  # Read when the report is written (a session may measure it anew).
      'pin_cpus': plan.pin_cpus and mode == 'local',
      'cpus_per_worker': cpus_per_worker(plan, usable_cpus),
      'plan': {'steps': plan.steps or f'{DEFAULT_STEPS} or more (whole windows)',
               'warmup_steps': plan.warmup_steps or 'one window (steps_per_loop)',
               'repeats': plan.repeats, 'rounds': plan.rounds},
      'grid': {k: list(v) for k, v in grid.items()},
      'config': {'file': config_file, 'overrides': overrides},
      'notes': ['`default` runs only with 1 worker (one device, no strategy).'] if (
          'default' in plan.engines and max(plan.workers) > 1) else [],
  }


def collect_results(runs, out_dir, results=None):
  """The stored result of every run (or a 'missing' placeholder), in grid order."""
  results = results or [None] * len(runs)
  collected = []
  for run, result in zip(runs, results):
    result = result or read_result(out_dir, run)
    collected.append(result or {'status': 'missing', 'run_id': run.run_id, 'spec': run.spec(),
                                'error': run.error})
  return collected


def load_predicted(path, max_workers):
  """Predicted rows from a `trainer.benchmarks.scaling_model --json_out` file, for the report.

  Uses the model's first link (this machine's, measured by its microbenchmark) without overlap, as
  Convoy's step runs today, for up to `max_workers` workers; plus, labelled, the same without
  overlap on every other link it modelled (e.g. 25 Gbit/s), which show where the curve goes.

  Raises:
    ValueError: if the file is missing or is not such a file.
  """
  try:
    with open(path) as f:
      model = json.load(f)
    rows = []
    for index, link in enumerate(model['networks']):
      label = f"{link['name']}, no overlap"
      rows += [{'workers': r['workers'], 'images_per_second': r['images_per_second'],
                'efficiency': r['efficiency'], 'label': label}
               for r in link['curves']['no_overlap'] if index > 0 or r['workers'] <= max_workers]
    return rows
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'--predict_from={path}: not a scaling-model JSON file '
                     f'(python -m trainer.benchmarks.scaling_model --json_out=PATH): {e}') from e


def _rows_and_fields(results):
  """The rows to print (one per cell and replica count with rounds) and the grid's fields."""
  rows = report_lib.create_rows(results)
  return report_lib.combine_rounds(rows), report_lib.row_fields(rows)


def write_report(out_dir, results, meta, predicted=None):
  """Writes the report files (`report.create_report`); `predicted` rows are drawn beside the
  measured points (e.g. from `trainer.benchmarks.scaling_model.predict_curve`)."""
  return report_lib.create_report(out_dir, results, meta, predicted)


def run_sweep(plan, runs, out_dir, meta, options, predicted=None, out=None):
  """Runs (or submits) the sweep's unfinished runs, then writes the report.

  Args:
    plan: the `SweepPlan`.
    runs: `create_runs(plan, ...)`.
    out_dir: the output directory.
    meta: `create_meta(...)`.
    options: namespace with `slurm`, `dry_run`, `wait`, `report_only`, `rerun_failed`,
      `show_output`.
    predicted: optional predicted rows for the report.
    out: where progress goes (default stdout).

  Returns:
    The exit code: 0, FAILED if any run failed, INTERRUPTED after Ctrl-C.
  """
  out = out or sys.stdout
  if not options.dry_run:
    os.makedirs(os.path.join(out_dir, 'runs'), exist_ok=True)
  code = 0
  try:
    if options.report_only:
      results = collect_results(runs, out_dir)
    elif options.slurm:
      results = run_slurm_sweep(runs, out_dir, options.rerun_failed, options.dry_run,
                                options.wait, out)
    elif options.dry_run:
      for i, run in enumerate(runs):
        print(f'[sweep] run {i + 1}/{len(runs)} {run.run_id}: {describe_run(run)}', file=out)
        if run.error:
          print(f'  would fail: {run.error}', file=out)
          continue
        with cpu_allocation(run_cpus(run, plan, sorted(os.sched_getaffinity(0)))):
          workers = create_worker_processes(run, run_dir(out_dir, run), plan.pin_cpus)
        for worker in workers:
          cpus = f"[cpus {','.join(map(str, worker.cpus))}] " if worker.cpus else ''
          env = ''.join(f'{k}={shlex.quote(v)} ' for k, v in worker.env.items())
          print(f'  {cpus}{env}{shlex.join(worker.argv)}', file=out)
      out.flush()
      return 0
    else:
      results = run_local_sweep(runs, out_dir, plan, options.rerun_failed, options.show_output,
                                out)
  except KeyboardInterrupt:
    print('[sweep] interrupted; rerun the same command to continue (finished runs are kept)',
          file=sys.stderr, flush=True)
    results, code = collect_results(runs, out_dir), INTERRUPTED
  if options.slurm and options.dry_run:
    return 0
  results = collect_results(runs, out_dir, results)
  if meta.get('mode') == 'local':
    meta = dict(meta, machine_peak=read_json(os.path.join(out_dir, 'machine.json')))
  paths = write_report(out_dir, results, meta, predicted)
  print(report_lib.create_text_table(*_rows_and_fields(results)), file=out, flush=True)
  failed = [r for r in results if r.get('status') == 'failed']
  missing = [r for r in results if r.get('status') == 'missing']
  print(f"[sweep] {len(results) - len(failed) - len(missing)} ok, {len(failed)} failed, "
        f"{len(missing)} not finished; report: {paths['report']}", file=out, flush=True)
  return code or (FAILED if failed else 0)


# ---------------------------------------------------------------------------------------------
# Command line.


def _define_flags():
  """Defines the command-line flags; only when run as a program, so importing defines none.

  launch.slurm's flags (--time, --partition, --account, --cpus_per_task, --gpus_per_task,
  --setup_line, --sbatch_line, --job_name, --tasks_per_node, --dry_run, ...) are defined when it is
  imported and serve --slurm.
  """
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file(
          'config', _DEFAULT_CONFIG, 'Experiment config file every run starts from; if it '
          'defines get_sweep(), that gives this command\'s defaults (see configs/sweep_small.py). '
          'Any field can be overridden for every run, e.g. --config.data.source=synthetic.',
          lock_config=True),
      out_dir=flags.DEFINE_string(
          'out_dir', None, 'Directory of the sweep: runs/<run-id>/ per run, results.csv, '
          'results.json, the plots and report.md. Reusing it skips finished runs.'),
      engines=flags.DEFINE_list(
          'engines', ','.join(DEFAULTS['engines']), f'Engines, among {", ".join(ENGINES)}.'),
      workers=flags.DEFINE_list(
          'workers', '1,2', 'Replica counts: replicas of mirrored in one process, processes of '
          'multi_worker and horovod; default runs only with 1.'),
      scaling=flags.DEFINE_list(
          'scaling', 'weak', 'weak (per-replica batch fixed: --batch_sizes are per replica) '
          'and/or strong (global batch fixed: --batch_sizes are global, divided among replicas).'),
      batch_sizes=flags.DEFINE_list(
          'batch_sizes', '32', 'Batch sizes: per replica (weak) or global (strong).'),
      loops=flags.DEFINE_list('loops', 'custom', 'Training loops: custom and/or fit.'),
      grid=flags.DEFINE_multi_string(
          'grid', [], 'A config field and its values, FIELD=V1,V2 or FIELD=[V1,V2], e.g. '
          'train.precision=float32,mixed_bfloat16 or train.jit_compile=[False,True] '
          '(repeatable; each adds a grid axis; replaces the same field of get_sweep()).'),
      steps=flags.DEFINE_integer(
          'steps', DEFAULTS['steps'], 'Measured steps per variant and repeat (a multiple of '
          f'config.train.steps_per_loop). Default: per run, the smallest multiple >= '
          f'{DEFAULT_STEPS}.'),
      warmup_steps=flags.DEFINE_integer(
          'warmup_steps', DEFAULTS['warmup_steps'], 'Unmeasured steps first (tracing, first '
          'calls): a positive multiple of config.train.steps_per_loop. Default: one window.'),
      repeats=flags.DEFINE_integer(
          'repeats', DEFAULTS['repeats'], 'Measurements of each variant in a run, each with a '
          'fresh model; images/s is their median, with the min-max.'),
      rounds=flags.DEFINE_integer(
          'rounds', DEFAULTS['rounds'], 'Run the whole grid this many times, each cell\'s worker '
          'counts in alternating order (1,2 then 2,1, ...); each round\'s efficiency is taken '
          'against the 1-replica run of the same round, and the report gives the median of these '
          'paired efficiencies with their range (for a machine whose speed drifts between runs).'),
      pin_cpus=flags.DEFINE_bool(
          'pin_cpus', DEFAULTS['pin_cpus'], 'Locally: give each replica its own share of the '
          'CPUs (usable CPUs // largest --workers), 1 intra-op thread per process, 1 inter-op '
          'thread per local replica (fair weak scaling on one machine).'),
      peak_matmul_size=flags.DEFINE_integer(
          'peak_matmul_size', DEFAULTS['peak_matmul_size'], 'Side of the float32 matmul that '
          'measures peak FLOP/s (machine and per run).'),
      peak_repeats=flags.DEFINE_integer(
          'peak_repeats', DEFAULTS['peak_repeats'], 'Timings of the peak matmul (best counts).'),
      timeout_seconds=flags.DEFINE_integer(
          'timeout_seconds', DEFAULTS['timeout_seconds'], 'Locally: stop a run\'s workers after '
          'this long and record it as failed (0: never).'),
      rerun_failed=flags.DEFINE_bool(
          'rerun_failed', True, 'Run again the runs that failed in an earlier invocation.'),
      slurm=flags.DEFINE_bool(
          'slurm', False, 'Submit each run as a Slurm job (launch.slurm\'s options: --time, '
          '--partition, --account, --cpus_per_task, --gpus_per_task, --setup_line, ...); '
          'with --dry_run, print the scripts.'),
      wait=flags.DEFINE_bool(
          'wait', True, 'With --slurm: wait for the jobs, then write the report (else rerun the '
          'command later to collect them).'),
      report_only=flags.DEFINE_bool(
          'report_only', False, 'Run nothing: rewrite the report from the stored results.'),
      predict_from=flags.DEFINE_string(
          'predict_from', None, 'A `python -m trainer.benchmarks.scaling_model --json_out` file: '
          'its predicted curves are drawn beside the measured points and listed in the report.'),
      show_output=flags.DEFINE_bool(
          'show_output', False, 'Locally: also print the workers\' output (always in '
          'runs/<run-id>/log.txt).'))


def _settings(flag_values, sweep):
  """DEFAULTS, then get_sweep()'s values, then the flags given on the command line."""
  settings = dict(DEFAULTS, **sweep)
  for name in DEFAULTS:
    holder = getattr(flag_values, name, None)
    if name != 'grid' and holder is not None and flags.FLAGS[holder.name].present:
      settings[name] = holder.value
  return settings


def _usage_problems(flag_values):
  """Problems of flags that do not go together."""
  problems = []
  if not flag_values.out_dir.value:
    problems.append('--out_dir is required (where the runs, results and report go)')
  if flag_values.slurm.value:
    problems += [f'--{name}: set per run by the sweep' for name in _PER_RUN_SLURM_FLAGS
                 if flags.FLAGS[name].present]
  else:
    problems += [f'--{name}: a Slurm option; add --slurm' for name in _SLURM_ONLY_FLAGS
                 if flags.FLAGS[name].present]
  return problems


def _fail(message):
  print(f'launch.sweep: error: {message}', file=sys.stderr, flush=True)
  sys.exit(USAGE_ERROR)


def main(argv, flag_values):
  """Checks the command line and grid (exit 2 on problems), runs the sweep, writes the report."""
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  holder = flags.FLAGS['config']
  config_file = config_flags.get_config_filename(holder)
  overrides = config_flags.get_override_values(holder)
  problems = _usage_problems(flag_values) + [
      f'--config.{f}: set by the sweep itself; use {RESERVED_FIELDS[f]}'
      for f in overrides if f in RESERVED_FIELDS]
  if problems:
    _fail('\n  '.join(['invalid command line:', *problems]))
  mode = 'slurm' if flag_values.slurm.value else 'local'
  usable = sorted(os.sched_getaffinity(0))
  try:
    config = flag_values.config.value
    settings = _settings(flag_values, load_sweep_spec(config_file))
    plan = create_plan(settings, flag_values.grid.value, config,
                       usable if mode == 'local' else None)
    runs = create_runs(plan, config, base_arguments(config_file, overrides), mode)
    if mode == 'slurm' and not flags.FLAGS.dry_run and not shutil.which('sbatch'):
      _fail('sbatch not found: Slurm is not installed here (for a local test cluster: python -m '
            'launch.slurm_cluster start)')
  except ValueError as e:
    _fail(e)
  out_dir = os.path.abspath(flag_values.out_dir.value)
  options = types.SimpleNamespace(
      slurm=flag_values.slurm.value, dry_run=flags.FLAGS.dry_run, wait=flag_values.wait.value,
      report_only=flag_values.report_only.value, rerun_failed=flag_values.rerun_failed.value,
      show_output=flag_values.show_output.value)
  meta = create_meta(plan, loops_bench.command_line(sys.argv, _COMMAND), config_file, overrides,
                     mode, out_dir, usable)
  try:
    predicted = None
    if flag_values.predict_from.value:
      predicted = load_predicted(flag_values.predict_from.value,
                                 max(int(w) for w in plan.workers))
    code = run_sweep(plan, runs, out_dir, meta, options, predicted)
  except ValueError as e:  # A Slurm option that cannot go into a script: nothing was submitted.
    _fail(e)
  except RuntimeError as e:  # sbatch or squeue failed.
    print(f'launch.sweep: error: {e}', file=sys.stderr, flush=True)
    code = FAILED
  sys.exit(code)


def _parse_flags(argv):
  """absl's parser, with every flag or config error as one line and exit code 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f'{e} (see --helpfull)')
  except (KeyError, AttributeError, OSError, ValueError, TypeError) as e:
    _fail(f'bad --config or --config.* override: {e}')


def run():
  """Program entry point: defines the flags, then runs `main` under absl."""
  flag_values = _define_flags()
  app.run(functools.partial(main, flag_values=flag_values), flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
