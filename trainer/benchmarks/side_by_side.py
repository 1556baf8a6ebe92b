"""What two pinned training processes lose by running side by side, with nothing shared between.

    python -m trainer.benchmarks.side_by_side [--config=configs/default.py]
        [--config.FIELD=VALUE ...] [--rounds=10] [--phase_steps=100] [--warmup_steps=50]
        [--cpus=0,1] [--json_out=PATH]

The weak-scaling efficiency of 2 pinned workers (`launch.sweep`) is the 2-worker images/s over
twice the 1-worker images/s. Two things can hold it below 1: the gradient communication (and the
waiting for the slower peer it implies), and the machine itself: two cores busy at once may each
run slower than one core alone (shared caches, memory bandwidth, the hypervisor's placement of a
VM's vCPUs). This benchmark measures the second alone, i.e. the ceiling of weak scaling on this
machine for this step, whatever the engine does.

Two worker processes, each pinned to its own CPU (`--cpus`, one intra-op and one inter-op thread,
as the sweep's one-core workers), each train their own model with the `default` engine (no
strategy, no communication) and `config.loop`. Each stays alive for the whole benchmark and traces
its step once. After `--warmup_steps`, they run phases of `--phase_steps` steps on the parent's
command: `together` (both run), `alone 0` (worker 0 runs, worker 1 waits idle) and `alone 1`. A
round is one phase of each kind, in an order that rotates between rounds. A worker's ratio in a
round is its images/s together / its images/s alone in the same round; the round's figure is the
mean of the two workers' ratios, and the report gives the median over rounds with the min-max.

So each figure compares the same process, the same traced step and the same data with itself,
seconds apart: unlike separate runs, which on a shared VM differ by 10-20% from process to process.
What the `together` phase includes beyond the steps: the two workers start on commands sent a few
microseconds apart, and the faster one finishes first and leaves its peer the machine for the last
moments of the phase; both make the ratio slightly higher than two workers in lockstep would see.
"""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import dataclasses
import functools
import multiprocessing
import os
import queue
import statistics
import sys
import time
import traceback
import types

from absl import app
from absl import flags
from ml_collections import config_flags
import tensorflow as tf

from input_pipeline import datasets
from input_pipeline import sources
from trainer import engines
from trainer import experiment
from trainer.benchmarks import engines as engines_bench
from trainer.benchmarks import loops as loops_bench
from trainer.benchmarks import strategy_overhead

_COMMAND = 'python -m trainer.benchmarks.side_by_side'
TOGETHER = 'together'
PHASES = (TOGETHER, 'alone 0', 'alone 1')
_RUN, _REPORT_TIMEOUT_SECONDS = 'run', 5


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to measure (see the command-line flags)."""
  rounds: int
  phase_steps: int
  warmup_steps: int
  cpus: tuple
  timeout_seconds: float = 3600.0

  def steps_per_worker(self):
    """Steps each worker runs: the warm-up, then per round one `together` and one `alone` phase."""
    return self.warmup_steps + self.rounds * 2 * self.phase_steps


def phase_workers(phase):
  """The workers that run in `phase`: both for `together`, else the one named."""
  return (0, 1) if phase == TOGETHER else (int(phase.split()[-1]),)


def phase_order(round_index):
  """The phases of round `round_index`, rotated by one each round."""
  shift = round_index % len(PHASES)
  return PHASES[shift:] + PHASES[:shift]


def benchmark_config(config):
  """`config` on the `default` engine (one device, no strategy, nothing communicated)."""
  return engines_bench.with_engine(config, 'default', 1)


def make_plan(config, rounds, phase_steps, warmup_steps, cpus, usable_cpus):
  """Checks the flags against `config` and the CPUs this process may use; returns a `Plan`.

  Raises:
    ValueError: listing every invalid flag, with its value and what is allowed.
  """
  problems = loops_bench.window_problems(config, phase_steps=phase_steps,
                                         warmup_steps=warmup_steps)
  if rounds <= 0:
    problems.append(f'--rounds={rounds}: must be positive')
  cpus = tuple(cpus)
  if len(cpus) != 2 or len(set(cpus)) != 2 or not set(cpus) <= set(usable_cpus):
    problems.append(f'--cpus={",".join(map(str, cpus))}: give 2 different CPUs among those this '
                    f'process may use, {sorted(usable_cpus)}')
  if problems:
    raise ValueError('Invalid benchmark flags:\n  ' + '\n  '.join(problems))
  return Plan(rounds, phase_steps, warmup_steps, cpus)


class PhaseController:
  """The loops' Controller interface, driven by the parent: each phase waits for its command.

  At the end of the warm-up and of every phase of `plan.phase_steps` steps the worker reports to
  the parent (the phase's wall and CPU seconds) and, unless it has run all its steps, waits for the
  command that starts its next phase; while it waits it uses no CPU.
  """

  def __init__(self, index, plan, commands, reports):
    self.step = 0
    self.total_steps = plan.steps_per_worker()
    self.index = index
    self.plan = plan
    self.commands = commands
    self.reports = reports
    self.start = None  # (wall, CPU) seconds at the start of the running phase

  def end_of_loop(self, step, train_metrics, seconds, evaluate):
    """Ends a phase when `step` completes one (arguments as `Controller.end_of_loop`)."""
    del seconds, evaluate
    self.step = step
    if step < self.plan.warmup_steps or (step - self.plan.warmup_steps) % self.plan.phase_steps:
      return
    wall, cpu = time.perf_counter(), time.process_time()
    if self.start is None:
      self.reports.put(('ready', self.index, None))
    else:
      self.reports.put(('phase', self.index, {
          'seconds': wall - self.start[0],
          'cpu_busy': (cpu - self.start[1]) / (wall - self.start[0]),
          'train_loss': train_metrics.get('train_loss')}))
    if step < self.total_steps:
      self.commands.get()
      self.start = (time.perf_counter(), time.process_time())

  def finish(self, evaluate):
    """Called by the loops at the end; nothing is evaluated."""
    del evaluate


def run_worker(index, config, plan, commands, reports):
  """One worker process: pins itself, trains under a `PhaseController`, reports any error."""
  try:
    strategy_overhead.pin_to_cpu(plan.cpus[index])
    experiment.quiet_tensorflow_logs()
    engine = engines.create_engine(config.engine)
    source = sources.create_source(config.data, config.seed)
    controller = PhaseController(index, plan, commands, reports)
    loops_bench.train_fresh_model(config.loop, config, engine, source, controller,
                                  plan.steps_per_worker())
  except BaseException:  # Reported to the parent, which stops the benchmark with it.
    reports.put(('error', index, traceback.format_exc()))
    raise


def _collect(reports, processes, kind, count, timeout_seconds):
  """The next `count` reports of `kind` (worker -> payload); raises if a worker fails or dies."""
  received = {}
  deadline = time.monotonic() + timeout_seconds
  while len(received) < count:
    try:
      got, index, payload = reports.get(timeout=_REPORT_TIMEOUT_SECONDS)
    except queue.Empty:
      dead = [f'worker {i} (exit code {p.exitcode})' for i, p in enumerate(processes)
              if not p.is_alive()]
      if dead or time.monotonic() > deadline:
        reason = ', '.join(dead) + ' ended' if dead else f'no report in {timeout_seconds:.0f} s'
        raise RuntimeError(f'side_by_side: waiting for {kind!r}: {reason}')
      continue
    if got == 'error':
      raise RuntimeError(f'side_by_side: worker {index} failed:\n{payload}')
    if got != kind:
      raise RuntimeError(f'side_by_side: expected {kind!r} from worker {index}, got {got!r}')
    received[index] = payload
  return received


def add_ratios(round_result):
  """Adds a round's paired ratios: per worker together / alone, and their mean (`ratio`)."""
  phases = round_result['phases']
  round_result['ratios'] = [
      phases[TOGETHER][w]['images_per_second'] / phases[f'alone {w}'][w]['images_per_second']
      for w in (0, 1)]
  round_result['ratio'] = statistics.mean(round_result['ratios'])
  return round_result


def summarize(rounds):
  """The median over `rounds` (each with `add_ratios`) of the ratio, its min-max, per-worker rates.

  Args:
    rounds: per round, {'order', 'phases': {phase: {worker: {'images_per_second', 'cpu_busy'}}},
      'ratios', 'ratio'}.
  """
  ratios = [r['ratio'] for r in rounds]

  def median_of(phase, worker, key):
    return statistics.median(r['phases'][phase][worker][key] for r in rounds)

  return {
      'ratio': statistics.median(ratios), 'min': min(ratios), 'max': max(ratios),
      'workers': [{
          'alone_images_per_second': median_of(f'alone {w}', w, 'images_per_second'),
          'together_images_per_second': median_of(TOGETHER, w, 'images_per_second'),
          'alone_cpu_busy': median_of(f'alone {w}', w, 'cpu_busy'),
          'together_cpu_busy': median_of(TOGETHER, w, 'cpu_busy'),
      } for w in (0, 1)]}


def run_benchmark(config, plan, log=print):
  """Starts the two workers, runs every round's phases and returns the JSON-serializable results."""
  context = multiprocessing.get_context('spawn')  # Fresh processes: TensorFlow is not fork-safe.
  commands = [context.SimpleQueue() for _ in range(2)]
  reports = context.Queue()
  processes = [context.Process(target=run_worker, args=(i, config, plan, commands[i], reports),
                               name=f'side_by_side-{i}', daemon=True) for i in range(2)]
  for process in processes:
    process.start()
  batch = datasets.examples_per_step(config)
  rounds = []
  try:
    _collect(reports, processes, 'ready', 2, plan.timeout_seconds)
    for round_index in range(plan.rounds):
      order = phase_order(round_index)
      phases = {}
      for phase in order:
        workers = phase_workers(phase)
        for w in workers:
          commands[w].put(_RUN)
        measured = _collect(reports, processes, 'phase', len(workers), plan.timeout_seconds)
        for m in measured.values():
          m['images_per_second'] = plan.phase_steps * batch / m['seconds']
        phases[phase] = measured
      r = add_ratios({'order': list(order), 'phases': phases})
      rounds.append(r)
      log(f"round {round_index + 1}/{plan.rounds}: together / alone = "
          f"{r['ratios'][0]:.3f} (worker 0), {r['ratios'][1]:.3f} (worker 1); "
          f"mean {r['ratio']:.3f}")
    for i, process in enumerate(processes):  # Each has run its last step; it only exits.
      process.join(timeout=60)
      if process.exitcode != 0:
        raise RuntimeError(f'side_by_side: worker {i} ended with exit code {process.exitcode} '
                           'after its last phase')
  finally:
    for process in processes:  # After a failure the other worker may wait for a command.
      if process.is_alive():
        process.kill()
  return {'config': {'model': config.model.name, 'loop': config.loop,
                     'global_batch_size': config.train.global_batch_size,
                     'steps_per_loop': config.train.steps_per_loop,
                     'data_source': config.data.source, 'malloc': config.engine.malloc,
                     'tensorflow': tf.__version__},
          'cpus': list(plan.cpus), 'rounds_run': plan.rounds, 'phase_steps': plan.phase_steps,
          'warmup_steps': plan.warmup_steps, 'summary': summarize(rounds), 'rounds': rounds}


def format_report(results):
  """The text table of `run_benchmark`'s results."""
  c, s = results['config'], results['summary']
  lines = [
      f"Model {c['model']} | loop {c['loop']} | batch {c['global_batch_size']} per worker | "
      f"steps_per_loop {c['steps_per_loop']} | data {c['data_source']} | engine default | "
      f"CPUs {results['cpus']} (1 per worker, 1 thread) | TensorFlow {c['tensorflow']}",
      f"{results['rounds_run']} rounds of 3 phases ({', '.join(PHASES)}) of "
      f"{results['phase_steps']} steps after {results['warmup_steps']} warm-up steps; medians "
      'over rounds.',
      '',
      f"{'worker':<8}{'cpu':>4}{'alone img/s':>13}{'together img/s':>16}{'cpu busy alone':>16}"
      f"{'together':>10}",
  ]
  for w, r in enumerate(s['workers']):
    lines.append(f"{w:<8}{results['cpus'][w]:>4}{r['alone_images_per_second']:>13.0f}"
                 f"{r['together_images_per_second']:>16.0f}{r['alone_cpu_busy']:>16.2f}"
                 f"{r['together_cpu_busy']:>10.2f}")
  lines += ['', f"side-by-side ratio (together / alone, paired per round): {s['ratio']:.3f} "
                f"[{s['min']:.3f}-{s['max']:.3f}]",
            'This is the most 2-worker weak scaling can reach on these CPUs for this step with '
            'perfect, free communication.']
  return '\n'.join(lines)


def _define_flags():
  """Defines the command-line flags; only when run as a program, so importing defines none."""
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file(
          'config', 'configs/default.py', 'Experiment config file; any field can be overridden, '
          'e.g. --config.train.global_batch_size=256 (per worker) or --config.loop=fit. '
          'engine.name and engine.num_replicas are set by the benchmark (default x1); the run '
          'length and eval, checkpoint and export settings are ignored.', lock_config=True),
      rounds=flags.DEFINE_integer('rounds', 10, 'Rounds of the three phases.'),
      phase_steps=flags.DEFINE_integer(
          'phase_steps', 100, 'Steps of each phase (a multiple of config.train.steps_per_loop).'),
      warmup_steps=flags.DEFINE_integer(
          'warmup_steps', 50, 'Steps each worker runs before the first phase, both at once (a '
          'multiple of config.train.steps_per_loop).'),
      cpus=flags.DEFINE_list('cpus', None, 'The two CPUs the workers are pinned to. Default: the '
                             'first two this process may use.'),
      json_out=flags.DEFINE_string('json_out', None, 'Optional path of a JSON file for the '
                                   'results.'))


def main(argv, flag_values):
  """Validates config and flags, runs the benchmark and prints the table."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  f = flag_values
  usable = sorted(os.sched_getaffinity(0))
  try:
    config = benchmark_config(f.config.value)
    loops_bench.validate_config(config)  # config.loop: 'custom' or 'fit'.
    try:
      cpus = [int(c) for c in f.cpus.value] if f.cpus.value else usable[:2]
    except ValueError:
      raise ValueError(f'--cpus={",".join(f.cpus.value)}: give 2 CPU numbers') from None
    plan = make_plan(config, f.rounds.value, f.phase_steps.value, f.warmup_steps.value, cpus,
                     usable)
  except ValueError as e:  # validation.ConfigError is a ValueError.
    print(e, file=sys.stderr)
    sys.exit(2)
  command = loops_bench.command_line(sys.argv, _COMMAND)
  print(f'Command: {command}', flush=True)
  results = dict(run_benchmark(config, plan, log=functools.partial(print, flush=True)),
                 command=command)
  print(format_report(results), flush=True)
  loops_bench.write_results(f.json_out.value, results)


def run():
  """Program entry point: defines the flags, then runs `main` under absl."""
  flag_values = _define_flags()
  app.run(functools.partial(main, flag_values=flag_values))


if __name__ == '__main__':
  run()
