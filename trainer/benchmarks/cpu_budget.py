"""Images/s of N local workers with and without Convoy's per-process CPU budget, in one run.

    python -m trainer.benchmarks.cpu_budget [--engines=multi_worker,horovod] [--num_workers=2]
        [--steps=300] [--repeats=3] [--json_out=PATH] [-- TRAINER_ARGS...]

Each measurement is a real training run started as users start one (`python -m launch.local
--engine=E --num_workers=N -- ...`, not pinned), once with `--config.engine.cpu_budget=auto` (each
process sizes TensorFlow's intra-op, inter-op and tf.data pools from its share of the cores, see
trainer/cpu_budget.py) and once with `off` (TensorFlow's defaults: every process sizes its pools
for the whole machine). The figure is the run's own `images_per_second` from summary.json (median
over the windows after the first), so start-up and tracing are not counted. The two settings
alternate within each repeat, in swapped order on odd repeats; the table reports the median and
the range of the repeats, and the ratio budget / no budget of the medians.
"""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

from trainer.benchmarks import loops as loops_bench

_MODULE = 'trainer.benchmarks.cpu_budget'
SETTINGS = ('auto', 'off')
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A longer default run than the tests', with few interruptions (eval and checkpoints at the end).
_RUN_ARGS = ('--config.train.steps_per_loop=25', '--config.train.log_every_steps=100',
             '--config.train.export=False')


def run_once(engine, num_workers, setting, steps, trainer_args, timeout_seconds=900):
  """One training run of `num_workers` local workers; returns its summary dict.

  Raises:
    RuntimeError: with the end of the run's output if it fails.
  """
  with tempfile.TemporaryDirectory() as workdir:
    args = [sys.executable, '-m', 'launch.local', f'--engine={engine}',
            f'--num_workers={num_workers}', '--', f'--workdir={workdir}', *_RUN_ARGS,
            f'--config.train.num_train_steps={steps}', f'--config.train.eval_every_steps={steps}',
            f'--config.train.checkpoint_every_steps={steps}',
            f'--config.engine.cpu_budget={setting}', *trainer_args]
    proc = subprocess.run(args, cwd=_REPO, capture_output=True, text=True, check=False,
                          timeout=timeout_seconds)
    if proc.returncode:
      raise RuntimeError(f'{engine} x{num_workers} cpu_budget={setting} failed '
                         f'({proc.returncode}): {proc.stderr[-2000:]}')
    with open(os.path.join(workdir, 'summary.json')) as f:
      return json.load(f)


def measure(engines, num_workers, steps, repeats, trainer_args):
  """{engine: {setting: {'runs': [images/s...], 'images_per_second', 'min', 'max', 'threads'}}}."""
  results = {}
  for engine in engines:
    runs = {setting: [] for setting in SETTINGS}
    threads = {}
    for repeat in range(repeats):
      order = SETTINGS if repeat % 2 == 0 else SETTINGS[::-1]
      for setting in order:
        summary = run_once(engine, num_workers, setting, steps, trainer_args)
        runs[setting].append(summary['images_per_second'])
        threads[setting] = summary['cpu_budget']
        print(f'  {engine} cpu_budget={setting} repeat {repeat + 1}/{repeats}: '
              f'{summary["images_per_second"]:.0f} images/s', flush=True)
    results[engine] = {
        setting: {'runs': values, 'images_per_second': statistics.median(values),
                  'min': min(values), 'max': max(values), 'budget': threads[setting]}
        for setting, values in runs.items()}
    results[engine]['ratio'] = (results[engine]['auto']['images_per_second'] /
                                results[engine]['off']['images_per_second'])
  return results


def _threads(budget):
  if not budget['intra_op_threads']:
    return 'TensorFlow defaults'
  return (f"{budget['cores']} core(s): intra {budget['intra_op_threads']}, inter "
          f"{budget['inter_op_threads']}, tf.data {budget['tf_data_threads']}")


def format_report(results, num_workers, steps, repeats):
  """The results as a text table."""
  lines = [f'{num_workers} local workers (not pinned) on {os.cpu_count()} CPU(s), {steps} steps '
           f'per run, {repeats} repeat(s); images/s of the whole job (median [min-max])',
           f"{'engine':<14}{'cpu_budget':<12}{'images/s':>9}  {'min-max':<12}threads per process"]
  for engine, by_setting in results.items():
    for setting in SETTINGS:
      r = by_setting[setting]
      spread = f"{r['min']:.0f}-{r['max']:.0f}"
      lines.append(f"{engine:<14}{setting:<12}{r['images_per_second']:>9.0f}  {spread:<12}"
                   f"{_threads(r['budget'])}")
    lines.append(f"{engine:<14}{'auto / off':<12}{by_setting['ratio']:>9.2f}x")
  return '\n'.join(lines)


def main(argv):
  """Runs the benchmark; argv after `--` goes to every trainer."""
  trainer_args = argv[1:]
  if trainer_args and trainer_args[0] == '--':
    trainer_args = trainer_args[1:]
  engines = [e for e in FLAGS.engines if e]
  unknown = sorted(set(engines) - {'multi_worker', 'horovod'})
  if unknown or not engines:
    raise app.UsageError(f'--engines={",".join(FLAGS.engines)}: must list multi_worker and/or '
                         'horovod')
  for name in ('num_workers', 'steps', 'repeats'):
    if getattr(FLAGS, name) < 1:
      raise app.UsageError(f'--{name}={getattr(FLAGS, name)}: must be a positive integer')
  print(f'Command: {loops_bench.command_line(sys.argv, f"python -m {_MODULE}")}', flush=True)
  results = measure(engines, FLAGS.num_workers, FLAGS.steps, FLAGS.repeats, trainer_args)
  print(format_report(results, FLAGS.num_workers, FLAGS.steps, FLAGS.repeats))
  loops_bench.write_results(FLAGS.json_out, {'num_workers': FLAGS.num_workers,
                                             'steps': FLAGS.steps, 'repeats': FLAGS.repeats,
                                             'trainer_args': trainer_args, 'engines': results})


FLAGS = flags.FLAGS


def run():
  """Console entry point: defines the flags, then runs `main`."""
  flags.DEFINE_list('engines', ['multi_worker', 'horovod'], 'Engines to measure (multi_worker, '
                    'horovod).')
  flags.DEFINE_integer('num_workers', 2, 'Local worker processes of each run.')
  flags.DEFINE_integer('steps', 300, 'Training steps per run (images/s is the median over the '
                       'windows after the first).')
  flags.DEFINE_integer('repeats', 3, 'Runs of each setting, alternated.')
  flags.DEFINE_string('json_out', None, 'Optional path of a JSON file for the results.')
  app.run(main)


if __name__ == '__main__':
  run()
