"""Images/s of the streamed input pipeline on JPEG TFRecords, against a naive pipeline and the
machine's decode limit, and the share of training step time spent waiting for input.

    python -m trainer.benchmarks.input_pipeline [--data_dir=DIR] [--num_images=2048]
        [--image_size=224] [--num_shards=16] [--batch_size=64] [--warmup_batches=10]
        [--batches=100] [--repeats=3] [--train_image_size=64] [--train_steps=100]
        [--train_warmup_steps=10] [--json_out=PATH] [--config=configs/default.py]
        [--config.FIELD=VALUE ...]

The data: `--num_images` RGB JPEGs of `--image_size`^2 in `--num_shards` TFRecord shards of
Convoy's layout, in `--data_dir` (written once by `convert.write_synthetic_jpeg_shards`: smooth
random images that compress like photographs; existing shards are read as they are). Every
pipeline does the same work per image, ImageNet-style: parse the record, decode the JPEG, take a
random resized crop (`preprocess.preprocess_for_train` with 'random_resized_crop': 8-100% of the
area, resized to `--image_size`^2 float32, random flip), then batch `--batch_size` images.

Measured in one process, repeats interleaved (tuned, naive, one thread, tuned, ...), each
measurement on a fresh iterator: `--warmup_batches` batches, then the clock runs over `--batches`
batches (images/s = batches x batch / seconds):

* tuned: `streaming.create_train_stream`, the trainer's own pipeline and tf.data options (parallel
  interleave over the shards, shuffle, parallel map, batch, prefetch, autotune), for one input
  pipeline; its data.* settings come from the config (e.g. --config.data.private_threadpool_size);
* naive: `TFRecordDataset` over the same files one after the other, `.map(same work)` without
  `num_parallel_calls`, `.batch`, no prefetch, and tf.data's default rewrites turned off (TF 2.18
  otherwise parallelizes such a map and injects a prefetch itself);
* one thread: the naive pipeline in a child process that has one thread of TensorFlow compute on
  one core: intra-op and inter-op pools of 1 thread (`tf.config.threading`), tf.data's
  `private_threadpool_size=1` and `max_intra_op_parallelism=1`, and the process pinned to one CPU
  (`os.sched_setaffinity`, before TensorFlow starts its threads). Same kernels, same execution
  engine, no per-op Python dispatch (a Python loop calling the ops eagerly would add dispatch
  overhead and understate the rate). All three are needed: tf.data's options alone do not confine
  every kernel (the antialiased resize still runs on the process's intra-op pool, about 1.4 cores
  here), and one thread left free to move between cores pays cross-core wake-ups between the
  iterator and its pool thread, which is pipeline overhead, not decode work. It includes reading
  the records from the (cached) files and the batch copy, both small next to decode and augment.
  decode limit = one-thread rate x CPUs available to the process (`os.sched_getaffinity`).

Training (the input wait): the shared CNN (config.model, small_cnn by default) trained on the same
records through the tuned pipeline, decoded and cropped to `--train_image_size`^2 (64 by default:
small_cnn's largest documented input; 224 would make a CPU step so slow that any pipeline keeps
up), on the config's engine (mirrored x2 by default) and global batch. The loop is the custom
loop's step (`engine.run` of `steps.create_train_step`'s step in a tf.function) with the fetch moved out of the
function so it can be timed: each step times `next(iterator)` (the same get_next the custom loop
runs in graph) and then the compiled step up to its completion (a variable read). Input wait =
sum of fetch times / sum of step times over `--train_steps` steps after `--train_warmup_steps`.
Then the same step runs `--train_steps` times on one already-fetched batch (no input at all): the
difference in step time also counts the CPU the pipeline takes from the step on a shared machine.

Targets (issue): tuned >= 1.8x naive, tuned >= 0.9 x decode limit, input wait <= 5%. The report
says plainly which targets are missed; the command exits 0 either way (it reports figures). Other
processes on the machine skew the figures: the report prints the load average and the share of
the CPUs other processes used while each pipeline was measured."""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import dataclasses
import functools
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags
import tensorflow as tf
import tf_keras

from configs import validation
from input_pipeline import convert
from input_pipeline import datasets
from input_pipeline import preprocess
from input_pipeline import sources
from input_pipeline import streaming
from trainer import engines
from trainer import experiment
from trainer import steps as steps_lib
from trainer.benchmarks import loops as loops_bench

_COMMAND = 'python -m trainer.benchmarks.input_pipeline'
_DEFAULT_CONFIG = 'configs/default.py'
_AUGMENT = 'random_resized_crop'
PIPELINES = ('tuned', 'naive', 'one_thread')
# (name, comparison, target): the targets.
TARGETS = (('tuned_vs_naive', '>=', 1.8), ('tuned_vs_decode_limit', '>=', 0.9),
           ('input_wait_fraction', '<=', 0.05))


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to measure (see the command-line flags)."""
  batch_size: int
  warmup_batches: int
  batches: int
  repeats: int
  train_steps: int
  train_warmup_steps: int


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The JPEG shards to read, or to write when `data_dir` holds none."""
  data_dir: str
  num_images: int
  image_size: int
  num_shards: int
  num_classes: int
  seed: int = 0


def default_data_dir(num_images, image_size, num_shards):
  """A cache folder per data shape under the temp dir, so other flags never reuse wrong shards."""
  return os.path.join(tempfile.gettempdir(), 'convoy_input_benchmark',
                      f'{num_images}x{image_size}px_{num_shards}shards')


def _shard_files(data_dir):
  return sorted(glob.glob(os.path.join(data_dir, 'train-*-of-*')))


def _read_manifest(data_dir):
  """The converter's manifest of `data_dir`, or {} when absent or unreadable."""
  try:
    with open(os.path.join(data_dir, convert.MANIFEST_NAME)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def ensure_shards(spec):
  """Writes the synthetic JPEG shards of `spec` unless `spec.data_dir` already holds train shards.

  Returns:
    A dict: data_dir, files, generated (bool), generate_seconds, num_images, num_classes and
    image_shapes (from the manifest when there is one; else the spec's number of classes and
    unknown counts, -1 and []).
  """
  started = time.perf_counter()
  generated = not _shard_files(spec.data_dir)
  if generated:
    convert.write_synthetic_jpeg_shards(spec.data_dir, spec.num_images, spec.image_size,
                                        spec.num_classes, spec.num_shards, spec.seed,
                                        progress=False)
  manifest = _read_manifest(spec.data_dir)
  return {'data_dir': os.path.abspath(spec.data_dir), 'files': _shard_files(spec.data_dir),
          'generated': generated,
          'generate_seconds': time.perf_counter() - started if generated else 0.0,
          'num_images': manifest.get('num_examples', -1),
          'num_classes': manifest.get('num_classes') or spec.num_classes,
          'image_shapes': manifest.get('image_shapes', [])}


def _with_data(config, data, image_size, global_batch_size=None):
  """A copy of `config` reading the shards of `data` (tfrecord, ImageNet-style augmentation)."""
  config = config.copy_and_resolve_references()
  pattern = os.path.join(data['data_dir'], 'train-*-of-*')
  config.data.source = 'tfrecord'
  config.data.train_files = pattern
  config.data.eval_files = pattern  # Never read: the benchmark does not evaluate.
  config.data.num_classes = data['num_classes']
  config.data.image_size = image_size
  config.data.train_augment = _AUGMENT
  if global_batch_size is not None:
    config.train.global_batch_size = global_batch_size
  return config


def make_configs(config, data, image_size, train_image_size, batch_size):
  """Returns (input config, training config): `config` on the shards, at the two image sizes."""
  return (_with_data(config, data, image_size, batch_size),
          _with_data(config, data, train_image_size))


# ------------------------------------------------------------------------------------------------
# The three pipelines.


def decode_fn(config, source, pipeline_id=0):
  """`(index, serialized) -> (image, label)`: the tuned stream's per-example work, for reuse.

  The same calls as `streaming.create_train_stream`'s map function (parse, decode, augment with
  the per-example seed (seed, pipeline, index)), so every pipeline does the same work per image.
  """
  def decode(index, serialized):
    image, label, _ = source.parse_fn(serialized)
    image = preprocess.preprocess_for_train(
        image, source.image_shape, config.data.train_augment,
        tf.stack([tf.constant(config.seed, tf.int64), tf.constant(pipeline_id, tf.int64), index]))
    return image, tf.cast(label, tf.int32)

  return decode


def tuned_pipeline(config, source):
  """The trainer's own stream (`streaming.create_train_stream`) for one input pipeline."""
  return streaming.create_train_stream(config, source, tf.distribute.InputContext())


def _plain_options(one_thread):
  """tf.data options that keep a pipeline as written: no rewrites, optionally one thread."""
  options = tf.data.Options()
  options.experimental_optimization.apply_default_optimizations = False
  options.autotune.enabled = False
  if one_thread:
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
  return options


def naive_pipeline(config, source, one_thread=False):
  """The files one after the other, a sequential map of the same work, batch; no prefetch."""
  dataset = tf.data.TFRecordDataset(list(source.train_files)).repeat().enumerate()
  dataset = dataset.map(decode_fn(config, source))
  dataset = dataset.batch(config.train.global_batch_size, drop_remainder=True)
  return dataset.with_options(_plain_options(one_thread))


def one_thread_pipeline(config, source):
  """The naive pipeline on a single thread: the one-thread rate of the per-image work."""
  return naive_pipeline(config, source, one_thread=True)


_BUILDERS = {'tuned': tuned_pipeline, 'naive': naive_pipeline}


# ------------------------------------------------------------------------------------------------
# Clocks.


def _machine_busy_seconds():
  """CPU seconds all processes of the machine have used (Linux /proc/stat), or None."""
  try:
    with open('/proc/stat') as f:
      fields = [int(v) for v in f.readline().split()[1:9]]
  except (OSError, ValueError):
    return None
  user, nice, system, _, _, irq, softirq, steal = fields
  return (user + nice + system + irq + softirq + steal) / os.sysconf('SC_CLK_TCK')


class CpuMeter:
  """Wall time, and the share of the machine's CPUs that *other* processes used meanwhile."""

  def __init__(self):
    self.wall = time.perf_counter()
    self.own = time.process_time()
    self.busy = _machine_busy_seconds()

  def stop(self):
    """Returns (wall seconds, others' CPU share in [0, 1] or None when unknown)."""
    wall = time.perf_counter() - self.wall
    busy = _machine_busy_seconds()
    if busy is None or self.busy is None or wall <= 0:
      return wall, None
    others = (busy - self.busy) - (time.process_time() - self.own)
    return wall, min(1.0, max(0.0, others / (wall * os.cpu_count())))


def time_pipeline(dataset, plan):
  """Images/s of `dataset` over `plan.batches` batches after `plan.warmup_batches`.

  Returns:
    (images/s, others' CPU share during the measured batches or None).
  """
  iterator = iter(dataset)
  for _ in range(plan.warmup_batches):
    next(iterator)
  meter = CpuMeter()
  for _ in range(plan.batches):
    next(iterator)  # Eager get_next returns a materialized batch.
  seconds, others = meter.stop()
  return plan.batches * plan.batch_size / seconds, others


def _summarize(rates, others):
  known = [o for o in others if o is not None]
  return {'images_per_second': statistics.median(rates), 'min': min(rates), 'max': max(rates),
          'runs': rates, 'others_cpu': statistics.mean(known) if known else None}


# ------------------------------------------------------------------------------------------------
# The one-thread rate, in a child process (thread pools are fixed when TensorFlow starts).

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _child_request(config, plan, cpu):
  """What the child needs to rebuild the naive pipeline of `config` and time it like `plan`."""
  return {'seed': config.seed, 'data': config.data.to_dict(),
          'batch_size': config.train.global_batch_size, 'warmup_batches': plan.warmup_batches,
          'batches': plan.batches, 'cpu': cpu}


def measure_one_thread(config, plan):
  """Runs `run_one_thread_child` in a fresh process; returns its result dict.

  Raises:
    RuntimeError: with the end of the child's stderr, if it fails.
  """
  cpu = min(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, 'request.json')
    with open(path, 'w') as f:
      json.dump(_child_request(config, plan, cpu), f)
    proc = subprocess.run([sys.executable, '-m', 'trainer.benchmarks.input_pipeline',
                           f'--one_thread_child={path}'], cwd=_REPO, capture_output=True,
                          text=True, check=False)
    if proc.returncode:
      raise RuntimeError(f'one-thread child failed ({proc.returncode}): {proc.stderr[-2000:]}')
    with open(path + '.result') as f:
      return json.load(f)


def run_one_thread_child(request_path):
  """The child: one core, one thread of TensorFlow compute; times the naive pipeline.

  Must run before any TensorFlow op (pools are created then). Writes `request_path`.result with
  images_per_second, others_cpu, cores_used (process CPU time / wall time: 1.0 when confined) and
  cpu (the CPU it was pinned to, or None where affinity cannot be set).
  """
  with open(request_path) as f:
    request = json.load(f)
  if request['cpu'] is not None:
    os.sched_setaffinity(0, {request['cpu']})  # Threads started later inherit it.
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  config = ml_collections.ConfigDict({'seed': request['seed'], 'data': request['data'],
                                      'train': {'global_batch_size': request['batch_size']}})
  plan = types.SimpleNamespace(batch_size=request['batch_size'], batches=request['batches'],
                               warmup_batches=request['warmup_batches'])
  cpu_start = time.process_time()
  wall_start = time.perf_counter()
  rate, others = time_pipeline(one_thread_pipeline(config, sources.load_tfrecords(config.data)),
                               plan)
  cores = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)
  with open(request_path + '.result', 'w') as f:
    json.dump({'images_per_second': rate, 'others_cpu': others, 'cores_used': cores,
               'cpu': request['cpu']}, f)


def _time_one(name, config, source, plan):
  """(images/s, others' CPU share, extra JSON fields) of one measurement of pipeline `name`."""
  if name == 'one_thread':
    result = measure_one_thread(config, plan)
    return result['images_per_second'], result['others_cpu'], {
        'cores_used': result['cores_used'], 'cpu': result['cpu']}
  rate, others = time_pipeline(_BUILDERS[name](config, source), plan)
  return rate, others, {}


def measure_pipelines(config, source, plan):
  """Measures every pipeline `plan.repeats` times, interleaved; returns {name: summary}.

  The one-thread summary also has `cores_used` (the children's mean process CPU / wall time,
  warm-up included) and `cpu` (the CPU they were pinned to).
  """
  runs = {name: ([], [], []) for name in PIPELINES}
  for repeat in range(plan.repeats):
    for name in PIPELINES:
      rate, others, extra = _time_one(name, config, source, plan)
      for values, value in zip(runs[name], (rate, others, extra)):
        values.append(value)
      logging.info('repeat %d/%d %-10s %.0f images/s', repeat + 1, plan.repeats, name, rate)
  summaries = {name: _summarize(*runs[name][:2]) for name in PIPELINES}
  extras = runs['one_thread'][2]
  summaries['one_thread'].update(
      cores_used=statistics.mean(e['cores_used'] for e in extras), cpu=extras[0]['cpu'])
  return summaries


# ------------------------------------------------------------------------------------------------
# Input wait while training.


def _compiled_step(config, engine, model, optimizer):
  """The custom loop's distributed train step in a tf.function, taking an already-fetched batch."""
  with engine.scope():
    metrics = steps_lib.create_metrics('train')
  replica_step = steps_lib.create_train_step(config, model, optimizer, engine, metrics)

  @tf.function
  def train_step(batch):
    engine.run(replica_step, args=(batch,))

  return train_step


def _timed_steps(train_step, optimizer, fetch, count):
  """Runs `count` steps of `train_step(fetch())`; returns per-step (fetch seconds, step seconds)."""
  fetch_seconds, step_seconds = [], []
  for _ in range(count):
    start = time.perf_counter()
    batch = fetch()
    fetched = time.perf_counter()
    train_step(batch)
    optimizer.iterations.numpy()  # The step has finished once its update can be read.
    end = time.perf_counter()
    fetch_seconds.append(fetched - start)
    step_seconds.append(end - start)
  return fetch_seconds, step_seconds


def measure_input_wait(config, engine, source, plan):
  """Trains the config's model on the tuned pipeline; returns the input wait figures.

  Returns:
    A dict: steps, warmup_steps, input_wait_fraction (fetch time / step time over the measured
    steps), step_ms and wait_ms (means), images_per_second, compute_step_ms (mean step time on one
    fetched batch, no input) and input_cost_fraction (1 - compute_step_ms / step_ms: waits plus
    the CPU the pipeline takes from the step; may be slightly negative from noise), others_cpu
    (the larger CPU share of other processes over the two timed phases, or None).
  """
  tf_keras.utils.set_random_seed(config.seed)
  model, optimizer, _ = experiment.create_model_and_optimizer(
      config, engine, source, plan.train_warmup_steps + 2 * plan.train_steps)
  engine.sync_initial_state(model, optimizer)
  train_step = _compiled_step(config, engine, model, optimizer)
  iterator = iter(engine.distribute_dataset(
      lambda ctx: datasets.create_train_dataset(config, source, ctx)))
  _timed_steps(train_step, optimizer, lambda: next(iterator), plan.train_warmup_steps)
  meter = CpuMeter()
  waits, totals = _timed_steps(train_step, optimizer, lambda: next(iterator), plan.train_steps)
  others = [meter.stop()[1]]
  batch = next(iterator)
  del iterator  # Stops the pipeline's threads before the input-free steps.
  meter = CpuMeter()
  _, compute = _timed_steps(train_step, optimizer, lambda: batch, plan.train_steps)
  others.append(meter.stop()[1])
  step_ms, compute_ms = 1e3 * statistics.mean(totals), 1e3 * statistics.mean(compute)
  return {'steps': plan.train_steps, 'warmup_steps': plan.train_warmup_steps,
          'input_wait_fraction': sum(waits) / sum(totals), 'step_ms': step_ms,
          'wait_ms': 1e3 * statistics.mean(waits),
          'images_per_second': config.train.global_batch_size * len(totals) / sum(totals),
          'compute_step_ms': compute_ms, 'input_cost_fraction': 1.0 - compute_ms / step_ms,
          'others_cpu': None if None in others else max(others)}


# ------------------------------------------------------------------------------------------------
# The run.


def add_ratios(results):
  """Adds `decode_limit`, `ratios` and `checks` (value, target, passed) to `results`."""
  pipelines = results['pipelines']
  tuned = pipelines['tuned']['images_per_second']
  limit = pipelines['one_thread']['images_per_second'] * results['cpus_available']
  results['decode_limit'] = limit
  results['ratios'] = {'tuned_vs_naive': tuned / pipelines['naive']['images_per_second'],
                       'tuned_vs_decode_limit': tuned / limit}
  values = dict(results['ratios'],
                input_wait_fraction=results['training']['input_wait_fraction'])
  results['checks'] = [
      {'name': name, 'value': values[name], 'comparison': comparison, 'target': target,
       'passed': values[name] >= target if comparison == '>=' else values[name] <= target}
      for name, comparison, target in TARGETS]
  return results


def describe(input_config, train_config, engine, data, plan):
  """The settings the figures depend on, for the report and the JSON."""
  return {
      'data': {key: data[key] for key in ('data_dir', 'generated', 'generate_seconds',
                                          'num_images', 'num_classes', 'image_shapes')},
      'num_shards': len(data['files']),
      'image_size': input_config.data.image_size, 'augment': _AUGMENT,
      'input_options': {key: input_config.data[key] for key in (
          'shuffle_buffer', 'interleave_cycle_length', 'deterministic_order', 'ram_budget_mb',
          'private_threadpool_size')},
      'train': {'engine': engine.name, 'num_replicas': engine.num_replicas,
                'devices': list(engine.devices), 'model': train_config.model.name,
                'image_size': train_config.data.image_size,
                'global_batch_size': train_config.train.global_batch_size},
      'plan': dataclasses.asdict(plan), 'tensorflow': tf.__version__}


def run_benchmark(config, spec, plan, image_size, train_image_size):
  """Creates the engine, the shards if needed, then measures the pipelines and the input wait.

  Args:
    config: the experiment config (its data fields are replaced to read the shards).
    spec: the `DataSpec`.
    plan: the `Plan`.
    image_size: output size of the three input pipelines.
    train_image_size: output size of the pipeline while training.

  Returns:
    A JSON-serializable dict: `settings` (see `describe`), `cpus_available`, `cpus`,
    `load_average` (start, end), `pipelines` (per pipeline: images_per_second (median), min, max,
    runs, others_cpu), `training` (see `measure_input_wait`), `decode_limit`, `ratios` and
    `checks` (see `add_ratios`).
  """
  # The engine comes first: logical devices must be set up before other TF ops.
  engine = engines.create_engine(config.engine)
  validation.validate_topology(config, engine.num_replicas)
  load_start = os.getloadavg()[0]
  data = ensure_shards(spec)
  input_config, train_config = make_configs(config, data, image_size, train_image_size,
                                            plan.batch_size)
  pipelines = measure_pipelines(input_config, sources.load_tfrecords(input_config.data), plan)
  training = measure_input_wait(train_config, engine, sources.load_tfrecords(train_config.data),
                                plan)
  return add_ratios({
      'settings': describe(input_config, train_config, engine, data, plan),
      'cpus_available': len(os.sched_getaffinity(0)), 'cpus': os.cpu_count(),
      'load_average': {'start': load_start, 'end': os.getloadavg()[0]},
      'pipelines': pipelines, 'training': training})


# ------------------------------------------------------------------------------------------------
# The report.

_LABELS = {
    'tuned': 'streaming.create_train_stream: interleave, shuffle, parallel map, prefetch',
    'naive': 'files in order, sequential map, batch, no prefetch, no tf.data rewrites',
    'one_thread': 'the naive pipeline in a child process: 1 TF thread, {where}',
}
_CHECK_LABELS = {'tuned_vs_naive': 'tuned / naive',
                 'tuned_vs_decode_limit': 'tuned / decode limit',
                 'input_wait_fraction': 'input wait while training'}


_BUSY_SHARE = 0.1  # Others' CPU share above which the report warns that the figures are skewed.


def _percent(value):
  return '-' if value is None else f'{100 * value:.0f}%'


def _check_value(check):
  if check['name'] == 'input_wait_fraction':
    return f"{100 * check['value']:.1f}%", f"{check['comparison']} {100 * check['target']:.0f}%"
  suffix = 'x' if check['name'] == 'tuned_vs_naive' else ''
  return (f"{check['value']:.2f}{suffix}",
          f"{check['comparison']} {check['target']:.2f}{suffix}")


def _header(results):
  s, plan, load = results['settings'], results['settings']['plan'], results['load_average']
  d = s['data']
  origin = (f"generated now in {d['generate_seconds']:.0f} s" if d['generated']
            else 'existing shards')
  count = f"{d['num_images']} JPEG images" if d['num_images'] > 0 else 'JPEG images'
  shapes = ', '.join('x'.join(map(str, shape)) for shape in d['image_shapes']) or 'sizes unknown'
  return [
      f"Data: {count} ({shapes}) in {s['num_shards']} TFRecord shards, {d['num_classes']} "
      f"classes, {d['data_dir']} ({origin})",
      f"Work per image: parse, decode, {s['augment']} to {s['image_size']}x{s['image_size']} "
      f"float32, flip; batch {plan['batch_size']} | TensorFlow {s['tensorflow']}",
      f"Machine: {results['cpus_available']} CPU(s) available to this process; 1-min load average "
      f"{load['start']:.2f} at start, {load['end']:.2f} at end (this benchmark included)",
      f"Each pipeline: {plan['warmup_batches']} warm-up batches, then {plan['batches']} measured "
      f"({plan['batches'] * plan['batch_size']} images); {plan['repeats']} repeat(s), interleaved; "
      'median [min-max] images/s; "others": CPU share used by other processes meanwhile.',
  ]


def _pipeline_lines(results):
  lines = [f"{'pipeline':<14}{'images/s':>9}  {'min-max':<12}{'others':>7}  what"]
  for name, r in results['pipelines'].items():
    spread = f"{r['min']:.0f}-{r['max']:.0f}"
    where = (f"pinned to CPU {r['cpu']}" if r.get('cpu') is not None else 'not pinned') + (
        f", {r['cores_used']:.2f} cores used" if 'cores_used' in r else '')
    lines.append(f"{name:<14}{r['images_per_second']:>9.0f}  {spread:<12}"
                 f"{_percent(r['others_cpu']):>7}  {_LABELS[name].format(where=where)}")
  lines.append(f"{'decode limit':<14}{results['decode_limit']:>9.0f}  {'':<12}{'':>7}  one_thread "
               f"x {results['cpus_available']} CPU(s)")
  return lines


def _training_lines(results):
  t, s = results['training'], results['settings']['train']
  return [
      f"Training: {s['model']} on these records at {s['image_size']}x{s['image_size']} "
      f"({results['settings']['augment']}), engine {s['engine']} x{s['num_replicas']}, global "
      f"batch {s['global_batch_size']}, {t['steps']} measured steps after {t['warmup_steps']}: "
      f"step {t['step_ms']:.1f} ms, of which {t['wait_ms']:.2f} ms in next(iterator); "
      f"{t['images_per_second']:.0f} images/s.",
      f"Same step on one fetched batch (no input): {t['compute_step_ms']:.1f} ms, so input costs "
      f"{100 * t['input_cost_fraction']:.1f}% of the step time counting the CPU the pipeline "
      'takes from the step (not part of the target' +
      ('; negative: noise' if t['input_cost_fraction'] < 0 else '') + ').',
  ]


def _busy_warning(results):
  """A line saying how much other processes skewed the figures, when they used >= 10% CPU."""
  measured = list(results['pipelines'].values()) + [results['training']]
  shares = [r.get('others_cpu') for r in measured if r.get('others_cpu') is not None]
  if not shares or max(shares) < _BUSY_SHARE:
    return []
  return ['', f'WARNING: other processes used up to {_percent(max(shares))} of the CPUs during the '
          'measurements: the figures understate this machine and their ratios are unreliable; '
          'rerun when it is idle.']


def _check_lines(results):
  lines = [f"{'check':<28}{'value':>8}  {'target':<10}result"]
  missed = []
  for check in results['checks']:
    value, target = _check_value(check)
    lines.append(f"{_CHECK_LABELS[check['name']]:<28}{value:>8}  {target:<10}"
                 f"{'pass' if check['passed'] else 'FAIL'}")
    if not check['passed']:
      missed.append(f"{_CHECK_LABELS[check['name']]} is {value}, target {target}")
  if missed:
    lines.append('MISSED TARGETS: ' + '; '.join(missed) + '.')
  else:
    lines.append('All targets met.')
  return lines


def format_report(results):
  """The text report of `run_benchmark`'s results (command line first when present)."""
  lines = [f"Command: {results['command']}"] if 'command' in results else []
  return '\n'.join(lines + _header(results) + [''] + _pipeline_lines(results) + [''] +
                   _training_lines(results) + [''] + _check_lines(results) +
                   _busy_warning(results))


# ------------------------------------------------------------------------------------------------
# Command line.


def make_plan(batch_size, warmup_batches, batches, repeats, train_steps, train_warmup_steps):
  """Checks the measurement flags and returns a `Plan`.

  Raises:
    ValueError: listing every invalid flag.
  """
  values = {'batch_size': batch_size, 'warmup_batches': warmup_batches, 'batches': batches,
            'repeats': repeats, 'train_steps': train_steps,
            'train_warmup_steps': train_warmup_steps}
  minimum = {'warmup_batches': 0, 'train_warmup_steps': 0}
  problems = [f'--{name}={value}: must be an integer >= {minimum.get(name, 1)}'
              for name, value in values.items() if value < minimum.get(name, 1)]
  if problems:
    raise ValueError('Invalid benchmark flags:\n  ' + '\n  '.join(problems))
  return Plan(**values)


def make_spec(data_dir, num_images, image_size, num_shards, num_classes):
  """Checks the data flags and returns a `DataSpec` (default folder when `data_dir` is empty).

  Raises:
    ValueError: listing every invalid flag.
  """
  values = {'num_images': num_images, 'image_size': image_size, 'num_shards': num_shards,
            'num_classes': num_classes}
  problems = [f'--{name}={value}: must be a positive integer' for name, value in values.items()
              if value < 1]
  if problems:
    raise ValueError('Invalid benchmark flags:\n  ' + '\n  '.join(problems))
  return DataSpec(data_dir or default_data_dir(num_images, image_size, num_shards), **values)


def _define_flags():
  """Defines the command-line flags; only when run as a program, so importing defines none."""
  integer = flags.DEFINE_integer
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file(
          'config', _DEFAULT_CONFIG, 'Experiment config file for the tuned pipeline\'s data.* '
          'settings and for the training part (engine, model, global batch); any field can be '
          'overridden, e.g. --config.data.private_threadpool_size=2. The benchmark sets '
          'data.source, train_files, eval_files, num_classes, image_size and train_augment '
          f'({_AUGMENT}) itself.', lock_config=True),
      data_dir=flags.DEFINE_string(
          'data_dir', None, 'Folder of the JPEG TFRecord shards (train-*-of-*). Read as they are '
          'when present; else the synthetic shards of --num_images/--image_size/--num_shards are '
          'written there first. Default: a folder per data shape under the temp dir.'),
      num_images=integer('num_images', 2048, 'Images to generate when --data_dir holds no shards.'),
      image_size=integer('image_size', 224, 'Height and width of the generated JPEGs, and the '
                         'output size of the three input pipelines.'),
      num_shards=integer('num_shards', 16, 'TFRecord shards to generate.'),
      num_classes=integer('num_classes', 10, 'Classes of the generated labels.'),
      batch_size=integer('batch_size', 64, 'Images per batch in the three input pipelines (the '
                         'training part uses config.train.global_batch_size).'),
      warmup_batches=integer('warmup_batches', 10, 'Batches read before the clock starts, for each '
                             'pipeline and repeat.'),
      batches=integer('batches', 100, 'Measured batches per pipeline and repeat.'),
      repeats=integer('repeats', 3, 'Measurements of each pipeline, interleaved; the table reports '
                      'the median and the min-max.'),
      train_image_size=integer('train_image_size', 64, 'data.image_size while training (the '
                               'pipeline decodes the same JPEGs and crops to this size).'),
      train_steps=integer('train_steps', 100, 'Measured training steps (and input-free steps).'),
      train_warmup_steps=integer('train_warmup_steps', 10, 'Training steps before the clock '
                                 'starts (tracing, pipeline warm-up).'),
      json_out=flags.DEFINE_string('json_out', None, 'Optional path of a JSON file for the '
                                   'results.'),
      one_thread_child=flags.DEFINE_string(
          'one_thread_child', None, 'Internal: run as the one-thread child on this request file '
          '(the benchmark starts it; see the module docstring).'))


def _parse(flag_values):
  """The config, `DataSpec` and `Plan` of the flags; prints the problems and exits 2 if invalid."""
  f = flag_values
  config = f.config.value
  try:
    loops_bench.validate_config(config)
    spec = make_spec(f.data_dir.value, f.num_images.value, f.image_size.value,
                     f.num_shards.value, f.num_classes.value)
    plan = make_plan(f.batch_size.value, f.warmup_batches.value, f.batches.value,
                     f.repeats.value, f.train_steps.value, f.train_warmup_steps.value)
    if f.train_image_size.value < 1:
      raise ValueError(f'--train_image_size={f.train_image_size.value}: must be positive')
  except ValueError as e:  # validation.ConfigError is a ValueError.
    print(e, file=sys.stderr)
    sys.exit(2)
  return config, spec, plan


def main(argv, flag_values):
  """Validates config and flags, prints the command, runs the benchmark and prints the report.

  Args:
    argv: the arguments left by absl (the program name only).
    flag_values: the namespace of `_define_flags`.
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if flag_values.one_thread_child.value:
    run_one_thread_child(flag_values.one_thread_child.value)
    return
  config, spec, plan = _parse(flag_values)
  command = loops_bench.command_line(sys.argv, _COMMAND)
  print(f'Command: {command}', flush=True)
  experiment.quiet_tensorflow_logs()
  results = dict(run_benchmark(config, spec, plan, flag_values.image_size.value,
                               flag_values.train_image_size.value), command=command)
  print(format_report(results).split('\n', 1)[1], flush=True)  # The command is printed already.
  loops_bench.write_results(flag_values.json_out.value, results)


def run():
  """Program entry point: defines the flags, then runs `main` under absl."""
  flag_values = _define_flags()
  app.run(functools.partial(main, flag_values=flag_values))


if __name__ == '__main__':
  run()
