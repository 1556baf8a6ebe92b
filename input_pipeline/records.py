"""The TFRecord layout Convoy reads and writes: the common ImageNet conversion layout.

Each record is a `tf.train.Example` with `image/encoded` (JPEG or PNG bytes), `image/format`,
`image/class/label` (int64), `image/height`, `image/width`, and Convoy's `image/id` (int64, the
example's index in its split, -1 when unknown) used to check coverage. Only `image/encoded` and
`image/class/label` are required to read a file, so shards written by the usual ImageNet scripts
(`build_imagenet_data.py`) read as they are; their labels are often 1-based (set
`data.label_offset=-1`).
"""

import tensorflow as tf

FEATURES = {
    'image/encoded': tf.io.FixedLenFeature([], tf.string),
    'image/class/label': tf.io.FixedLenFeature([], tf.int64),
    'image/id': tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


def _bytes(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def make_example(encoded, image_format, label, height, width, example_id=-1):
  """Serializes one image record in the layout above.

  Args:
    encoded: JPEG or PNG bytes.
    image_format: b'JPEG' or b'PNG' (str accepted).
    label: integer class.
    height: image height in pixels.
    width: image width in pixels.
    example_id: index of the example in its split (-1 if unknown).

  Returns:
    The serialized `tf.train.Example` (bytes).
  """
  if isinstance(image_format, str):
    image_format = image_format.encode()
  return tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': _bytes(encoded),
      'image/format': _bytes(image_format),
      'image/class/label': _int(label),
      'image/height': _int(height),
      'image/width': _int(width),
      'image/id': _int(example_id),
  })).SerializeToString()


def parse_record(serialized):
  """Parses one serialized record into `(encoded_image, label, example_id)` tensors."""
  features = tf.io.parse_single_example(serialized, FEATURES)
  return (features['image/encoded'], features['image/class/label'], features['image/id'])


def shard_name(split, index, num_shards):
  """File name of shard `index` of `num_shards` of `split`, as the ImageNet scripts name them."""
  return f'{split}-{index:05d}-of-{num_shards:05d}'
