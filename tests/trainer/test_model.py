"""Tests for trainer.model: the architectures, the SqueezeExcitation layer, the config options."""

import trainer  # pylint: disable=unused-import  # Selects tf-keras; must precede TensorFlow.
from trainer import model

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from configs import default


def _model_config(**overrides):
  config = default.get_config().model.copy_and_resolve_references()
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def _layers_of_type(keras_model, layer_type):
  return [layer for layer in keras_model.layers if isinstance(layer, layer_type)]


def _kernels(keras_model):
  return [w for w in keras_model.trainable_weights if w.name.split('/')[-1].endswith('kernel:0')]


@pytest.mark.parametrize('name,input_shape,batch', [
    ('small_cnn', (8, 8, 1), 3),
    ('small_cnn', (32, 32, 3), 2),
    ('resnet_cifar', (32, 32, 3), 2),
    ('resnet50', (224, 224, 3), 1),
])
def test_each_architecture_returns_float32_logits_of_shape_batch_by_classes(
    name, input_shape, batch):
  keras_model = model.create_model(_model_config(name=name), input_shape, num_classes=7)
  images = np.random.RandomState(0).rand(batch, *input_shape).astype(np.float32)

  logits = keras_model(images, training=False)

  assert keras_model.name == name
  assert logits.shape == (batch, 7)
  assert logits.dtype == tf.float32
  assert np.all(np.isfinite(logits.numpy()))


def test_model_names_lists_every_architecture():
  assert model.MODEL_NAMES == ('small_cnn', 'resnet_cifar', 'resnet50')


def test_small_cnn_param_count_at_default_config_matches_layer_formula():
  config = _model_config()
  assert (config.name, config.batch_norm) == ('small_cnn', 'none')  # Convs with bias, no BN.
  width, ratio, classes = config.width, config.se_ratio, 10

  def conv3x3(c_in, c_out):
    return 3 * 3 * c_in * c_out + c_out

  def squeeze_excitation(channels):
    hidden = max(1, int(channels * ratio))
    return channels * hidden + hidden + hidden * channels + channels

  def dense(n_in, n_out):
    return n_in * n_out + n_out

  pooled = 4 * 4 * (2 * width)  # 8x8 input, 'same' convs, 2x2 max pool.
  expected = (conv3x3(1, width) + squeeze_excitation(width)
              + conv3x3(width, 2 * width) + squeeze_excitation(2 * width)
              + dense(pooled, 128) + dense(128, classes))

  keras_model = model.create_model(config, (8, 8, 1), classes)

  assert expected == 153_986
  assert keras_model.count_params() == expected


def test_squeeze_excitation_matches_numpy_reference_of_the_gating():
  rng = np.random.RandomState(0)
  layer = model.SqueezeExcitation(ratio=0.5)
  layer.build((None, 4, 5, 6))
  w1, b1 = rng.randn(6, 3), rng.randn(3)
  w2, b2 = rng.randn(3, 6), rng.randn(6)
  layer.set_weights([w1, b1, w2, b2])
  x = rng.rand(2, 4, 5, 6).astype(np.float32)

  hidden = np.maximum(0.0, x.mean(axis=(1, 2)) @ w1 + b1)
  gate = 1.0 / (1.0 + np.exp(-(hidden @ w2 + b2)))
  expected = x * gate[:, None, None, :]

  assert layer.squeeze_kernel.shape == (6, 3)
  np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_squeeze_excitation_bottleneck_has_at_least_one_unit():
  layer = model.SqueezeExcitation(ratio=0.01)
  layer.build((None, 2, 2, 6))
  assert layer.squeeze_kernel.shape == (6, 1)
  assert layer.excite_kernel.shape == (1, 6)


def test_squeeze_excitation_config_round_trip_gives_same_layer_and_output():
  layer = model.SqueezeExcitation(ratio=0.5, kernel_regularizer=tf_keras.regularizers.L2(1e-3))
  x = np.random.RandomState(1).rand(2, 3, 3, 8).astype(np.float32)
  expected = layer(x).numpy()

  clone = model.SqueezeExcitation.from_config(layer.get_config())
  clone.build(x.shape)
  clone.set_weights(layer.get_weights())

  assert clone.ratio == 0.5
  assert isinstance(clone.kernel_regularizer, tf_keras.regularizers.L2)
  assert clone.kernel_regularizer.l2 == pytest.approx(1e-3)
  np.testing.assert_allclose(clone(x).numpy(), expected, rtol=1e-6)


def test_model_with_squeeze_excitation_reloads_from_saved_model_with_identical_predictions(
    tmp_path):
  keras_model = model.create_model(_model_config(), (8, 8, 1), 10)
  images = np.random.RandomState(2).rand(5, 8, 8, 1).astype(np.float32)
  expected = keras_model.predict(images, verbose=0)
  path = str(tmp_path / 'saved_model')
  keras_model.save(path, save_format='tf')

  reloaded = tf_keras.models.load_model(path)
  restored = tf.saved_model.load(path)
  served = restored.signatures['serving_default'](images=tf.constant(images))

  assert len(_layers_of_type(reloaded, model.SqueezeExcitation)) == 2
  np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, rtol=1e-6)
  np.testing.assert_allclose(served['logits'].numpy(), expected, rtol=1e-6)


def test_se_ratio_zero_builds_no_squeeze_excitation_blocks():
  for name, input_shape in (('small_cnn', (8, 8, 1)), ('resnet_cifar', (32, 32, 3))):
    keras_model = model.create_model(_model_config(name=name, se_ratio=0.0), input_shape, 10)
    assert not _layers_of_type(keras_model, model.SqueezeExcitation)


@pytest.mark.parametrize('name,input_shape', [('small_cnn', (8, 8, 1)),
                                              ('resnet_cifar', (32, 32, 3))])
def test_batch_norm_none_builds_no_bn_layers_and_biased_convs(name, input_shape):
  keras_model = model.create_model(_model_config(name=name, batch_norm='none'), input_shape, 10)

  assert not _layers_of_type(keras_model, tf_keras.layers.BatchNormalization)
  assert all(conv.use_bias for conv in _layers_of_type(keras_model, tf_keras.layers.Conv2D))
  assert np.all(np.isfinite(keras_model(np.ones((2, *input_shape), np.float32)).numpy()))


@pytest.mark.parametrize('batch_norm,synchronized', [('local', False), ('sync', True)])
@pytest.mark.parametrize('name,input_shape', [('small_cnn', (8, 8, 1)),
                                              ('resnet_cifar', (32, 32, 3))])
def test_batch_norm_option_puts_local_or_synchronized_bn_after_every_conv(
    batch_norm, synchronized, name, input_shape):
  keras_model = model.create_model(_model_config(name=name, batch_norm=batch_norm), input_shape,
                                   10)

  bn_layers = _layers_of_type(keras_model, tf_keras.layers.BatchNormalization)
  convs = _layers_of_type(keras_model, tf_keras.layers.Conv2D)
  assert len(bn_layers) == len(convs)
  assert all(bn.synchronized == synchronized for bn in bn_layers)
  assert not any(conv.use_bias for conv in convs)


def test_positive_weight_decay_adds_one_l2_loss_per_kernel():
  weight_decay = 1e-3
  keras_model = model.create_model(_model_config(weight_decay=weight_decay), (8, 8, 1), 10)
  kernels = _kernels(keras_model)
  # 2 convs, 2 SE blocks (2 kernels each) and 2 dense layers.
  assert len(kernels) == 8

  expected = weight_decay * sum(float(np.sum(np.square(k.numpy()))) for k in kernels)

  assert len(keras_model.losses) == len(kernels)
  assert float(tf.add_n(keras_model.losses)) == pytest.approx(expected, rel=1e-5)


def test_resnet_weight_decay_covers_every_conv_dense_and_se_kernel():
  keras_model = model.create_model(
      _model_config(name='resnet_cifar', batch_norm='local'), (32, 32, 3), 10)

  assert len(keras_model.losses) == len(_kernels(keras_model))
  # Batch-norm scales and offsets are not decayed.
  assert len(keras_model.losses) < len(keras_model.trainable_weights) // 2


def test_zero_weight_decay_adds_no_regularization_loss():
  keras_model = model.create_model(_model_config(weight_decay=0.0), (8, 8, 1), 10)
  assert not keras_model.losses


@pytest.mark.parametrize('precision, compute', [('mixed_float16', 'float16'),
                                                ('mixed_bfloat16', 'bfloat16')])
def test_small_cnn_under_mixed_precision_computes_in_half_and_returns_float32_logits(
    precision, compute):
  keras_model = model.create_model(_model_config(batch_norm='local'), (8, 8, 1), 10, precision)
  images = np.random.RandomState(3).rand(4, 8, 8, 1).astype(np.float32)

  with tf.GradientTape() as tape:
    logits = keras_model(images, training=True)
    loss = tf.reduce_mean(tf.square(logits)) + tf.add_n(keras_model.losses)
  grads = tape.gradient(loss, keras_model.trainable_variables)

  se_layer = keras_model.get_layer('se1')
  assert se_layer.compute_dtype == compute and se_layer.variable_dtype == 'float32'
  # The policy applies to this model only: the global one is left as it was.
  assert tf_keras.mixed_precision.global_policy().name == 'float32'
  assert logits.dtype == tf.float32
  assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


def test_unknown_model_name_raises_value_error_naming_allowed_names():
  with pytest.raises(ValueError, match='model.name') as error:
    model.create_model(_model_config(name='vgg16'), (8, 8, 1), 10)

  message = str(error.value)
  assert 'vgg16' in message
  assert all(name in message for name in model.MODEL_NAMES)


def test_unknown_batch_norm_option_raises_value_error():
  with pytest.raises(ValueError, match="model.batch_norm 'group'"):
    model.create_model(_model_config(batch_norm='group'), (8, 8, 1), 10)


def test_channels_first_model_has_the_same_weights_and_output_shape_as_channels_last():
  # NCHW kernels do not run on TensorFlow's CPU, so this checks the graph, not the numbers.
  shapes = {}
  for data_format in ('channels_last', 'channels_first'):
    config = _model_config(name='resnet_cifar', batch_norm='local', data_format=data_format)
    keras_model = model.create_model(config, (32, 32, 3), 10)
    shapes[data_format] = [tuple(w.shape) for w in keras_model.weights]
    assert keras_model.output_shape == (None, 10)
    assert keras_model.input_shape == (None, 32, 32, 3)  # The pipeline's NHWC in both layouts.
  assert shapes['channels_first'] == shapes['channels_last']


def test_squeeze_excitation_gates_the_channel_axis_of_either_layout():
  nhwc = np.random.RandomState(0).rand(2, 4, 4, 6).astype(np.float32)
  last = model.SqueezeExcitation(0.5)
  first = model.SqueezeExcitation(0.5, data_format='channels_first')
  expected = last(nhwc)
  first.build((2, 6, 4, 4))
  first.set_weights(last.get_weights())
  got = first(np.transpose(nhwc, (0, 3, 1, 2)))
  np.testing.assert_allclose(np.transpose(got, (0, 2, 3, 1)), expected, rtol=1e-6)
  assert model.SqueezeExcitation.from_config(first.get_config()).data_format == 'channels_first'
