"""A scaling model: step time, images/s and efficiency of data-parallel training on 1..512 workers.

    python -m trainer.benchmarks.scaling_model [--config=configs/default.py] [--config.F=VALUE ...]
        [--compute_ms=MS] [--parameters=N] [--per_worker_batch=B]
        [--p2p_bandwidth_gbits=G --p2p_latency_us=US] [--engine=multi_worker] [--num_workers=2]
        [--network_gbits=25,100,400] [--network_latency_us=10] [--workers=3,48] [--max_workers=512]
        [--backward_fraction=0.667] [--fusion_buffer_mb=0] [--validate] [--json_out=PATH]
        [--plot_out=PATH]

From three figures measured here it predicts, for ring all-reduce and weak scaling (every worker
keeps `--per_worker_batch`), the step time, images/s and scaling efficiency of 1, 2, 4, ...,
`--max_workers` workers (plus `--workers`), without and with overlap of communication and backward
pass, on this machine's link and on the networks named by `--network_gbits`:

* compute time per step C: a 1-worker run of the config's model (the `default` engine, custom loop,
  timed by `trainer.benchmarks.engines` in a process pinned to one core; the fastest of
  `--repeats`, since other work on the machine only adds time), or `--compute_ms`;
* gradient bytes G: 4 bytes per trainable parameter of the config's model, or `--parameters`;
* point-to-point bandwidth B and latency alpha: `--num_workers` local processes (pinned, one core
  each) all-reduce float32 buffers of `--message_kb` sizes through `--engine`'s own gradient
  reduction (the calls of the train step, `engines.gradient_allreduce_loop`); a least-squares line
  t(n) = a + b n (relative errors) is read as the ring all-reduce time
  2(p-1) alpha + 2(p-1)/p n / B, so alpha = a / (2(p-1)) and B = 2(p-1) / (p b). Or
  `--p2p_bandwidth_gbits` and `--p2p_latency_us`.

The model (see `predict_curve`): comm(p) = 2(p-1) alpha k + 2(p-1)/p G / B for p > 1 (k = number
of all-reduces, the tensor-fusion buckets); without overlap, step = C + comm; with overlap,
communication runs behind the backward pass, which is `--backward_fraction` (2/3) of C, so
step = C + max(0, comm - 2/3 C). Efficiency = C / step = images/s / (p x images/s of 1 worker).

`--validate` checks it two ways and prints both: (1) its prediction for `--num_workers` workers here
against a measured run of `--engine` with that many pinned workers (fastest repeat; also with that
run's own step without all-reduce as compute, which tests the communication model alone); (2) fed
the gradient sizes of ResNet-101 and VGG-16, the published per-GPU throughput of a Pascal P100 and
25 Gbit/s, against Horovod's published efficiencies at 512 GPUs (constants below, with sources).

Measurements run in fresh processes started like `trainer.benchmarks.engines` starts its workers
(this module with the internal `--worker` flag for the all-reduce sizes).
"""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import functools
import json
import math
import os
import statistics
import sys
import types

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

from input_pipeline import sources
from trainer import engines
from trainer import experiment
from trainer import model as model_lib
from trainer import optimization
from trainer.benchmarks import engines as engines_bench
from trainer.benchmarks import loops as loops_bench

_MODULE = 'trainer.benchmarks.scaling_model'
_COMMAND = f'python -m {_MODULE}'
_DEFAULT_CONFIG = 'configs/default.py'
USAGE_ERROR = 2  # Bad flags or config: nothing was run.
STARTUP_ERROR = 3  # A worker's engine could not start (as trainer.train).
FAILED = 1  # A measurement failed.

BYTES_PER_PARAMETER = 4  # float32 gradients.
BACKWARD_FRACTION = 2 / 3  # Backward pass ~ 2x the forward pass's FLOPs: 2/3 of a step's compute.
MAX_WORKERS = 512
DEFAULT_MESSAGE_KB = (4, 16, 64, 256, 1024, 4096, 16384, 65536)  # 4 KB .. 64 MB.
ITERATION_BYTES = 256 * 2**20  # All-reduce about this many bytes per timed loop (at most).

# ---------------------------------------------------------------------------------------------
# Published figures for the check against Horovod's 512-GPU benchmark.

# Horovod's benchmark: "128 servers with 4 Pascal GPUs each connected by a RoCE-capable 25 Gbit/s
# network. Horovod achieves 90% scaling efficiency for both Inception V3 and ResNet-101, and 68%
# scaling efficiency for VGG-16." (horovod/horovod README.rst and docs/benchmarks.rst; also
# Sergeev & Del Balso, arXiv:1802.05799). Run as tf_cnn_benchmarks --batch_size 64
# --variable_update horovod (docs/benchmarks.rst): 64 images per GPU, synthetic data.
HOROVOD_GPUS = 512
HOROVOD_NETWORK_GBITS = 25.0
HOROVOD_BATCH_PER_GPU = 64
HOROVOD_EFFICIENCY = {'resnet101': 0.90, 'vgg16': 0.68}

# One NVIDIA Tesla P100 (DGX-1), TensorFlow tf_cnn_benchmarks, synthetic ImageNet data, batch 64 per
# GPU, images/s: "Details for NVIDIA DGX-1 (NVIDIA Tesla P100)", TensorFlow performance benchmarks,
# https://www.tensorflow.org/performance/benchmarks (kept as
# https://github.com/tensorflow/docs/blob/master/site/en/r1/guide/performance/benchmarks.md).
P100_IMAGES_PER_SECOND = {'resnet50': 219.0, 'resnet152': 91.8, 'vgg16': 154.0}
# That page has no ResNet-101. Its time per image is interpolated between ResNet-50 and ResNet-152
# by bottleneck blocks (16, 33 and 50 blocks; He et al., arXiv:1512.03385, Table 1): halfway, which
# gives 129.4 images/s (interpolating by FLOPs, 3.8 / 7.6 / 11.3 GFLOPs, gives 129.0).
_RESNET101_SHARE = (33 - 16) / (50 - 16)
P100_IMAGES_PER_SECOND['resnet101'] = 1 / (
    (1 - _RESNET101_SHARE) / P100_IMAGES_PER_SECOND['resnet50'] +
    _RESNET101_SHARE / P100_IMAGES_PER_SECOND['resnet152'])

# Trainable parameters (= gradient elements), counted with tf_keras.applications.ResNet101 and
# VGG16 (weights=None, 1000 classes) in this environment; keras.io's application table lists
# 44.7M and 138.4M parameters (ResNet-101's includes batch-norm statistics, which are not trained).
PUBLISHED_MODEL_PARAMETERS = {'resnet101': 44_601_832, 'vgg16': 138_357_544}
PUBLISHED_MODEL_NAMES = {'resnet101': 'ResNet-101', 'vgg16': 'VGG-16'}

# Latency per ring step assumed for the published check and the named networks: a few microseconds
# for RDMA (RoCE, InfiniBand), tens over TCP.
DEFAULT_NETWORK_LATENCY_US = 10.0


# ---------------------------------------------------------------------------------------------
# The model.


def gbits_to_bytes_per_second(gbits):
  """Link speed in Gbit/s (10^9 bits) to bytes per second."""
  return gbits * 1e9 / 8


def ring_allreduce_seconds(message_bytes, workers, bandwidth_bytes_per_second, latency_seconds,
                           buckets=1):
  """Seconds of a ring all-reduce of `message_bytes` over `workers` (0 for a single worker).

  The ring (Horovod, NCCL, TensorFlow's collective ring) runs 2(p-1) steps, p-1 of reduce-scatter
  then p-1 of all-gather; in each step every worker sends n/p bytes to its neighbour while
  receiving as many, all links at once. So t = 2(p-1) alpha + 2(p-1)/p n/B, with alpha and B the
  latency and bandwidth of one point-to-point link. Sent as `buckets` all-reduces (tensor fusion
  buffers) the bytes stay the same and the latency is paid once per bucket.

  Args:
    message_bytes: bytes all-reduced (the gradient).
    workers: processes in the ring (p).
    bandwidth_bytes_per_second: B of one link (may be `math.inf`).
    latency_seconds: alpha, per ring step.
    buckets: separate all-reduces the message is sent in.
  """
  if workers <= 1:
    return 0.0
  ring_steps = 2 * (workers - 1)
  return ring_steps * latency_seconds * buckets + (
      ring_steps / workers * message_bytes / bandwidth_bytes_per_second)


def overlapped_step_seconds(compute_seconds, comm_seconds, overlap,
                            backward_fraction=BACKWARD_FRACTION):
  """Step time: compute plus the communication that the backward pass does not hide.

  With `overlap`, gradients are all-reduced while the backward pass still computes the earlier
  layers' gradients, so up to `backward_fraction` x compute of communication is hidden (an upper
  bound: a real framework waits for the first bucket to fill and for the last to be sent).
  """
  if overlap:
    return compute_seconds + max(0.0, comm_seconds - backward_fraction * compute_seconds)
  return compute_seconds + comm_seconds


def worker_counts(max_workers=MAX_WORKERS, extra=()):
  """1, 2, 4, ... up to `max_workers`, plus `extra`, sorted and without duplicates."""
  counts = {1 << i for i in range(max_workers.bit_length()) if 1 << i <= max_workers}
  return sorted(counts | {int(w) for w in extra})


def predict_curve(compute_seconds, gradient_bytes, bandwidth_bytes_per_second, latency_seconds,
                  workers, per_worker_batch, overlap, *, backward_fraction=BACKWARD_FRACTION,
                  buckets=1):
  """Predicted weak-scaling curve of synchronous data parallelism with ring all-reduce.

  Every worker computes a step of `per_worker_batch` images in `compute_seconds` (as one worker
  alone does), then the gradients (`gradient_bytes`) are summed by one ring all-reduce
  (`ring_allreduce_seconds`), partly hidden behind the backward pass when `overlap`
  (`overlapped_step_seconds`). Everything else (input, optimizer update) is in the compute time
  and does not change with the number of workers.

  Args:
    compute_seconds: one worker's step time, without communication (> 0).
    gradient_bytes: bytes all-reduced per step (>= 0).
    bandwidth_bytes_per_second: point-to-point bandwidth B (> 0, may be `math.inf`).
    latency_seconds: point-to-point latency alpha per ring step (>= 0).
    workers: iterable of worker counts (>= 1).
    per_worker_batch: images per worker and step (> 0).
    overlap: whether communication overlaps the backward pass.
    backward_fraction: share of the compute time spent in the backward pass (0 to 1).
    buckets: all-reduces per step (tensor-fusion buffers); each pays the latency.

  Returns:
    One dict per worker count, in the given order: `workers`, `step_seconds`, `comm_seconds` (the
    whole all-reduce, hidden or not), `images_per_second` (all workers) and `efficiency`
    (images/s over workers x images/s of one worker = compute_seconds / step_seconds).

  Raises:
    ValueError: naming the first invalid argument.
  """
  checks = (('compute_seconds', compute_seconds, compute_seconds > 0),
            ('gradient_bytes', gradient_bytes, gradient_bytes >= 0),
            ('bandwidth_bytes_per_second', bandwidth_bytes_per_second,
             bandwidth_bytes_per_second > 0),
            ('latency_seconds', latency_seconds, latency_seconds >= 0),
            ('per_worker_batch', per_worker_batch, per_worker_batch > 0),
            ('backward_fraction', backward_fraction, 0 <= backward_fraction <= 1),
            ('buckets', buckets, buckets >= 1))
  for name, value, ok in checks:
    if not ok:
      raise ValueError(f'predict_curve: invalid {name}={value!r}')
  curve = []
  for count in workers:
    if count < 1 or int(count) != count:
      raise ValueError(f'predict_curve: invalid worker count {count!r} (a positive integer)')
    comm = ring_allreduce_seconds(gradient_bytes, int(count), bandwidth_bytes_per_second,
                                  latency_seconds, buckets)
    step = overlapped_step_seconds(compute_seconds, comm, overlap, backward_fraction)
    curve.append({'workers': int(count), 'step_seconds': step, 'comm_seconds': comm,
                  'images_per_second': count * per_worker_batch / step,
                  'efficiency': compute_seconds / step})
  return curve


def fusion_buckets(gradient_bytes, fusion_buffer_bytes):
  """All-reduces per step with gradients fused into `fusion_buffer_bytes` buffers (0: one)."""
  if fusion_buffer_bytes <= 0 or gradient_bytes <= 0:
    return 1
  return max(1, math.ceil(gradient_bytes / fusion_buffer_bytes))


# ---------------------------------------------------------------------------------------------
# From all-reduce timings to point-to-point bandwidth and latency.


def fit_alpha_beta(message_bytes, seconds):
  """Least-squares line seconds = intercept + slope x bytes, on relative errors.

  Each point is weighted by 1/seconds, so a 4 KB message (tenths of a millisecond) counts as much as
  a 64 MB one (tenths of a second); an unweighted fit would leave the intercept to the noise of the
  largest messages.

  Returns:
    (intercept seconds, slope seconds per byte).

  Raises:
    ValueError: fewer than two distinct sizes, or a non-positive time.
  """
  n = np.asarray(message_bytes, np.float64)
  t = np.asarray(seconds, np.float64)
  if n.shape != t.shape or len(set(n.tolist())) < 2:
    raise ValueError(f'fit_alpha_beta: need timings of at least 2 distinct sizes, got {n.tolist()}')
  if np.any(t <= 0):
    raise ValueError(f'fit_alpha_beta: all times must be positive, got {t.tolist()}')
  design = np.stack([np.ones_like(n), n], axis=1) / t[:, None]
  (intercept, slope), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
  return float(intercept), float(slope)


def point_to_point_from_ring(intercept_seconds, slope_seconds_per_byte, workers):
  """(bandwidth bytes/s, latency s) of one link, from a ring all-reduce's t(n) = a + b n over p.

  t(n) = 2(p-1) alpha + 2(p-1)/p n/B, so alpha = a / (2(p-1)) and B = 2(p-1) / (p b). A negative
  intercept (noise, when latency is small) gives latency 0.

  Raises:
    ValueError: if `workers` < 2 or the slope is not positive (no bandwidth can be read).
  """
  if workers < 2:
    raise ValueError(f'a ring of {workers} worker(s) sends nothing: need at least 2')
  if slope_seconds_per_byte <= 0:
    raise ValueError(f'all-reduce time does not grow with the message size (slope '
                     f'{slope_seconds_per_byte:.3g} s/byte): use larger --message_kb sizes')
  ring_steps = 2 * (workers - 1)
  return (ring_steps / (workers * slope_seconds_per_byte),
          max(0.0, intercept_seconds / ring_steps))


# ---------------------------------------------------------------------------------------------
# Check against Horovod's published 512-GPU efficiencies.


def published_check(latency_seconds=DEFAULT_NETWORK_LATENCY_US * 1e-6,
                    network_gbits=HOROVOD_NETWORK_GBITS, backward_fraction=BACKWARD_FRACTION,
                    fusion_buffer_bytes=0):
  """The model fed ResNet-101's and VGG-16's gradients, P100 throughput and 25 Gbit/s, at 512 GPUs.

  `fusion_buffer_bytes` > 0 sends the gradient in buffers of that size (Horovod's default is 64 MB),
  each paying the ring latency.

  Returns:
    One dict per model: `model`, `parameters`, `gradient_mb`, `p100_images_per_second`,
    `compute_ms` (64 images), `comm_ms`, `efficiency_no_overlap`, `efficiency_overlap`,
    `published_efficiency`, and `hidden_share`: the share of the all-reduce that must be hidden
    behind computation for the model to give the published efficiency.
  """
  bandwidth = gbits_to_bytes_per_second(network_gbits)
  rows = []
  for key, parameters in PUBLISHED_MODEL_PARAMETERS.items():
    compute = HOROVOD_BATCH_PER_GPU / P100_IMAGES_PER_SECOND[key]
    gradient_bytes = parameters * BYTES_PER_PARAMETER
    buckets = fusion_buckets(gradient_bytes, fusion_buffer_bytes)
    points = {overlap: predict_curve(compute, gradient_bytes, bandwidth, latency_seconds,
                                     [HOROVOD_GPUS], HOROVOD_BATCH_PER_GPU, overlap,
                                     backward_fraction=backward_fraction, buckets=buckets)[0]
              for overlap in (False, True)}
    comm = points[False]['comm_seconds']
    published = HOROVOD_EFFICIENCY[key]
    exposed = compute / published - compute  # Step time at the published efficiency, minus C.
    rows.append({
        'model': PUBLISHED_MODEL_NAMES[key], 'parameters': parameters, 'buckets': buckets,
        'gradient_mb': gradient_bytes / 1e6, 'p100_images_per_second': P100_IMAGES_PER_SECOND[key],
        'compute_ms': 1000 * compute, 'comm_ms': 1000 * comm,
        'efficiency_no_overlap': points[False]['efficiency'],
        'efficiency_overlap': points[True]['efficiency'], 'published_efficiency': published,
        'hidden_share': 1 - exposed / comm})
  return rows


# ---------------------------------------------------------------------------------------------
# All-reduce microbenchmark (worker side).


def iterations_for(message_bytes, max_iterations):
  """Timed all-reduces of one size: about ITERATION_BYTES in all, 3 to `max_iterations`."""
  return max(3, min(max_iterations, ITERATION_BYTES // max(1, message_bytes)))


def measure_allreduce_sizes(config, engine, message_bytes, repeats, max_iterations):
  """Seconds of one all-reduce of a float32 buffer of each size, in this worker (all in step).

  Each size is a gradient of one variable, reduced by `engines.gradient_allreduce_loop`: the train
  step's own calls (`engine.reduce_gradients`, then the optimizer's aggregation), minus the time to
  fill the buffer (the same loop without the reduction). Repeats alternate the two loops.

  Returns:
    One dict per size: `bytes`, `iterations`, `allreduce_runs` and `fill_runs` (seconds per
    iteration, per repeat), `seconds` (median all-reduce minus median fill).
  """
  with engine.scope():
    optimizer = engine.prepare_optimizer(optimization.create_optimizer(config.train, 0.0))
  results = []
  for size in message_bytes:
    with engine.scope():
      variable = tf.Variable(tf.zeros([max(1, size // BYTES_PER_PARAMETER)]), name='message')
      gradients_of = types.SimpleNamespace(trainable_variables=[variable])
      loops = {reduce: engines_bench.gradient_allreduce_loop(engine, gradients_of, optimizer,
                                                             reduce)
               for reduce in (True, False)}
      for loop in loops.values():
        engines_bench.time_loop(loop, 2)  # Tracing.
      iterations = iterations_for(size, max_iterations)
      runs = {True: [], False: []}
      for repeat in range(repeats):
        for reduce in ((True, False) if repeat % 2 == 0 else (False, True)):
          runs[reduce].append(engines_bench.time_loop(
              loops[reduce], iterations))
    results.append({'bytes': size, 'iterations': iterations, 'allreduce_runs': runs[True],
                    'fill_runs': runs[False],
                    'seconds': statistics.median(runs[True]) - statistics.median(runs[False])})
  return results


def run_worker(config, message_bytes, repeats, max_iterations, pin_cpus, result_dir):
  """The `--worker` mode: times the all-reduce sizes and writes `{engine}.{index}.json`."""
  threads = engines_bench.configure_threads(pin_cpus, config.engine.num_replicas)
  load_start = os.getloadavg()[0]
  # The engine comes first: collectives must be set up before other TF ops.
  engine = engines.create_engine(config.engine)
  sizes = measure_allreduce_sizes(config, engine, message_bytes, repeats, max_iterations)
  result = {'engine': engine.name, 'worker_index': engine.worker_index,
            'num_workers': engine.num_workers, 'sizes': sizes, 'threads': threads,
            'cpus': sorted(os.sched_getaffinity(0)),
            'load_average': {'start': load_start, 'end': os.getloadavg()[0]}}
  path = os.path.join(result_dir, f'{engine.name}.{engine.worker_index}.json')
  with open(f'{path}.tmp', 'w') as f:
    f.write(json.dumps(result, indent=2) + '\n')
  os.rename(f'{path}.tmp', path)
  engine.barrier()  # Nobody leaves while a peer may still need it for a collective.


# ---------------------------------------------------------------------------------------------
# Measurements (chief side).


def allreduce_worker_processes(engine_name, num_workers, args, result_dir, pin_cpus):
  """`engines_bench.worker_processes`, running this module's `--worker` instead of the engine one.

  The launch set-up (TF_CONFIG or horovodrun, CPU pinning, --worker, --result_dir, --pin_cpus and
  the engine's --config.engine.* overrides) is the engine benchmark's.
  """
  return engines_bench.worker_processes(engine_name, num_workers, args, result_dir, pin_cpus,
                                        module=_MODULE)


def measure_point_to_point(engine_name, num_workers, config_args, message_kb, repeats,
                           max_iterations, pin_cpus, timeout_seconds=0):
  """Runs the all-reduce microbenchmark on `num_workers` local processes and fits B and alpha.

  Returns:
    (exit code, dict or None): `engine`, `workers`, `sizes` (bytes, measured and fitted seconds,
    whether used in the fit), `intercept_seconds`, `slope_seconds_per_byte`,
    `bandwidth_bytes_per_second`, `latency_seconds`, `cpus`, `load_average`.
  """
  args = [*config_args, f'--message_kb={",".join(str(kb) for kb in message_kb)}',
          f'--allreduce_repeats={repeats}', f'--allreduce_iterations={max_iterations}']
  print(f'[scaling] all-reduce microbenchmark: {engine_name}, {num_workers} processes, '
        f'{len(message_kb)} sizes', flush=True)
  code, results = engines_bench.run_engine(engine_name, num_workers, args, pin_cpus,
                                          timeout_seconds, module=_MODULE)
  if code != 0 or len(results) != num_workers:
    return code or FAILED, None
  chief = results[0]
  usable = [s for s in chief['sizes'] if s['seconds'] > 0]  # Noise can beat a tiny all-reduce.
  try:
    intercept, slope = fit_alpha_beta([s['bytes'] for s in usable],
                                      [s['seconds'] for s in usable])
    bandwidth, latency = point_to_point_from_ring(intercept, slope, num_workers)
  except ValueError as e:
    print(f'[scaling] cannot fit the all-reduce timings {chief["sizes"]}: {e}', file=sys.stderr)
    return FAILED, None
  sizes = [{'bytes': s['bytes'], 'seconds': s['seconds'], 'iterations': s['iterations'],
            'fitted_seconds': intercept + slope * s['bytes'], 'used_in_fit': s['seconds'] > 0}
           for s in chief['sizes']]
  return 0, {'engine': engine_name, 'workers': num_workers, 'sizes': sizes,
             'intercept_seconds': intercept, 'slope_seconds_per_byte': slope,
             'bandwidth_bytes_per_second': bandwidth, 'latency_seconds': latency,
             'cpus': [r['cpus'] for r in results], 'load_average': chief['load_average']}


def step_args(config_args, global_batch_size, steps, warmup_steps, repeats):
  """Arguments of an engine-benchmark worker: the config, its global batch and the plan."""
  return [*config_args, f'--config.train.global_batch_size={global_batch_size}',
          f'--steps={steps}', f'--warmup_steps={warmup_steps}', f'--repeats={repeats}']


def measure_step(engine_name, num_workers, config_args, per_worker_batch, steps, warmup_steps,
                 repeats, pin_cpus, timeout_seconds=0):
  """Step time of `engine_name` at `per_worker_batch` images per process (weak scaling).

  Runs `trainer.benchmarks.engines`' workers (`engines_bench.run_engine`): for `default`, one
  process pinned to one CPU share of `num_workers` (so 1 worker vs N is fair); for multi-process
  engines, `num_workers` pinned processes with a global batch of `num_workers x per_worker_batch`.

  Returns:
    (exit code, `engines_bench.summarize_engine` dict or None).
  """
  processes = engines_bench.layout(engine_name, num_workers)[0]
  global_batch = per_worker_batch * processes
  print(f'[scaling] step time: {engine_name}, {processes} process(es), global batch '
        f'{global_batch}', flush=True)
  code, results = engines_bench.run_engine(
      engine_name, num_workers, step_args(config_args, global_batch, steps, warmup_steps, repeats),
      pin_cpus, timeout_seconds)
  if code != 0 or len(results) != processes:
    return code or FAILED, None
  return 0, engines_bench.summarize_engine(engine_name, results, global_batch)


def count_parameters(config):
  """Trainable parameters of the config's model (its gradient elements), built in this process."""
  source = sources.create_source(config.data, config.seed)
  model = model_lib.create_model(config.model, experiment.source_image_shape(config, source),
                                 source.num_classes)
  return sum(int(v.shape.num_elements()) for v in model.trainable_variables)


def fastest_step_ms(summary, global_batch_size, rates='images_per_second'):
  """Step ms of the fastest repeat in an engine summary (other work on the machine only adds time).

  `rates` is `images_per_second` (the full step) or `no_comm_images_per_second`.
  """
  return 1000 * global_batch_size / summary[rates]['max']


def measured_run_check(compute_seconds, gradient_bytes, p2p, measured, per_worker_batch):
  """Validation (1): the model's step for the measured run's workers against the measured step.

  Both the compute time and the measured step are of the fastest repeat of their runs.

  Args:
    compute_seconds: the 1-worker step.
    gradient_bytes: bytes all-reduced per step.
    p2p: `measure_point_to_point`'s dict (or given figures with the same keys).
    measured: `engines_bench.summarize_engine` of the multi-worker run.
    per_worker_batch: images per worker.

  Returns:
    `workers`, `engine`, `predicted_step_ms`, `measured_step_ms` (fastest repeat), `error`
    (predicted / measured - 1), `within_10_percent`, `predicted_comm_ms`, `measured_comm_ms`
    (fastest step minus fastest step without gradient communication), `measured_allreduce_ms` (a
    gradient all-reduce alone), `measured_no_comm_step_ms`, `measured_median_step_ms`,
    `load_average` of the measured run, and `same_compute_step_ms` / `same_compute_error`: the
    prediction with the measured run's own step without all-reduce as compute time, which isolates
    the communication model from what running N processes does to compute (shared cores, caches,
    memory bandwidth, other work on the machine).
  """
  workers = measured['workers']
  point, = predict_curve(compute_seconds, gradient_bytes, p2p['bandwidth_bytes_per_second'],
                         p2p['latency_seconds'], [workers], per_worker_batch, overlap=False)
  global_batch = per_worker_batch * workers
  predicted_ms = 1000 * point['step_seconds']
  measured_ms = fastest_step_ms(measured, global_batch)
  no_comm_ms = fastest_step_ms(measured, global_batch, 'no_comm_images_per_second')
  return {'workers': workers, 'engine': measured['engine'], 'predicted_step_ms': predicted_ms,
          'measured_step_ms': measured_ms, 'error': predicted_ms / measured_ms - 1,
          'within_10_percent': abs(predicted_ms / measured_ms - 1) <= 0.10,
          'predicted_comm_ms': 1000 * point['comm_seconds'],
          'measured_comm_ms': measured_ms - no_comm_ms,
          'measured_allreduce_ms': measured['allreduce_ms'],
          'measured_no_comm_step_ms': no_comm_ms, 'measured_median_step_ms': measured['step_ms'],
          'load_average': measured['load_average'],
          'same_compute_step_ms': no_comm_ms + 1000 * point['comm_seconds'],
          'same_compute_error': (no_comm_ms + 1000 * point['comm_seconds']) / measured_ms - 1}


# ---------------------------------------------------------------------------------------------
# Predictions and report.


def networks_to_model(p2p, network_gbits, network_latency_seconds):
  """The links to predict for: this machine's measured link (if any), then the named speeds."""
  links = []
  if p2p is not None:
    links.append({'name': 'here', 'bandwidth_bytes_per_second': p2p['bandwidth_bytes_per_second'],
                  'latency_seconds': p2p['latency_seconds'],
                  'source': p2p.get('source', 'measured')})
  for gbits in network_gbits:
    links.append({'name': f'{gbits:g} Gbit/s', 'bandwidth_bytes_per_second':
                  gbits_to_bytes_per_second(gbits), 'latency_seconds': network_latency_seconds,
                  'source': '--network_gbits, --network_latency_us'})
  return links


def predict_networks(inputs, links, workers):
  """`predict_curve` without and with overlap for every link; returns the links with `curves`."""
  predicted = []
  for link in links:
    curves = {name: predict_curve(inputs['compute_seconds'], inputs['gradient_bytes'],
                                  link['bandwidth_bytes_per_second'], link['latency_seconds'],
                                  workers, inputs['per_worker_batch'], overlap,
                                  backward_fraction=inputs['backward_fraction'],
                                  buckets=inputs['buckets'])
              for name, overlap in (('no_overlap', False), ('overlap', True))}
    predicted.append(dict(link, curves=curves))
  return predicted


def _link_text(link):
  bandwidth = link['bandwidth_bytes_per_second']
  return (f"{link['name']}: B {bandwidth * 8 / 1e9:.3g} Gbit/s ({bandwidth / 1e9:.3g} GB/s) per "
          f"link, latency {1e6 * link['latency_seconds']:.3g} us ({link['source']})")


def _prediction_table(link):
  lines = [_link_text(link),
           f"{'workers':>8}{'comm ms':>10}  |{'step ms':>10}{'images/s':>12}{'eff':>7}  |"
           f"{'step ms':>10}{'images/s':>12}{'eff':>7}"]
  for plain, overlapped in zip(link['curves']['no_overlap'], link['curves']['overlap']):
    lines.append(f"{plain['workers']:>8}{1000 * plain['comm_seconds']:>10.2f}  |"
                 f"{1000 * plain['step_seconds']:>10.2f}{plain['images_per_second']:>12.0f}"
                 f"{plain['efficiency']:>7.2f}  |{1000 * overlapped['step_seconds']:>10.2f}"
                 f"{overlapped['images_per_second']:>12.0f}{overlapped['efficiency']:>7.2f}")
  return lines


def _microbenchmark_lines(p2p):
  cpus = engines_bench.cpu_list(p2p['cpus'])
  lines = [f"All-reduce microbenchmark: {p2p['engine']}, {p2p['workers']} processes (CPUs "
           f"{cpus}); fit t = a + b n on relative errors: "
           f"a = {1e6 * p2p['intercept_seconds']:.1f} us, 1/b = "
           f"{1 / p2p['slope_seconds_per_byte'] / 1e9:.3g} GB/s",
           f"{'size':>10}{'measured ms':>13}{'fitted ms':>11}{'error':>8}"]
  for s in p2p['sizes']:
    error = (f"{s['fitted_seconds'] / s['seconds'] - 1:+.0%}" if s['used_in_fit'] else 'unused')
    lines.append(f"{s['bytes'] / 1024:>8.0f}KB{1000 * s['seconds']:>13.3f}"
                 f"{1000 * s['fitted_seconds']:>11.3f}{error:>8}")
  return lines


def _validation_lines(validation):
  lines = []
  check = validation.get('two_workers')
  if check:
    verdict = 'pass' if check['within_10_percent'] else 'FAIL'
    load = check['load_average']
    lines += [
        f"Check 1: {check['workers']} {check['engine']} workers here: predicted step "
        f"{check['predicted_step_ms']:.2f} ms, measured {check['measured_step_ms']:.2f} ms "
        f"(fastest repeat; median {check['measured_median_step_ms']:.2f} ms; load "
        f"{load['start']:.1f}-{load['end']:.1f}), error {check['error']:+.1%} (target within "
        f"10%): {verdict}",
        f"  comm: predicted {check['predicted_comm_ms']:.2f} ms; measured "
        f"{check['measured_comm_ms']:.2f} ms in the step (step minus step without gradient "
        f"all-reduce), "
        f"{check['measured_allreduce_ms']:.2f} ms for a gradient all-reduce alone; step without "
        f"all-reduce {check['measured_no_comm_step_ms']:.2f} ms vs 1 worker's "
        f"{validation['compute_ms']:.2f} ms",
        f"  with that run's own step without all-reduce as compute: predicted "
        f"{check['same_compute_step_ms']:.2f} ms, error {check['same_compute_error']:+.1%} (the "
        f"communication model alone)"]
  elif 'two_workers_error' in validation:
    lines.append(f"Check 1: {validation['two_workers_error']}")
  rows = validation['published']
  lines += [
      '',
      f"Check 2: Horovod at {HOROVOD_GPUS} GPUs (128 servers x 4 Pascal GPUs, 25 Gbit/s RoCE, "
      f"batch {HOROVOD_BATCH_PER_GPU}/GPU), model fed P100 images/s, float32 gradients, 25 Gbit/s, "
      f"latency {validation['published_latency_us']:g} us, fusion buffer "
      f"{validation['published_fusion_buffer_mb']:g} MB (0: one all-reduce):",
      f"{'model':<11}{'params':>8}{'grad MB':>9}{'P100 im/s':>11}{'C ms':>8}{'comm ms':>9}"
      f"{'no overlap':>12}{'overlap':>9}{'published':>11}{'hidden':>8}"]
  for r in rows:
    lines.append(f"{r['model']:<11}{r['parameters'] / 1e6:>7.1f}M{r['gradient_mb']:>9.0f}"
                 f"{r['p100_images_per_second']:>11.1f}{r['compute_ms']:>8.0f}{r['comm_ms']:>9.0f}"
                 f"{r['efficiency_no_overlap']:>12.2f}{r['efficiency_overlap']:>9.2f}"
                 f"{r['published_efficiency']:>11.2f}{r['hidden_share']:>8.0%}")
  lines.append('hidden: share of the all-reduce that must overlap computation for the model to '
               'give the published efficiency.')
  return lines


def format_report(results):
  """The text report of `results` (inputs, microbenchmark, one table per link, validation)."""
  inputs, load = results['inputs'], results['load_average']
  lines = [f"Command: {results['command']}"] if 'command' in results else []
  lines += [
      f"Inputs: compute {1000 * inputs['compute_seconds']:.2f} ms per step of "
      f"{inputs['per_worker_batch']} images ({inputs['compute_source']}); gradient "
      f"{inputs['parameters']:,} parameters = {inputs['gradient_bytes'] / 1e6:.2f} MB in float32 "
      f"({inputs['parameters_source']}); {inputs['buckets']} all-reduce(s) per step.",
      f"Model: ring all-reduce, weak scaling; overlap hides communication behind the backward "
      f"pass, {inputs['backward_fraction']:.2f} of compute; efficiency = 1-worker step / step.",
      f"Machine: {results['cpus']} CPU(s); 1-min load average {load['start']:.2f} at start, "
      f"{load['end']:.2f} at end.",
  ]
  if results.get('p2p') and 'sizes' in results['p2p']:
    lines += [''] + _microbenchmark_lines(results['p2p'])
  lines += ['', 'Predicted (left: no overlap; right: communication overlapped with the backward '
            'pass):']
  for link in results['networks']:
    lines += [''] + _prediction_table(link)
  if results.get('validation'):
    lines += [''] + _validation_lines(results['validation'])
  return '\n'.join(lines)


def plot_efficiency(results, path):
  """Writes a PNG of predicted efficiency vs workers: one colour per link, dashed with overlap."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(7, 4.5))
  for index, link in enumerate(results['networks']):
    color = f'C{index}'
    for name, style in (('no_overlap', '-'), ('overlap', '--')):
      curve = link['curves'][name]
      axes.plot([p['workers'] for p in curve], [p['efficiency'] for p in curve], style, color=color,
                marker='o', markersize=3,
                label=f"{link['name']}{' (overlap)' if name == 'overlap' else ''}")
  axes.set_xscale('log', base=2)
  ticks = [w for w in results['workers'] if w & (w - 1) == 0]  # The powers of two.
  axes.set_xticks(ticks, [str(w) for w in ticks])
  axes.set_ylim(0, 1.05)
  axes.set_xlabel('workers')
  axes.set_ylabel('scaling efficiency')
  inputs = results['inputs']
  axes.set_title(f"Predicted weak scaling: C {1000 * inputs['compute_seconds']:.1f} ms, "
                 f"gradient {inputs['gradient_bytes'] / 1e6:.1f} MB", fontsize=10)
  axes.grid(True, alpha=0.3)
  axes.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


# ---------------------------------------------------------------------------------------------
# Command line.


def config_arguments(argv):
  """The --config and --config.FIELD arguments of `argv`, to pass on to the measuring workers."""
  picked, i = [], 1
  while i < len(argv):
    arg = argv[i]
    if arg == '--config' or arg.startswith('--config.') and '=' not in arg:
      picked += argv[i:i + 2]
      i += 2
      continue
    if arg.startswith(('--config=', '--config.')):
      picked.append(arg)
    i += 1
  return picked


def check_flags(f, config):
  """Every problem with the flags (and, when steps are measured, with the config per engine).

  Raises:
    ValueError: listing every problem (validation.ConfigError is a ValueError).
  """
  problems = []
  if (f.p2p_bandwidth_gbits.value is None) != (f.p2p_latency_us.value is None):
    problems.append('--p2p_bandwidth_gbits and --p2p_latency_us: give both (skip the '
                    'microbenchmark) or neither (measure them)')
  positive = [('compute_ms', f.compute_ms.value), ('parameters', f.parameters.value),
              ('per_worker_batch', f.per_worker_batch.value),
              ('p2p_bandwidth_gbits', f.p2p_bandwidth_gbits.value)]
  problems += [f'--{name}={value}: must be positive' for name, value in positive
               if value is not None and value <= 0]
  if f.p2p_latency_us.value is not None and f.p2p_latency_us.value < 0:
    problems.append(f'--p2p_latency_us={f.p2p_latency_us.value}: must be >= 0')
  if f.engine.value not in ('multi_worker', 'horovod'):
    problems.append(f'--engine={f.engine.value}: must be multi_worker or horovod')
  if f.num_workers.value < 2:
    problems.append(f'--num_workers={f.num_workers.value}: a ring needs at least 2 workers')
  if f.pin_cpus.value and len(os.sched_getaffinity(0)) < f.num_workers.value:
    problems.append(f'--pin_cpus needs one CPU per worker: {f.num_workers.value} workers, '
                    f'{len(os.sched_getaffinity(0))} usable CPU(s)')
  try:
    network_gbits = [float(g) for g in f.network_gbits.value]
    problems += [f'--network_gbits: {g:g} must be positive' for g in network_gbits if g <= 0]
  except ValueError:
    problems.append(f'--network_gbits={",".join(f.network_gbits.value)}: numbers in Gbit/s')
  try:
    sizes = [int(kb) for kb in f.message_kb.value]
    if len(set(sizes)) < 2 or min(sizes) <= 0:
      problems.append(f'--message_kb={",".join(f.message_kb.value)}: at least 2 distinct positive '
                      'sizes')
  except ValueError:
    problems.append(f'--message_kb={",".join(f.message_kb.value)}: integers (KB)')
  try:
    extra = [int(w) for w in f.workers.value]
    problems += [f'--workers: {w} must be positive' for w in extra if w <= 0]
  except ValueError:
    problems.append(f'--workers={",".join(f.workers.value)}: integers')
  for name, value, ok in (('network_latency_us', f.network_latency_us.value, lambda v: v >= 0),
                          ('max_workers', f.max_workers.value, lambda v: v >= 1),
                          ('backward_fraction', f.backward_fraction.value, lambda v: 0 <= v <= 1),
                          ('fusion_buffer_mb', f.fusion_buffer_mb.value, lambda v: v >= 0),
                          ('allreduce_repeats', f.allreduce_repeats.value, lambda v: v >= 1),
                          ('allreduce_iterations', f.allreduce_iterations.value, lambda v: v >= 3)):
    if not ok(value):
      problems.append(f'--{name}={value}: out of range')
  if problems:
    raise ValueError('Invalid scaling-model flags:\n  ' + '\n  '.join(problems))
  batch = f.per_worker_batch.value or config.train.global_batch_size
  if f.compute_ms.value is None:
    engines_bench.make_plan(_with_batch(config, batch), ['default'], f.num_workers.value,
                            f.pin_cpus.value, f.steps.value, f.warmup_steps.value, f.repeats.value)
  if f.validate.value:
    engines_bench.make_plan(_with_batch(config, batch * f.num_workers.value), [f.engine.value],
                            f.num_workers.value, f.pin_cpus.value, f.steps.value,
                            f.warmup_steps.value, f.repeats.value)


def _with_batch(config, global_batch_size):
  config = config.copy_and_resolve_references()
  config.train.global_batch_size = global_batch_size
  return config


def run_scaling_model(f, config, config_args):
  """Measures what is not given, predicts every curve and, with --validate, checks the model.

  Returns:
    (exit code, JSON-serializable results): `inputs`, `p2p`, `networks` (each link with its
    `curves`), `validation`, `workers`, `cpus`, `load_average`.
  """
  load_start = os.getloadavg()[0]
  batch = f.per_worker_batch.value or config.train.global_batch_size
  run = {'steps': f.steps.value, 'warmup_steps': f.warmup_steps.value, 'repeats': f.repeats.value,
         'pin_cpus': f.pin_cpus.value, 'timeout_seconds': f.timeout_seconds.value}
  code, one_worker = 0, None
  if f.compute_ms.value is None:
    code, one_worker = measure_step('default', f.num_workers.value, config_args, batch, **run)
    if code:
      return code, None
  compute = (f.compute_ms.value / 1000 if f.compute_ms.value is not None
             else fastest_step_ms(one_worker, batch) / 1000)
  parameters = f.parameters.value or (one_worker['parameters'] if one_worker
                                      else count_parameters(config))
  gradient_bytes = parameters * BYTES_PER_PARAMETER
  if f.p2p_bandwidth_gbits.value is not None:
    p2p = {'bandwidth_bytes_per_second': gbits_to_bytes_per_second(f.p2p_bandwidth_gbits.value),
           'latency_seconds': f.p2p_latency_us.value * 1e-6,
           'source': '--p2p_bandwidth_gbits, --p2p_latency_us'}
  else:
    code, p2p = measure_point_to_point(
        f.engine.value, f.num_workers.value, config_args, [int(kb) for kb in f.message_kb.value],
        f.allreduce_repeats.value, f.allreduce_iterations.value, f.pin_cpus.value,
        f.timeout_seconds.value)
    if code:
      return code, None
    p2p['source'] = f'measured, {f.engine.value} x{f.num_workers.value}'
  inputs = {
      'compute_seconds': compute, 'per_worker_batch': batch,
      'compute_source': ('--compute_ms' if f.compute_ms.value is not None else
                         f"measured: fastest of {len(one_worker['images_per_second']['runs'])} "
                         f"repeats, median {one_worker['step_ms']:.2f} ms; default engine, CPUs "
                         f"{one_worker['cpus'][0]}"),
      'parameters': parameters, 'gradient_bytes': gradient_bytes,
      'parameters_source': ('--parameters' if f.parameters.value else
                            f'trainable variables of {config.model.name}'),
      'backward_fraction': f.backward_fraction.value,
      'buckets': fusion_buckets(gradient_bytes, f.fusion_buffer_mb.value * 2**20),
      'one_worker': one_worker}
  workers = worker_counts(f.max_workers.value, [int(w) for w in f.workers.value])
  links = networks_to_model(p2p, [float(g) for g in f.network_gbits.value],
                            f.network_latency_us.value * 1e-6)
  validation = None
  if f.validate.value:
    fusion_buffer_bytes = f.fusion_buffer_mb.value * 2**20
    validation = {'compute_ms': 1000 * compute,
                  'published_latency_us': f.network_latency_us.value,
                  'published_fusion_buffer_mb': f.fusion_buffer_mb.value,
                  'published': published_check(f.network_latency_us.value * 1e-6,
                                               backward_fraction=f.backward_fraction.value,
                                               fusion_buffer_bytes=fusion_buffer_bytes)}
    code, measured = measure_step(f.engine.value, f.num_workers.value, config_args, batch, **run)
    if code:
      validation['two_workers_error'] = f'the measured {f.engine.value} run failed (exit {code})'
    else:
      validation['two_workers'] = measured_run_check(compute, gradient_bytes, p2p, measured, batch)
      validation['two_workers']['summary'] = measured
  return code, {
      'inputs': inputs, 'p2p': p2p, 'workers': workers,
      'networks': predict_networks(inputs, links, workers), 'validation': validation,
      'cpus': os.cpu_count(), 'load_average': {'start': load_start, 'end': os.getloadavg()[0]}}


def _define_flags():
  """Defines the command-line flags; only when run as a program, so importing defines none."""
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file(
          'config', _DEFAULT_CONFIG, 'Experiment config file whose model is modelled: its '
          'trainable variables are the gradient, and its 1-worker step (default engine, custom '
          'loop, data and settings of the config) is the compute time. Any field can be '
          'overridden, e.g. --config.model.name=resnet_cifar; the engine is set per measurement.',
          lock_config=True),
      compute_ms=flags.DEFINE_float(
          'compute_ms', None, 'Compute time of one step of --per_worker_batch images on one '
          'worker, in ms. Default: measured (default engine, one pinned process).'),
      parameters=flags.DEFINE_integer(
          'parameters', None, 'Gradient elements (trainable parameters, 4 bytes each). Default: '
          'counted from the config\'s model.'),
      per_worker_batch=flags.DEFINE_integer(
          'per_worker_batch', None, 'Images per worker and step (weak scaling: every worker keeps '
          'it). Default: config.train.global_batch_size.'),
      p2p_bandwidth_gbits=flags.DEFINE_float(
          'p2p_bandwidth_gbits', None, 'Point-to-point bandwidth of this machine\'s link, Gbit/s; '
          'with --p2p_latency_us it replaces the all-reduce microbenchmark.'),
      p2p_latency_us=flags.DEFINE_float(
          'p2p_latency_us', None, 'Point-to-point latency per ring step of this machine\'s link, '
          'microseconds (with --p2p_bandwidth_gbits).'),
      engine=flags.DEFINE_string(
          'engine', 'multi_worker', 'Engine whose collectives the microbenchmark times and whose '
          'multi-worker run --validate measures: multi_worker (TensorFlow collective ring) or '
          'horovod (Gloo).'),
      num_workers=flags.DEFINE_integer(
          'num_workers', 2, 'Local processes of the microbenchmark and of the --validate run; the '
          '1-worker run gets one CPU share of this many.'),
      message_kb=flags.DEFINE_list(
          'message_kb', [str(kb) for kb in DEFAULT_MESSAGE_KB], 'All-reduce sizes of the '
          'microbenchmark, in KB (1024 bytes).'),
      allreduce_repeats=flags.DEFINE_integer(
          'allreduce_repeats', 3, 'Timings of each all-reduce size (the median is kept).'),
      allreduce_iterations=flags.DEFINE_integer(
          'allreduce_iterations', 50, 'At most this many all-reduces per timing (fewer for large '
          'sizes: about 256 MB per timing, at least 3).'),
      network_gbits=flags.DEFINE_list(
          'network_gbits', ['25', '100', '400'], 'Network speeds to predict for, Gbit/s per link '
          '(besides this machine\'s measured link).'),
      network_latency_us=flags.DEFINE_float(
          'network_latency_us', DEFAULT_NETWORK_LATENCY_US, 'Latency per ring step of the '
          '--network_gbits links and of the published check, microseconds.'),
      workers=flags.DEFINE_list(
          'workers', [], 'Worker counts to predict besides the powers of two up to --max_workers.'),
      max_workers=flags.DEFINE_integer(
          'max_workers', MAX_WORKERS, 'Largest power-of-two worker count predicted.'),
      backward_fraction=flags.DEFINE_float(
          'backward_fraction', BACKWARD_FRACTION, 'Share of the compute time in the backward pass: '
          'with overlap, up to this much of it hides communication.'),
      fusion_buffer_mb=flags.DEFINE_float(
          'fusion_buffer_mb', 0, 'Tensor-fusion buffer size, MB: the gradient is all-reduced in '
          'ceil(gradient / buffer) pieces, each paying the latency. 0: one all-reduce per step.'),
      validate=flags.DEFINE_bool(
          'validate', False, 'Also measure --num_workers pinned workers of --engine and compare '
          'with the prediction, and check the model against Horovod\'s published 512-GPU '
          'efficiencies.'),
      pin_cpus=flags.DEFINE_bool(
          'pin_cpus', True, 'Pin each measuring process to its own CPU share with 1 intra-op '
          'thread (a fair 1 vs N comparison).'),
      steps=flags.DEFINE_integer(
          'steps', 200, 'Measured steps of the step-time runs (a multiple of '
          'config.train.steps_per_loop).'),
      warmup_steps=flags.DEFINE_integer(
          'warmup_steps', 50, 'Warm-up steps of the step-time runs.'),
      repeats=flags.DEFINE_integer('repeats', 3, 'Repeats of the step-time runs (median kept).'),
      timeout_seconds=flags.DEFINE_integer(
          'timeout_seconds', 0, 'Stop a measurement\'s processes after this long (0: never).',
          lower_bound=0),
      json_out=flags.DEFINE_string('json_out', None, 'Optional path of a JSON file for the '
                                   'results.'),
      plot_out=flags.DEFINE_string('plot_out', None, 'Optional path of a PNG of predicted '
                                   'efficiency vs workers.'),
      worker=flags.DEFINE_bool(
          'worker', False, 'Internal: run as one process of the all-reduce microbenchmark '
          '(started by this command, with --result_dir).'),
      result_dir=flags.DEFINE_string(
          'result_dir', None, 'Internal: where a --worker writes its result.'))


def _worker_main(f, config):
  experiment.quiet_tensorflow_logs()
  # Every message size traces its own loop, on purpose: drop TensorFlow's warning about retracing.
  tf.get_logger().addFilter(lambda record: 'retracing' not in record.getMessage())
  try:
    run_worker(config, [int(kb) * 1024 for kb in f.message_kb.value], f.allreduce_repeats.value,
               f.allreduce_iterations.value, f.pin_cpus.value, f.result_dir.value)
  except engines.EngineStartupError as e:
    print(f'convoy: error: {e}', file=sys.stderr, flush=True)
    sys.exit(STARTUP_ERROR)


def main(argv, flag_values):
  """Checks the flags, then measures, predicts and reports (or, with --worker, one worker).

  Args:
    argv: the arguments left by absl (the program name only).
    flag_values: the namespace of `_define_flags`.
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  f, config = flag_values, flag_values.config.value
  if f.worker.value:
    _worker_main(f, config)
    return
  try:
    check_flags(f, config)
  except ValueError as e:
    print(e, file=sys.stderr)
    sys.exit(USAGE_ERROR)
  command = loops_bench.command_line(sys.argv, _COMMAND)
  print(f'Command: {command}', flush=True)
  code, results = run_scaling_model(f, config, config_arguments(sys.argv))
  if results is None:
    print(f'[scaling] a measurement failed (exit code {code}; see its output above)',
          file=sys.stderr)
    sys.exit(code)
  results = dict(results, command=command)
  print(format_report(results), flush=True)
  loops_bench.write_results(f.json_out.value, results)
  if f.plot_out.value:
    plot_efficiency(results, f.plot_out.value)
  sys.exit(code)


def run():
  """Program entry point: defines the flags, then runs `main` under absl."""
  flag_values = _define_flags()
  app.run(functools.partial(main, flag_values=flag_values))


if __name__ == '__main__':
  run()
