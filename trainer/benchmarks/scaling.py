"""One run of a scaling sweep, measured in its own processes: images/s, where a step's time goes,
FLOPs, the share of the peak FLOP/s, and peak memory.

    python -m trainer.benchmarks.scaling --worker --result_dir=DIR [--config=FILE]
        [--config.FIELD=VALUE ...] [--steps=100] [--warmup_steps=20] [--repeats=3] [--pin_cpus]
        [--peak_matmul_size=4096] [--peak_repeats=3]
    python -m trainer.benchmarks.scaling --peak_only --json_out=PATH [--peak_matmul_size=4096]

`python -m launch.sweep` starts every process of a run with `--worker` (through
`trainer.benchmarks.engines.worker_processes`, i.e. as `launch.local` starts trainers, or as the
tasks of a Slurm job); `config.engine.name`, `config.engine.num_replicas`, `config.loop` and
`config.train.global_batch_size` come from the sweep. Each worker writes `{engine}.{index}.json`
into `--result_dir`; after a barrier the chief (worker 0) combines them into `result.json` there
(`summarize_run`), so a run leaves the same files locally and under Slurm.

What each run measures, in the same processes:

* images/s: the real loop of `config.loop` (`trainer.loops.fit_loop` or `custom_loop`, timed by
  `trainer.benchmarks.loops.measure_loop`'s stopwatch): `--warmup_steps` unmeasured steps, then
  `--steps` measured ones, `--repeats` times with a fresh model; the median over repeats and the
  min-max are reported (the chief's clock; the global batch counts every worker's images).
* step-time breakdown, from variants of the same step, interleaved with the full one (the order
  rotates each repeat):
  - `fixed_batch`: the same loop on a fixed batch: the first step's batches of the real pipeline,
    cached and repeated (`take(k).cache().repeat()`), so nothing is read, decoded, shuffled or
    batched;
    input wait = full step - fixed-batch step;
  - `no_comm`: the fixed-batch step without gradient communication
    (`trainer.benchmarks.engines.NoGradientCommunication`); gradient communication = fixed-batch
    step - no-comm step. Keras `fit` always aggregates gradients itself (it refuses the no-comm
    optimizer), so for `loop=fit` both communication variants are run with the custom loop on the
    same model, data and engine (`custom_fixed_batch`, `no_comm`): the same gradients are reduced;
  - compute = the rest. Noise can make a difference negative: the parts are clamped to [0, step]
    (input first, then communication, compute = step - input - comm, so they sum to the step) and
    the raw differences are reported too.
* CPU use of the full step (`StopwatchController.cpu_use`, over the same measured steps):
  `cpu_busy`, each process's CPU seconds / (wall seconds x the CPUs it may use), i.e. how much of
  its cores it kept busy (the rest it spent waiting: for its peers at each all-reduce, for input,
  or for other processes); `busiest_thread_share`, the fraction of that CPU time spent by its
  busiest thread (with one intra-op thread, the thread running the step's kernels; the rest goes
  to the runtime's other threads: tf.data, the inter-op pool, Horovod's background and Gloo
  threads, gRPC). Medians over repeats, averaged over the workers.
* FLOPs per image: TensorFlow's profiler (`tf.compat.v1.profiler`, float_operation) on the graph
  of the model's forward pass on one image (2 FLOPs per multiply-add; ResNet-50 at 224x224 counts
  8.19 GFLOPs = 4.09 G multiply-adds, the usual "4.1 G" figure). Training is counted as 3x forward
  (backward ~ 2x forward: gradients with respect to activations and to weights).
  Achieved FLOP/s = images/s x training FLOPs per image.
* peak FLOP/s of the run's own CPUs/GPUs: after a barrier, every worker runs a float32
  `--peak_matmul_size` square matmul on each of its devices at once, inside one tf.function, best
  of `--peak_repeats`; the run's peak is the sum over workers (same pinning and thread settings as
  its training). `--peak_only` measures one process with every CPU and TensorFlow's default
  threads: the machine's peak, which the sweep measures at the start of each session.
* peak memory: `ru_maxrss` of each worker process after the training variants (before the peak
  matmul), and on GPUs `tf.config.experimental.get_memory_info(...)['peak']` (untested: no GPU
  here).
"""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import functools
import json
import math
import os
import resource
import statistics
import sys
import time
import types

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf

from configs import validation
from input_pipeline import datasets
from input_pipeline import sources
from trainer import engines
from trainer import experiment
from trainer import model as model_lib
from trainer.benchmarks import engines as engines_bench
from trainer.benchmarks import loops as loops_bench

MODULE = 'trainer.benchmarks.scaling'
RESULT_FILE = 'result.json'  # Written by the chief of a run once every worker has measured.
SPEC_FILE = 'spec.json'  # Written by the sweep before the run starts; copied into the result.
SCHEMA_VERSION = 1
TRAIN_FLOPS_PER_FORWARD = 3  # forward + backward (about 2x forward)
FLOPS_METHOD = ('tf.compat.v1.profiler float_operation on the forward graph of one image (2 FLOPs '
                'per multiply-add); training = 3 x forward')
USAGE_ERROR, STARTUP_ERROR, DATA_ERROR = 2, 3, 4
_DEFAULT_CONFIG = 'configs/default.py'


# ---------------------------------------------------------------------------------------------
# Variants of the step (worker side).


class FixedBatchEngine:
  """A view of an Engine whose datasets yield their first step's batches again and again.

  `distribute_dataset(fn)` distributes `fn(ctx).take(k).cache().repeat()`, k being the replicas
  each input pipeline feeds: every step gets the first step's batches from memory. The loop still
  calls `next(iterator)`, but nothing is read, decoded, shuffled or batched. Everything else is the
  wrapped engine's (it composes with `NoGradientCommunication`). Not an `Engine` subclass on
  purpose: the base class's defaults would hide the wrapped engine's methods.
  """

  def __init__(self, engine):
    self._engine = engine

  def __getattr__(self, name):
    return getattr(self._engine, name)

  def distribute_dataset(self, dataset_fn):
    """The wrapped engine's distributed dataset of the first step of `dataset_fn`, repeated."""

    def fixed_dataset_fn(context):
      batches = max(1, context.num_replicas_in_sync // context.num_input_pipelines)
      return dataset_fn(context).take(batches).cache().repeat()

    return self._engine.distribute_dataset(fixed_dataset_fn)


def create_variants(engine, loop):
  """The variants measured for a run of `loop`: name -> (loop name, engine view).

  `full` and `fixed_batch` run `loop`; communication is removed with the custom loop (Keras fit
  cannot run without its own gradient aggregation), so for `fit` the custom loop's fixed-batch step
  is measured too, as the reference of `no_comm`.
  """
  fixed = FixedBatchEngine(engine)
  variants = {'full': (loop, engine), 'fixed_batch': (loop, fixed)}
  if loop != 'custom':
    variants['custom_fixed_batch'] = ('custom', fixed)
  variants['no_comm'] = ('custom', engines_bench.NoGradientCommunication(fixed))
  return variants


def comm_reference(loop):
  """The variant that `no_comm` is subtracted from: the same (custom) loop with communication."""
  return 'fixed_batch' if loop == 'custom' else 'custom_fixed_batch'


def measure_variants(config, engine, source, plan):
  """Measures every variant of `create_variants`, `plan.repeats` times, in a rotating order.

  Returns:
    `rates` (variant -> images/s per repeat), `cpu_use` (variant -> this process's
    `StopwatchController.cpu_use` per repeat), `train_loss` (last window of the last full run) and
    `comm_reference` (see `comm_reference`).
  """
  variants = create_variants(engine, config.loop)
  names = list(variants)
  rates = {name: [] for name in names}
  cpu_use = {name: [] for name in names}
  loss = None
  for repeat in range(plan.repeats):
    shift = repeat % len(names)
    for name in names[shift:] + names[:shift]:
      loop, view = variants[name]
      rate, metrics, cpu = loops_bench.measure_loop(loop, config, view, source, plan)
      rates[name].append(rate)
      cpu_use[name].append(cpu)
      if name == 'full':
        loss = metrics.get('train_loss')
      if engine.is_chief:
        logging.info('repeat %d/%d %-18s %.0f images/s', repeat + 1, plan.repeats, name, rate)
  return {'rates': rates, 'cpu_use': cpu_use, 'train_loss': loss,
          'comm_reference': comm_reference(config.loop)}


# ---------------------------------------------------------------------------------------------
# FLOPs, peak and memory (worker side).


def count_forward_flops(config, source):
  """FLOPs of the model's forward pass on one image, counted by TensorFlow's profiler.

  The model of `config.model` is built for the pipeline's image shape (outside any strategy) and
  its forward function traced for a batch of one; the profiler sums the registered FLOPs of every
  op of that graph (2 per multiply-add for convolutions and matmuls).
  """
  shape = tuple(experiment.source_image_shape(config, source))
  model = model_lib.create_model(config.model, shape, source.num_classes, config.train.precision)
  forward = tf.function(lambda images: model(images, training=False))
  graph = forward.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32)).graph
  builder = tf.compat.v1.profiler.ProfileOptionBuilder
  options = builder(builder.float_operation()).with_empty_output().build()
  level = tf.get_logger().level
  tf.get_logger().setLevel('ERROR')  # The profiler warns about its own v1 helpers.
  try:
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)
  finally:
    tf.get_logger().setLevel(level)


def measure_peak_flops(devices, size=4096, repeats=3, min_seconds=0.2):
  """Best float32 matmul FLOP/s of `devices` working at once.

  One tf.function runs a `size` x `size` matmul on each device (independent ops: they run in
  parallel on the inter-op threads). Each of the `repeats` timings covers enough calls to last
  `min_seconds`; the best one counts (2 * size**3 FLOPs per device and call).
  """
  matrices = []
  for device in devices:
    with tf.device(device):
      matrices.append(tf.random.uniform((size, size), dtype=tf.float32))

  @tf.function
  def matmuls():
    sums = []
    for device, matrix in zip(devices, matrices):
      with tf.device(device):
        sums.append(tf.reduce_sum(tf.matmul(matrix, matrix)))
    return tf.add_n(sums)

  matmuls().numpy()  # Tracing and first call.
  start = time.perf_counter()
  matmuls().numpy()
  calls = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-9)))
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      result = matmuls()
    result.numpy()
    best = min(best, (time.perf_counter() - start) / calls)
  return 2.0 * size ** 3 * len(devices) / best


def measure_memory():
  """Peak memory of this process: `max_rss_mb` (ru_maxrss) and `gpu_peak_mb` (None without GPUs).

  The GPU figure sums `tf.config.experimental.get_memory_info('GPU:i')['peak']` over the visible
  GPUs; it is untested (no GPU here).
  """
  max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux.
  gpus = tf.config.list_logical_devices('GPU')
  gpu_peak_mb = None
  if gpus:
    gpu_peak_mb = sum(tf.config.experimental.get_memory_info(f'GPU:{i}')['peak']
                      for i in range(len(gpus))) / 2 ** 20
  return {'max_rss_mb': max_rss_mb, 'gpu_peak_mb': gpu_peak_mb}


def _threads():
  return {'intra_op': tf.config.threading.get_intra_op_parallelism_threads(),
          'inter_op': tf.config.threading.get_inter_op_parallelism_threads()}


def _write_json(path, data):
  """Writes JSON atomically (a reader never sees half a file)."""
  with open(f'{path}.tmp', 'w') as f:
    f.write(json.dumps(data, indent=2, sort_keys=True) + '\n')
  os.replace(f'{path}.tmp', path)


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def run_worker(config, plan, options, result_dir):
  """The `--worker` mode: measures this process's share of a run; the chief writes `result.json`.

  Args:
    config: the run's experiment config (engine, replicas, loop and global batch set by the sweep).
    plan: the `trainer.benchmarks.loops.Plan`.
    options: namespace with `pin_cpus`, `peak_matmul_size`, `peak_repeats`.
    result_dir: the run's directory (shared by its workers).

  Returns:
    The chief's run result (see `summarize_run`), or None on the other workers.
  """
  started = time.time()
  if options.pin_cpus:  # The sweep gave this process its share of the cores.
    engines_bench.configure_threads(True, config.engine.num_replicas)
  else:  # As the trainer does: thread pools sized for this process's share (engine.cpu_budget).
    config, _ = experiment.apply_cpu_budget(config)
  load_start = os.getloadavg()[0]
  # The engine comes first: logical devices and collectives must be set up before other TF ops.
  engine = engines.create_engine(config.engine)
  validation.validate_topology(config, engine.num_replicas, engine.devices)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  source = sources.create_source(config.data, config.seed)
  measured = measure_variants(config, engine, source, plan)
  memory = measure_memory()  # Before the peak's matrices add to the high-water mark.
  engine.barrier()  # Every worker measures the peak at the same time: the run's whole allocation.
  peak = measure_peak_flops(engine.devices, options.peak_matmul_size, options.peak_repeats)
  engine.barrier()
  result = {
      'engine': engine.name, 'worker_index': engine.worker_index,
      'num_workers': engine.num_workers, 'num_replicas': engine.num_replicas,
      'devices': list(engine.devices), **measured, **memory, 'peak_flops_per_second': peak,
      'peak_matmul_size': options.peak_matmul_size, 'threads': _threads(),
      'cpus': sorted(os.sched_getaffinity(0)), 'pinned': bool(options.pin_cpus),
      'versions': engines_bench.versions(),
      'load_average': {'start': load_start, 'end': os.getloadavg()[0]},
      'seconds': time.time() - started,
  }
  if engine.is_chief:
    result['forward_flops_per_image'] = count_forward_flops(config, source)
  _write_json(os.path.join(result_dir, f'{engine.name}.{engine.worker_index}.json'), result)
  engine.barrier()  # Every worker's file is written.
  if not engine.is_chief:
    return None
  workers = engines_bench.read_results(result_dir, engine.name)
  spec_path = os.path.join(result_dir, SPEC_FILE)
  spec = _read_json(spec_path) if os.path.exists(spec_path) else {}
  summary = summarize_run(workers, config, plan, spec)
  _write_json(os.path.join(result_dir, RESULT_FILE), summary)
  return summary


# ---------------------------------------------------------------------------------------------
# The run's figures (chief side; pure functions of the workers' results).


def _spread(values):
  return {'median': statistics.median(values), 'min': min(values), 'max': max(values),
          'runs': list(values)}


def create_breakdown(step_ms, fixed_batch_ms, comm_reference_ms, no_comm_ms):
  """Splits a step into input wait, gradient communication and compute (milliseconds).

  Raw: input = step - fixed-batch step; comm = reference step - no-comm step (both on the fixed
  batch); compute = step - input - comm. Clamped: input in [0, step], comm in [0, step - input],
  compute = the rest, so the clamped parts add up to the step.

  Returns:
    `input_ms`, `comm_ms`, `compute_ms` (clamped) and the same keys with `_raw`.
  """
  input_raw = step_ms - fixed_batch_ms
  comm_raw = comm_reference_ms - no_comm_ms
  input_ms = min(max(input_raw, 0.0), step_ms)
  comm_ms = min(max(comm_raw, 0.0), step_ms - input_ms)
  return {'input_ms': input_ms, 'comm_ms': comm_ms, 'compute_ms': step_ms - input_ms - comm_ms,
          'input_ms_raw': input_raw, 'comm_ms_raw': comm_raw,
          'compute_ms_raw': step_ms - input_raw - comm_raw}


def _fraction(value, total):
  return value / total if value is not None and total else None


def summarize_cpu_use(worker_results, variant='full'):
  """`cpu_busy` and `busiest_thread_share` of `variant`: the median over repeats of each worker,
  averaged over the workers (None where a worker has none, e.g. results written before they were
  measured, or no /proc)."""
  summary = {}
  for key in ('cpu_busy', 'busiest_thread_share'):
    medians = []
    for worker in worker_results:
      values = [use.get(key) for use in (worker.get('cpu_use') or {}).get(variant, [])]
      medians.append(statistics.median(values) if values and None not in values else None)
    summary[key] = (statistics.mean(medians) if medians and None not in medians else None)
  return summary


def summarize_run(worker_results, config, plan, spec=None):
  """The run's result from its workers' results (figures from the chief's clock, worker 0).

  Args:
    worker_results: the workers' dicts, ordered by worker index.
    config: the run's experiment config.
    plan: the `Plan`.
    spec: the sweep's description of the run (`spec.json`), copied into the result; its
      `session.machine_peak_flops_per_second` gives the machine's peak.

  Returns:
    A JSON-serializable dict: `status` 'ok', the spec, the layout, `images_per_second` (median,
    min, max, runs) and every variant's, `step_ms`, `breakdown` (`create_breakdown`), FLOPs,
    achieved FLOP/s and its fraction of the run's and of the machine's peak, peak memory
    (`peak_rss_mb` of the largest process, `total_rss_mb` summed), the full step's CPU use
    (`summarize_cpu_use`), and where it ran.
  """
  spec = spec or {}
  chief = worker_results[0]
  # The images per step that `loops.measure_loop` counts in its rates (so 1000 * batch / rate is
  # the time of one optimizer step).
  batch = datasets.examples_per_step(config)
  rates = {name: _spread(values) for name, values in chief['rates'].items()}
  step_ms = {name: 1000.0 * batch / r['median'] for name, r in rates.items()}
  breakdown = create_breakdown(step_ms['full'], step_ms['fixed_batch'],
                               step_ms[chief['comm_reference']], step_ms['no_comm'])
  breakdown['comm_measured_with'] = 'same loop' if config.loop == 'custom' else 'custom loop'
  forward = chief['forward_flops_per_image']
  train_flops = TRAIN_FLOPS_PER_FORWARD * forward
  images_per_second = rates['full']['median']
  achieved = images_per_second * train_flops
  allocation_peak = sum(w['peak_flops_per_second'] for w in worker_results)
  machine_peak = (spec.get('session') or {}).get('machine_peak_flops_per_second')
  gpu = [w['gpu_peak_mb'] for w in worker_results if w.get('gpu_peak_mb') is not None]
  return {
      'schema_version': SCHEMA_VERSION, 'status': 'ok', 'run_id': spec.get('run_id'),
      'spec': spec, 'engine': chief['engine'], 'num_workers': chief['num_workers'],
      'num_replicas': chief['num_replicas'], 'devices': chief['devices'], 'loop': config.loop,
      'model': config.model.name, 'global_batch_size': batch,
      'per_replica_batch_size': batch // chief['num_replicas'],
      'plan': {'steps': plan.steps, 'warmup_steps': plan.warmup_steps, 'repeats': plan.repeats},
      'images_per_second': rates['full'],
      'images_per_second_per_replica': images_per_second / chief['num_replicas'],
      'variants_images_per_second': rates, 'variants_step_ms': step_ms,
      'step_ms': step_ms['full'], 'breakdown': breakdown,
      'forward_flops_per_image': forward, 'train_flops_per_image': train_flops,
      'flops_method': FLOPS_METHOD, 'achieved_flops_per_second': achieved,
      'allocation_peak_flops_per_second': allocation_peak,
      'allocation_peak_fraction': _fraction(achieved, allocation_peak),
      'machine_peak_flops_per_second': machine_peak,
      'machine_peak_fraction': _fraction(achieved, machine_peak),
      'peak_matmul_size': chief['peak_matmul_size'],
      'peak_rss_mb': max(w['max_rss_mb'] for w in worker_results),
      'total_rss_mb': sum(w['max_rss_mb'] for w in worker_results),
      'gpu_peak_mb': sum(gpu) if gpu else None,
      'train_loss': chief['train_loss'], **summarize_cpu_use(worker_results),
      'worker_images_per_second': [statistics.median(w['rates']['full']) for w in worker_results],
      'cpus': [w['cpus'] for w in worker_results], 'threads': chief['threads'],
      'pinned': chief['pinned'], 'versions': chief['versions'],
      'load_average': {'start': max(w['load_average']['start'] for w in worker_results),
                       'end': max(w['load_average']['end'] for w in worker_results)},
      'worker_seconds': max(w['seconds'] for w in worker_results),
  }


# ---------------------------------------------------------------------------------------------
# The machine's peak (`--peak_only`).


def run_peak_only(size, repeats, json_out):
  """Measures the machine's peak in this fresh process (every CPU, default threads, or GPU 0).

  Returns:
    `machine_peak_flops_per_second`, `matmul_size`, `devices`, `cpus` and `threads`; also written
    to `json_out` when given.
  """
  gpus = tf.config.list_logical_devices('GPU')
  devices = [gpus[0].name] if gpus else ['/cpu:0']
  result = {'machine_peak_flops_per_second': measure_peak_flops(devices, size, repeats),
            'matmul_size': size, 'devices': devices, 'cpus': sorted(os.sched_getaffinity(0)),
            'threads': _threads(), 'dtype': 'float32'}
  if json_out:
    _write_json(json_out, result)
  return result


# ---------------------------------------------------------------------------------------------
# Command line.


def _define_flags():
  """Defines the command-line flags; only when run as a program, so importing defines none."""
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file(
          'config', _DEFAULT_CONFIG, 'Experiment config file (a Python file with get_config()); '
          'any field can be overridden, e.g. --config.train.global_batch_size=128. The run length '
          'and the eval, checkpoint and export settings are ignored.', lock_config=True),
      worker=flags.DEFINE_bool(
          'worker', False, 'Run as one worker of a sweep run (launch.sweep starts the workers, '
          'with --result_dir).'),
      result_dir=flags.DEFINE_string(
          'result_dir', None, 'The run\'s directory: each worker writes {engine}.{index}.json, '
          'the chief result.json.'),
      pin_cpus=flags.DEFINE_bool(
          'pin_cpus', False, 'The sweep pinned this process to its own CPUs: run 1 intra-op '
          'thread, and 1 inter-op thread per local replica (else the thread pools follow '
          'config.engine.cpu_budget, as in training).'),
      steps=flags.DEFINE_integer(
          'steps', 100, 'Measured steps per variant and repeat, after the warm-up (a multiple '
          'of config.train.steps_per_loop).'),
      warmup_steps=flags.DEFINE_integer(
          'warmup_steps', 20, 'Unmeasured steps before the clock starts (tracing, first calls): a '
          'positive multiple of config.train.steps_per_loop.'),
      repeats=flags.DEFINE_integer(
          'repeats', 3, 'Measurements of each variant, each with a fresh model; images/s is the '
          'median, with the min-max.'),
      peak_matmul_size=flags.DEFINE_integer(
          'peak_matmul_size', 4096, 'Side of the square float32 matmul that measures the peak '
          'FLOP/s.', lower_bound=1),
      peak_repeats=flags.DEFINE_integer(
          'peak_repeats', 3, 'Timings of the peak matmul; the best counts.', lower_bound=1),
      peak_only=flags.DEFINE_bool(
          'peak_only', False, 'Only measure the machine\'s peak FLOP/s in this process (every CPU, '
          'default threads) and write it to --json_out.'),
      json_out=flags.DEFINE_string('json_out', None, 'With --peak_only: where to write it.'))


def _usage_error(message):
  print(f'convoy: error: {message}', file=sys.stderr, flush=True)
  sys.exit(USAGE_ERROR)


def main(argv, flag_values):
  """Runs `--peak_only`, or one `--worker` of a run; exits 2 on bad flags or config, 3 if the
  engine cannot start, 4 if the data cannot be read.

  Args:
    argv: the arguments left by absl (the program name only).
    flag_values: the namespace of `_define_flags`.
  """
  f = flag_values
  if len(argv) > 1:
    _usage_error(f'unexpected arguments: {" ".join(argv[1:])}')
  experiment.quiet_tensorflow_logs()
  if f.peak_only.value:
    print(json.dumps(run_peak_only(f.peak_matmul_size.value, f.peak_repeats.value,
                                   f.json_out.value)), flush=True)
    return
  if not f.worker.value or not f.result_dir.value:
    _usage_error('give --worker and --result_dir (launch.sweep starts the workers), or '
                 '--peak_only')
  config = f.config.value
  loops = [config.loop] + (['custom'] if config.loop != 'custom' else [])
  try:
    loops_bench.validate_config(config)
    plan = loops_bench.make_plan(config, loops, f.steps.value, f.warmup_steps.value, None,
                                 f.repeats.value)
  except ValueError as e:  # validation.ConfigError is a ValueError.
    _usage_error(e)
  options = types.SimpleNamespace(pin_cpus=f.pin_cpus.value,
                                  peak_matmul_size=f.peak_matmul_size.value,
                                  peak_repeats=f.peak_repeats.value)
  try:
    summary = run_worker(config, plan, options, f.result_dir.value)
  except (engines.EngineStartupError, engines.PeerLostError) as e:
    print(f'convoy: error: {e}', file=sys.stderr, flush=True)
    sys.exit(STARTUP_ERROR)
  except sources.DataError as e:
    print(f'convoy: error: {e}', file=sys.stderr, flush=True)
    sys.exit(DATA_ERROR)
  if summary:
    print(f"[scaling] {summary['engine']} {summary['num_workers']} worker(s) x "
          f"{summary['num_replicas'] // summary['num_workers']} replica(s): "
          f"{summary['images_per_second']['median']:.0f} images/s", flush=True)


def run():
  """Program entry point: defines the flags, then runs `main` under absl."""
  flag_values = _define_flags()
  app.run(functools.partial(main, flag_values=flag_values))


if __name__ == '__main__':
  run()
