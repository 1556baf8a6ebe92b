"""`train_and_evaluate(config, workdir)`: builds engine, data, model and loop, and writes the summary."""

import copy
import json
import math
import os
import time
import warnings

from absl import logging
import tensorflow as tf
import tf_keras

from configs import validation
from input_pipeline import datasets
from input_pipeline import sources
from input_pipeline import streaming
from trainer import checkpoints
from trainer import controller as controller_lib
from trainer import cpu_budget
from trainer import engines
from trainer import export
from trainer import loops
from trainer import memory
from trainer import model as model_lib
from trainer import optimization
from trainer import steps
from trainer import workdir as workdir_lib


SUMMARY_SCHEMA_VERSION = 2  # Bump when a key of summary.json changes meaning (README documents it).


def quiet_tensorflow_logs():
  """Keeps TensorFlow's own INFO chatter (all-reduce plans, saver details) out of Convoy's progress."""
  tf.get_logger().setLevel('WARNING')
  # Some TensorFlow modules log INFO lines through absl directly; drop those (warnings stay).
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= logging.converter.STANDARD_WARNING or not any(
          part in record.pathname for part in ('/tensorflow/', '/tf_keras/')))
  warnings.filterwarnings('ignore', message='To make it possible to preserve tf.data options')


def total_train_steps(config, num_train_examples):
  """Optimizer steps of the run: `num_train_steps`, or epochs rounded up to whole loops."""
  train = config.train
  if train.num_train_steps != -1:
    return train.num_train_steps
  steps = train.num_epochs * num_train_examples / train.global_batch_size
  return max(1, math.ceil(steps / train.steps_per_loop)) * train.steps_per_loop


def _seed_everything(config):
  tf_keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()


def _write_json(path, data):
  """Writes JSON atomically (write then rename), so a reader never sees half a file."""
  tmp = f'{path}.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write(json.dumps(data, indent=2, sort_keys=True) + '\n')
  tf.io.gfile.rename(tmp, path, overwrite=True)


def apply_cpu_budget(config):
  """Sizes TensorFlow's thread pools for this process's CPU share (see trainer/cpu_budget.py).

  Returns:
    (config with data.private_threadpool_size set to the tf.data share, the applied CpuBudget).
  """
  budget = cpu_budget.apply_budget(cpu_budget.compute_budget(config))
  if budget.tf_data_threads != config.data.private_threadpool_size:
    config = copy.deepcopy(config)
    config.data.private_threadpool_size = budget.tf_data_threads
  return config, budget


def create_model_and_optimizer(config, engine, source, total_steps):
  """Creates the model, learning-rate schedule and built optimizer inside the engine's scope.

  The optimizer is wrapped for the engine (`engine.prepare_optimizer`), then for the numerics
  (`optimization.wrap_for_numerics`: loss scaling for mixed_float16, skipping for nonfinite='skip').
  """
  learning_rate_fn = optimization.create_learning_rate_fn(config.train, total_steps)
  with engine.scope():
    model = model_lib.create_model(config.model, source_image_shape(config, source),
                                   source.num_classes, config.train.precision)
    optimizer = optimization.wrap_for_numerics(config.train, engine.prepare_optimizer(
        optimization.create_optimizer(config.train, learning_rate_fn)))
    # Build slots now so that a checkpoint restores them at once (not lazily at the first step).
    optimizer.build(model.trainable_variables)
  return model, optimizer, learning_rate_fn


def create_nonfinite_counter(config, engine):
  """A checkpointed count of skipped non-finite steps with train.nonfinite='skip', else None."""
  if config.train.nonfinite != 'skip':
    return None
  with engine.scope():
    return steps.NonFiniteCounter()


def create_data_position(engine):
  """The checkpointed position of the global training stream, in examples (-1: not recorded)."""
  with engine.scope():
    return tf.Variable(-1, dtype=tf.int64, trainable=False, name='data_position')


def resume_position(data_position, start_step, examples_per_step):
  """Where the training stream resumes: the recorded position, else (older checkpoints) step x batch."""
  recorded = int(data_position.numpy())
  return recorded if recorded >= 0 else start_step * examples_per_step


def create_checkpointer(config, engine, workdir, model, optimizer, nonfinite_counter,
                        data_position):
  """The Checkpointer of the run: model, optimizer, data position, loss scale and skip counter."""
  saved_optimizer, extras = optimization.checkpointed_state(optimizer)
  extras['data_position'] = data_position
  if nonfinite_counter is not None:
    extras['nonfinite_steps_skipped'] = nonfinite_counter.variable
  return checkpoints.Checkpointer(engine, workdir, model, saved_optimizer,
                                  config.train.max_checkpoints_to_keep, extras)


def source_image_shape(config, source):
  """Shape of the images the model sees, after the pipeline's resizing."""
  if isinstance(source, sources.FileSource):
    return source.image_shape
  height, width, channels = source.image_shape
  size = config.data.image_size
  return (height, width, channels) if size == -1 else (size, size, channels)


def _scan_for_corrupt_records(config, source):
  """With data.skip_corrupt on a streamed source: counts what the pipeline will skip."""
  if not (config.data.skip_corrupt and isinstance(source, sources.FileSource)):
    return {}
  readable, unreadable, damaged = streaming.count_unreadable(
      source.train_files + source.eval_files, source.parse_fn, source.image_shape[-1])
  if unreadable or damaged:
    logging.warning('data.skip_corrupt: skipping %d unreadable record(s) in %d file(s): %s',
                    unreadable, len(damaged), ', '.join(damaged))
  return {'corrupt_records_skipped': unreadable, 'corrupt_files': damaged,
          'readable_examples': readable}


def create_loop_data(config, engine, source, start_position=0):
  """The loops' data: the distributed training stream from `start_position`, and eval datasets."""
  return loops.LoopData(
      train_dataset=engine.distribute_dataset(
          lambda ctx: datasets.create_train_dataset(config, source, ctx, start_position)),
      create_eval_dataset=lambda: engine.distribute_dataset(
          lambda ctx: datasets.create_eval_dataset(config, source, ctx)))


def train_and_evaluate(config, workdir):
  """Trains and evaluates the experiment of `config` in `workdir`, resuming if it holds checkpoints.

  Args:
    config: a validated experiment ConfigDict (see configs/default.py).
    workdir: directory for checkpoints, TensorBoard logs, the export and `summary.json`.

  Returns:
    The summary dict, also written to `workdir/summary.json` by the chief.
  """
  validation.validate(config)
  started = time.time()
  # Allocator and thread pools, then the engine: set up before TensorFlow runs anything.
  malloc = memory.apply_malloc_setting(config.engine.malloc)
  config, budget = apply_cpu_budget(config)
  engine = engines.create_engine(config.engine)
  validation.validate_topology(config, engine.num_replicas, engine.devices)
  _seed_everything(config)
  logging.info('Engine %s: %d replica(s) on %d worker(s), devices %s', engine.name,
               engine.num_replicas, engine.num_workers, list(engine.devices))
  workdir_lib.check_writable(workdir)
  workdir_lib.check_compatible(config, workdir)
  if engine.is_chief:
    _write_json(os.path.join(workdir, 'config.json'), config.to_dict())

  source = sources.create_source(config.data, config.seed)
  data_report = _scan_for_corrupt_records(config, source)
  total_steps = total_train_steps(config, source.num_train_examples)
  model, optimizer, learning_rate_fn = create_model_and_optimizer(config, engine, source,
                                                                  total_steps)
  nonfinite_counter = create_nonfinite_counter(config, engine)
  data_position = create_data_position(engine)
  checkpointer = create_checkpointer(config, engine, workdir, model, optimizer, nonfinite_counter,
                                     data_position)
  checkpointer.restore_latest()
  # Every worker must start from the same state (Horovod broadcasts rank 0's, also after a restore).
  engine.sync_initial_state(model, optimizer)
  start_step = int(optimizer.iterations.numpy())
  start_position = resume_position(data_position, start_step, datasets.examples_per_step(config))
  if start_step and start_position != start_step * datasets.examples_per_step(config):
    logging.info('Resuming the training stream at example %d (%.3f epochs): the checkpoint was '
                 'written with another number of examples per step', start_position,
                 start_position / max(source.num_train_examples, 1))
  logging.info('Training %s for %d steps (from step %d), %d examples per step (global batch %d x '
               '%d accumulation), %s, peak lr %.4g', config.model.name, total_steps, start_step,
               datasets.examples_per_step(config), config.train.global_batch_size,
               config.train.accumulation_steps, config.train.precision,
               optimization.peak_learning_rate(config.train))

  data = create_loop_data(config, engine, source, start_position)
  controller = controller_lib.Controller(config, engine, workdir, checkpointer, learning_rate_fn,
                                         start_step, total_steps, data_position, start_position)
  try:
    loops.LOOPS[config.loop](config, engine, model, optimizer, data, controller, nonfinite_counter)
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    if not isinstance(source, sources.FileSource):
      raise
    streaming.raise_if_corrupt(source, e)
    raise
  except Exception as e:  # pylint: disable=broad-except  (re-raised unless the engine explains it)
    clearer = engine.translate_error(e)
    if clearer is None:
      raise
    raise clearer from e
  finally:
    controller.close()
    checkpointer.close()

  export_dir = None
  if config.train.export:
    export_dir = export.export_saved_model(engine, model, os.path.join(workdir, 'export'),
                                           source_image_shape(config, source))
  summary = {
      'schema_version': SUMMARY_SCHEMA_VERSION,
      'engine': engine.name,
      'loop': config.loop,
      'model': config.model.name,
      'num_replicas': engine.num_replicas,
      'num_workers': engine.num_workers,
      'worker_index': engine.worker_index,
      'global_batch_size': config.train.global_batch_size,
      'accumulation_steps': config.train.accumulation_steps,
      'examples_per_step': datasets.examples_per_step(config),
      'precision': config.train.precision,
      'jit_compile': config.train.jit_compile,
      'peak_learning_rate': optimization.peak_learning_rate(config.train),
      'cpu_budget': budget.to_dict(),
      'malloc': malloc,
      'nonfinite_steps_skipped': nonfinite_counter.count() if nonfinite_counter else 0,
      'steps': controller.step,
      'start_step': start_step,
      'data_position_start': start_position,
      'data_position': controller.data_position_at(controller.step),
      'images_per_second': controller.images_per_second(),
      'train_seconds': round(controller.train_seconds, 3),
      'wall_seconds': round(time.time() - started, 3),
      'checkpoint': checkpointer.latest_path(),
      'export': export_dir,
      'workdir': os.path.abspath(workdir),
      **controller.train_metrics,
      **controller.eval_metrics,
      **data_report,
  }
  if engine.is_chief:
    _write_json(os.path.join(workdir, 'summary.json'), summary)
  # Nobody leaves while a peer may still need it (MultiWorkerMirroredStrategy's coordination
  # service lives in the chief; Horovod collectives need every rank).
  engine.barrier()
  return summary
