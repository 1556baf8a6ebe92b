"""Tests for input_pipeline.sources: the digits split and the synthetic source."""

import trainer  # noqa: F401  # pylint: disable=unused-import  # Selects tf-keras first.
from input_pipeline import sources

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from configs import default


@pytest.fixture(scope='module')
def digits():
  return sources.load_digits(0.2)


def _rows(images):
  """Each image as a hashable byte string."""
  return [image.tobytes() for image in np.ascontiguousarray(images)]


def test_digits_images_are_8x8x1_float32_in_unit_range_with_int32_labels(digits):
  for images, labels in ((digits.train_images, digits.train_labels),
                         (digits.eval_images, digits.eval_labels)):
    assert images.dtype == np.float32 and images.shape[1:] == (8, 8, 1)
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.dtype == np.int32 and labels.shape == (len(images),)
    assert set(np.unique(labels)) == set(range(10))
  assert digits.image_shape == (8, 8, 1)
  assert digits.num_classes == 10


def test_digits_split_partitions_the_1797_digits_into_train_and_eval(digits):
  assert digits.num_train_examples == 1437 and digits.num_eval_examples == 360
  all_digits = sk_datasets.load_digits()
  originals = dict(zip(_rows((all_digits.images / 16.0).astype(np.float32)[..., np.newaxis]),
                       all_digits.target))
  assert len(originals) == 1797  # The digits have no duplicate images, so bytes identify them.

  train, eval_ = _rows(digits.train_images), _rows(digits.eval_images)

  assert len(set(train)) == len(train) and len(set(eval_)) == len(eval_)
  assert not set(train) & set(eval_)
  assert set(train) | set(eval_) == set(originals)
  # Labels stay attached to their images.
  assert [originals[row] for row in train] == digits.train_labels.tolist()
  assert [originals[row] for row in eval_] == digits.eval_labels.tolist()


def test_digits_split_is_stratified(digits):
  all_counts = np.bincount(sk_datasets.load_digits().target, minlength=10)
  eval_counts = np.bincount(digits.eval_labels, minlength=10)
  train_counts = np.bincount(digits.train_labels, minlength=10)

  np.testing.assert_array_equal(train_counts + eval_counts, all_counts)
  assert np.all(np.abs(eval_counts - 0.2 * all_counts) <= 1)


def test_digits_split_is_deterministic_and_independent_of_the_training_seed(digits):
  config = default.get_config().data
  config.source = 'digits'
  for seed in (0, 1, 12345):
    again = sources.create_source(config, seed)
    np.testing.assert_array_equal(again.train_images, digits.train_images)
    np.testing.assert_array_equal(again.train_labels, digits.train_labels)
    np.testing.assert_array_equal(again.eval_images, digits.eval_images)
    np.testing.assert_array_equal(again.eval_labels, digits.eval_labels)


def test_digits_eval_fraction_sets_the_eval_split_size():
  source = sources.load_digits(0.5)
  assert source.num_eval_examples in (898, 899)
  assert source.num_train_examples + source.num_eval_examples == 1797


def test_synthetic_source_has_the_requested_shapes_and_label_range():
  source = sources.make_synthetic(num_examples=50, image_size=12, num_classes=7, seed=0)

  assert source.image_shape == (12, 12, 3)
  assert source.num_classes == 7
  assert source.num_train_examples == source.num_eval_examples == 50
  for images, labels in ((source.train_images, source.train_labels),
                         (source.eval_images, source.eval_labels)):
    assert images.shape == (50, 12, 12, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() < 1.0
    assert labels.shape == (50,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < 7
  assert len(np.unique(source.train_labels)) > 1


def test_synthetic_source_is_seeded():
  first = sources.make_synthetic(20, 4, 5, seed=1)
  again = sources.make_synthetic(20, 4, 5, seed=1)
  other = sources.make_synthetic(20, 4, 5, seed=2)

  np.testing.assert_array_equal(first.train_images, again.train_images)
  np.testing.assert_array_equal(first.eval_labels, again.eval_labels)
  assert not np.array_equal(first.train_images, other.train_images)
  assert not np.array_equal(first.train_images, first.eval_images)


def test_create_source_builds_synthetic_data_from_the_config():
  config = default.get_config().data
  config.source = 'synthetic'
  config.synthetic_examples = 16
  config.synthetic_image_size = 6
  config.synthetic_num_classes = 3

  source = sources.create_source(config, seed=0)

  assert source.train_images.shape == (16, 6, 6, 3)
  assert source.num_classes == 3
  assert source.train_labels.max() < 3


def test_create_source_rejects_an_unknown_source():
  config = default.get_config().data
  config.source = 'imagenet'
  with pytest.raises(ValueError, match='imagenet'):
    sources.create_source(config, seed=0)
