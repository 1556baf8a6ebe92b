"""SavedModel export of the trained model, with a serving signature, written by the chief."""

import os
import tempfile

from absl import logging
import tensorflow as tf


def export_saved_model(engine, model, export_dir, image_shape):
  """Exports `model` as a SavedModel whose `serving_default` maps images to logits and classes.

  Every worker must call this (saving a distributed model is a collective); only the chief's copy
  lands in `export_dir`, the others write to a temporary directory that is then removed.

  Args:
    engine: the Engine.
    model: the trained Keras model.
    export_dir: destination directory (the chief's).
    image_shape: (height, width, channels) of one input image.

  Returns:
    The absolute export path on the chief, None on other workers.
  """

  @tf.function(input_signature=[tf.TensorSpec((None, *image_shape), tf.float32, name='images')])
  def serve(images):
    logits = tf.cast(model(images, training=False), tf.float32)
    return {'logits': logits, 'probabilities': tf.nn.softmax(logits),
            'classes': tf.argmax(logits, axis=-1, output_type=tf.int32)}

  target = export_dir if engine.is_chief else tempfile.mkdtemp(prefix='convoy-export-')
  model.save(target, save_format='tf', include_optimizer=False, signatures={'serving_default': serve})
  if not engine.is_chief:
    tf.io.gfile.rmtree(target)
    return None
  logging.info('Exported SavedModel to %s', target)
  return os.path.abspath(target)
