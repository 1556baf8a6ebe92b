"""Outer-loop bookkeeping shared by both loops: progress, TensorBoard, eval cadence, checkpoints."""

import os
import statistics

from absl import logging
import tensorflow as tf

from input_pipeline import datasets
from trainer import preemption


def _format_duration(seconds):
  seconds = int(round(seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Controller:
  """Called by a loop after every `steps_per_loop` steps; decides what else happens at that step.

  The loops only train and evaluate; the controller logs progress, writes TensorBoard scalars,
  runs evaluation and saves checkpoints at the configured intervals, and measures throughput.
  """

  def __init__(self, config, engine, workdir, checkpointer, learning_rate_fn, start_step,
               total_steps, data_position=None, start_position=0):
    self.config = config
    self.engine = engine
    self.checkpointer = checkpointer
    self.learning_rate_fn = learning_rate_fn
    self.start_step = start_step
    self.total_steps = total_steps
    self.step = start_step
    self.data_position = data_position  # A checkpointed tf.Variable, or None.
    self.start_position = start_position
    self.global_batch_size = datasets.examples_per_step(config)  # Images per optimizer step.
    self.window_images_per_second = []
    self.train_seconds = 0.0
    self.train_metrics = {}
    self.eval_metrics = {}
    self.evaluated_at = None
    self.signals = preemption.SignalWatcher()
    if engine.is_chief:
      self.writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))
    else:
      self.writer = tf.summary.create_noop_writer()
    self.profile_dir = os.path.join(workdir, 'profile', f'worker_{engine.worker_index}')
    self.profiling = False
    self._update_profiler(start_step)

  def end_of_loop(self, step, train_metrics, seconds, evaluate):
    """Records one finished window of training steps and runs what is due at `step`.

    Args:
      step: the optimizer step reached.
      train_metrics: dict of Python floats measured over the window (`train_loss`, ...).
      seconds: wall time of the window's training (not of eval or checkpoints).
      evaluate: callable returning the eval metrics dict; called when an eval is due.
    """
    # A NaN/Inf loss stops here, before anything of this window is saved.
    preemption.check_finite(step, train_metrics, self.checkpointer.latest_path())
    steps = step - self.step
    images_per_second = steps * self.global_batch_size / max(seconds, 1e-9)
    # The first window of a process includes tracing and warm-up; keep it out of the median.
    if self.step != self.start_step or self.total_steps - self.start_step <= steps:
      self.window_images_per_second.append(images_per_second)
    self.step = step
    self.train_seconds += seconds
    self.train_metrics = dict(train_metrics, learning_rate=float(self.learning_rate_fn(step)))
    train = self.config.train
    with self.writer.as_default(step=step):
      for name, value in self.train_metrics.items():
        tf.summary.scalar(f'train/{name.removeprefix("train_")}', value)
      tf.summary.scalar('train/images_per_second', images_per_second)
    last = step >= self.total_steps
    if step % train.log_every_steps == 0 or last:
      self._log_progress(step, images_per_second)
    if step % train.eval_every_steps == 0 or last:
      self._evaluate(evaluate)
    preempted = self.engine.any_worker(self.signals.requested)
    if step % train.checkpoint_every_steps == 0 or last or preempted:
      if self.data_position is not None:
        self.data_position.assign(self.data_position_at(step))
      self.checkpointer.save(step)
    self.writer.flush()
    self._update_profiler(step)
    if preempted and not last:
      # Every worker has saved: leave together, so that none is killed mid-save by a peer's exit.
      self.engine.barrier()
      raise preemption.Preempted(step, self.checkpointer.latest_path())

  def data_position_at(self, step):
    """Examples of the global training stream consumed when optimizer step `step` is done."""
    return self.start_position + (step - self.start_step) * self.global_batch_size

  def close(self):
    """Stops watching signals and any profiler capture (the run is over, or failed)."""
    self.signals.close()
    if self.profiling:
      tf.profiler.experimental.stop()
      self.profiling = False

  def _update_profiler(self, step):
    """Starts or stops the capture of train.profile_steps at the window that begins at `step`."""
    start, stop = self.config.train.profile_steps
    if not self.profiling and start <= step < stop:
      tf.profiler.experimental.start(self.profile_dir)
      self.profiling = True
      logging.info('Profiling steps from %d to workdir %s (TensorBoard, Profile tab)', step,
                   self.profile_dir)
    elif self.profiling and step >= stop:
      tf.profiler.experimental.stop()
      self.profiling = False
      logging.info('Profile of steps [%d, %d) written to %s', start, step, self.profile_dir)

  def finish(self, evaluate):
    """Called by a loop when training is over: evaluates the final model unless already done.

    A run resumed from its last checkpoint trains no step, and is evaluated here.
    """
    if self.evaluated_at != self.step:
      self._evaluate(evaluate)
      self.writer.flush()

  def _evaluate(self, evaluate):
    self.eval_metrics = {k: float(v) for k, v in evaluate().items()}
    self.evaluated_at = self.step
    with self.writer.as_default(step=self.step):
      for name, value in self.eval_metrics.items():
        tf.summary.scalar(f'eval/{name.removeprefix("eval_")}', value)
    if self.engine.is_chief:
      logging.info('step %d eval: %s', self.step, _format_metrics(self.eval_metrics))

  def _log_progress(self, step, images_per_second):
    if not self.engine.is_chief:
      return
    rate = self.images_per_second() or images_per_second
    remaining = (self.total_steps - step) * self.global_batch_size / max(rate, 1e-9)
    logging.info('step %d/%d (%.0f%%) %s | %.0f img/s | ETA %s', step, self.total_steps,
                 100.0 * step / self.total_steps, _format_metrics(self.train_metrics),
                 images_per_second, _format_duration(remaining))

  def images_per_second(self):
    """Median images/s over the windows measured after warm-up (None before any)."""
    if not self.window_images_per_second:
      return None
    return statistics.median(self.window_images_per_second)


def _format_metrics(metrics):
  return ' '.join(f'{k}={v:.4g}' for k, v in metrics.items())
