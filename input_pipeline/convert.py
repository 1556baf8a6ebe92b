"""Converts an image source into TFRecord shards in Convoy's layout (`input_pipeline/records.py`).

    python -m input_pipeline.convert --source=digits --output_dir=/data/digits --split=train --num_shards=4
    python -m input_pipeline.convert --source=tfds:convoy_digits --data_dir=/data/tfds --output_dir=DIR --split=test
    python -m input_pipeline.convert --source=folder:/photos/train --output_dir=DIR --image_format=jpeg

Sources (`--source`):

* `digits`: scikit-learn's digits, split as `sources.load_digits(0.2)`: `--split=train` is its
  train half (1,437 images), `--split=test` its eval half (360); pixels 0..255 (`tfds_digits`).
* `tfds:NAME`: split `--split` of a TFDS dataset already prepared in `--data_dir` (nothing is
  downloaded); its image and label features come from the dataset's `supervised_keys`.
* `folder:PATH`: one sub-folder of PATH per class, class index = position of the sub-folder's name
  in sorted order; the .jpg/.jpeg/.png files of each (sorted by name) are its examples.

Output, in `--output_dir`: shards `shard_name(split, i, num_shards)` (e.g. `train-00000-of-00004`),
`labels.txt` (`index<TAB>class name` lines, when the class names are known) and `manifest.json`
(see `convert`). Examples are numbered (`image/id`) in the source's order (digits: split order;
TFDS: file order; folder: sorted class, then sorted file name) and distributed **round-robin**:
example `i` goes to shard `i % num_shards`, so shard sizes differ by at most one and every shard
mixes all classes even when the source is sorted by class. Reading the shards in order with
`interleave(cycle_length=num_shards, block_length=1)` gives back the source order.

Images keep their channels: grayscale stays 1 channel, colour is 3 channels (alpha, palettes and
CMYK are converted to RGB). Encoded images that are already in `--image_format` with 1 or 3 channels
(folder files, TFDS images) are copied byte for byte; the rest is (re-)encoded with Pillow. Shards
are written under temporary names and renamed when complete; `manifest.json` is written last.
"""

import trainer  # noqa: F401  # pylint: disable=unused-import  # Keras 2, quiet TF; before TF.

import collections
import dataclasses
import datetime
import io
import json
import os
import re
import sys
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image
import tensorflow as tf
import tqdm

from input_pipeline import records

IMAGE_FORMATS = ('jpeg', 'png')
FOLDER_EXTENSIONS = ('.jpg', '.jpeg', '.png')
MANIFEST_NAME = 'manifest.json'
LABELS_NAME = 'labels.txt'
DISTRIBUTION = 'round_robin'
_PIL_FORMATS = {'jpeg': 'JPEG', 'png': 'PNG'}
_SPLIT_NAME = re.compile(r'^[A-Za-z0-9_.]+$')
_CHANNELS = {'L': 1, 'RGB': 3}
# Pillow modes converted before encoding, and what they become.
_CONVERTED_MODES = {'1': 'L', 'LA': 'L', 'I;16': None, 'P': 'RGB', 'PA': 'RGB', 'RGBA': 'RGB',
                    'CMYK': 'RGB', 'YCbCr': 'RGB', 'RGBX': 'RGB', 'La': 'L', 'RGBa': 'RGB'}


class ConvertError(ValueError):
  """A bad option or source, with a message meant for the user."""


@dataclasses.dataclass(frozen=True)
class SourceExample:
  """One example of a source: either decoded pixels or encoded (JPEG/PNG) bytes, and its label.

  Attributes:
    label: integer class.
    example_id: index of the example in its split.
    image: (H, W, C) or (H, W) uint8 pixels, C in {1, 3}; None when `encoded` is given.
    encoded: JPEG or PNG bytes as found in the source; None when `image` is given.
    origin: where the example comes from (a file path, 'digits train #3'), for error messages.
  """
  label: int
  example_id: int
  image: Optional[np.ndarray] = None
  encoded: Optional[bytes] = None
  origin: str = ''


@dataclasses.dataclass
class ExampleStream:
  """An iterable of `SourceExample`s, with what is known about the source before reading it.

  Attributes:
    source: the source as given on the command line ('digits', 'tfds:mnist', 'folder:/x').
    make_iterator: returns a fresh iterator over the examples, in id order.
    num_examples: number of examples, if known (for the progress bar).
    class_names: names of the classes by index, if known.
  """
  source: str
  make_iterator: Callable[[], Iterator[SourceExample]]
  num_examples: Optional[int] = None
  class_names: Optional[Sequence[str]] = None

  def __iter__(self):
    return self.make_iterator()


# ------------------------------------------------------------------------------------------------
# Sources.


def iter_digits(split):
  """The digits of split 'train' or 'test' of `sources.load_digits(0.2)`, pixels 0..255.

  Args:
    split: 'train' (the source's train arrays) or 'test' (its eval arrays).

  Returns:
    An `ExampleStream` of (8, 8, 1) uint8 images.

  Raises:
    ConvertError: for another split.
  """
  from input_pipeline import tfds_digits  # pylint: disable=g-import-not-at-top
  if split not in tfds_digits.SPLITS:
    raise ConvertError(f"--split={split!r}: the digits source has splits 'train' and 'test'")
  images, labels = tfds_digits.split_arrays(split)

  def make_iterator():
    for index, (image, label) in enumerate(zip(images, labels)):
      yield SourceExample(int(label), index, image=image, origin=f'digits {split} #{index}')

  return ExampleStream('digits', make_iterator, len(labels), [str(i) for i in range(10)])


def _tfds_missing_message(name, data_dir, builder):
  """How to prepare TFDS dataset `name` in `data_dir`, for the error when it is missing."""
  where = data_dir or '(the TFDS default data_dir)'
  if name == 'convoy_digits':
    how = ('prepare it offline with: python -c "from input_pipeline import tfds_digits; '
           f"tfds_digits.prepare('{data_dir or '~/tensorflow_datasets'}')\"")
  else:
    how = (f'prepare it on a machine with network access (`tfds build {name} '
           f'--data_dir={data_dir or "DIR"}`) and copy {name}/ into the data_dir; '
           'this command never downloads')
  return (f'TFDS dataset {name!r} is not prepared in --data_dir={where} (looked in '
          f'{builder.data_dir}): {how}')


def _tfds_builder(name, data_dir):
  """The registered builder of `name` reading `data_dir`, or a ConvertError if unknown."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from input_pipeline import tfds_digits  # pylint: disable=g-import-not-at-top,unused-import
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip('.')
    raise ConvertError(f'--source=tfds:{name}: unknown TFDS dataset ({first_line}; '
                       '`tfds.list_builders()` lists the known names)') from e


def _tfds_keys(name, info):
  """(image key, label key) of a TFDS dataset: its supervised_keys, else 'image' and 'label'."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  keys = info.supervised_keys if info.supervised_keys else ('image', 'label')
  if len(keys) != 2 or not all(isinstance(k, str) for k in keys):
    raise ConvertError(f'--source=tfds:{name}: unsupported supervised_keys {keys!r}')
  image_key, label_key = keys
  features = dict(info.features.items()) if hasattr(info.features, 'items') else {}
  if not isinstance(features.get(image_key), tfds.features.Image):
    raise ConvertError(f'--source=tfds:{name}: feature {image_key!r} is not a tfds.features.Image')
  if not isinstance(features.get(label_key), tfds.features.ClassLabel):
    raise ConvertError(f'--source=tfds:{name}: feature {label_key!r} is not a ClassLabel')
  return image_key, label_key


def iter_tfds(name, split, data_dir=None):
  """Split `split` of TFDS dataset `name`, already prepared in `data_dir` (never downloads).

  Images are read as their stored bytes (no decoding), in file order; ids count from 0.

  Args:
    name: registered TFDS name, optionally with config/version ('mnist', 'convoy_digits:1.0.0').
    split: a split of the dataset ('train', 'test').
    data_dir: the TFDS data directory (None: TFDS' default).

  Returns:
    An `ExampleStream`.

  Raises:
    ConvertError: unknown dataset or split, or features that are not an image and a class label.
    FileNotFoundError: the dataset is not prepared in `data_dir` (the message says how to).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = _tfds_builder(name, data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(_tfds_missing_message(name, data_dir, builder))
  if split not in builder.info.splits:
    raise ConvertError(f'--split={split!r}: TFDS dataset {name!r} has splits '
                       f'{sorted(builder.info.splits)}')
  image_key, label_key = _tfds_keys(name, builder.info)
  label_feature = builder.info.features[label_key]

  def make_iterator():
    dataset = tfds.load(
        name, split=split, data_dir=data_dir, download=False, shuffle_files=False,
        decoders={image_key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(interleave_cycle_length=1))
    for index, example in enumerate(dataset.as_numpy_iterator()):
      yield SourceExample(int(example[label_key]), index, encoded=bytes(example[image_key]),
                          origin=f'tfds:{name} {split} #{index}')

  return ExampleStream(f'tfds:{name}', make_iterator, builder.info.splits[split].num_examples,
                       list(label_feature.names))


def _folder_classes(path):
  """Sorted class sub-folder names of `path`, checking that it exists and has some."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'folder source {path}: no such directory')
  if not os.path.isdir(path):
    raise ConvertError(f'folder source {path}: not a directory')
  classes = sorted(entry.name for entry in os.scandir(path)
                   if entry.is_dir() and not entry.name.startswith('.'))
  if not classes:
    raise ConvertError(f'folder source {path}: no class sub-folders (expected one sub-folder of '
                       'images per class)')
  return classes


def _folder_files(class_dir):
  """Sorted image file names (.jpg, .jpeg, .png, any case) of one class folder; error if none."""
  files = sorted(entry.name for entry in os.scandir(class_dir)
                 if entry.is_file() and not entry.name.startswith('.')
                 and entry.name.lower().endswith(FOLDER_EXTENSIONS))
  if not files:
    raise ConvertError(f'folder source: class folder {class_dir} holds no '
                       f'{"/".join(FOLDER_EXTENSIONS)} files')
  return files


def iter_folder(path):
  """The images of a folder with one sub-folder per class (class index = sorted position).

  The folder is listed (and checked) at once; files are read while iterating.

  Args:
    path: the folder.

  Returns:
    An `ExampleStream` of encoded images, ids in (sorted class, sorted file name) order.

  Raises:
    FileNotFoundError: `path` does not exist.
    ConvertError: `path` is not a folder, has no class sub-folders, or a class folder has no images.
  """
  path = os.path.abspath(path)
  classes = _folder_classes(path)
  files = [(label, os.path.join(path, name, file_name))
           for label, name in enumerate(classes)
           for file_name in _folder_files(os.path.join(path, name))]

  def make_iterator():
    for index, (label, file_path) in enumerate(files):
      with open(file_path, 'rb') as f:
        yield SourceExample(label, index, encoded=f.read(), origin=file_path)

  return ExampleStream(f'folder:{path}', make_iterator, len(files), classes)


def parse_source(source, split, data_dir=None):
  """The `ExampleStream` named by a --source value ('digits', 'tfds:NAME' or 'folder:PATH')."""
  if source == 'digits':
    return iter_digits(split)
  kind, _, argument = source.partition(':')
  if kind == 'tfds' and argument:
    return iter_tfds(argument, split, data_dir)
  if kind == 'folder' and argument:
    return iter_folder(argument)
  raise ConvertError(f"--source={source!r}: must be 'digits', 'tfds:NAME' or 'folder:PATH'")


# ------------------------------------------------------------------------------------------------
# Encoding.


def _pil_from_array(image, origin):
  """A Pillow image ('L' or 'RGB') from uint8 pixels (H, W), (H, W, 1) or (H, W, 3)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ConvertError(f'{origin}: image dtype {image.dtype}, expected uint8')
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    return Image.fromarray(image, 'L')
  if image.ndim == 3 and image.shape[-1] == 3:
    return Image.fromarray(image, 'RGB')
  raise ConvertError(f'{origin}: image shape {image.shape}, expected (H, W), (H, W, 1) or '
                     '(H, W, 3)')


def _to_l_or_rgb(image, origin):
  """`image` converted to Pillow mode 'L' (grayscale) or 'RGB' (everything else)."""
  if image.mode in _CHANNELS:
    return image
  target = _CONVERTED_MODES.get(image.mode)
  if target is None:
    raise ConvertError(f'{origin}: unsupported image mode {image.mode!r} (8-bit grayscale, RGB, '
                       'RGBA, palette and CMYK images are supported)')
  return image.convert(target)


def _pil_encode(image, image_format, jpeg_quality):
  """Encodes an 'L' or 'RGB' Pillow image as JPEG or PNG bytes."""
  buffer = io.BytesIO()
  if image_format == 'jpeg':
    image.save(buffer, 'JPEG', quality=jpeg_quality)
  else:
    image.save(buffer, 'PNG')
  return buffer.getvalue()


def encode_example(example, image_format, jpeg_quality=95):
  """The bytes and shape to store for one example.

  Args:
    example: a `SourceExample`.
    image_format: 'jpeg' or 'png'.
    jpeg_quality: JPEG quality (1..100) when (re-)encoding JPEG.

  Returns:
    `(encoded, (height, width, channels), copied)`: `copied` is True when the source's bytes are
    stored unchanged.

  Raises:
    ConvertError: undecodable bytes, or pixels of an unsupported dtype, shape or mode.
  """
  if example.encoded is None:
    image = _pil_from_array(example.image, example.origin)
    encoded, copied = _pil_encode(image, image_format, jpeg_quality), False
  else:
    try:
      image = Image.open(io.BytesIO(example.encoded))
    except Exception as e:  # Pillow raises several kinds (UnidentifiedImageError, OSError, ...).
      raise ConvertError(f'{example.origin}: not a readable image ({e})') from e
    if image.format == _PIL_FORMATS[image_format] and image.mode in _CHANNELS:
      encoded, copied = example.encoded, True
    else:
      image = _to_l_or_rgb(image, example.origin)
      encoded, copied = _pil_encode(image, image_format, jpeg_quality), False
  return encoded, (image.height, image.width, _CHANNELS[image.mode]), copied


# ------------------------------------------------------------------------------------------------
# Writing shards.


def _validate(output_dir, split, num_shards, image_format, jpeg_quality):
  """Raises ConvertError for a bad option, naming it."""
  if not output_dir:
    raise ConvertError('--output_dir is required (where the shards and manifest.json go)')
  if not isinstance(split, str) or not _SPLIT_NAME.match(split):
    raise ConvertError(f'--split={split!r}: must be a plain name (letters, digits, _ or .), used '
                       'in the shard file names')
  if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
    raise ConvertError(f'--num_shards={num_shards!r}: must be an integer >= 1')
  if image_format not in IMAGE_FORMATS:
    raise ConvertError(
        f'--image_format={image_format!r}: must be one of {", ".join(IMAGE_FORMATS)}')
  if not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
    raise ConvertError(f'--jpeg_quality={jpeg_quality!r}: must be an integer in 1..100')


def existing_shards(output_dir, split):
  """Sorted paths of the files in `output_dir` named like shards of `split` (any shard count)."""
  digits = '[0-9]' * 5
  pattern = os.path.join(output_dir, f'{split}-{digits}-of-{digits}')
  return sorted(tf.io.gfile.glob(pattern))


def _check_no_old_shards(output_dir, split, overwrite):
  """Refuses to mix new shards with a previous conversion's, unless `overwrite`."""
  old = existing_shards(output_dir, split)
  if old and not overwrite:
    raise ConvertError(f'{output_dir} already holds {len(old)} shard(s) of split {split!r} (e.g. '
                       f'{os.path.basename(old[0])}); pass --overwrite to replace them')
  return old


def convoy_version():
  """Convoy's version: the installed distribution's, else `trainer.__version__`, else 'unknown'."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version('convoy')
  except metadata.PackageNotFoundError:
    pass
  import trainer  # pylint: disable=g-import-not-at-top
  return getattr(trainer, '__version__', 'unknown')


def _write_shards(examples, output_dir, split, num_shards, image_format, jpeg_quality, progress,
                  total, num_classes):
  """Encodes and writes `examples` round-robin into temporary shard files; returns the tallies.

  Labels must lie in [0, num_classes) when `num_classes` is known (not None).
  """
  names = [records.shard_name(split, i, num_shards) for i in range(num_shards)]
  temp_paths = [os.path.join(output_dir, f'.{name}.tmp-{os.getpid()}') for name in names]
  shard_counts = [0] * num_shards
  class_counts = collections.Counter()
  shapes = set()
  copied = 0
  writers = [tf.io.TFRecordWriter(path) for path in temp_paths]
  try:
    bar = tqdm.tqdm(examples, total=total, desc=f'convert {split}', unit=' images',
                    file=sys.stderr, disable=not progress)
    for position, example in enumerate(bar):
      if example.label < 0 or (num_classes is not None and example.label >= num_classes):
        raise ConvertError(f'{example.origin}: label {example.label} outside [0, '
                           f'{num_classes if num_classes is not None else "inf"})')
      encoded, shape, was_copied = encode_example(example, image_format, jpeg_quality)
      shard = position % num_shards
      writers[shard].write(records.make_example(
          encoded, image_format.upper().encode(), example.label, shape[0], shape[1],
          example.example_id))
      shard_counts[shard] += 1
      class_counts[int(example.label)] += 1
      shapes.add(shape)
      copied += was_copied
  except BaseException:
    for writer, path in zip(writers, temp_paths):
      writer.close()
      tf.io.gfile.remove(path)
    raise
  for writer in writers:
    writer.close()
  return names, temp_paths, shard_counts, class_counts, shapes, copied


def _merged_splits(output_dir, split, summary):
  """The `splits` entry of the manifest: earlier manifests' other splits, plus this one."""
  path = os.path.join(output_dir, MANIFEST_NAME)
  splits = {}
  if tf.io.gfile.exists(path):
    try:
      with tf.io.gfile.GFile(path) as f:
        previous = json.load(f)
      splits = dict(previous.get('splits') or {previous['split']: previous})
    except (ValueError, KeyError, TypeError):
      splits = {}  # An unreadable old manifest only loses its other splits' summaries.
  splits = {name: {k: v for k, v in value.items() if k != 'splits'}
            for name, value in splits.items() if name != split}
  splits[split] = summary
  return dict(sorted(splits.items()))


def _write_text(path, text):
  """Writes `text` to `path` (any tf.io.gfile file system) through a temporary file."""
  temp = f'{path}.tmp-{os.getpid()}'
  with tf.io.gfile.GFile(temp, 'w') as f:
    f.write(text)
  tf.io.gfile.rename(temp, path, overwrite=True)


def write_labels(output_dir, class_names):
  """Writes `labels.txt`: one `index<TAB>name` line per class."""
  _write_text(os.path.join(output_dir, LABELS_NAME),
              ''.join(f'{index}\t{name}\n' for index, name in enumerate(class_names)))


def convert(examples: Iterable[SourceExample], output_dir, split, num_shards, image_format='png',
            jpeg_quality=95, source=None, class_names=None, overwrite=False, progress=True):
  """Writes `examples` as `num_shards` TFRecord shards of `split` in `output_dir`, and a manifest.

  Example `i` (in iteration order) goes to shard `i % num_shards`. Shards are written under
  temporary names and renamed once all are complete; previous shards of `split` (any shard count)
  are replaced only with `overwrite`. `manifest.json` is written last; its top-level fields
  describe this conversion, and `splits` maps every split converted into `output_dir` to its own.

  Args:
    examples: iterable of `SourceExample`s (an `ExampleStream` also supplies source name, size and
      class names).
    output_dir: destination folder (created if needed; any tf.io.gfile path).
    split: split name used in the shard names ('train', 'test', ...).
    num_shards: number of shards, >= 1.
    image_format: 'jpeg' or 'png'.
    jpeg_quality: quality (1..100) of images encoded as JPEG here.
    source: description of the source for the manifest (default: the stream's, else 'custom').
    class_names: class names by index (default: the stream's); written to labels.txt when known.
    overwrite: replace existing shards of `split` in `output_dir`.
    progress: show a tqdm progress bar on stderr.

  Returns:
    The manifest (a dict, as written to `output_dir/manifest.json`) with: source, split,
    num_shards, distribution, image_format, jpeg_quality, total (examples written; also as
    num_examples), shards (file names, in order), shard_counts (examples of each shard),
    class_counts (by label, as strings), num_classes, class_names,
    image_shapes ([height, width, channels] seen), copied_examples (stored byte for byte),
    created (UTC, ISO 8601), convoy_version and splits.

  Raises:
    ConvertError: a bad option, bad example, or existing shards without `overwrite`.
  """
  _validate(output_dir, split, num_shards, image_format, jpeg_quality)
  source = source or getattr(examples, 'source', None) or 'custom'
  class_names = class_names if class_names is not None else getattr(examples, 'class_names', None)
  tf.io.gfile.makedirs(output_dir)
  old_shards = _check_no_old_shards(output_dir, split, overwrite)
  names, temp_paths, shard_counts, class_counts, shapes, copied = _write_shards(
      examples, output_dir, split, num_shards, image_format, jpeg_quality, progress,
      getattr(examples, 'num_examples', None),
      len(class_names) if class_names is not None else None)
  total = sum(shard_counts)
  if total == 0:
    for path in temp_paths:
      tf.io.gfile.remove(path)
    raise ConvertError(f'source {source}: no examples to convert')
  final_paths = [os.path.join(output_dir, name) for name in names]
  for path in old_shards:
    if path not in final_paths:
      tf.io.gfile.remove(path)
  for temp, final in zip(temp_paths, final_paths):
    tf.io.gfile.rename(temp, final, overwrite=True)
  if class_names is not None:
    write_labels(output_dir, class_names)
  if total < num_shards:
    print(f'convert: warning: {num_shards - total} of the {num_shards} shards are empty '
          f'({total} examples)', file=sys.stderr)
  num_classes = len(class_names) if class_names is not None else max(class_counts) + 1
  summary = {
      'source': source,
      'split': split,
      'num_shards': num_shards,
      'distribution': DISTRIBUTION,
      'image_format': image_format,
      'jpeg_quality': jpeg_quality if image_format == 'jpeg' else None,
      'total': total,
      'num_examples': total,  # Same as total, for readers that use this name.
      'shards': names,
      'shard_counts': shard_counts,
      'class_counts': {str(label): class_counts[label] for label in sorted(class_counts)},
      'num_classes': num_classes,
      'class_names': list(class_names) if class_names is not None else None,
      'image_shapes': [list(shape) for shape in sorted(shapes)],
      'copied_examples': copied,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'convoy_version': convoy_version(),
  }
  manifest = dict(summary, splits=_merged_splits(output_dir, split, summary))
  _write_text(os.path.join(output_dir, MANIFEST_NAME), json.dumps(manifest, indent=2) + '\n')
  return manifest


# ------------------------------------------------------------------------------------------------
# Synthetic JPEG shards (for input-pipeline benchmarks).


def _smooth_noise(rng, image_size, cells, channels=3):
  """A natural-looking uint8 image: a random `cells`^2 pattern upsampled bicubically, plus grain."""
  coarse = (rng.random((cells, cells, channels)) * 255.0).astype(np.uint8)
  smooth = Image.fromarray(coarse, 'RGB').resize((image_size, image_size), Image.BICUBIC)
  grain = rng.normal(0.0, 6.0, (image_size, image_size, channels))
  return np.clip(np.asarray(smooth, np.float32) + grain, 0, 255).astype(np.uint8)


def iter_synthetic(num_examples, image_size, num_classes, seed):
  """`num_examples` smooth random RGB images of `image_size`^2 with uniform random labels.

  Each image is a seeded random low-resolution pattern (a random cell count from 2 to 16)
  upsampled smoothly and overlaid with fine noise: varied, not constant, and compressing like
  photographs rather than like white noise.

  Args:
    num_examples: number of images.
    image_size: height and width.
    num_classes: labels are drawn uniformly from [0, num_classes).
    seed: NumPy seed (same seed, same images).

  Returns:
    An `ExampleStream`.
  """
  def make_iterator():
    rng = np.random.default_rng(seed)
    for index in range(num_examples):
      label = int(rng.integers(0, num_classes))
      image = _smooth_noise(rng, image_size, int(rng.integers(2, 17)))
      yield SourceExample(label, index, image=image, origin=f'synthetic #{index}')

  return ExampleStream(f'synthetic:{image_size}x{image_size}', make_iterator, num_examples,
                       [str(i) for i in range(num_classes)])


def write_synthetic_jpeg_shards(output_dir, num_examples, image_size, num_classes, num_shards,
                                seed, split='train', jpeg_quality=90, overwrite=False,
                                progress=False):
  """Writes `num_examples` synthetic RGB JPEG images as shards of `split` (see `iter_synthetic`).

  Args:
    output_dir: destination folder.
    num_examples: number of images.
    image_size: height and width (e.g. 224).
    num_classes: number of classes.
    num_shards: number of shards.
    seed: NumPy seed.
    split: split name of the shards.
    jpeg_quality: JPEG quality.
    overwrite: replace existing shards of `split`.
    progress: show a progress bar on stderr.

  Returns:
    The manifest dict (see `convert`).
  """
  if num_examples < 1 or image_size < 1 or num_classes < 1:
    raise ConvertError('num_examples, image_size and num_classes must be >= 1')
  return convert(iter_synthetic(num_examples, image_size, num_classes, seed), output_dir, split,
                 num_shards, 'jpeg', jpeg_quality=jpeg_quality, overwrite=overwrite,
                 progress=progress)


# ------------------------------------------------------------------------------------------------
# Command line.

USAGE_ERROR = 2  # Exit code for a bad option or source (nothing written).


def _define_flags():
  """Defines the command's flags (only when run as a command)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  return {
      'source': flags.DEFINE_string('source', None, "'digits', 'tfds:NAME' or 'folder:PATH'."),
      'output_dir': flags.DEFINE_string('output_dir', None, 'Folder for the shards and manifest.'),
      'split': flags.DEFINE_string('split', 'train', 'Split to convert (digits: train or test); '
                                   'also names the shards.'),
      'num_shards': flags.DEFINE_integer('num_shards', 1, 'Number of shards (>= 1).'),
      'image_format': flags.DEFINE_string('image_format', 'png', 'jpeg or png.'),
      'data_dir': flags.DEFINE_string('data_dir', None, 'TFDS data_dir for tfds:NAME sources.'),
      'jpeg_quality': flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality (1..100).'),
      'overwrite': flags.DEFINE_bool('overwrite', False, 'Replace existing shards of the split.'),
      'progress': flags.DEFINE_bool('progress', True, 'Show a progress bar on stderr.'),
  }


def _fail(message):
  print(f'convert: error: {message}', file=sys.stderr, flush=True)
  sys.exit(USAGE_ERROR)


def main(argv, options):
  """Runs one conversion from the parsed flags; exits with code 2 on a usage or source error."""
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  values = {name: flag.value for name, flag in options.items()}
  if not values['source']:
    _fail("--source is required: 'digits', 'tfds:NAME' or 'folder:PATH'")
  try:
    _validate(values['output_dir'], values['split'], values['num_shards'], values['image_format'],
              values['jpeg_quality'])
    stream = parse_source(values['source'], values['split'], values['data_dir'])
    manifest = convert(stream, values['output_dir'], values['split'], values['num_shards'],
                       values['image_format'], jpeg_quality=values['jpeg_quality'],
                       source=values['source'], overwrite=values['overwrite'],
                       progress=values['progress'])
  except (ConvertError, FileNotFoundError) as e:
    _fail(e)
  print(f"convert: wrote {manifest['total']} examples of {manifest['split']!r} in "
        f"{manifest['num_shards']} shard(s) to {values['output_dir']} "
        f"(image shapes {manifest['image_shapes']}, {manifest['copied_examples']} copied as-is)")


def run():
  """Command-line entry point."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  options = _define_flags()

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      _fail(f'{e} (see --helpfull)')

  app.run(lambda argv: main(argv, options), flags_parser=parse)


if __name__ == '__main__':
  run()
