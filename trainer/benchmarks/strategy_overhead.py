"""What MirroredStrategy costs with one replica: its images/s against no strategy, both loops.

    python -m trainer.benchmarks.strategy_overhead [--config=configs/default.py]
        [--config.FIELD=VALUE ...] [--loops=custom,fit] [--steps=500] [--warmup_steps=50]
        [--repeats=8] [--cpu=0] [--json_out=PATH]

One process, pinned to one CPU (`--cpu`, with one intra-op and one inter-op thread, as a 1-replica
run of `launch.sweep` is), creates two engines: `default` (TensorFlow's default strategy: no
distribution code at all) and `mirrored` with one replica (MirroredStrategy over one device: its
distributed dataset, `strategy.run`, mirrored variables and cross-replica merge). Each repeat
trains a fresh model with each loop on each engine (`trainer.benchmarks.loops.measure_loop`, the
real loops), the two engines back to back in an order that alternates between repeats. The figure
is the median over repeats of the *paired* ratio mirrored / default of the same repeat and loop, so
slow phases of a shared machine, which hit both members of a pair alike, cancel out; the min-max of
the paired ratios shows the noise.

Separate processes (as `launch.sweep` measures each run) differ by 10-20% from run to run on a
shared 2-core VM, more than the overhead measured here; that is why this comparison has its own
command.
"""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import copy
import functools
import os
import statistics
import sys
import types

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf

from input_pipeline import sources
from trainer import engines
from trainer import experiment
from trainer.benchmarks import loops as loops_bench

_COMMAND = 'python -m trainer.benchmarks.strategy_overhead'
ENGINES = ('default', 'mirrored')
TARGET = 0.95  # mirrored x1 should keep at least this share of the default engine's images/s.


def engine_configs(config):
  """The experiment config of each engine of the comparison: same run, one replica each."""
  configs = {}
  for name in ENGINES:
    configs[name] = copy.deepcopy(config)
    configs[name].engine.name = name
    configs[name].engine.num_replicas = 1
  return configs


def pin_to_cpu(cpu):
  """Pins this process to `cpu` with one intra-op and one inter-op thread (before TF starts)."""
  usable = sorted(os.sched_getaffinity(0))
  if cpu not in usable:
    raise ValueError(f'--cpu={cpu}: this process may use CPUs {usable} only')
  os.sched_setaffinity(0, {cpu})
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)


def run_benchmark(config, plan):
  """Measures both engines with every loop of `plan`, `plan.repeats` times, in pairs.

  Returns:
    A JSON-serializable dict: `config` (model, batch, source, `malloc`), the plan's fields, and
    `loops`: per loop, per engine the `runs` (images/s per repeat), their median and the median
    `page_faults_per_step` (`StopwatchController.cpu_use`), and `ratios` (paired mirrored /
    default per repeat), `ratio` (their median), `min`, `max`, and `target`.
  """
  configs = engine_configs(config)
  # Engines first: logical devices must be configured before any other TensorFlow op.
  created = {name: engines.create_engine(c.engine) for name, c in configs.items()}
  source = sources.create_source(config.data, config.seed)
  runs = {loop: {name: [] for name in ENGINES} for loop in plan.loops}
  faults = {loop: {name: [] for name in ENGINES} for loop in plan.loops}
  for repeat in range(plan.repeats):
    order = ENGINES if repeat % 2 == 0 else ENGINES[::-1]
    for loop in plan.loops:
      for name in order:
        measured = loops_bench.measure_loop(loop, configs[name], created[name], source, plan)
        runs[loop][name].append(measured.images_per_second)
        faults[loop][name].append(measured.cpu_use['page_faults_per_step'])
        logging.info('repeat %d/%d %-6s %-8s %.0f images/s', repeat + 1, plan.repeats, loop, name,
                     measured.images_per_second)
  results = {}
  for loop, by_engine in runs.items():
    ratios = [m / d for m, d in zip(by_engine['mirrored'], by_engine['default'])]
    results[loop] = {
        **{name: {'runs': rates, 'images_per_second': statistics.median(rates),
                  'page_faults_per_step': statistics.median(faults[loop][name])}
           for name, rates in by_engine.items()},
        'ratios': ratios, 'ratio': statistics.median(ratios), 'min': min(ratios),
        'max': max(ratios), 'target': TARGET}
  return {'config': {'model': config.model.name, 'global_batch_size': config.train.global_batch_size,
                     'steps_per_loop': config.train.steps_per_loop,
                     'data_source': config.data.source, 'malloc': config.engine.malloc,
                     'tensorflow': tf.__version__,
                     'devices': {name: list(e.devices) for name, e in created.items()}},
          'steps': plan.steps, 'warmup_steps': plan.warmup_steps, 'repeats': plan.repeats,
          'cpus': sorted(os.sched_getaffinity(0)), 'loops': results}


def format_report(results):
  """The text table of `run_benchmark`'s results."""
  c = results['config']
  lines = [
      f"Model {c['model']} | batch {c['global_batch_size']} | steps_per_loop "
      f"{c['steps_per_loop']} | data {c['data_source']} | malloc {c['malloc']} | "
      f"CPU {results['cpus']} (1 thread) | TensorFlow {c['tensorflow']}",
      f"{results['repeats']} paired repeats of {results['warmup_steps']} warm-up + "
      f"{results['steps']} measured steps per engine and loop; images/s and page faults per "
      'step are medians.',
      '',
      f"{'loop':<8}{'default':>10}{'mirrored x1':>13}  {'paired ratio [min-max]':<24}{'target':>8}"
      f"{'result':>8}{'faults/step default':>21}{'mirrored':>10}",
  ]
  for loop, r in results['loops'].items():
    spread = f"{r['ratio']:.3f} [{r['min']:.2f}-{r['max']:.2f}]"
    verdict = 'pass' if r['ratio'] >= r['target'] else 'FAIL'
    lines.append(f"{loop:<8}{r['default']['images_per_second']:>10.0f}"
                 f"{r['mirrored']['images_per_second']:>13.0f}  {spread:<24}"
                 f"{'>= ' + format(r['target'], '.2f'):>8}{verdict:>8}"
                 f"{r['default']['page_faults_per_step']:>21.0f}"
                 f"{r['mirrored']['page_faults_per_step']:>10.0f}")
  return '\n'.join(lines)


def _define_flags():
  """Defines the command-line flags; only when run as a program, so importing defines none."""
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file(
          'config', 'configs/default.py', 'Experiment config file; any field can be overridden, '
          'e.g. --config.train.global_batch_size=256. engine.name and engine.num_replicas are set '
          'by the benchmark; the run length and eval, checkpoint and export settings are ignored.',
          lock_config=True),
      loops=flags.DEFINE_list('loops', 'custom,fit', 'Loops to measure: custom and/or fit.'),
      steps=flags.DEFINE_integer(
          'steps', 500, 'Measured steps per engine, loop and repeat (a multiple of '
          'config.train.steps_per_loop).'),
      warmup_steps=flags.DEFINE_integer(
          'warmup_steps', 50, 'Steps before the clock starts (a multiple of steps_per_loop).'),
      repeats=flags.DEFINE_integer('repeats', 8, 'Paired measurements per loop.'),
      cpu=flags.DEFINE_integer('cpu', 0, 'The CPU this process is pinned to.'),
      json_out=flags.DEFINE_string('json_out', None, 'Optional path of a JSON file for the '
                                   'results.'))


def main(argv, flag_values):
  """Validates config and flags, pins the process, runs the benchmark and prints the table."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  f = flag_values
  config = f.config.value
  try:
    if set(f.loops.value) - {'custom', 'fit'}:
      raise ValueError(f'--loops={",".join(f.loops.value)}: choose among custom and fit')
    for c in engine_configs(config).values():
      loops_bench.validate_config(c)
    plan = loops_bench.make_plan(config, f.loops.value, f.steps.value, f.warmup_steps.value,
                                 None, f.repeats.value)
    pin_to_cpu(f.cpu.value)
  except ValueError as e:  # validation.ConfigError is a ValueError.
    print(e, file=sys.stderr)
    sys.exit(2)
  command = loops_bench.command_line(sys.argv, _COMMAND)
  print(f'Command: {command}', flush=True)
  experiment.quiet_tensorflow_logs()
  results = dict(run_benchmark(config, plan), command=command)
  print(format_report(results), flush=True)
  loops_bench.write_results(f.json_out.value, results)


def run():
  """Program entry point: defines the flags, then runs `main` under absl."""
  flag_values = _define_flags()
  app.run(functools.partial(main, flag_values=flag_values))


if __name__ == '__main__':
  run()
