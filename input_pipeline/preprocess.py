"""Decoding and augmentation of encoded images, for training (random) and evaluation (fixed).

Random choices use stateless ops seeded per example, so the augmentation of an example does not
depend on thread scheduling or on where a resumed run started.
"""

import tensorflow as tf

AUGMENTATIONS = ('none', 'flip_crop', 'random_resized_crop')
_EVAL_CROP_FRACTION = 0.875  # ImageNet convention: resize, then keep the central 87.5%.


def decode(encoded, channels):
  """Decodes JPEG/PNG bytes to float32 in [0, 1] with `channels` channels."""
  image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
  return tf.image.convert_image_dtype(image, tf.float32)


def _resize(image, height, width):
  return tf.image.resize(image, (height, width))  # Bilinear, no antialias: as the reference ImageNet pipelines.


def _flip_crop(image, height, width, seed):
  """CIFAR-style: resize, pad by 1/8 of the size, random crop back, random horizontal flip."""
  image = _resize(image, height, width)
  pad = max(1, height // 8)
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  image = tf.image.stateless_random_crop(image, (height, width, tf.shape(image)[-1]), seed=seed)
  return tf.image.stateless_random_flip_left_right(image, seed=seed + 1)


def _crop_window(image_shape, seed):
  """A random crop of 8-100% of the area with aspect 3/4-4/3: (begin, size) as 3-vectors."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  return begin, size


def _random_resized_crop(encoded, height, width, channels, seed):
  """ImageNet-style random crop, resized, random flip. JPEGs decode only the crop (much cheaper)."""

  def from_jpeg():
    begin, size = _crop_window(tf.io.extract_jpeg_shape(encoded), seed)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    crop = tf.io.decode_and_crop_jpeg(encoded, window, channels=channels)
    return tf.image.convert_image_dtype(crop, tf.float32)

  def from_other():
    image = decode(encoded, channels)
    begin, size = _crop_window(tf.shape(image), seed)
    return tf.slice(image, begin, size)

  crop = tf.cond(tf.io.is_jpeg(encoded), from_jpeg, from_other)
  image = _resize(tf.reshape(crop, [tf.shape(crop)[0], tf.shape(crop)[1], channels]), height, width)
  return tf.image.stateless_random_flip_left_right(image, seed=seed + 1)


def _stateless_seed(seed):
  """The 2-element seed of stateless ops from (seed, pipeline, example index)."""
  return tf.cast(tf.stack([seed[0] * 1000003 + seed[1], seed[2]]), tf.int64)


def _to_shape(images, image_shape):
  """An image or a batch resized to `image_shape`'s height and width if they differ, with that
  static shape (any leading batch dimension kept)."""
  height, width, _ = image_shape
  if images.shape[-3] != height or images.shape[-2] != width:
    images = _resize(images, height, width)
  return tf.ensure_shape(images, tuple(images.shape[:-3]) + tuple(image_shape))


def augment_decoded(image, image_shape, augment, seed):
  """Augments one already decoded float image to `image_shape` (in-memory sources).

  Same augmentations as `preprocess_for_train`: 'flip_crop', 'random_resized_crop' (the crop is
  taken from the decoded image), or 'none' (a resize to `image_shape` if needed).
  """
  height, width, channels = image_shape
  seed = _stateless_seed(seed)
  if augment == 'random_resized_crop':
    begin, size = _crop_window(tf.shape(image), seed)
    image = _resize(tf.slice(image, begin, size), height, width)
    image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
  elif augment == 'flip_crop':
    image = _flip_crop(image, height, width, seed)
  else:
    return _to_shape(image, image_shape)
  return tf.ensure_shape(image, (height, width, channels))


def augment_decoded_batch(images, image_shape, augment, seeds):
  """`augment_decoded` of a batch of decoded images; `seeds` holds one 3-element seed per image.

  'none' resizes the whole batch at once (if needed); a random augmentation runs per image with
  its own seed inside one op (`tf.map_fn`), so the result equals `augment_decoded` image by image.
  """
  if augment == 'none':
    return _to_shape(images, image_shape)
  return tf.map_fn(lambda args: augment_decoded(args[0], image_shape, augment, args[1]),
                   (images, seeds), fn_output_signature=tf.TensorSpec(image_shape, tf.float32))


def preprocess_for_train(encoded, image_shape, augment, seed):
  """Decodes and augments one training image to `image_shape` (height, width, channels).

  Args:
    encoded: JPEG/PNG bytes.
    image_shape: output (height, width, channels).
    augment: one of AUGMENTATIONS.
    seed: int64 tensor of shape [3] (seed, pipeline, example index); stateless ops use 2 of them.
  """
  height, width, channels = image_shape
  seed = _stateless_seed(seed)
  if augment == 'random_resized_crop':
    return tf.ensure_shape(_random_resized_crop(encoded, height, width, channels, seed), image_shape)
  image = decode(encoded, channels)
  if augment == 'flip_crop':
    image = _flip_crop(image, height, width, seed)
  else:
    image = _resize(image, height, width)
  return tf.ensure_shape(image, image_shape)


def eval_decoded(image, image_shape, augment):
  """A decoded eval image, or a batch of them: a central crop for 'random_resized_crop' training,
  then a resize."""
  if augment == 'random_resized_crop':
    image = tf.image.central_crop(image, _EVAL_CROP_FRACTION)
  return _to_shape(image, image_shape)


def preprocess_for_eval(encoded, image_shape, augment):
  """Decodes one eval image: a central crop for 'random_resized_crop' training, else a resize."""
  return eval_decoded(decode(encoded, image_shape[-1]), image_shape, augment)
