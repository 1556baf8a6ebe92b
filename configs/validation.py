"""Checks an experiment config before anything expensive starts, reporting every problem at once."""

import math

LOOPS = ('fit', 'custom')
ENGINES = ('default', 'mirrored', 'multi_worker', 'horovod')
COLLECTIVES = ('auto', 'ring', 'nccl')
DEVICES = ('auto', 'cpu', 'gpu')
ALL_REDUCE = ('nccl', 'hierarchical_copy', 'reduction_to_one')
MODELS = ('small_cnn', 'resnet_cifar', 'resnet50')
MAX_POOL_MODELS = ('small_cnn', 'resnet50')
BATCH_NORM = ('none', 'local', 'sync')
SOURCES = ('digits', 'tfds', 'tfrecord', 'synthetic')
AUGMENTATIONS = ('none', 'flip_crop', 'random_resized_crop')
IN_MEMORY = ('auto', 'yes', 'no')
OPTIMIZERS = ('sgd', 'adam')
LR_SCHEDULES = ('constant', 'cosine', 'step')
CPU_BUDGETS = ('auto', 'off')
MALLOC_SETTINGS = ('retain', 'system')
HOROVOD_THREADS = ('auto', 'normal', 'low', 'idle')
DATA_FORMATS = ('channels_last', 'channels_first')
PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')
NONFINITE = ('stop', 'skip')
LR_SCALING = ('linear', 'none')


class ConfigError(ValueError):
  """An experiment config with one or more invalid fields; the message lists each of them."""


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Checker:
  """Collects problems as 'field: message' lines."""

  def __init__(self, config):
    self.config = config
    self.problems = []

  def get(self, field):
    node = self.config
    for part in field.split('.'):
      node = node[part]
    return node

  def fail(self, field, message):
    self.problems.append(f'{field}={self.get(field)!r}: {message}')

  def choice(self, field, allowed):
    if self.get(field) not in allowed:
      self.fail(field, f'must be one of {", ".join(map(repr, allowed))}')

  def positive_int(self, field, allow=()):
    value = self.get(field)
    if value in allow and _is_int(value):
      return
    if not _is_int(value) or value <= 0:
      extra = f' (or {", ".join(map(str, allow))})' if allow else ''
      self.fail(field, f'must be a positive integer{extra}')

  def number_in(self, field, low, high, low_open=False, high_open=False):
    value = self.get(field)
    ok = _is_number(value)
    if ok:
      ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
      left, right = '(' if low_open else '[', ')' if high_open else ']'
      self.fail(field, f'must be a number in {left}{low}, {high}{right}')

  def multiple_of(self, field, base_field):
    value, base = self.get(field), self.get(base_field)
    if _is_int(value) and _is_int(base) and base > 0 and value % base:
      self.fail(field, f'must be a multiple of {base_field}={base}')


def validate_topology(config, num_replicas, devices=None):
  """Checks what depends on the engine (known once it exists): replica count and devices.

  `devices` are the engine's device names; None (not known yet, e.g. when rendering a job for
  another machine) skips the device checks.

  Raises:
    ConfigError: if the global batch does not split evenly over `num_replicas`, or the model asks
      for a layout the devices cannot run.
  """
  problems = []
  if config.train.global_batch_size % num_replicas:
    problems.append(
        f'train.global_batch_size={config.train.global_batch_size}: must be divisible by the '
        f'{num_replicas} replicas of this run (workers x replicas per worker)')
  if (devices is not None and config.model.data_format == 'channels_first' and
      not any('GPU' in str(device).upper() for device in devices)):
    problems.append("model.data_format='channels_first': TensorFlow's CPU kernels only support "
                    "'channels_last' (NHWC); use it, or run on GPUs")
  if problems:
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(problems))


def validate(config):
  """Checks every field of `config` and raises one ConfigError listing all problems.

  Args:
    config: the experiment ConfigDict (see configs/default.py).

  Raises:
    ConfigError: naming each bad field, its value and what is allowed.
  """
  c = _Checker(config)
  c.choice('loop', LOOPS)
  if not _is_int(config.seed) or config.seed < 0:
    c.fail('seed', 'must be a non-negative integer')
  if not isinstance(config.deterministic, bool):
    c.fail('deterministic', 'must be True or False')

  c.choice('engine.name', ENGINES)
  c.positive_int('engine.num_replicas')
  c.choice('engine.device', DEVICES)
  c.choice('engine.all_reduce', ALL_REDUCE)
  c.choice('engine.collective', COLLECTIVES)
  if not _is_int(config.engine.collective_timeout_seconds) or config.engine.collective_timeout_seconds < 0:
    c.fail('engine.collective_timeout_seconds', 'must be a non-negative integer (0: no timeout)')
  c.positive_int('engine.peer_timeout_seconds')
  c.choice('engine.cpu_budget', CPU_BUDGETS)
  c.choice('engine.malloc', MALLOC_SETTINGS)
  c.choice('engine.horovod_threads', HOROVOD_THREADS)
  c.positive_int('engine.intra_op_threads', allow=(-1,))
  c.positive_int('engine.inter_op_threads', allow=(-1,))
  if (config.engine.name in ('default', 'horovod', 'multi_worker') and
      config.engine.num_replicas != 1):
    c.fail('engine.num_replicas', f'must be 1 with engine.name={config.engine.name!r}: its replicas '
           "come from the processes started (and their GPUs); 'mirrored' sets replicas per process")

  c.choice('model.name', MODELS)
  c.positive_int('model.width')
  c.number_in('model.se_ratio', 0.0, 1.0)
  c.choice('model.batch_norm', BATCH_NORM)
  c.number_in('model.weight_decay', 0.0, 1.0)
  c.choice('model.data_format', DATA_FORMATS)

  c.choice('data.source', SOURCES)
  c.positive_int('data.image_size', allow=(-1,))
  c.number_in('data.eval_fraction', 0.0, 1.0, low_open=True, high_open=True)
  c.positive_int('data.synthetic_examples')
  c.positive_int('data.synthetic_image_size')
  c.positive_int('data.synthetic_num_classes')
  c.positive_int('data.prefetch', allow=(-1,))
  c.choice('data.in_memory', IN_MEMORY)
  c.positive_int('data.num_classes', allow=(-1,))
  c.choice('data.channels', (1, 3))
  c.positive_int('data.shuffle_buffer')
  c.positive_int('data.interleave_cycle_length')
  c.choice('data.train_augment', AUGMENTATIONS)
  if not isinstance(config.data.deterministic_order, bool):
    c.fail('data.deterministic_order', 'must be True or False')
  c.positive_int('data.ram_budget_mb')
  if not isinstance(config.data.skip_corrupt, bool):
    c.fail('data.skip_corrupt', 'must be True or False')
  if not _is_int(config.data.private_threadpool_size) or config.data.private_threadpool_size < 0:
    c.fail('data.private_threadpool_size', 'must be a non-negative integer (0: shared pool)')
  if not _is_int(config.data.max_intra_op_parallelism) or config.data.max_intra_op_parallelism < 0:
    c.fail('data.max_intra_op_parallelism',
           "must be a non-negative integer (0: TensorFlow's default)")
  if config.data.source == 'tfrecord':
    for field in ('train_files', 'eval_files'):
      if not config.data[field]:
        c.fail(f'data.{field}', "must be a file pattern with data.source='tfrecord'")
    if config.data.num_classes == -1:
      c.fail('data.num_classes', "must be set with data.source='tfrecord'")
    if config.data.image_size == -1:
      c.fail('data.image_size', "must be set with data.source='tfrecord'")

  train = config.train
  c.positive_int('train.global_batch_size')
  if (_is_int(train.global_batch_size) and _is_int(config.engine.num_replicas) and
      config.engine.num_replicas > 0 and train.global_batch_size % config.engine.num_replicas):
    c.fail('train.global_batch_size',
           f'must be divisible by engine.num_replicas={config.engine.num_replicas}')
  steps_set, epochs_set = train.num_train_steps != -1, train.num_epochs != -1
  if steps_set == epochs_set:
    c.fail('train.num_train_steps', 'set exactly one of train.num_train_steps and '
           f'train.num_epochs (the other to -1); train.num_epochs={train.num_epochs!r}')
  elif steps_set:
    c.positive_int('train.num_train_steps')
    c.multiple_of('train.num_train_steps', 'train.steps_per_loop')
  else:
    c.positive_int('train.num_epochs')
  c.positive_int('train.steps_per_loop')
  for field in ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
    c.positive_int(f'train.{field}')
    c.multiple_of(f'train.{field}', 'train.steps_per_loop')
  c.positive_int('train.max_checkpoints_to_keep')
  c.choice('train.optimizer', OPTIMIZERS)
  c.number_in('train.momentum', 0.0, 1.0, high_open=True)
  if not isinstance(train.nesterov, bool):
    c.fail('train.nesterov', 'must be True or False')
  c.number_in('train.base_learning_rate', 0.0, 1e3, low_open=True)
  c.choice('train.lr_schedule', LR_SCHEDULES)
  boundaries = train.lr_boundaries
  if (not isinstance(boundaries, tuple) or not all(_is_number(b) and 0 < b < 1 for b in boundaries)
      or list(boundaries) != sorted(boundaries)):
    c.fail('train.lr_boundaries', 'must be an increasing tuple of fractions in (0, 1)')
  if not _is_int(train.warmup_steps) or train.warmup_steps < 0:
    c.fail('train.warmup_steps', 'must be a non-negative integer')
  c.positive_int('train.accumulation_steps')
  c.choice('train.precision', PRECISIONS)
  c.number_in('train.initial_loss_scale', 1.0, 2.0**64)
  if not isinstance(train.jit_compile, bool):
    c.fail('train.jit_compile', 'must be True or False')
  elif train.jit_compile and config.deterministic and config.model.name in MAX_POOL_MODELS:
    c.fail('train.jit_compile', f'cannot be combined with deterministic=True for '
           f'model.name={config.model.name!r}: XLA has no deterministic max-pool gradient (turn one '
           "of them off, or use 'resnet_cifar')")
  c.choice('train.nonfinite', NONFINITE)
  c.choice('train.lr_scaling', LR_SCALING)
  profile = train.profile_steps
  if (not isinstance(profile, tuple) or len(profile) != 2 or not all(_is_int(s) for s in profile)
      or not 0 <= profile[0] <= profile[1]):
    c.fail('train.profile_steps', 'must be a pair (start, stop) of integers with 0 <= start <= '
           'stop ((0, 0): no capture)')
  if not isinstance(train.export, bool):
    c.fail('train.export', 'must be True or False')

  if c.problems:
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(c.problems))
