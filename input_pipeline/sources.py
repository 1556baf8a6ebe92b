"""In-memory image sources: scikit-learn's digits (ships with the package) and synthetic data."""

import dataclasses

from absl import logging
import numpy as np

# The held-out split of the digits never changes with the training seed, so eval accuracy is always
# measured on the same images.
_DIGITS_SPLIT_SEED = 20240601


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """Images (N, H, W, C) float32 in [0, 1] and int32 labels, for training and evaluation."""
  train_images: np.ndarray
  train_labels: np.ndarray
  eval_images: np.ndarray
  eval_labels: np.ndarray
  num_classes: int

  @property
  def image_shape(self):
    return tuple(self.train_images.shape[1:])

  @property
  def num_train_examples(self):
    return len(self.train_labels)

  @property
  def num_eval_examples(self):
    return len(self.eval_labels)


def load_digits(eval_fraction):
  """Loads the 1,797 8x8 digits of scikit-learn and splits them, stratified, into train and eval.

  Args:
    eval_fraction: fraction of the images held out for evaluation, in (0, 1).

  Returns:
    An `ArraySource` with images scaled to [0, 1] and shaped (N, 8, 8, 1).
  """
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
  labels = digits.target.astype(np.int32)
  train_x, eval_x, train_y, eval_y = model_selection.train_test_split(
      images, labels, test_size=eval_fraction, random_state=_DIGITS_SPLIT_SEED, stratify=labels)
  return ArraySource(train_x, train_y, eval_x, eval_y, num_classes=10)


def make_synthetic(num_examples, image_size, num_classes, seed):
  """Random images and labels of a real shape, for measuring compute without any input cost.

  Args:
    num_examples: examples in each of the train and eval splits.
    image_size: height and width; images have 3 channels.
    num_classes: labels are drawn uniformly from [0, num_classes).
    seed: NumPy seed.

  Returns:
    An `ArraySource`.
  """
  rng = np.random.default_rng(seed)
  shape = (num_examples, image_size, image_size, 3)
  return ArraySource(
      rng.random(shape, dtype=np.float32), rng.integers(0, num_classes, num_examples, np.int32),
      rng.random(shape, dtype=np.float32), rng.integers(0, num_classes, num_examples, np.int32),
      num_classes=num_classes)


class DataError(ValueError):
  """The data cannot be read as configured (missing path, empty glob, unprepared dataset, corrupt
  record); the message says what is wrong and what to do."""


@dataclasses.dataclass(frozen=True)
class FileSource:
  """Records in files, read as a stream: TFRecord shards or a prepared TFDS dataset.

  `parse_fn(serialized) -> (encoded_image, label, example_id)` decodes nothing but the record.
  """
  name: str
  train_files: tuple
  eval_files: tuple
  parse_fn: object
  num_classes: int
  image_shape: tuple  # (height, width, channels) the model sees, after preprocessing.
  num_train_examples: int  # -1 if unknown
  num_eval_examples: int  # -1 if unknown


def _glob(pattern, field):
  """Sorted files matching `pattern`, or DataError naming the config field."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not pattern:
    raise DataError(f'{field} is empty: give a file pattern such as /data/imagenet/train-*')
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    parent = pattern.rsplit('/', 1)[0] if '/' in pattern else '.'
    hint = ('the directory does not exist' if not tf.io.gfile.exists(parent)
            else 'no file matches in an existing directory')
    raise DataError(f'{field}={pattern!r} matches no file ({hint}). Convert images with '
                    '`python -m input_pipeline.convert` or fix the pattern.')
  return tuple(files)


def _manifest_counts(files):
  """Example count of `files` from the converter's manifest.json beside them, or -1 if unknown."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  directory = os.path.dirname(files[0])
  try:
    with open(os.path.join(directory, 'manifest.json')) as f:
      manifest = json.load(f)
  except (OSError, ValueError):
    return -1
  names = {os.path.basename(f) for f in files}
  for split in [manifest] + list(manifest.get('splits', {}).values()):
    shards = split.get('shards') if isinstance(split, dict) else None
    if shards and {os.path.basename(s) for s in shards} == names:
      return int(split.get('num_examples', split.get('total', -1)))
  return -1


def load_tfrecords(data_config):
  """TFRecord shards in the ImageNet layout (see records.py) from two file patterns."""
  from input_pipeline import records  # pylint: disable=g-import-not-at-top
  train = _glob(data_config.train_files, 'data.train_files')
  evaluation = _glob(data_config.eval_files, 'data.eval_files')
  if data_config.num_classes <= 0:
    raise DataError('data.num_classes must be set (> 0) for data.source=tfrecord')
  size = data_config.image_size
  if size == -1:
    raise DataError('data.image_size must be set (> 0) for data.source=tfrecord: records hold '
                    'images of any size')
  offset = data_config.label_offset

  def parse(serialized):
    image, label, example_id = records.parse_record(serialized)
    return image, label + offset, example_id

  return FileSource('tfrecord', train, evaluation, parse, data_config.num_classes,
                    (size, size, data_config.channels), _manifest_counts(train),
                    _manifest_counts(evaluation))


def _tfds_builder(data_config):
  """The prepared TFDS builder of `data.tfds_name`, or DataError saying how to prepare it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from input_pipeline import tfds_digits  # pylint: disable=g-import-not-at-top  (registers it)
  name, data_dir = data_config.tfds_name, data_config.data_dir or None
  if name == tfds_digits.NAME:
    return tfds_digits.prepare(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError and friends.
    raise DataError(f'data.tfds_name={name!r}: not a TFDS dataset ({e})') from e
  if not builder.is_prepared():
    where = data_dir or '~/tensorflow_datasets'
    manual = (' imagenet2012 needs a manual download first: put ILSVRC2012_img_train.tar and '
              f'ILSVRC2012_img_val.tar in {where}/downloads/manual/.'
              if name.startswith('imagenet') else '')
    raise DataError(
        f'TFDS dataset {name!r} is not prepared in {where}. Prepare it once (this downloads) with: '
        f'python -c "import tensorflow_datasets as tfds; tfds.builder({name!r}, data_dir='
        f'{where!r}).download_and_prepare()" or `tfds build {name} --data_dir={where}`.{manual}')
  return builder


def load_tfds(data_config, seed):
  """A TFDS dataset by name: in memory when small (`data.in_memory`), else streamed from its files."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  del seed
  builder = _tfds_builder(data_config)
  info = builder.info
  splits = (data_config.train_split, data_config.eval_split)
  for split in splits:
    if split not in info.splits:
      raise DataError(f'split {split!r} not in {info.name} (has {", ".join(info.splits)})')
  shape = tuple(info.features['image'].shape)
  num_classes = info.features['label'].num_classes
  decoded_bytes = (None not in shape) and 4 * int(np.prod(shape)) * sum(
      info.splits[s].num_examples for s in splits)
  if data_config.in_memory == 'yes' or (data_config.in_memory == 'auto' and decoded_bytes and
                                        decoded_bytes <= data_config.ram_budget_mb * 2**20 // 4):
    arrays = [tfds.as_numpy(builder.as_dataset(split=s, batch_size=-1)) for s in splits]
    images = [a['image'].astype(np.float32) / 255.0 for a in arrays]
    return ArraySource(images[0], arrays[0]['label'].astype(np.int32), images[1],
                       arrays[1]['label'].astype(np.int32), num_classes)
  return _tfds_file_source(data_config, builder, shape, num_classes)


def _tfds_file_source(data_config, builder, shape, num_classes):
  """Streams a prepared TFDS dataset from its record files, decoding images in the pipeline."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  info = builder.info
  features = info.features
  has_id = 'id' in features

  def parse(serialized):
    example = features.deserialize_example(serialized, decoders={'image': tfds.decode.SkipDecoding()})
    example_id = example['id'] if has_id else tf.constant(-1, tf.int64)
    return example['image'], example['label'], tf.cast(example_id, tf.int64)

  size = data_config.image_size
  if size == -1 and None in shape[:2]:
    raise DataError(f'data.image_size must be set: {info.name} images have no fixed size')
  out_shape = (shape[0], shape[1], shape[2]) if size == -1 else (size, size, shape[2] or 3)
  files = [tuple(str(p) for p in info.splits[s].filepaths)
           for s in (data_config.train_split, data_config.eval_split)]
  return FileSource(f'tfds:{info.name}', files[0], files[1], parse, num_classes, out_shape,
                    info.splits[data_config.train_split].num_examples,
                    info.splits[data_config.eval_split].num_examples)


def _decode_all(files, parse_fn, channels, shape):
  """(images float32 [N, H, W, C], labels) of every record, or None if a shape differs from `shape`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from input_pipeline import preprocess  # pylint: disable=g-import-not-at-top

  def decode(serialized):
    encoded, label, _ = parse_fn(serialized)
    return preprocess.decode(encoded, channels), tf.cast(label, tf.int32)

  images, labels = [], []
  dataset = tf.data.TFRecordDataset(list(files)).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
  for image, label in dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
    if image.shape != shape:
      return None
    images.append(image)
    labels.append(label)
  return np.stack(images), np.asarray(labels, np.int32)


def decode_into_memory(source, data_config):
  """`cache()` after decode, done once: a small streamed source decoded into an ArraySource.

  With `data.in_memory` 'auto', the records are decoded into memory when every image has the
  shape of the first one and the decoded float32 images of both splits fit in a quarter of
  `data.ram_budget_mb`; 'yes' asks for it whatever the size; 'no' streams. Training then augments
  the decoded images per example (datasets.py) instead of decoding every epoch. A source that
  cannot be decoded (a corrupt record, images of several sizes) stays streamed, where errors name
  their file and `data.skip_corrupt` applies.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from input_pipeline import preprocess  # pylint: disable=g-import-not-at-top
  if data_config.in_memory == 'no' or data_config.skip_corrupt:
    return source
  channels = source.image_shape[-1]
  try:
    first = next(iter(tf.data.TFRecordDataset(source.train_files[:1]).take(1)))
    shape = tuple(preprocess.decode(source.parse_fn(first)[0], channels).shape)
    counts = [n if n >= 0 else sum(1 for _ in tf.data.TFRecordDataset(list(files)))
              for n, files in ((source.num_train_examples, source.train_files),
                               (source.num_eval_examples, source.eval_files))]
    decoded_bytes = 4 * int(np.prod(shape)) * sum(counts)
    if (data_config.in_memory == 'auto' and
        decoded_bytes > data_config.ram_budget_mb * 2**20 // 4):
      return source
    train = _decode_all(source.train_files, source.parse_fn, channels, shape)
    evaluation = train and _decode_all(source.eval_files, source.parse_fn, channels, shape)
  except (tf.errors.OpError, StopIteration):
    return source  # Streaming reports what is wrong, naming the file.
  if train is None or evaluation is None:
    return source
  logging.info('%s: %d + %d images of shape %s decoded into memory (%.1f MiB)', source.name,
               len(train[1]), len(evaluation[1]), shape, decoded_bytes / 2**20)
  return ArraySource(train[0], train[1], evaluation[0], evaluation[1], source.num_classes)


def create_source(data_config, seed):
  """Loads the source named by `data_config.source`: 'digits', 'tfds', 'tfrecord' or 'synthetic'.

  Returns:
    An `ArraySource` (in memory) or a `FileSource` (streamed).

  Raises:
    DataError: if the data is missing, with what to do about it.
  """
  if data_config.source == 'digits':
    return load_digits(data_config.eval_fraction)
  if data_config.source == 'synthetic':
    return make_synthetic(data_config.synthetic_examples, data_config.synthetic_image_size,
                          data_config.synthetic_num_classes, seed)
  if data_config.source == 'tfds':
    return load_tfds(data_config, seed)
  if data_config.source == 'tfrecord':
    return decode_into_memory(load_tfrecords(data_config), data_config)
  raise DataError(f"data.source={data_config.source!r}: must be one of 'digits', 'tfds', "
                  "'tfrecord', 'synthetic'")
