"""Every preset loads and validates; each bad value fails naming the field and what is allowed."""

import glob
import importlib
import os

import pytest

from configs import default
from configs import validation

CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', '..', 'configs')
PRESETS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIG_DIR, '*.py'))
                 if not os.path.basename(p).startswith(('_', 'validation')))


@pytest.mark.parametrize('name', PRESETS)
def test_every_preset_validates(name):
  validation.validate(importlib.import_module(f'configs.{name}').get_config())


BAD_VALUES = [
    # (field, bad value, text the error must contain)
    ('loop', 'keras', "'fit', 'custom'"),
    ('engine.name', 'tpu', "'default', 'mirrored'"),
    ('engine.num_replicas', 0, 'positive integer'),
    ('engine.device', 'npu', "'auto', 'cpu', 'gpu'"),
    ('model.name', 'vgg', "'small_cnn', 'resnet_cifar', 'resnet50'"),
    ('model.batch_norm', 'group', "'none', 'local', 'sync'"),
    ('model.se_ratio', 1.5, '[0.0, 1.0]'),
    ('data.source', 'imagenet', "'digits', 'tfds', 'tfrecord', 'synthetic'"),
    ('data.eval_fraction', 1.0, '(0.0, 1.0)'),
    ('data.private_threadpool_size', -1, 'non-negative integer'),
    ('data.max_intra_op_parallelism', -1, 'non-negative integer'),
    ('data.max_intra_op_parallelism', 1.5, 'non-negative integer'),
    ('train.global_batch_size', -64, 'positive integer'),
    ('train.global_batch_size', 63, 'divisible by engine.num_replicas=2'),
    ('train.num_train_steps', 0, 'positive integer'),
    ('train.num_train_steps', 610, 'multiple of train.steps_per_loop=50'),
    ('train.log_every_steps', 75, 'multiple of train.steps_per_loop=50'),
    ('train.checkpoint_every_steps', 30, 'multiple of train.steps_per_loop=50'),
    ('train.optimizer', 'lamb', "'sgd', 'adam'"),
    ('train.lr_schedule', 'linear', "'constant', 'cosine', 'step'"),
    ('train.lr_boundaries', (0.8, 0.2), 'increasing tuple'),
    ('train.base_learning_rate', 0.0, '(0.0, 1000.0]'),
    ('train.warmup_steps', -1, 'non-negative integer'),
    ('seed', -3, 'non-negative integer'),
    ('train.accumulation_steps', 0, 'positive integer'),
    ('train.accumulation_steps', -2, 'positive integer'),
    ('train.accumulation_steps', 2.5, 'positive integer'),
    ('train.accumulation_steps', '4', 'positive integer'),
    ('train.precision', 'float16', "'float32', 'mixed_bfloat16', 'mixed_float16'"),
    ('train.initial_loss_scale', 0.5, '[1.0, '),
    ('train.jit_compile', 'yes', 'True or False'),
    ('train.nonfinite', 'ignore', "'stop', 'skip'"),
    ('train.lr_scaling', 'sqrt', "'linear', 'none'"),
    ('train.profile_steps', (5, 2), '0 <= start <= stop'),
    ('engine.cpu_budget', 'half', "'auto', 'off'"),
    ('engine.malloc', 'keep', "'retain', 'system'"),
    ('engine.horovod_threads', 'lowest', "'auto', 'normal', 'low', 'idle'"),
    ('engine.intra_op_threads', 0, 'positive integer (or -1)'),
    ('model.data_format', 'nchw', "'channels_last', 'channels_first'"),
]


@pytest.mark.parametrize('field,value,allowed', BAD_VALUES, ids=[f'{f}={v!r}' for f, v, _ in BAD_VALUES])
def test_bad_value_fails_naming_field_and_allowed_values(field, value, allowed):
  config = default.get_config()
  *parents, leaf = field.split('.')
  node = config
  for part in parents:
    node = node[part]
  with node.ignore_type():
    node[leaf] = value
  with pytest.raises(validation.ConfigError) as error:
    validation.validate(config)
  assert f'{field}={value!r}' in str(error.value)
  assert allowed in str(error.value)


def test_all_problems_are_reported_at_once():
  config = default.get_config()
  config.loop = 'keras'
  config.train.global_batch_size = -1
  with pytest.raises(validation.ConfigError) as error:
    validation.validate(config)
  assert 'loop=' in str(error.value) and 'train.global_batch_size=' in str(error.value)


def test_default_engine_needs_one_replica():
  config = default.get_config()
  config.engine.name = 'default'
  with pytest.raises(validation.ConfigError, match="engine.num_replicas=2: must be 1 with"):
    validation.validate(config)


def test_steps_and_epochs_are_exclusive():
  config = default.get_config()
  config.train.num_epochs = 3
  with pytest.raises(validation.ConfigError, match='set exactly one of train.num_train_steps'):
    validation.validate(config)
  config.train.num_train_steps = -1
  validation.validate(config)


def test_xla_with_op_determinism_is_refused_for_max_pool_models():
  config = default.get_config()
  config.train.jit_compile = True
  config.deterministic = True
  with pytest.raises(validation.ConfigError, match='no deterministic max-pool gradient'):
    validation.validate(config)
  config.model.name = 'resnet_cifar'
  validation.validate(config)


def test_channels_first_is_refused_without_gpus():
  config = default.get_config()
  config.model.data_format = 'channels_first'
  validation.validate(config)  # Fine on paper (e.g. a job rendered for a GPU cluster) ...
  validation.validate_topology(config, 2, devices=['/gpu:0', '/gpu:1'])
  with pytest.raises(validation.ConfigError, match="only support 'channels_last'"):
    validation.validate_topology(config, 2, devices=['/cpu:0', '/cpu:1'])  # ... not on CPUs.
