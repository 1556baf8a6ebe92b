"""Images/s of the three ways to train Convoy's model: `fit`, the custom loop and the eager loop.

    python -m trainer.benchmarks.loops [--config=configs/default.py] [--config.FIELD=VALUE ...]

One process creates the engine once, then, for each loop and each repeat, a fresh model and
optimizer from the same seed, the same training pipeline and the same global batch, and times
`--warmup_steps` + `--steps` optimizer steps. Repeats interleave the loops (fit, custom, eager, fit,
...) so that a slow phase of the machine does not favour one loop.

The loops measured are the real ones, not re-implementations:

* `fit`: `trainer.loops.fit_loop` (model.compile + model.fit, steps_per_execution = steps_per_loop);
* `custom`: `trainer.loops.custom_loop` (`engine.run` of `steps.create_train_step`'s step inside one tf.function
  that runs steps_per_loop steps per call);
* `eager`: the seed's loop, a Python for-loop over `next(iterator)` and `engine.run(train_step)`
  with no tf.function, obtained by running `custom_loop` under `tf.config.run_functions_eagerly`:
  the same code line for line, so the ratio measures tf.function and nothing else. It is slow, so it
  runs `--eager_steps` measured steps (default a quarter of `--steps`).

Every loop hands a 'controller' each finished window of steps_per_loop steps, after reading the
window's metrics (which waits for the steps to finish). The benchmark's controller stamps the clock
there: a loop's images/s is (measured steps x global batch) / (wall time from the end of the last
warm-up window to the end of the last window). Warm-up windows (tracing, first-call allocation) are
excluded, but everything a loop does between windows is counted.

The machine's other work skews the figures: the report prints its load average at the start."""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import dataclasses
import functools
import gc
import json
import os
import resource
import shlex
import statistics
import sys
import time
import types
import typing

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf
import tf_keras

from configs import validation
from input_pipeline import datasets
from input_pipeline import sources
from trainer import engines
from trainer import experiment
from trainer import loops as loops_lib
from trainer import memory

_COMMAND = 'python -m trainer.benchmarks.loops'
_DEFAULT_CONFIG = 'configs/default.py'


def eager_loop(config, engine, model, optimizer, data, controller):
  """The seed's eager loop: `custom_loop` with its tf.functions run as plain Python.

  Every step is `next(iterator)` and `engine.run(train_step, ...)` dispatched op by op from a
  Python for-loop (for the default engine: an eager GradientTape step). tf.data functions are
  always traced, so the input pipeline is the same as for the other loops. Same arguments as
  `trainer.loops.custom_loop`.
  """
  previous = tf.config.functions_run_eagerly()
  tf.config.run_functions_eagerly(True)
  try:
    loops_lib.custom_loop(config, engine, model, optimizer, data, controller)
  finally:
    tf.config.run_functions_eagerly(previous)


LOOPS = {'fit': loops_lib.fit_loop, 'custom': loops_lib.custom_loop, 'eager': eager_loop}


def thread_cpu_seconds():
  """CPU seconds (user + system) used so far by each thread of this process, by thread id.

  Read from Linux's /proc/self/task; {} where there is no such directory.
  """
  try:
    tids = os.listdir('/proc/self/task')
  except OSError:
    return {}
  ticks = os.sysconf('SC_CLK_TCK')
  seconds = {}
  for tid in tids:
    try:
      with open(f'/proc/self/task/{tid}/stat') as f:
        stat = f.read()
    except OSError:  # The thread ended meanwhile.
      continue
    fields = stat[stat.rindex(')') + 2:].split()  # After the name, which may hold spaces.
    seconds[tid] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
  return seconds


class StopwatchController:
  """The Controller interface of the loops, reduced to a clock: stamps the end of every window.

  The loops call `end_of_loop` after reading the window's metrics, i.e. once its steps have run.
  There is no evaluation, checkpoint or logging in between to disturb the measurement. The stamps
  at the end of the warm-up (`warmup_steps`) and at the last step also read this process's CPU
  time, in total and per thread, and its page faults, for `cpu_use` (only those two: the reads
  are not free).
  """

  def __init__(self, total_steps, warmup_steps=0):
    self.step = 0
    self.total_steps = total_steps
    self.warmup_steps = warmup_steps
    self.marks = []  # (step, time.perf_counter()) at the end of each window
    # At the end of the warm-up and of the last window: step -> (time.process_time(),
    # thread_cpu_seconds(), minor page faults so far).
    self.cpu_marks = {}
    self.train_metrics = {}

  def end_of_loop(self, step, train_metrics, seconds, evaluate):
    """Records the time at which the loop reached `step`; arguments as `Controller.end_of_loop`."""
    del seconds, evaluate  # The clock is read here, across windows; nothing is evaluated.
    if step in (self.warmup_steps, self.total_steps):
      self.cpu_marks[step] = (time.process_time(), thread_cpu_seconds(),
                              resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    self.marks.append((step, time.perf_counter()))
    self.step = step
    self.train_metrics = dict(train_metrics)

  def finish(self, evaluate):
    """Called by the loops at the end; the benchmark measures training only."""
    del evaluate

  def _measured(self):
    """The marks at the end of the warm-up window and at the last window."""
    return next(m for m in self.marks if m[0] == self.warmup_steps), self.marks[-1]

  def images_per_second(self, global_batch_size):
    """Throughput from the end of the warm-up window to the last window."""
    (start_step, start), (end_step, end) = self._measured()
    return (end_step - start_step) * global_batch_size / (end - start)

  def cpu_use(self, cores):
    """Where this process's CPU time went over the measured steps (as `images_per_second`).

    Args:
      cores: the CPUs the process may run on.

    Returns:
      `cpu_busy`: CPU seconds used / (wall seconds x `cores`), 1 when every core was busy the whole
      time (the rest was spent waiting: for peers, input, or other processes on the core);
      `busiest_thread_share`: the fraction of those CPU seconds used by the busiest thread (with
      one intra-op thread, the one running the step's kernels; threads that ended before the
      last stamp are not counted), None without /proc;
      `page_faults_per_step`: the process's minor page faults (pages the kernel had to supply,
      zeroed) per measured step; near 0 when each step reuses memory freed by the last.
    """
    (step0, wall0), (step1, wall1) = self._measured()
    (cpu0, threads0, faults0) = self.cpu_marks[step0]
    (cpu1, threads1, faults1) = self.cpu_marks[step1]
    used = [seconds - threads0.get(tid, 0.0) for tid, seconds in threads1.items()]
    total = sum(used)
    return {'cpu_busy': (cpu1 - cpu0) / ((wall1 - wall0) * cores),
            'busiest_thread_share': max(used) / total if used and total > 0 else None,
            'page_faults_per_step': (faults1 - faults0) / (step1 - step0)}


class LoopMeasurement(typing.NamedTuple):
  """What `measure_loop` measured: images/s, the last window's train metrics, `cpu_use`."""
  images_per_second: float
  train_metrics: dict
  cpu_use: dict


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to measure: loops, steps and repeats (see the command-line flags)."""
  loops: tuple
  steps: int
  warmup_steps: int
  eager_steps: int
  repeats: int

  def measured_steps(self, loop):
    """Measured steps of `loop` (fewer for the eager loop)."""
    return self.eager_steps if loop == 'eager' else self.steps


def validate_config(config):
  """`validation.validate`, but without the fields the benchmark ignores.

  The run length and the log, eval and checkpoint intervals are replaced by steps_per_loop, so that
  they need not be multiples of a steps_per_loop chosen for the benchmark.

  Raises:
    validation.ConfigError: naming each invalid field.
  """
  checked = config.copy_and_resolve_references()
  window = config.train.steps_per_loop
  checked.train.num_epochs = -1
  for field in ('num_train_steps', 'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
    checked.train[field] = window
  validation.validate(checked)


def window_problems(config, **step_flags):
  """A message per step flag (name=value) that is not a positive multiple of steps_per_loop."""
  window = config.train.steps_per_loop
  return [f'--{flag}={value}: must be a positive multiple of config.train.steps_per_loop={window}'
          for flag, value in step_flags.items() if value <= 0 or value % window]


def make_plan(config, loops, steps, warmup_steps, eager_steps, repeats):
  """Checks the benchmark flags against `config` and returns a `Plan`.

  Args:
    config: the validated experiment config.
    loops: names of the loops to measure.
    steps: measured steps per loop and repeat.
    warmup_steps: steps run before the clock starts.
    eager_steps: measured steps of the eager loop, or None for a quarter of `steps`.
    repeats: measurements of each loop.

  Raises:
    ValueError: listing every invalid flag.
  """
  window = config.train.steps_per_loop
  if eager_steps is None:
    eager_steps = max(window, steps // 4 // window * window)
  problems = [f'--loops: unknown loop {name!r} (choose among {", ".join(LOOPS)})'
              for name in loops if name not in LOOPS]
  if not loops or len(set(loops)) != len(loops):
    problems.append(f'--loops={",".join(loops)}: give each loop at most once, at least one loop')
  problems += window_problems(config, steps=steps, warmup_steps=warmup_steps,
                             eager_steps=eager_steps)
  if repeats <= 0:
    problems.append(f'--repeats={repeats}: must be positive')
  if problems:
    raise ValueError('Invalid benchmark flags:\n  ' + '\n  '.join(problems))
  return Plan(tuple(loops), steps, warmup_steps, eager_steps, repeats)


def train_fresh_model(loop, config, engine, source, controller, schedule_steps):
  """Trains a fresh model and optimizer (seeded) with `loop` until `controller.total_steps`.

  The set-up is `train_and_evaluate`'s (allocator setting, seed, initial-state sync, data from step
  0), without checkpoints, evaluation or logging: the `controller` gets each window and the end.
  `schedule_steps` is the length of the learning-rate schedule.
  """
  memory.apply_malloc_setting(config.engine.malloc)  # As train_and_evaluate does.
  tf_keras.backend.clear_session()
  gc.collect()
  tf_keras.utils.set_random_seed(config.seed)
  model, optimizer, _ = experiment.create_model_and_optimizer(config, engine, source,
                                                              schedule_steps)
  engine.sync_initial_state(model, optimizer)  # As train_and_evaluate does (tf.distribute: no-op).
  data = experiment.create_loop_data(config, engine, source)  # From step 0; eval is never run.
  LOOPS[loop](config, engine, model, optimizer, data, controller)


def measure_loop(loop, config, engine, source, plan):
  """Trains a fresh model with `loop` for warm-up + measured steps; returns (images/s, metrics).

  Args:
    loop: a name in `LOOPS`.
    config: the experiment config.
    engine: the Engine, shared by every measurement.
    source: the data source, shared by every measurement.
    plan: the `Plan`.

  Returns:
    A `LoopMeasurement`: the images/s over the measured steps, the train metrics of the last
    window, and the process's `StopwatchController.cpu_use` over the measured steps.
  """
  clock = StopwatchController(plan.warmup_steps + plan.measured_steps(loop), plan.warmup_steps)
  # Same learning-rate schedule for every loop, whatever its number of steps.
  train_fresh_model(loop, config, engine, source, clock, plan.warmup_steps + plan.steps)
  return LoopMeasurement(
      clock.images_per_second(datasets.examples_per_step(config)), clock.train_metrics,
      clock.cpu_use(len(os.sched_getaffinity(0))))


def _summarize(rates, steps, train_metrics):
  return {'images_per_second': statistics.median(rates), 'min': min(rates), 'max': max(rates),
          'runs': rates, 'steps': steps, 'train_loss': train_metrics.get('train_loss')}


def _add_ratios(results):
  """Adds `vs_fit` and `vs_eager`: each loop's median images/s over that loop's (None if absent)."""
  for name, result in results.items():
    for reference in ('fit', 'eager'):
      base = results.get(reference)
      result[f'vs_{reference}'] = (result['images_per_second'] / base['images_per_second']
                                   if base else None)


def describe_config(config, engine):
  """The fields of the run that the figures depend on, for the report and the JSON."""
  return {'engine': engine.name, 'num_replicas': engine.num_replicas,
          'devices': list(engine.devices), 'model': config.model.name,
          'global_batch_size': config.train.global_batch_size,
          'steps_per_loop': config.train.steps_per_loop, 'data_source': config.data.source,
          'tensorflow': tf.__version__}


def run_benchmark(config, plan):
  """Creates the engine, then measures every loop of `plan`, `plan.repeats` times, interleaved.

  Args:
    config: a validated experiment config.
    plan: the `Plan` (from `make_plan`).

  Returns:
    A JSON-serializable dict: `config` (see `describe_config`), the plan's fields, `cpus`,
    `load_average` (`start` and `end`, 1-minute load of the machine), and `loops`:
    per loop `images_per_second` (median), `min`, `max`, `runs`, `steps`, `train_loss` (of the last
    window of the last repeat), `vs_fit` and `vs_eager` (ratios of medians, or None).
  """
  # The engine comes first: logical devices must be set up before other TF ops.
  engine = engines.create_engine(config.engine)
  load_start = os.getloadavg()[0]  # Other processes on the machine skew the figures.
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  source = sources.create_source(config.data, config.seed)
  rates = {loop: [] for loop in plan.loops}
  metrics = {}
  for repeat in range(plan.repeats):
    for loop in plan.loops:
      rate, metrics[loop], _ = measure_loop(loop, config, engine, source, plan)
      rates[loop].append(rate)
      logging.info('repeat %d/%d %-6s %.0f images/s', repeat + 1, plan.repeats, loop, rate)
  results = {loop: _summarize(rates[loop], plan.measured_steps(loop), metrics[loop])
             for loop in plan.loops}
  _add_ratios(results)
  return {'config': describe_config(config, engine), **dataclasses.asdict(plan),
          'cpus': os.cpu_count(), 'load_average': {'start': load_start, 'end': os.getloadavg()[0]},
          'loops': results}


def _ratio(value):
  return '-' if value is None else f'{value:.2f}x'


def format_report(results):
  """The text table of `run_benchmark`'s results (command line first when present)."""
  c, load = results['config'], results['load_average']
  lines = [f"Command: {results['command']}"] if 'command' in results else []
  lines += [
      f"Config: engine {c['engine']} x{c['num_replicas']} ({', '.join(c['devices'])}) | model "
      f"{c['model']} | global batch {c['global_batch_size']} | steps_per_loop "
      f"{c['steps_per_loop']} | data {c['data_source']} | TensorFlow {c['tensorflow']}",
      f"Machine: {results['cpus']} CPU(s); 1-min load average {load['start']:.2f} at start, "
      f"{load['end']:.2f} at end (this benchmark included)",
      f"Each loop: {results['warmup_steps']} warm-up steps, then the measured steps below; "
      f"{results['repeats']} repeat(s), fresh model each time; median [min-max] images/s.",
      '',
      f"{'loop':<7}{'steps':>6}{'images/s':>10}  {'min-max':<13}{'vs fit':>8}{'vs eager':>10}"
      f"{'last loss':>11}",
  ]
  for name, r in results['loops'].items():
    spread = f"{r['min']:.0f}-{r['max']:.0f}"
    lines.append(f"{name:<7}{r['steps']:>6}{r['images_per_second']:>10.0f}  {spread:<13}"
                 f"{_ratio(r['vs_fit']):>8}{_ratio(r['vs_eager']):>10}{r['train_loss']:>11.4f}")
  if 'eager' in results['loops'] and results['eager_steps'] != results['steps']:
    lines.append(f"(eager is measured over {results['eager_steps']} steps instead of "
                 f"{results['steps']}: it is much slower, and its last loss is at an earlier step)")
  return '\n'.join(lines)


def command_line(argv, command=_COMMAND):
  """The shell command that reproduces this run, from the process's arguments."""
  return ' '.join([command] + [shlex.quote(arg) for arg in argv[1:]])


def write_results(path, results):
  """Writes a benchmark's results as JSON to `path` (nothing when `path` is empty)."""
  if path:
    with open(path, 'w') as f:
      f.write(json.dumps(results, indent=2) + '\n')


def _define_flags():
  """Defines the command-line flags; only when run as a program, so importing defines none."""
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file(
          'config', _DEFAULT_CONFIG, 'Experiment config file (a Python file with get_config()); '
          'any field can be overridden, e.g. --config.engine.name=default '
          '--config.engine.num_replicas=1. The benchmark ignores config.loop, the run length and '
          'the eval, checkpoint and export settings.', lock_config=True),
      steps=flags.DEFINE_integer(
          'steps', 200, 'Measured optimizer steps per loop and repeat, after the warm-up (a '
          'multiple of config.train.steps_per_loop).'),
      warmup_steps=flags.DEFINE_integer(
          'warmup_steps', 50, 'Warm-up steps before the clock starts (tracing, first calls): a '
          'positive multiple of config.train.steps_per_loop.'),
      eager_steps=flags.DEFINE_integer(
          'eager_steps', None, 'Measured steps of the eager loop, which is slow (a multiple of '
          'config.train.steps_per_loop). Default: a quarter of --steps, at least steps_per_loop.'),
      repeats=flags.DEFINE_integer(
          'repeats', 3, 'Times each loop is measured, each with a fresh model; the table reports '
          'the median and the min-max.'),
      loops=flags.DEFINE_list(
          'loops', 'fit,custom,eager', 'Loops to measure, among fit, custom and eager, in this '
          'order within each repeat.'),
      json_out=flags.DEFINE_string('json_out', None, 'Optional path of a JSON file for the '
                                   'results.'))


def main(argv, flag_values):
  """Validates config and flags, prints the command, runs the benchmark and prints the table.

  Args:
    argv: the arguments left by absl (the program name only).
    flag_values: the namespace of `_define_flags`.
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  config = flag_values.config.value
  try:
    validate_config(config)
    plan = make_plan(config, flag_values.loops.value, flag_values.steps.value,
                     flag_values.warmup_steps.value, flag_values.eager_steps.value,
                     flag_values.repeats.value)
  except ValueError as e:  # validation.ConfigError is a ValueError.
    print(e, file=sys.stderr)
    sys.exit(2)
  command = command_line(sys.argv)
  print(f'Command: {command}', flush=True)
  experiment.quiet_tensorflow_logs()
  results = dict(run_benchmark(config, plan), command=command)
  print(format_report(results).split('\n', 1)[1], flush=True)  # The command is printed already.
  write_results(flag_values.json_out.value, results)


def run():
  """Program entry point: defines the flags, then runs `main` under absl."""
  flag_values = _define_flags()
  app.run(functools.partial(main, flag_values=flag_values))


if __name__ == '__main__':
  run()
