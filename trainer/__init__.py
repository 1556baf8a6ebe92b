"""Convoy's trainer: the shared CNN, the two training loops and the engines they run on.

Importing this package selects Keras 2 (tf-keras) for TensorFlow: Keras 3 cannot serve the
multi-worker and Horovod paths with TensorFlow 2.18 (see README, "Stack"). The variable must be set
before TensorFlow is first imported, so this package sets it and refuses to run if it is too late.
"""

import os
import sys

__version__ = '0.1.0'

os.environ['TF_USE_LEGACY_KERAS'] = '1'
# Keep TensorFlow's C++ start-up chatter (CUDA probing on CPU-only machines) out of users' logs.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

if 'tensorflow' in sys.modules:
  import tensorflow as _tf  # pylint: disable=g-import-not-at-top
  if not _tf.keras.__name__.startswith('tf_keras'):
    raise ImportError(
        'TensorFlow was imported before the trainer package, with Keras 3 as tf.keras. Import '
        '`trainer` first, or set TF_USE_LEGACY_KERAS=1 in the environment.')
