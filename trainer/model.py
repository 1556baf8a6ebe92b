"""Convoy's CNNs, built from `config.model`: a small Conv-SE net, ResNet-20 and (SE-)ResNet-50."""

import dataclasses
from typing import Optional, Sequence

import tensorflow as tf
import tf_keras

_BATCH_NORMS = ('none', 'local', 'sync')


@tf_keras.utils.register_keras_serializable(package='convoy')
class SqueezeExcitation(tf_keras.layers.Layer):
  """Squeeze-and-excitation channel attention (Hu et al., 2018) for NHWC (or NCHW) feature maps.

  Each channel is scaled by a gate in (0, 1) computed from the whole map: global average pool over
  height and width, a bottleneck fully connected layer with ReLU, a fully connected layer back to
  the channel count, and a sigmoid.
  """

  def __init__(self, ratio=0.25, kernel_regularizer=None, data_format='channels_last', **kwargs):
    """Initializes the layer.

    Args:
      ratio: Bottleneck width as a fraction of the input channels; the bottleneck has
        `max(1, int(channels * ratio))` units. Must be positive.
      kernel_regularizer: Regularizer (instance, name or serialized config) for the two kernels.
      data_format: 'channels_last' (NHWC) or 'channels_first' (NCHW).
      **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Raises:
      ValueError: If `ratio` is not positive.
    """
    super().__init__(**kwargs)
    if ratio <= 0:
      raise ValueError(f'SqueezeExcitation ratio must be positive, got {ratio!r}.')
    if data_format not in ('channels_last', 'channels_first'):
      raise ValueError(f'SqueezeExcitation data_format must be channels_last or channels_first, '
                       f'got {data_format!r}.')
    self.ratio = ratio
    self.data_format = data_format
    self._channel_axis = -1 if data_format == 'channels_last' else 1
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self.input_spec = tf_keras.layers.InputSpec(ndim=4)

  def build(self, input_shape):
    """Creates the squeeze and excite weights for the channel count of `input_shape`."""
    channels = tf.TensorShape(input_shape)[self._channel_axis]
    if channels is None:
      raise ValueError(f'SqueezeExcitation needs a known channel dimension, got {input_shape}.')
    bottleneck = max(1, int(channels * self.ratio))
    self.squeeze_kernel = self.add_weight(
        name='squeeze_kernel', shape=(channels, bottleneck), initializer='he_normal',
        regularizer=self.kernel_regularizer)
    self.squeeze_bias = self.add_weight(
        name='squeeze_bias', shape=(bottleneck,), initializer='zeros')
    self.excite_kernel = self.add_weight(
        name='excite_kernel', shape=(bottleneck, channels), initializer='glorot_uniform',
        regularizer=self.kernel_regularizer)
    self.excite_bias = self.add_weight(
        name='excite_bias', shape=(channels,), initializer='zeros')
    self.input_spec = tf_keras.layers.InputSpec(ndim=4, axes={self._channel_axis: channels})
    super().build(input_shape)

  def call(self, inputs):
    """Returns `inputs` [B, H, W, C] (or [B, C, H, W]) scaled channel-wise by the excitation gate."""
    dtype = inputs.dtype  # The compute dtype: float16 under a mixed precision policy.
    last = self.data_format == 'channels_last'
    squeezed = tf.reduce_mean(inputs, axis=(1, 2) if last else (2, 3))  # [B, C]
    hidden = tf.nn.relu(tf.matmul(squeezed, tf.cast(self.squeeze_kernel, dtype))
                        + tf.cast(self.squeeze_bias, dtype))  # [B, Cb]
    gate = tf.sigmoid(tf.matmul(hidden, tf.cast(self.excite_kernel, dtype))
                      + tf.cast(self.excite_bias, dtype))  # [B, C]
    if last:
      return inputs * gate[:, tf.newaxis, tf.newaxis, :]
    return inputs * gate[:, :, tf.newaxis, tf.newaxis]

  def compute_output_shape(self, input_shape):
    """Returns `input_shape`: the gate rescales channels without changing the shape."""
    return tf.TensorShape(input_shape)

  def get_config(self):
    """Returns the layer config; `from_config` of it rebuilds an equivalent layer."""
    config = super().get_config()
    config.update({
        'ratio': self.ratio,
        'data_format': self.data_format,
        'kernel_regularizer': tf_keras.regularizers.serialize(self.kernel_regularizer)
                              if self.kernel_regularizer is not None else None,
    })
    return config


@dataclasses.dataclass(frozen=True)
class _Style:
  """Choices shared by every layer of one model (taken from `config.model`)."""
  width: int
  se_ratio: float
  batch_norm: str  # One of _BATCH_NORMS.
  regularizer: Optional[tf_keras.regularizers.Regularizer]
  data_format: str = 'channels_last'

  @property
  def channel_axis(self):
    return -1 if self.data_format == 'channels_last' else 1


def _conv_bn_act(x, filters, kernel_size, style, *, name, strides=1, activation='relu',
                 zero_init=False):
  """Conv2D ('same' padding) -> optional batch norm -> optional activation.

  Args:
    x: input tensor in `style.data_format`.
    filters: Output channels.
    kernel_size: Square kernel size.
    style: The model's `_Style`.
    name: Prefix of the layer names.
    strides: Convolution stride.
    activation: Keras activation name, or None for a linear output.
    zero_init: Start the output at zero (last layer of a residual branch, so every block starts as
      the identity: Goyal et al., 2017): zero batch-norm scale, or a zero kernel without batch norm.

  Returns:
    The output tensor.
  """
  use_bn = style.batch_norm != 'none'
  x = tf_keras.layers.Conv2D(
      filters, kernel_size, strides=strides, padding='same', use_bias=not use_bn,
      kernel_initializer='zeros' if zero_init and not use_bn else 'he_normal',
      kernel_regularizer=style.regularizer, data_format=style.data_format, name=f'{name}_conv')(x)
  if use_bn:
    x = tf_keras.layers.BatchNormalization(
        axis=style.channel_axis,
        synchronized=style.batch_norm == 'sync',
        gamma_initializer='zeros' if zero_init else 'ones', name=f'{name}_bn')(x)
  if activation is not None:
    x = tf_keras.layers.Activation(activation, name=f'{name}_{activation}')(x)
  return x


def _squeeze_excite(x, style, *, name):
  """Applies a SqueezeExcitation block if `style.se_ratio` > 0, else returns `x`."""
  if style.se_ratio <= 0:
    return x
  return SqueezeExcitation(style.se_ratio, kernel_regularizer=style.regularizer,
                           data_format=style.data_format, name=name)(x)


def _dense(x, units, style, *, name, activation=None, dtype=None):
  return tf_keras.layers.Dense(
      units, activation=activation, kernel_regularizer=style.regularizer, dtype=dtype,
      name=name)(x)


def _logits(x, num_classes, style):
  # float32 even under a mixed precision policy, so the loss and softmax stay in full precision.
  return _dense(x, num_classes, style, name='logits', dtype='float32')


def _residual_block(x, filters, strides, style, *, name, bottleneck):
  """A ResNet block: basic (3x3, 3x3) or v1.5 bottleneck (1x1, 3x3 strided, 1x1 to 4x filters).

  The residual branch ends with an optional squeeze-and-excitation block before the addition; the
  shortcut is a strided 1x1 projection whenever the branch changes the shape.
  """
  if bottleneck:
    branch = ((filters, 1, 1), (filters, 3, strides), (4 * filters, 1, 1))
  else:
    branch = ((filters, 3, strides), (filters, 3, 1))
  out_filters = branch[-1][0]
  shortcut = x
  if strides != 1 or x.shape[style.channel_axis] != out_filters:
    shortcut = _conv_bn_act(x, out_filters, 1, style, strides=strides, activation=None,
                            name=f'{name}_proj')
  y = x
  for i, (branch_filters, kernel_size, branch_strides) in enumerate(branch, start=1):
    last = i == len(branch)
    y = _conv_bn_act(y, branch_filters, kernel_size, style, strides=branch_strides,
                     activation=None if last else 'relu', zero_init=last, name=f'{name}_{i}')
  y = _squeeze_excite(y, style, name=f'{name}_se')
  y = tf_keras.layers.Add(name=f'{name}_add')([shortcut, y])
  return tf_keras.layers.Activation('relu', name=f'{name}_out')(y)


def _resnet_stages(x, stages: Sequence[tuple[int, int, int]], style, *, bottleneck):
  """Runs (filters, blocks, first_stride) stages of residual blocks, then global average pool."""
  for s, (filters, blocks, first_stride) in enumerate(stages, start=1):
    for b in range(1, blocks + 1):
      x = _residual_block(x, filters, first_stride if b == 1 else 1, style,
                          bottleneck=bottleneck, name=f'stage{s}_block{b}')
  return tf_keras.layers.GlobalAveragePooling2D(data_format=style.data_format, name='pool')(x)


def _small_cnn(images, num_classes, style):
  """Conv3x3(w) -> SE -> Conv3x3(2w) -> SE -> MaxPool2x2 -> Dense(128) -> logits."""
  x = _conv_bn_act(images, style.width, 3, style, name='conv1')
  x = _squeeze_excite(x, style, name='se1')
  x = _conv_bn_act(x, 2 * style.width, 3, style, name='conv2')
  x = _squeeze_excite(x, style, name='se2')
  x = tf_keras.layers.MaxPooling2D(2, data_format=style.data_format, name='pool')(x)
  # Flatten in NHWC order in both layouts, so the dense kernel is the same.
  x = tf_keras.layers.Flatten(data_format=style.data_format, name='flatten')(x)
  x = _dense(x, 128, style, activation='relu', name='dense')
  return _logits(x, num_classes, style)


def _resnet_cifar(images, num_classes, style):
  """ResNet-20 (He et al., 2016, CIFAR variant): 3x3 stem, 3 stages of 3 basic blocks."""
  w = style.width
  x = _conv_bn_act(images, w, 3, style, name='stem')
  x = _resnet_stages(x, ((w, 3, 1), (2 * w, 3, 2), (4 * w, 3, 2)), style, bottleneck=False)
  return _logits(x, num_classes, style)


def _resnet50(images, num_classes, style):
  """ResNet-50 v1.5 (stride on the 3x3 conv), SE-ResNet-50 when se_ratio > 0; ignores width."""
  x = _conv_bn_act(images, 64, 7, style, strides=2, name='stem')
  x = tf_keras.layers.MaxPooling2D(3, strides=2, padding='same', data_format=style.data_format,
                                   name='stem_pool')(x)
  x = _resnet_stages(x, ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), style,
                     bottleneck=True)
  return _logits(x, num_classes, style)


_BUILDERS = {
    'small_cnn': _small_cnn,
    'resnet_cifar': _resnet_cifar,
    'resnet50': _resnet50,
}
# Values accepted for config.model.name.
MODEL_NAMES = tuple(_BUILDERS)


def create_model(model_config, input_shape, num_classes, precision='float32'):
  """Builds the classifier described by `config.model`.

  Args:
    model_config: The `config.model` ConfigDict: `name` (one of MODEL_NAMES), `width`, `se_ratio`,
      `batch_norm` ('none', 'local' or 'sync'), `weight_decay` and `data_format`.
    input_shape: Shape of one NHWC image, (height, width, channels), e.g. (8, 8, 1).
    num_classes: Number of output classes.
    precision: Keras mixed precision policy of the layers: 'float32', 'mixed_bfloat16' or
      'mixed_float16' (variables stay float32; the logits are float32 in every policy).

  Returns:
    A functional `tf_keras.Model` named after the architecture, mapping float images [B, H, W, C]
    to float32 logits [B, num_classes] (no softmax). Inputs are NHWC in both data formats: with
    'channels_first' the model transposes them first (channels_first needs a GPU in TensorFlow). With weight_decay > 0 every conv, dense and SE
    kernel carries an L2 regularizer, whose losses are in `model.losses`.

  Raises:
    ValueError: If a field of `model_config`, `input_shape` or `num_classes` is invalid.
  """
  name = model_config.name
  if name not in _BUILDERS:
    raise ValueError(f'Unknown model.name {name!r}; expected one of {", ".join(MODEL_NAMES)}.')
  if model_config.batch_norm not in _BATCH_NORMS:
    raise ValueError(f'Unknown model.batch_norm {model_config.batch_norm!r}; expected one of '
                     f'{", ".join(_BATCH_NORMS)}.')
  if model_config.width < 1:
    raise ValueError(f'model.width must be at least 1, got {model_config.width!r}.')
  if model_config.se_ratio < 0:
    raise ValueError(f'model.se_ratio must be >= 0 (0 disables SE), got {model_config.se_ratio!r}.')
  if model_config.weight_decay < 0:
    raise ValueError(f'model.weight_decay must be >= 0, got {model_config.weight_decay!r}.')
  if len(input_shape) != 3:
    raise ValueError(f'input_shape must be (height, width, channels), got {input_shape!r}.')
  if num_classes < 1:
    raise ValueError(f'num_classes must be at least 1, got {num_classes!r}.')

  weight_decay = model_config.weight_decay
  style = _Style(
      width=model_config.width,
      se_ratio=model_config.se_ratio,
      batch_norm=model_config.batch_norm,
      regularizer=tf_keras.regularizers.L2(weight_decay) if weight_decay > 0 else None,
      data_format=model_config.get('data_format', 'channels_last'))
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy(precision)  # Layers take the policy at creation.
  try:
    images = tf_keras.Input(shape=tuple(input_shape), name='images')
    x = images
    if style.data_format == 'channels_first':
      x = tf_keras.layers.Permute((3, 1, 2), name='to_channels_first')(x)
    logits = _BUILDERS[name](x, num_classes, style)
    return tf_keras.Model(images, logits, name=name)
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)
