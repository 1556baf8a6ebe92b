"""`convoy_digits`: scikit-learn's 8x8 digits as a TFDS dataset, prepared offline.

Importing this module registers the builder, after which the usual TFDS calls work::

    from input_pipeline import tfds_digits
    tfds_digits.prepare('/data/tfds')  # Once; a no-op when already prepared.
    ds = tfds.load('convoy_digits', split='train', data_dir='/data/tfds', download=False)

The splits are exactly the train/eval partition of `sources.load_digits(0.2)` (same images, same
order: `train` has 1,437 examples, `test` 360), so results on either source are comparable. Pixels
are scaled from 0..16 to 0..255 as `round(v * 255 / 16)`, which equals
`round(255 * sources_image)` exactly (v / 16 and 255 * v / 16 are exact in float32). The only
half-way value, v = 8, gives 127.5 -> 128 (half to even, as `np.round`, and half up agree).

Nothing is downloaded: the images ship inside scikit-learn, and TFDS' GCS mirror is disabled for the
preparation. Shuffling is disabled, so examples are stored (and read with `shuffle_files=False`) in
split order and the `id` feature equals the example's index in its split.
"""

import trainer  # noqa: F401  # pylint: disable=unused-import  # Keras 2, quiet TF; before TF.

import contextlib
import fcntl
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import sources

NAME = 'convoy_digits'
# Same held-out fraction as the default experiment (configs/default.py data.eval_fraction).
EVAL_FRACTION = 0.2
# TFDS split name -> which half of `sources.load_digits(EVAL_FRACTION)` it holds.
SPLITS = {'train': 'train', 'test': 'eval'}
_LOCK_NAME = f'.{NAME}.lock'

_DESCRIPTION = """\
The 1,797 8x8 grayscale handwritten digits that ship with scikit-learn
(`sklearn.datasets.load_digits`): the test set of the UCI "Optical Recognition of Handwritten
Digits" (optdigits) dataset, 32x32 bitmaps of 43 writers reduced to 8x8 blocks of counts 0..16.
Pixels are scaled to 0..255 as round(v * 255 / 16).

Splits are Convoy's stratified 80/20 split of `input_pipeline.sources.load_digits(0.2)` (fixed
seed), in the same order: train 1,437, test 360. `id` is the index of the example in its split.

Homepage: https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits
"""

_HOMEPAGE = 'https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits'

_CITATION = """\
@misc{alpaydin1998optdigits,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {{Optical Recognition of Handwritten Digits}},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  note = {DOI: https://doi.org/10.24432/C50P49}
}
"""


def to_uint8(images):
  """Scales float images in [0, 1] (digits / 16) to uint8 0..255, rounding half to even."""
  return np.round(np.asarray(images, np.float32) * 255.0).astype(np.uint8)


def split_arrays(split):
  """Images (N, 8, 8, 1) uint8 and int64 labels of one split, in split order.

  Args:
    split: 'train' or 'test'.

  Returns:
    `(images, labels)` NumPy arrays.

  Raises:
    ValueError: for another split name.
  """
  if split not in SPLITS:
    raise ValueError(f'digits split {split!r}: must be one of {sorted(SPLITS)}')
  source = sources.load_digits(EVAL_FRACTION)
  images = source.train_images if SPLITS[split] == 'train' else source.eval_images
  labels = source.train_labels if SPLITS[split] == 'train' else source.eval_labels
  return to_uint8(images), labels.astype(np.int64)


class ConvoyDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's digits with Convoy's fixed train/test split (registered as `convoy_digits`)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release: the train/eval split of sources.load_digits(0.2), pixels 0..255.',
  }

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    """This file. TFDS 4.9.10's own lookup imports `importlib_resources`, which it does not
    declare as a dependency on Python >= 3.9 (tensorflow/datasets#11212): preparing would fail."""
    return epath.Path(os.path.abspath(__file__))

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=10),
            'id': tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=('image', 'label'),
        homepage=_HOMEPAGE,
        citation=_CITATION,
        # Keep the examples in split order (keys are the indices), like sources.load_digits.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the digits ship inside scikit-learn.
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    images, labels = split_arrays(split)
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {'image': image, 'label': int(label), 'id': index}


@contextlib.contextmanager
def _file_lock(path):
  """Holds an exclusive `fcntl.flock` on `path` (created if needed) for the `with` block."""
  with open(path, 'a', encoding='utf-8') as lock_file:
    fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def prepare(data_dir):
  """Prepares `convoy_digits` in `data_dir` once; safe to call from many processes at once.

  The first caller builds the dataset under an exclusive file lock (`data_dir/.convoy_digits.lock`);
  the others wait for the lock, then find the dataset prepared and return at once.

  Args:
    data_dir: TFDS data directory (created if missing); None: TFDS' default ($TFDS_DATA_DIR, else
      ~/tensorflow_datasets).

  Returns:
    A `tfds.core.DatasetBuilder` for the prepared dataset, ready for `as_dataset`.
  """
  data_dir = (os.path.expanduser(os.fspath(data_dir)) if data_dir
              else tfds.core.constants.get_default_data_dir())
  os.makedirs(data_dir, exist_ok=True)
  builder = tfds.builder(NAME, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  with _file_lock(os.path.join(data_dir, _LOCK_NAME)):
    # Build a new builder under the lock: one made before another process finished preparing would
    # hold the code's DatasetInfo, without the split sizes read from disk.
    builder = tfds.builder(NAME, data_dir=data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          try_download_gcs=False, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  return tfds.builder(NAME, data_dir=data_dir)
