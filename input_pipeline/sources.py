"""In-memory image sources: scikit-learn's digits (ships with the package) and synthetic data."""

import dataclasses

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


def create_source(data_config, seed):
  """Loads the source named by `data_config.source` ('digits' or 'synthetic')."""
  if data_config.source == 'digits':
    return load_digits(data_config.eval_fraction)
  if data_config.source == 'synthetic':
    return make_synthetic(data_config.synthetic_examples, data_config.synthetic_image_size,
                          data_config.synthetic_num_classes, seed)
  raise ValueError(f"data.source={data_config.source!r}: must be 'digits' or 'synthetic'")
