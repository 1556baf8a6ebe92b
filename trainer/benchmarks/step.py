"""How close Convoy's training step comes to the machine: FLOP/s vs a matmul peak and a bare step.

    python -m trainer.benchmarks.step [--config=configs/resnet50_synthetic.py] [--config.F=V ...]
        [--batch_size=32] [--precisions=float32,mixed_bfloat16] [--steps=10] [--warmup_steps=5]
        [--repeats=2] [--json_out=PATH]

In one process (one engine, `config.engine`, by default `default`), for each precision:

* peak: the best float32 FLOP/s of a 4096x4096 matmul (`scaling.measure_peak_flops`), measured
  at the start and again at the end; the higher counts;
* bare: the model's training step as the simplest code can write it: `tf.function` around a
  GradientTape forward/backward pass and `optimizer.apply_gradients`, on one batch held in memory
  (no strategy, no input pipeline, no metrics);
* custom and fit: Convoy's two loops (`trainer.benchmarks.loops.measure_loop`, the trainer's own
  loops with a stopwatch), fed by the trainer's input pipeline (synthetic data made in memory).

FLOP/s = 3 x forward FLOPs per image (`scaling.count_forward_flops`, 2 per multiply-add) x images/s.
Each variant runs `--warmup_steps` then `--steps` steps, `--repeats` times (interleaved); the median
counts. Reported: each as a fraction of the peak, each loop / bare, and mixed_bfloat16 / float32.
"""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import statistics
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import tensorflow as tf

from configs import validation
from input_pipeline import sources
from trainer import engines
from trainer import experiment
from trainer import steps as steps_lib
from trainer.benchmarks import loops as loops_bench
from trainer.benchmarks import scaling

_COMMAND = 'python -m trainer.benchmarks.step'
LOOPS = ('custom', 'fit')


def bare_step_rate(config, engine, source, warmup_steps, steps):
  """Images/s of a plain tf.function GradientTape step on one in-memory batch."""
  model, optimizer, _ = experiment.create_model_and_optimizer(config, engine, source, 1000)
  batch = config.train.global_batch_size
  images = tf.random.uniform((batch, *experiment.source_image_shape(config, source)))
  labels = tf.random.uniform((batch,), maxval=source.num_classes, dtype=tf.int32)
  loss_fn = steps_lib.create_loss_fn()

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      logits = tf.cast(model(images, training=True), tf.float32)
      loss = tf.reduce_mean(loss_fn(labels, logits))
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return loss

  for _ in range(warmup_steps):
    step().numpy()
  start = time.perf_counter()
  for _ in range(steps):
    loss = step()
  loss.numpy()
  return steps * batch / (time.perf_counter() - start)


def with_precision(config, precision):
  """A copy of `config` in `precision`."""
  config = config.copy_and_resolve_references()
  config.train.precision = precision
  return config


def make_plan(config, steps, warmup_steps, repeats):
  """The `loops_bench.Plan` of both loops for these flags; ValueError names each bad one."""
  return loops_bench.make_plan(config, list(LOOPS), steps, warmup_steps, None, repeats)


def measure(config, precisions, plan):
  """{'peak_flops', 'forward_flops', 'precisions': {p: {variant: {...}}}} measured in this process.

  `plan` (from `make_plan`) gives the steps, warm-up steps and repeats of every variant.
  """
  engine = engines.create_engine(config.engine)
  validation.validate_topology(config, engine.num_replicas, engine.devices)
  source = sources.create_source(config.data, config.seed)
  peak = scaling.measure_peak_flops(list(engine.devices))
  results = {'precisions': {}}
  for precision in precisions:
    cfg = with_precision(config, precision)
    flops_per_image = 3 * scaling.count_forward_flops(cfg, source)
    rates = {name: [] for name in ('bare', *LOOPS)}
    for repeat in range(plan.repeats):
      rates['bare'].append(bare_step_rate(cfg, engine, source, plan.warmup_steps, plan.steps))
      for loop in LOOPS:
        rates[loop].append(
            loops_bench.measure_loop(loop, cfg, engine, source, plan).images_per_second)
      print(f'  {precision} repeat {repeat + 1}/{plan.repeats}: ' + ', '.join(
          f'{name} {values[-1]:.2f} images/s' for name, values in rates.items()), flush=True)
    results['precisions'][precision] = {
        name: {'images_per_second': statistics.median(values), 'runs': values,
               'flops_per_second': flops_per_image * statistics.median(values)}
        for name, values in rates.items()}
    results['precisions'][precision]['flops_per_image'] = flops_per_image
  results['peak_flops'] = max(peak, scaling.measure_peak_flops(list(engine.devices)))
  for by_variant in results['precisions'].values():
    for name in ('bare', *LOOPS):
      by_variant[name]['of_peak'] = by_variant[name]['flops_per_second'] / results['peak_flops']
      by_variant[name]['of_bare'] = (by_variant[name]['images_per_second'] /
                                     by_variant['bare']['images_per_second'])
  if {'float32', 'mixed_bfloat16'} <= set(precisions):
    results['bfloat16_speedup'] = {
        name: (results['precisions']['mixed_bfloat16'][name]['images_per_second'] /
               results['precisions']['float32'][name]['images_per_second'])
        for name in ('bare', *LOOPS)}
  return results


def format_report(results, config):
  """The results as a text table."""
  lines = [f"{config.model.name}, batch {config.train.global_batch_size}, engine "
           f"{config.engine.name}; float32 matmul peak {results['peak_flops'] / 1e9:.1f} GFLOP/s",
           f"{'precision':<16}{'step':<8}{'images/s':>9}{'GFLOP/s':>9}{'of peak':>9}{'of bare':>9}"]
  for precision, by_variant in results['precisions'].items():
    for name in ('bare', *LOOPS):
      r = by_variant[name]
      lines.append(f"{precision:<16}{name:<8}{r['images_per_second']:>9.2f}"
                   f"{r['flops_per_second'] / 1e9:>9.1f}{r['of_peak']:>9.2f}{r['of_bare']:>9.3f}")
  for name, ratio in results.get('bfloat16_speedup', {}).items():
    lines.append(f'mixed_bfloat16 / float32 ({name}): {ratio:.2f}x')
  return '\n'.join(lines)


def main(argv):
  """Runs the benchmark and prints the table."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  config = FLAGS.config
  config.train.global_batch_size = FLAGS.batch_size
  validation.validate(config)
  unknown = sorted(set(FLAGS.precisions) - set(validation.PRECISIONS))
  if unknown:
    raise app.UsageError(f'--precisions={",".join(FLAGS.precisions)}: each must be among '
                         f'{", ".join(validation.PRECISIONS)}')
  try:  # Before anything expensive (the engine, the peak matmul) starts.
    plan = make_plan(config, FLAGS.steps, FLAGS.warmup_steps, FLAGS.repeats)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  print(f'Command: {loops_bench.command_line(sys.argv, _COMMAND)}', flush=True)
  results = measure(config, FLAGS.precisions, plan)
  print(format_report(results, config))
  loops_bench.write_results(FLAGS.json_out, results)


FLAGS = flags.FLAGS


def run():
  """Console entry point: defines the flags, then runs `main`."""
  config_flags.DEFINE_config_file('config', 'configs/resnet50_synthetic.py', 'Experiment config.')
  flags.DEFINE_integer('batch_size', 32, 'Global batch size of every step.')
  flags.DEFINE_list('precisions', ['float32', 'mixed_bfloat16'], 'Precisions to measure.')
  flags.DEFINE_integer('steps', 10, 'Measured steps per variant and repeat (a multiple of '
                       'train.steps_per_loop).')
  flags.DEFINE_integer('warmup_steps', 5, 'Steps before the clock starts (tracing, warm-up); a '
                       'multiple of train.steps_per_loop.')
  flags.DEFINE_integer('repeats', 2, 'Measurements of each variant, interleaved.')
  flags.DEFINE_string('json_out', None, 'Optional path of a JSON file for the results.')
  app.run(main)


if __name__ == '__main__':
  run()
