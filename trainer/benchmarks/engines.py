"""Images/s of Convoy's model on every engine in one run, and the share of gradient all-reduce.

    python -m trainer.benchmarks.engines [--config=configs/default.py] [--config.FIELD=VALUE ...]
        [--engines=default,mirrored,multi_worker,horovod] [--num_workers=2] [--pin_cpus]
        [--steps=200] [--warmup_steps=50] [--repeats=3] [--timeout_seconds=0] [--json_out=PATH]

One command runs each engine in turn on the same model, data and global batch, with the trainer's
own custom loop (`trainer.loops.custom_loop`, timed by `trainer.benchmarks.loops`' stopwatch):

* `default`: 1 process, 1 replica (no communication at all: the control row);
* `mirrored`: 1 process, `--num_workers` replicas (MirroredStrategy on logical CPU devices);
* `multi_worker`: `--num_workers` processes with TF_CONFIG (MultiWorkerMirroredStrategy);
* `horovod`: `--num_workers` ranks under `horovodrun --gloo`.

Every engine runs in fresh processes (a TensorFlow runtime serves one strategy: logical devices and
collectives are fixed at start-up), started as `launch.local` starts trainers, but running this
module with the internal `--worker` flag. Each worker writes its measurements to a JSON file; this
process (the chief of the run) collects them and prints the table. `config.engine.name` and
`config.engine.num_replicas` are set per engine; `config.loop` is ignored (always the custom loop).

What is measured, per engine and repeat (each time a fresh model from the same seed):

* images/s: `--warmup_steps` + `--steps` steps of the full distributed step; the clock runs from the
  end of the warm-up to the end of the last window (see `trainer.benchmarks.loops`);
* the same steps with gradient communication removed (`NoGradientCommunication`): the engine's
  `reduce_gradients` is the identity and the optimizer applies each replica's own gradient
  (`apply_gradients(..., skip_gradients_aggregation=True)`). Everything else is the same step: the
  forward and backward passes, the update, the metrics and the per-window metric reduction.
  comm ms = step ms - step ms without communication; comm share = comm ms / step ms, clamped to
  [0, 1] (the raw value is reported too: noise can make it negative);
* all-reduce ms: one all-reduce of a buffer shaped like the gradients, timed alone, through the
  same calls as the step (`engine.reduce_gradients`, then the optimizer's `aggregate_gradients`),
  minus the time to fill the buffer.

The full and communication-free runs alternate within each repeat (in swapped order on odd
repeats). Engines are not interleaved (each needs its own processes), so the machine's load is
printed for each of them.

On a machine without accelerators, logical devices and local processes share the same cores: the
"communication" time also contains waiting for the slower peer and the cost of sharing the CPU, and
without `--pin_cpus` each process sizes its thread pools for the whole machine. With `--pin_cpus`
each replica gets its own core(s) (`launch.local.cpu_shares`) and TensorFlow runs 1 intra-op
thread per process and 1 inter-op thread per local replica, so `default` runs on one core and the
2-replica engines on two: a fair 1 vs N comparison.
"""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import dataclasses
import functools
import glob
import json
import os
import statistics
import sys
import tempfile
import time
import types

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf

from configs import validation
from input_pipeline import sources
from launch import local
from trainer import engines
from trainer import experiment
from trainer.benchmarks import loops as bench

_MODULE = 'trainer.benchmarks.engines'
_COMMAND = f'python -m {_MODULE}'
_DEFAULT_CONFIG = 'configs/default.py'
DEFAULT_ENGINES = ('default', 'mirrored', 'multi_worker', 'horovod')
USAGE_ERROR = 2  # Bad flags or config: nothing was run.
STARTUP_ERROR = 3  # A worker's engine could not start (as trainer.train).
FAILED = 1  # At least one engine failed; the others are still reported.


# ---------------------------------------------------------------------------------------------
# Engines without gradient communication (worker side).


class _UnaggregatedOptimizer:
  """An optimizer that applies each replica's gradients as they are, without cross-replica sum.

  Everything but `apply_gradients` is the wrapped optimizer's (slots, step counter, schedule).
  """

  def __init__(self, optimizer):
    self._optimizer = optimizer

  def __getattr__(self, name):
    return getattr(self._optimizer, name)

  def apply_gradients(self, grads_and_vars, name=None):
    """tf-keras's `apply_gradients` with `skip_gradients_aggregation=True`."""
    return self._optimizer.apply_gradients(grads_and_vars, name=name,
                                           skip_gradients_aggregation=True)


class NoGradientCommunication:
  """A view of an Engine whose train step exchanges no gradients; everything else is delegated.

  `reduce_gradients` (Horovod's grouped all-reduce) becomes the identity, and the optimizer skips
  its cross-replica aggregation (tf.distribute's all-reduce), so each replica applies its own
  gradient: replicas drift apart, which does not matter for timing. Other collectives stay: the
  metric reduction after each window of steps and, with model.batch_norm='sync', the batch-norm
  statistics. Not an `Engine` subclass on purpose: the base class's defaults would hide the
  wrapped engine's methods.
  """

  def __init__(self, engine):
    self._engine = engine

  def __getattr__(self, name):
    return getattr(self._engine, name)

  def reduce_gradients(self, gradients):
    """Replica. The identity: no all-reduce."""
    return gradients

  def prepare_optimizer(self, optimizer):
    """The engine's optimizer, wrapped so that `apply_gradients` does not aggregate."""
    return _UnaggregatedOptimizer(self._engine.prepare_optimizer(optimizer))


# ---------------------------------------------------------------------------------------------
# Measurements (worker side).


def time_loop(loop, iterations):
  """Seconds per iteration of `loop(iterations)`, waiting for its result."""
  start = time.perf_counter()
  loop(tf.constant(iterations)).numpy()
  return (time.perf_counter() - start) / iterations


def gradient_allreduce_loop(engine, model, optimizer, reduce):
  """A tf.function running N times: fill gradient-shaped buffers on every replica, then reduce them.

  The reduction is the step's own: `engine.reduce_gradients`, then the optimizer's
  `aggregate_gradients` (the all-reduce tf.distribute does inside `apply_gradients`). With
  `reduce=False` only the buffers are filled (the baseline to subtract). Iterations run one after
  the other; one element of each result is summed into the output so that nothing is pruned.
  """
  variables = model.trainable_variables

  def replica_fn(value):
    gradients = [tf.fill(tf.shape(v), value) for v in variables]
    if reduce:
      gradients = engine.reduce_gradients(gradients)
      gradients = [g for g, _ in optimizer.aggregate_gradients(list(zip(gradients, variables)))]
    return tf.add_n([tf.reshape(g, [-1])[0] for g in gradients])

  @tf.function
  def loop(iterations):
    total = tf.constant(0.0)
    for i in tf.range(iterations):
      # One all-reduce at a time, as in training (Horovod also refuses two in flight with one name).
      tf.autograph.experimental.set_loop_options(parallel_iterations=1)
      outputs = engine.run(replica_fn, args=(tf.cast(i, tf.float32),))
      total += tf.add_n(list(tf.distribute.get_strategy().experimental_local_results(outputs)))
    return total

  return loop


def time_gradient_allreduce(config, engine, source, plan):
  """Milliseconds of one gradient-sized all-reduce, timed alone (`plan.repeats` x `plan.steps`).

  Returns:
    `parameters` (gradient elements), `allreduce_ms_runs` and `fill_ms_runs` (per iteration, with
    and without the reduction).
  """
  model, optimizer, _ = experiment.create_model_and_optimizer(config, engine, source, plan.steps)
  parameters = sum(int(v.shape.num_elements()) for v in model.trainable_variables)
  with engine.scope():
    loops = {reduce: gradient_allreduce_loop(engine, model, optimizer, reduce)
             for reduce in (True, False)}
    for loop in loops.values():
      time_loop(loop, config.train.steps_per_loop)  # Tracing and first calls.
    runs = {True: [], False: []}
    for _ in range(plan.repeats):
      for reduce, loop in loops.items():
        runs[reduce].append(1000 * time_loop(loop, plan.steps))
  return {'parameters': parameters, 'allreduce_ms_runs': runs[True], 'fill_ms_runs': runs[False]}


def measure_engine(config, engine, source, plan):
  """Measures one engine in this process (every worker of the engine runs this in step).

  Args:
    config: the experiment config, with this engine's `config.engine`.
    engine: the Engine (created first in the process).
    source: the data source.
    plan: a `trainer.benchmarks.loops.Plan` for the custom loop.

  Returns:
    A JSON-serializable dict of this process's raw figures: `full_rates` and `no_comm_rates`
    (images/s per repeat), the `time_gradient_allreduce` figures, `train_loss`, and where it ran.
  """
  variants = {'full': engine, 'no_comm': NoGradientCommunication(engine)}
  rates = {name: [] for name in variants}
  loss = None
  for repeat in range(plan.repeats):
    order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
    for name in order:
      rate, metrics, _ = bench.measure_loop('custom', config, variants[name], source, plan)
      rates[name].append(rate)
      loss = metrics.get('train_loss') if name == 'full' else loss
      if engine.is_chief:
        logging.info('%s repeat %d/%d %-7s %.0f images/s', engine.name, repeat + 1, plan.repeats,
                     name, rate)
  return {'engine': engine.name, 'worker_index': engine.worker_index,
          'num_workers': engine.num_workers, 'num_replicas': engine.num_replicas,
          'devices': list(engine.devices), 'full_rates': rates['full'],
          'no_comm_rates': rates['no_comm'], 'train_loss': loss,
          **time_gradient_allreduce(config, engine, source, plan)}


def configure_threads(pin_cpus, local_replicas):
  """With `pin_cpus`: 1 intra-op thread, and 1 inter-op thread per local replica (before TF starts).

  Returns:
    The thread counts, as a dict for the report (0: TensorFlow's default, sized for the machine).
  """
  if pin_cpus:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(local_replicas)
  return {'intra_op': tf.config.threading.get_intra_op_parallelism_threads(),
          'inter_op': tf.config.threading.get_inter_op_parallelism_threads()}


def versions():
  """Versions of TensorFlow (and Horovod, if imported) in this process."""
  versions = {'tensorflow': tf.__version__}
  if 'horovod' in sys.modules:
    versions['horovod'] = sys.modules['horovod'].__version__
  return versions


def run_worker(config, plan, pin_cpus, result_dir):
  """The `--worker` mode: measures the engine of `config` and writes `{engine}.{index}.json`.

  Args:
    config: the experiment config with this engine's name and replicas.
    plan: the `Plan`.
    pin_cpus: whether the parent pinned this process (sets the thread counts).
    result_dir: where to write this worker's result.
  """
  threads = configure_threads(pin_cpus, config.engine.num_replicas)
  load_start = os.getloadavg()[0]
  # The engine comes first: logical devices and collectives must be set up before other TF ops.
  engine = engines.create_engine(config.engine)
  validation.validate_topology(config, engine.num_replicas)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  source = sources.create_source(config.data, config.seed)
  result = measure_engine(config, engine, source, plan)
  result.update(threads=threads, cpus=sorted(os.sched_getaffinity(0)), versions=versions(),
                load_average={'start': load_start, 'end': os.getloadavg()[0]})
  path = os.path.join(result_dir, f'{engine.name}.{engine.worker_index}.json')
  with open(f'{path}.tmp', 'w') as f:
    f.write(json.dumps(result, indent=2) + '\n')
  os.rename(f'{path}.tmp', path)
  engine.barrier()  # Nobody leaves while a peer may still need it for a collective.


# ---------------------------------------------------------------------------------------------
# Starting the workers (chief side).


def layout(engine_name, num_workers):
  """(processes, replicas per process) of `engine_name` in a run with `num_workers`."""
  return {'default': (1, 1), 'mirrored': (1, num_workers)}.get(engine_name, (num_workers, 1))


def engine_overrides(engine_name, num_workers):
  """The --config.engine.* flags that select `engine_name` with its replicas per process."""
  return [f'--config.engine.name={engine_name}',
          f'--config.engine.num_replicas={layout(engine_name, num_workers)[1]}']


def _run_module(worker, label, module):
  """`worker` (from launch.local) with `-m trainer.train` replaced by `-m module`."""
  argv = list(worker.argv)
  targets = [i for i in range(1, len(argv)) if argv[i - 1:i + 1] == ['-m', 'trainer.train']]
  if len(targets) != 1:
    raise ValueError(f'expected one `-m trainer.train` in the launcher command {argv}')
  argv[targets[0]] = module
  return dataclasses.replace(worker, label=label, argv=argv)


def worker_processes(engine_name, num_workers, args, result_dir, pin_cpus, python=sys.executable,
                     module=_MODULE):
  """The `launch.local.Worker`s that measure `engine_name`.

  Multi-process engines reuse `launch.local`'s TF_CONFIG and horovodrun set-ups (and its CPU
  pinning); single-process engines get the CPUs of the replicas they simulate.

  Args:
    engine_name: one of `DEFAULT_ENGINES`.
    num_workers: workers (or replicas) of the distributed engines.
    args: this command's own arguments, passed on to every worker.
    result_dir: where the workers write their results.
    pin_cpus: whether to pin each replica to its own CPU(s).
    python: the interpreter.
    module: the module the workers run with `--worker` (this one, or another benchmark's).
  """
  worker_args = [*args, '--worker', f'--result_dir={result_dir}', f'--pin_cpus={pin_cpus}',
                 *engine_overrides(engine_name, num_workers)]
  if engine_name == 'multi_worker':
    workers = local.multi_worker_processes(num_workers, worker_args, python=python, pin=pin_cpus)
    return [_run_module(w, f'multi_worker {i}', module) for i, w in enumerate(workers)]
  if engine_name == 'horovod':
    workers = local.horovod_processes(num_workers, worker_args, python=python, pin=pin_cpus)
    return [_run_module(w, 'horovod', module) for w in workers]
  cpus = None
  if pin_cpus:
    shares = local.cpu_shares(num_workers, os.sched_getaffinity(0))
    cpus = sorted(c for share in shares[:layout(engine_name, num_workers)[1]] for c in share)
  return [local.Worker(engine_name, [python, '-m', module, *worker_args], {}, cpus)]


def read_results(result_dir, engine_name):
  """The `{engine_name}.{index}.json` results the workers wrote to `result_dir`, by worker index."""
  results = []
  for path in sorted(glob.glob(os.path.join(result_dir, f'{engine_name}.*.json'))):
    with open(path) as f:
      results.append(json.load(f))
  return sorted(results, key=lambda r: r['worker_index'])


def run_engine(engine_name, num_workers, args, pin_cpus, timeout_seconds=0, module=_MODULE,
               out=None, err=None):
  """Starts the workers of `engine_name`, waits for them and returns their results.

  `launch.local.run` relays their prefixed output (to `out`/`err`, default the console), stops them
  all at the first failure, and after `timeout_seconds` (0: never). `module` is the benchmark the
  workers run (see `worker_processes`).

  Returns:
    (exit code, list of worker results ordered by worker index).
  """
  processes = layout(engine_name, num_workers)[0]
  with tempfile.TemporaryDirectory(prefix=f'convoy-bench-{engine_name}-') as result_dir:
    workers = worker_processes(engine_name, num_workers, args, result_dir, pin_cpus,
                               module=module)
    code = local.run(workers, timeout_seconds, out, err)
    results = read_results(result_dir, engine_name)
  if code == 0 and len(results) != processes:
    print(f'[bench] {engine_name}: {len(results)} of {processes} worker results', file=sys.stderr)
    code = FAILED
  return code, results


# ---------------------------------------------------------------------------------------------
# Figures and report (chief side).


def _spread(values):
  return {'median': statistics.median(values), 'min': min(values), 'max': max(values),
          'runs': values}


def summarize_engine(engine_name, results, global_batch_size):
  """The figures of one engine from its workers' results (the chief's clock, worker 0).

  Returns:
    A dict with `workers`, `replicas`, `images_per_second` (median, min, max, runs over repeats),
    `step_ms` and `no_comm_step_ms` (from the median images/s), `comm_ms`, `comm_share_raw`
    (1 - no-comm step / full step), `comm_share` (clamped to [0, 1]), `allreduce_ms` (median time
    of one gradient all-reduce alone, fill subtracted, raw), `parameters`, the no-comm images/s,
    the last loss, per-worker images/s medians, and where each worker ran.
  """
  chief = results[0]
  rates, no_comm = _spread(chief['full_rates']), _spread(chief['no_comm_rates'])
  step_ms = 1000 * global_batch_size / rates['median']
  no_comm_step_ms = 1000 * global_batch_size / no_comm['median']
  share = 1 - no_comm_step_ms / step_ms
  allreduce_ms = (statistics.median(chief['allreduce_ms_runs']) -
                  statistics.median(chief['fill_ms_runs']))
  return {
      'engine': engine_name, 'workers': chief['num_workers'],
      'replicas': chief['num_replicas'], 'devices': chief['devices'],
      'images_per_second': rates, 'no_comm_images_per_second': no_comm,
      'step_ms': step_ms, 'no_comm_step_ms': no_comm_step_ms, 'comm_ms': step_ms - no_comm_step_ms,
      'comm_share_raw': share, 'comm_share': min(1.0, max(0.0, share)),
      'allreduce_ms': allreduce_ms, 'allreduce_ms_runs': chief['allreduce_ms_runs'],
      'fill_ms_runs': chief['fill_ms_runs'], 'parameters': chief['parameters'],
      'train_loss': chief['train_loss'],
      'worker_images_per_second': [statistics.median(r['full_rates']) for r in results],
      'cpus': [r['cpus'] for r in results], 'threads': chief['threads'],
      'versions': chief['versions'], 'load_average': chief['load_average'],
  }


def describe_config(config):
  """The fields of the run that the figures depend on (the engine varies per row)."""
  data = config.data.source
  if data == 'tfds':
    data = f'tfds {config.data.tfds_name}'
  return {'model': config.model.name, 'global_batch_size': config.train.global_batch_size,
          'steps_per_loop': config.train.steps_per_loop, 'data_source': data,
          'batch_norm': config.model.batch_norm, 'tensorflow': tf.__version__}


def cpu_list(cpus):
  """CPU shares as text: '0,1|2,3'."""
  return '|'.join(','.join(map(str, share)) for share in cpus)


def _row(name, r):
  """One line of the table, for a summary or a failure."""
  if 'error' in r:
    return f"{name:<13}{r['error']}"
  rates = r['images_per_second']
  layout_text = f"{r['workers']} x {r['replicas'] // r['workers']}"
  spread = f"[{rates['min']:.0f}-{rates['max']:.0f}]"
  share = f"{r['comm_share']:.2f} ({r['comm_share_raw']:+.2f})"
  load = f"{r['load_average']['start']:.1f}-{r['load_average']['end']:.1f}"
  return (f"{name:<13}{layout_text:>7}{rates['median']:>10.0f} {spread:<14}{r['step_ms']:>8.2f}"
          f"{r['no_comm_step_ms']:>9.2f}{r['comm_ms']:>9.2f}  {share:<14}{r['allreduce_ms']:>9.3f}"
          f"  {load:<9}  {cpu_list(r['cpus'])}")


def _gradient_size(results):
  sizes = {r['parameters'] for r in results['engines'].values() if 'parameters' in r}
  return ', '.join(f'{n:,} parameters ({4 * n / 1e6:.2f} MB in float32)' for n in sorted(sizes))


def format_report(results):
  """The text table of `run_benchmark`'s results (command line first when present)."""
  c, load = results['config'], results['load_average']
  pinned = ('--pin_cpus: each replica on its own CPU share, 1 intra-op thread per process, 1 '
            'inter-op thread per local replica' if results['pin_cpus'] else
            'not pinned: every process may use every CPU, TensorFlow default thread pools')
  lines = [f"Command: {results['command']}"] if 'command' in results else []
  lines += [
      f"Config: model {c['model']} | global batch {c['global_batch_size']} | steps_per_loop "
      f"{c['steps_per_loop']} | data {c['data_source']} | batch norm {c['batch_norm']} | "
      f"TensorFlow {c['tensorflow']} | gradient {_gradient_size(results)}",
      f"Machine: {results['cpus']} CPU(s), {pinned}; 1-min load average {load['start']:.2f} at "
      f"start, {load['end']:.2f} at end",
      f"Each engine: custom loop, {results['warmup_steps']} warm-up + {results['steps']} measured "
      f"steps, {results['repeats']} repeat(s), fresh model each; images/s median [min-max].",
      '',
      f"{'engine':<13}{'w x r':>7}{'images/s':>10} {'[min-max]':<14}{'step ms':>8}"
      f"{'no-comm':>9}{'comm ms':>9}  {'share (raw)':<14}{'allred ms':>9}  {'load':<9}  cpus",
  ]
  lines += [_row(name, r) for name, r in results['engines'].items()]
  lines += [
      '',
      'w x r: worker processes x replicas per process. no-comm: step ms with gradient all-reduce '
      'removed;',
      'comm ms = step ms - no-comm; share = comm ms / step ms clamped to [0, 1] (raw value in '
      'parentheses).',
      'allred ms: one all-reduce of a gradient-sized buffer alone (engine.reduce_gradients + '
      'optimizer aggregation).',
      'load: 1-min load average when the engine started and ended (its own processes count about '
      '1 each); cpus: each process\'s CPUs.',
      'Logical devices and local processes share this machine\'s cores: "comm" includes waiting '
      'for the slower peer',
      'and CPU contention, not only data movement. default has nothing to reduce: its row shows '
      'the noise level.',
  ]
  return '\n'.join(lines)


def run_benchmark(config, plan, engine_names, num_workers, pin_cpus, args, timeout_seconds=0):
  """Runs every engine in turn in its own processes and collects the figures.

  Args:
    config: the validated experiment config (its engine section is overridden per engine).
    plan: the `Plan` (custom loop only).
    engine_names: engines to measure, in order.
    num_workers: processes of the multi-process engines, replicas of `mirrored`.
    pin_cpus: pin each replica to its own CPU share.
    args: this command's arguments, passed on to the workers.
    timeout_seconds: limit of each engine's run (0: none).

  Returns:
    (exit code, results): 0, or the exit code of the first failed engine (130 after Ctrl-C, which
    stops the run); results are JSON-serializable: `config`, the plan's `steps`, `warmup_steps`,
    `repeats`, `num_workers`, `pin_cpus`, `cpus`, `load_average` and, per engine, the
    `summarize_engine` dict or `{'error': ...}`.
  """
  load_start = os.getloadavg()[0]
  summaries, first_failure = {}, 0
  for name in engine_names:
    print(f'[bench] {name}: {layout(name, num_workers)[0]} process(es)', flush=True)
    code, worker_results = run_engine(name, num_workers, args, pin_cpus, timeout_seconds)
    if code == 0:
      summaries[name] = summarize_engine(name, worker_results, config.train.global_batch_size)
    else:
      summaries[name] = {'error': f'failed (exit code {code}; see its output above)'}
      first_failure = first_failure or code
    if code == 130:
      break
  return first_failure, {
      'config': describe_config(config), 'steps': plan.steps, 'warmup_steps': plan.warmup_steps,
      'repeats': plan.repeats, 'num_workers': num_workers, 'pin_cpus': pin_cpus,
      'cpus': os.cpu_count(), 'load_average': {'start': load_start, 'end': os.getloadavg()[0]},
      'engines': summaries}


# ---------------------------------------------------------------------------------------------
# Command line.


def with_engine(config, engine_name, num_workers):
  """A copy of `config` set up for `engine_name` (as the workers' --config.engine.* flags do)."""
  config = config.copy_and_resolve_references()
  config.engine.name = engine_name
  config.engine.num_replicas = layout(engine_name, num_workers)[1]
  return config


def make_plan(config, engine_names, num_workers, pin_cpus, steps, warmup_steps, repeats):
  """Checks the flags and the config of every engine; returns the `Plan` of the custom loop.

  Raises:
    ValueError: listing every problem (validation.ConfigError is a ValueError).
  """
  problems = [f'--engines: unknown engine {name!r} (choose among {", ".join(DEFAULT_ENGINES)})'
              for name in engine_names if name not in DEFAULT_ENGINES]
  if not engine_names or len(set(engine_names)) != len(engine_names):
    problems.append(f'--engines={",".join(engine_names)}: give each engine at most once, at least '
                    'one engine')
  if num_workers < 1:
    problems.append(f'--num_workers={num_workers}: must be positive')
  elif pin_cpus and len(os.sched_getaffinity(0)) < num_workers:
    problems.append(f'--pin_cpus needs one CPU per worker: {num_workers} workers, '
                    f'{len(os.sched_getaffinity(0))} usable CPU(s)')
  if problems:
    raise ValueError('Invalid benchmark flags:\n  ' + '\n  '.join(problems))
  for name in engine_names:
    engine_config = with_engine(config, name, num_workers)
    bench.validate_config(engine_config)
    validation.validate_topology(engine_config, num_workers if name != 'default' else 1)
  return bench.make_plan(config, ['custom'], steps, warmup_steps, None, repeats)


def _define_flags():
  """Defines the command-line flags; only when run as a program, so importing defines none."""
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file(
          'config', _DEFAULT_CONFIG, 'Experiment config file (a Python file with get_config()); '
          'any field can be overridden, e.g. --config.train.global_batch_size=128. The benchmark '
          'sets config.engine.name and num_replicas per engine, always uses the custom loop and '
          'ignores the run length and the eval, checkpoint and export settings.',
          lock_config=True),
      steps=flags.DEFINE_integer(
          'steps', 200, 'Measured optimizer steps per engine, variant and repeat, after the '
          'warm-up (a multiple of config.train.steps_per_loop); also the all-reduces timed alone.'),
      warmup_steps=flags.DEFINE_integer(
          'warmup_steps', 50, 'Warm-up steps before the clock starts (tracing, first calls): a '
          'positive multiple of config.train.steps_per_loop.'),
      repeats=flags.DEFINE_integer(
          'repeats', 3, 'Times each engine is measured (full step and step without gradient '
          'communication), each with a fresh model; the table reports median and min-max.'),
      engines=flags.DEFINE_list(
          'engines', ','.join(DEFAULT_ENGINES), 'Engines to measure, in this order, among '
          f'{", ".join(DEFAULT_ENGINES)}.'),
      num_workers=flags.DEFINE_integer(
          'num_workers', 2, 'Worker processes of multi_worker and horovod, and replicas (logical '
          'CPU devices) of mirrored; default always has 1.'),
      pin_cpus=flags.DEFINE_bool(
          'pin_cpus', False, 'Give each replica its own share of this process\'s CPUs, with 1 '
          'intra-op thread per process and 1 inter-op thread per local replica (a fair 1 vs N '
          'comparison).'),
      timeout_seconds=flags.DEFINE_integer(
          'timeout_seconds', 0, 'Stop an engine\'s workers after this long and report it as '
          'failed (0: never).', lower_bound=0),
      json_out=flags.DEFINE_string('json_out', None, 'Optional path of a JSON file for the '
                                   'results.'),
      worker=flags.DEFINE_bool(
          'worker', False, 'Internal: run as one worker of one engine (started by the benchmark '
          'itself, with --result_dir).'),
      result_dir=flags.DEFINE_string(
          'result_dir', None, 'Internal: where a --worker writes its result.'))


def _checked_plan(flag_values, config):
  """The `Plan` from the flags; exits with code 2 and the problems on bad flags or config.

  A worker checks only its own engine's config and plan (the chief checked the rest, and a pinned
  worker sees only its own CPUs).
  """
  f = flag_values
  try:
    if f.worker.value:
      bench.validate_config(config)
      return bench.make_plan(config, ['custom'], f.steps.value, f.warmup_steps.value, None,
                             f.repeats.value)
    return make_plan(config, f.engines.value, f.num_workers.value, f.pin_cpus.value,
                     f.steps.value, f.warmup_steps.value, f.repeats.value)
  except ValueError as e:
    print(e, file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _worker_main(flag_values, config, plan):
  experiment.quiet_tensorflow_logs()
  try:
    run_worker(config, plan, flag_values.pin_cpus.value, flag_values.result_dir.value)
  except engines.EngineStartupError as e:
    print(f'convoy: error: {e}', file=sys.stderr, flush=True)
    sys.exit(STARTUP_ERROR)


def _chief_main(flag_values, config, plan):
  command = bench.command_line(sys.argv, _COMMAND)
  print(f'Command: {command}', flush=True)
  code, results = run_benchmark(config, plan, flag_values.engines.value,
                                flag_values.num_workers.value, flag_values.pin_cpus.value,
                                sys.argv[1:], flag_values.timeout_seconds.value)
  results = dict(results, command=command)
  print(format_report(results), flush=True)
  bench.write_results(flag_values.json_out.value, results)
  sys.exit(code)


def main(argv, flag_values):
  """Validates config and flags, then runs the benchmark (or, with --worker, one worker of it).

  Args:
    argv: the arguments left by absl (the program name only).
    flag_values: the namespace of `_define_flags`.
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  config = flag_values.config.value
  plan = _checked_plan(flag_values, config)
  if flag_values.worker.value:
    _worker_main(flag_values, config, plan)
  else:
    _chief_main(flag_values, config, plan)


def run():
  """Program entry point: defines the flags, then runs `main` under absl."""
  flag_values = _define_flags()
  app.run(functools.partial(main, flag_values=flag_values))


if __name__ == '__main__':
  run()
