"""The two training loops: compiled Keras (`fit_loop`) and distributed step functions (`custom_loop`).

Both take the same model, optimizer, data and Controller, run on any Engine, and report the same
metric keys; only the loop differs. Neither knows which engine it runs on.
"""

import dataclasses
import functools
import time
from typing import Callable

import tensorflow as tf
import tf_keras

from trainer import steps


def _results(engine, metrics, prefix):
  """Global results of `create_metrics(prefix)` metrics (the engine combines per-process ones)."""
  local = {name: float(metric.result()) for name, metric in metrics.items()}
  return engine.aggregate_metrics(local, count_key=f'{prefix}_examples')


def _reset(metrics):
  for metric in metrics.values():
    metric.reset_state()


@dataclasses.dataclass(frozen=True)
class LoopData:
  """The inputs of a loop: the distributed training data and a factory for the eval data."""
  train_dataset: object  # infinite distributed dataset, starting at the resume step
  create_eval_dataset: Callable[[], object]  # returns a fresh finite distributed dataset


def create_evaluate(engine, model, data):
  """Returns `evaluate()`: one pass over the eval split, returning the global eval metrics.

  Both loops evaluate with this same distributed step, so their eval figures mean the same thing.
  (Keras's `evaluate` is not used: with an odd number of eval batches tf.distribute hands a replica
  an empty batch in the last step, and TensorFlow 2.18's oneDNN Conv2D mis-shapes empty batches;
  `steps.eval_step` skips them.)
  """
  with engine.scope():
    eval_metrics = steps.create_metrics('eval')
  replica_eval_step = functools.partial(steps.eval_step, model, eval_metrics)

  @tf.function
  def eval_all(dataset):
    for batch in dataset:
      engine.run(replica_eval_step, args=(batch,))

  def evaluate():
    _reset(eval_metrics)
    eval_all(data.create_eval_dataset())
    return _results(engine, eval_metrics, 'eval')

  return evaluate


def custom_loop(config, engine, model, optimizer, data, controller, nonfinite_counter=None):
  """Trains with `engine.run` inside a tf.function that runs `steps_per_loop` steps per call.

  Args:
    config: the experiment config.
    engine: the Engine.
    model: the model, created in `engine.scope()`.
    optimizer: the optimizer, created and built in `engine.scope()`.
    data: the `LoopData`.
    controller: the Controller (logging, eval cadence, checkpoints, timing).
    nonfinite_counter: a `steps.NonFiniteCounter` when non-finite steps are skipped, else None.
  """
  with engine.scope():
    train_metrics = steps.create_metrics('train')
  replica_train_step = steps.create_train_step(config, model, optimizer, engine, train_metrics,
                                               nonfinite_counter)

  @tf.function
  def train_n_steps(iterator, num_steps):
    # Several steps per call amortize Python dispatch, like Keras's steps_per_execution.
    for _ in tf.range(num_steps):
      engine.run(replica_train_step, args=(next(iterator),))

  evaluate = create_evaluate(engine, model, data)
  iterator = iter(data.train_dataset)
  step = controller.step
  while step < controller.total_steps:
    num_steps = min(config.train.steps_per_loop, controller.total_steps - step)
    _reset(train_metrics)
    start = time.perf_counter()
    train_n_steps(iterator, tf.constant(num_steps))
    window = _results(engine, train_metrics, 'train')  # Waits for the steps to finish.
    seconds = time.perf_counter() - start
    step += num_steps
    controller.end_of_loop(step, window, seconds, evaluate)
  controller.finish(evaluate)


class _ControllerCallback(tf_keras.callbacks.Callback):
  """Hands each fit 'epoch' (one window of steps_per_loop steps) to the Controller.

  The window's metrics are read from the metric objects, in cross-replica context, as the custom
  loop reads them (`_results`): global over every replica and worker. Keras's per-step logs are
  not used: with `distribute_reduction_method='first'` they are one replica's.
  """

  def __init__(self, engine, controller, evaluate, steps_per_loop, train_metrics):
    super().__init__()
    self.engine = engine
    self.controller = controller
    self.evaluate = evaluate
    self.steps_per_loop = steps_per_loop
    self.train_metrics = train_metrics
    self.start = None

  def on_epoch_begin(self, epoch, logs=None):
    self.start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    seconds = time.perf_counter() - self.start
    window = _results(self.engine, self.train_metrics(), 'train')
    self.controller.end_of_loop((epoch + 1) * self.steps_per_loop, window, seconds, self.evaluate)


class ConvoyStepModel(tf_keras.Model):
  """Runs Convoy's train step (`steps.create_train_step`) as the train step of compiled Keras.

  Used by `fit_loop` when the stock Keras step cannot do what the config asks (gradient
  accumulation, skipping non-finite steps). Wraps the model (same variables; checkpoints keep
  saving the wrapped model); evaluation and prediction are Keras's own.
  """

  def __init__(self, config, engine, model, optimizer, nonfinite_counter):
    super().__init__()
    self.wrapped = model
    train_metrics = steps.create_metrics('train')
    # Attributes, so that Keras tracks them and resets them at every epoch (window).
    self.train_loss = train_metrics['train_loss']
    self.train_accuracy = train_metrics['train_accuracy']
    self.train_examples = train_metrics['train_examples']
    self.train_metrics = train_metrics
    self.step_fn = steps.create_train_step(config, model, optimizer, engine, train_metrics,
                                           nonfinite_counter)

  def call(self, inputs, training=False):
    return self.wrapped(inputs, training=training)

  def train_step(self, data):
    self.step_fn(data)
    return {'loss': self.train_loss.result(), 'accuracy': self.train_accuracy.result(),
            'examples': self.train_examples.result()}


def _fit_train_metrics(model):
  """The metrics of a compiled model's training window, keyed like `steps.create_metrics('train')`.

  Keras creates its compiled metrics at the first step, so this is called at the end of a window.
  """
  if isinstance(model, ConvoyStepModel):
    return model.train_metrics
  by_name = {metric.name: metric for metric in model.metrics}
  return {'train_loss': by_name['loss'], 'train_accuracy': by_name['accuracy'],
          'train_examples': by_name['examples']}


def needs_convoy_step(config):
  """True if `fit_loop` must run Convoy's train step instead of Keras's stock one.

  That is for gradient accumulation, non-finite skipping and XLA: Keras's `jit_compile` compiles
  the whole step, optimizer update included, which XLA cannot place across the replicas of a
  MirroredStrategy on logical devices; Convoy's step compiles the forward and backward pass only.
  """
  train = config.train
  return train.accumulation_steps > 1 or train.nonfinite == 'skip' or train.jit_compile


def fit_loop(config, engine, model, optimizer, data, controller, nonfinite_counter=None):
  """Trains with `model.compile` + `model.fit`; one Keras epoch is one window of steps_per_loop steps.

  Same arguments as `custom_loop`. Keras scales the loss per replica and aggregates metrics itself;
  the engine may have wrapped the optimizer (`engine.prepare_optimizer`) and add callbacks. Gradient
  accumulation, non-finite skipping and XLA run Convoy's step inside fit (`ConvoyStepModel`).
  Evaluation is `create_evaluate`'s, as in the custom loop.
  """
  steps_per_loop = config.train.steps_per_loop
  convoy_step = needs_convoy_step(config)
  with engine.scope():
    if convoy_step:
      model = ConvoyStepModel(config, engine, model, optimizer, nonfinite_counter)
    model.compile(
        optimizer=optimizer,
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=['accuracy', steps.ExampleCount()],
        steps_per_execution=steps_per_loop,
        jit_compile=False)

    # Keras's default ('auto') sums every step's logs over the workers of a
    # MultiWorkerMirroredStrategy: one more collective per step, for logs Convoy does not read
    # (the callback reads the metrics themselves).
    model.distribute_reduction_method = 'first'

  evaluate = create_evaluate(engine, model, data)
  callback = _ControllerCallback(engine, controller, evaluate, steps_per_loop,
                                 functools.partial(_fit_train_metrics, model))
  model.fit(data.train_dataset, epochs=controller.total_steps // steps_per_loop,
            initial_epoch=controller.step // steps_per_loop, steps_per_epoch=steps_per_loop,
            callbacks=engine.fit_callbacks() + [callback], verbose=0)
  controller.finish(evaluate)


LOOPS = {'custom': custom_loop, 'fit': fit_loop}
