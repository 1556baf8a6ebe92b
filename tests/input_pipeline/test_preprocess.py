"""Batch augmentation and evaluation preprocessing give what the per-image functions give."""

import trainer  # noqa: F401  # pylint: disable=unused-import  # Selects tf-keras first.
from input_pipeline import preprocess

import numpy as np
import pytest
import tensorflow as tf


def _images(count, size, channels=3):
  return tf.constant(np.random.RandomState(0).rand(count, size, size, channels), tf.float32)


def _seeds(count):
  return tf.constant([[7, 0, 100 + i] for i in range(count)], tf.int64)


@pytest.mark.parametrize('augment,size,out_size', [
    ('none', 8, 8), ('none', 8, 16), ('flip_crop', 16, 16), ('random_resized_crop', 20, 12)])
def test_augmenting_a_batch_equals_augmenting_each_image_with_its_seed(augment, size, out_size):
  images, seeds = _images(6, size), _seeds(6)
  shape = (out_size, out_size, 3)

  batch = preprocess.augment_decoded_batch(images, shape, augment, seeds)

  assert batch.shape == (6,) + shape
  for i in range(6):
    np.testing.assert_array_equal(
        batch[i], preprocess.augment_decoded(images[i], shape, augment, seeds[i]))


def test_random_augmentations_differ_between_images_of_a_batch():
  same = tf.repeat(_images(1, 16), 4, axis=0)  # One image four times, four seeds.

  batch = preprocess.augment_decoded_batch(same, (16, 16, 3), 'flip_crop', _seeds(4)).numpy()

  assert len({b.tobytes() for b in batch}) > 1


@pytest.mark.parametrize('augment,size,out_size', [
    ('none', 8, 8), ('none', 8, 16), ('random_resized_crop', 20, 12)])
def test_eval_preprocessing_of_a_batch_equals_that_of_each_image(augment, size, out_size):
  images = _images(5, size)
  shape = (out_size, out_size, 3)

  batch = preprocess.eval_decoded(images, shape, augment)

  assert batch.shape == (5,) + shape
  for i in range(5):
    np.testing.assert_array_equal(batch[i], preprocess.eval_decoded(images[i], shape, augment))
