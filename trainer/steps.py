"""Replica-local train and eval steps: loss, gradients and metric updates, no distribution code.

Everything cross-replica is delegated to the engine (`average_loss`, `scale_regularization_loss`,
`reduce_gradients`), so the same step is exact on one device, N replicas, N workers or N ranks.
"""

import tensorflow as tf
import tf_keras


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


def _update_metrics(metrics, prefix, labels, logits, mean_loss):
  batch = tf.shape(labels)[0]
  metrics[f'{prefix}_loss'].update_state(mean_loss, sample_weight=tf.cast(batch, tf.float32))
  metrics[f'{prefix}_accuracy'].update_state(labels, logits)
  metrics[f'{prefix}_examples'].update_state(labels)


def _regularization_loss(model):
  return tf.add_n(model.losses) if model.losses else tf.constant(0.0)


def train_step(model, optimizer, engine, metrics, global_batch_size, batch):
  """Replica context. One optimizer step on this replica's slice of the global batch.

  The loss is the replica's share of the global-batch mean (`engine.average_loss`) plus its share of
  the weight decay, so that the gradients combined across replicas equal the single-device gradient.

  Args:
    model: the Keras model (logits out).
    optimizer: a Keras optimizer.
    engine: the `Engine` (for loss scaling and gradient reduction).
    metrics: dict from `create_metrics('train')`.
    global_batch_size: examples per optimizer step over all replicas.
    batch: `(images, labels)` for this replica.
  """
  images, labels = batch
  loss_fn = create_loss_fn()
  with tf.GradientTape() as tape:
    logits = model(images, training=True)
    per_example_loss = loss_fn(labels, logits)
    regularization = _regularization_loss(model)
    loss = (engine.average_loss(per_example_loss, global_batch_size) +
            engine.scale_regularization_loss(regularization))
  variables = model.trainable_variables
  gradients = engine.reduce_gradients(tape.gradient(loss, variables))
  optimizer.apply_gradients(zip(gradients, variables))
  # Report the unscaled loss, as Keras's fit does: batch mean plus the full weight decay.
  mean_loss = tf.reduce_mean(per_example_loss) + regularization
  _update_metrics(metrics, 'train', labels, logits, mean_loss)


def eval_step(model, metrics, batch):
  """Replica context. Updates the eval metrics on one (possibly partial or empty) batch."""
  images, labels = batch
  logits = model(images, training=False)
  per_example_loss = create_loss_fn()(labels, logits)
  batch_size = tf.shape(labels)[0]
  mean_loss = tf.math.divide_no_nan(tf.reduce_sum(per_example_loss),
                                    tf.cast(batch_size, tf.float32)) + _regularization_loss(model)
  _update_metrics(metrics, 'eval', labels, logits, mean_loss)
