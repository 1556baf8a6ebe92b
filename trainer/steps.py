"""Replica-local train and eval steps: loss, gradients and metric updates, no distribution code.

Everything cross-replica is delegated to the engine (`average_loss`, `scale_regularization_loss`,
`reduce_gradients`), so the same step is exact on one device, N replicas, N workers or N ranks.
"""

import tensorflow as tf
import tf_keras

from input_pipeline import datasets


class ExampleCount(tf_keras.metrics.Metric):
  """Counts the examples seen (summed over replicas): proves evaluation saw each example once."""

  def __init__(self, name='examples', **kwargs):
    super().__init__(name=name, **kwargs)
    self.count = self.add_weight('count', shape=(), initializer='zeros', dtype=tf.float32)

  def update_state(self, y_true, y_pred=None, sample_weight=None):
    del y_pred, sample_weight
    self.count.assign_add(tf.cast(tf.shape(y_true)[0], tf.float32))

  def result(self):
    return tf.identity(self.count)


def create_loss_fn():
  """The per-example loss shared by both loops: sparse softmax cross-entropy on logits."""
  return tf_keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction=tf_keras.losses.Reduction.NONE)


def create_metrics(prefix):
  """Creates the metrics of one phase ('train' or 'eval'); call inside `engine.scope()`.

  Returns:
    A dict: `{prefix}_loss` (mean total loss), `{prefix}_accuracy` and `{prefix}_examples`.
  """
  return {
      f'{prefix}_loss': tf_keras.metrics.Mean(f'{prefix}_loss'),
      f'{prefix}_accuracy': tf_keras.metrics.SparseCategoricalAccuracy(f'{prefix}_accuracy'),
      f'{prefix}_examples': ExampleCount(f'{prefix}_examples'),
  }


def _update_metrics(metrics, prefix, labels, logits, mean_loss, weight=None):
  """Updates the metrics of one batch; `weight` 0 (a skipped step) leaves loss and accuracy as
  they were, while the examples are still counted."""
  batch = tf.cast(tf.shape(labels)[0], tf.float32)
  if weight is not None:
    mean_loss = tf.where(weight > 0, mean_loss, 0.0)  # 0 * NaN would still be NaN.
    batch *= weight
  metrics[f'{prefix}_loss'].update_state(mean_loss, sample_weight=batch)
  sample_weight = None if weight is None else tf.fill(tf.shape(labels), weight)
  metrics[f'{prefix}_accuracy'].update_state(labels, logits, sample_weight=sample_weight)
  metrics[f'{prefix}_examples'].update_state(labels)


def _regularization_loss(model):
  return tf.add_n(model.losses) if model.losses else tf.constant(0.0)


def uses_loss_scaling(optimizer):
  """True if `optimizer` is a Keras LossScaleOptimizer (mixed_float16, or train.nonfinite='skip')."""
  return isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer)


def _all_finite(tensors):
  return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


class NonFiniteCounter:
  """Counts optimizer steps skipped for a non-finite loss or gradient (train.nonfinite='skip').

  Create it in `engine.scope()`; every replica adds the same (all-reduced) value, and only the first
  replica's write is kept, so the count is the number of skipped steps. It is checkpointed.
  """

  def __init__(self):
    self.variable = tf.Variable(0.0, trainable=False, name='nonfinite_steps_skipped',
                                synchronization=tf.VariableSynchronization.ON_WRITE,
                                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def count(self):
    """The number of skipped steps so far (eager)."""
    return int(self.variable.numpy())


def create_train_step(config, model, optimizer, engine, metrics, nonfinite_counter=None):
  """Returns the replica-context train step shared by the custom loop and fit's Convoy step.

  One call is one optimizer step on this replica's slice of `examples_per_step` examples. The slice
  is split into `accumulation_steps` micro-batches whose gradients are summed locally; the sum is
  then communicated once (`engine.reduce_gradients`, or the optimizer's aggregation) and applied
  once. Each micro-batch's loss is its share of the mean over all `examples_per_step` examples
  (`engine.average_loss`) plus 1/accumulation_steps of this replica's share of the weight decay, so
  the applied gradient is the single-device gradient of the mean loss, whatever the replica count
  and the accumulation.

  With a LossScaleOptimizer the loss is scaled before the backward pass and the gradients unscaled
  after it; the optimizer skips a step whose combined gradients are not finite, on every replica.
  With a `nonfinite_counter` (train.nonfinite='skip') such steps are also counted and left out of
  the loss and accuracy metrics.

  Args:
    config: the experiment config (`train.accumulation_steps`, `train.jit_compile`, batch size).
    model: the Keras model (logits out).
    optimizer: a Keras optimizer, possibly a LossScaleOptimizer.
    engine: the `Engine` (loss scaling across replicas, gradient reduction).
    metrics: dict from `create_metrics('train')`.
    nonfinite_counter: a `NonFiniteCounter`, or None.

  Returns:
    A function `step(batch)` of an `(images, labels)` per-replica batch.
  """
  accumulation_steps = config.train.accumulation_steps
  examples_per_step = datasets.examples_per_step(config)
  loss_fn = create_loss_fn()
  scaled = uses_loss_scaling(optimizer)
  variables = model.trainable_variables

  def micro_step(images, labels):
    with tf.GradientTape() as tape:
      logits = tf.cast(model(images, training=True), tf.float32)
      per_example_loss = loss_fn(labels, logits)
      regularization = tf.cast(_regularization_loss(model), tf.float32)
      loss = (engine.average_loss(per_example_loss, examples_per_step) +
              engine.scale_regularization_loss(regularization) / accumulation_steps)
      if scaled:
        loss = optimizer.get_scaled_loss(loss)
    gradients = tape.gradient(loss, variables)
    if scaled:
      gradients = optimizer.get_unscaled_gradients(gradients)
    # Report the unscaled loss, as Keras's fit does: batch mean plus the full weight decay.
    return gradients, logits, tf.reduce_mean(per_example_loss) + regularization

  if config.train.jit_compile:
    micro_step = tf.function(micro_step, jit_compile=True)

  def step(batch):
    images, labels = batch
    micro = tf.shape(labels)[0] // accumulation_steps
    outputs = []
    gradients = None
    for k in range(accumulation_steps):  # Unrolled: K is small, and XLA sees static shapes.
      part = slice(None) if accumulation_steps == 1 else slice(k * micro, (k + 1) * micro)
      grads, logits, mean_loss = micro_step(images[part], labels[part])
      gradients = grads if gradients is None else [a + g for a, g in zip(gradients, grads)]
      outputs.append((labels[part], logits, mean_loss))
    weight = None
    if nonfinite_counter is not None:
      local_bad = tf.cast(tf.logical_not(_all_finite(gradients)), tf.float32)
      bad = engine.all_reduce_sum(local_bad)  # The same on every replica.
      nonfinite_counter.variable.assign_add(tf.minimum(bad, 1.0))
      weight = 1.0 - tf.minimum(bad, 1.0)
    gradients = engine.reduce_gradients(gradients)
    optimizer.apply_gradients(zip(gradients, variables))
    for labels_k, logits, mean_loss in outputs:
      _update_metrics(metrics, 'train', labels_k, logits, mean_loss, weight)

  return step


def eval_step(model, metrics, batch):
  """Replica context. Updates the eval metrics on one (possibly partial or empty) batch.

  An empty batch (a replica without data in the last step) updates nothing; it does not reach the
  model, whose oneDNN convolutions mis-shape empty inputs in TensorFlow 2.18.
  """
  images, labels = batch

  def update():
    logits = tf.cast(model(images, training=False), tf.float32)
    per_example_loss = create_loss_fn()(labels, logits)
    mean_loss = tf.reduce_mean(per_example_loss) + tf.cast(_regularization_loss(model), tf.float32)
    _update_metrics(metrics, 'eval', labels, logits, mean_loss)

  tf.cond(tf.shape(labels)[0] > 0, update, lambda: None)
