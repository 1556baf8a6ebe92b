"""Gradient accumulation, mixed precision, XLA and non-finite skipping do the same math everywhere.

Accumulating K micro-batches of B must train exactly like one batch of K x B (same data, same loss,
one update), on every engine and in both loops; mixed precision and XLA must train in both loops
with the custom loop's loss scaling matching fit's; a skipped non-finite step must be skipped on
every replica and counted.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import datasets
from input_pipeline import sources
from trainer import experiment
from trainer import steps

ACCUMULATE = ('--config.train.accumulation_steps=4', '--config.train.global_batch_size=16')


def _train(config, workdir):
  return experiment.train_and_evaluate(config, str(workdir))


def _set_engine(config, engine):
  config.engine.name = engine
  config.engine.num_replicas = 2 if engine == 'mirrored' else 1


@pytest.fixture(scope='module')
def big_batch_weights(tiny_run, helpers):
  """Weights after 20 steps of 64 examples, no accumulation (custom loop, 2 mirrored replicas): the
  session's shared tiny run."""
  return helpers.checkpoint_weights(tiny_run)


@pytest.mark.parametrize('engine', ['default', 'mirrored'])
@pytest.mark.parametrize('loop', ['custom', 'fit'])
def test_four_accumulated_micro_batches_equal_one_four_times_larger_batch(
    tiny_config, big_batch_weights, tmp_path, helpers, engine, loop):
  tiny_config.loop = loop
  _set_engine(tiny_config, engine)
  tiny_config.train.global_batch_size = 16
  tiny_config.train.accumulation_steps = 4
  summary = _train(tiny_config, tmp_path / 'accumulated')
  # Summing 4 micro-batch gradients rounds differently from one big batch: compare each tensor as
  # a whole (a mis-scaled accumulation, e.g. 4x the gradient, is off by 1e-1 and more).
  helpers.assert_same_weights(helpers.checkpoint_weights(str(tmp_path / 'accumulated')),
                              big_batch_weights, norm_rtol=1e-5)
  # Steps, learning rate and throughput count optimizer steps of the effective batch.
  assert summary['steps'] == 20 and summary['examples_per_step'] == 64
  assert summary['peak_learning_rate'] == pytest.approx(tiny_config.train.base_learning_rate / 4)


@pytest.mark.slow
@pytest.mark.parametrize('engine', ['multi_worker', 'horovod'])
@pytest.mark.parametrize('loop', ['custom', 'fit'])
def test_accumulation_on_two_worker_processes_equals_the_larger_batch(
    big_batch_weights, tmp_path, helpers, engine, loop):
  workdir = tmp_path / 'run'
  result = helpers.run_launcher(engine, 2, f'--workdir={workdir}', *helpers.tiny_args,
                                f'--config.loop={loop}', *ACCUMULATE)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  helpers.assert_same_weights(helpers.checkpoint_weights(str(workdir)), big_batch_weights,
                              norm_rtol=1e-5)


def test_accumulation_communicates_gradients_once_per_optimizer_step(tiny_config, tmp_path,
                                                                    monkeypatch):
  calls = []
  original = steps.create_train_step

  def counting_create(config, model, optimizer, engine, *args, **kwargs):
    reduce_gradients = engine.reduce_gradients

    def counted(gradients):
      calls.append(len(gradients))
      return reduce_gradients(gradients)

    monkeypatch.setattr(engine, 'reduce_gradients', counted)
    return original(config, model, optimizer, engine, *args, **kwargs)

  monkeypatch.setattr(steps, 'create_train_step', counting_create)
  tiny_config.train.accumulation_steps = 4
  tiny_config.train.global_batch_size = 16
  _train(tiny_config, tmp_path / 'run')
  # The step is traced once per replica (2 mirrored replicas): one reduction each, not four.
  assert len(calls) == 2


@pytest.mark.parametrize('loop', ['custom', 'fit'])
@pytest.mark.parametrize('precision', ['mixed_bfloat16', 'mixed_float16'])
def test_mixed_precision_trains_in_both_loops(tiny_config, tmp_path, loop, precision):
  tiny_config.loop = loop
  tiny_config.train.precision = precision
  tiny_config.model.width = 8  # float16 kernels are slow on CPU.
  summary = _train(tiny_config, tmp_path / 'run')
  assert summary['precision'] == precision
  assert np.isfinite(summary['train_loss']) and summary['eval_accuracy'] > 0.5


def _loss_scale(workdir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(workdir,
                                                                            'checkpoints')))
  keys = [k for k in reader.get_variable_to_shape_map() if 'current_loss_scale' in k]
  assert len(keys) == 1, keys
  return float(reader.get_tensor(keys[0]))


def test_custom_loop_loss_scaling_matches_fit(tiny_config, tmp_path, helpers):
  # A loss scale far too large: the first steps overflow in float16, so the scale must be lowered
  # and those steps skipped, identically in fit (Keras's LossScaleOptimizer.minimize) and in the
  # custom loop (Convoy scales and unscales itself).
  tiny_config.train.precision = 'mixed_float16'
  tiny_config.train.initial_loss_scale = 2.0**40
  tiny_config.model.width = 8
  _set_engine(tiny_config, 'default')
  results = {}
  for loop in ('fit', 'custom'):
    tiny_config.loop = loop
    _train(tiny_config, tmp_path / loop)
    results[loop] = (_loss_scale(str(tmp_path / loop)),
                     helpers.checkpoint_weights(str(tmp_path / loop)))
  assert results['fit'][0] == results['custom'][0] < 2.0**40
  helpers.assert_same_weights(results['custom'][1], results['fit'][1], norm_rtol=2e-3)


@pytest.mark.parametrize('loop', ['custom', 'fit'])
def test_xla_compiled_step_trains_like_the_plain_step(tiny_config, tmp_path, helpers, loop):
  tiny_config.loop = loop
  # XLA has no deterministic max-pool gradient: a model without max pooling keeps op determinism.
  tiny_config.model.name = 'resnet_cifar'
  tiny_config.model.width = 8
  _train(tiny_config, tmp_path / 'plain')
  tiny_config.train.jit_compile = True
  summary = _train(tiny_config, tmp_path / 'xla')
  assert summary['jit_compile']
  # XLA fuses ops and rounds differently; a wrong gradient would be off by far more.
  helpers.assert_same_weights(helpers.checkpoint_weights(str(tmp_path / 'xla')),
                              helpers.checkpoint_weights(str(tmp_path / 'plain')), norm_rtol=1e-4)


def _poison_one_training_example(monkeypatch, config):
  """Makes one training image all-NaN; returns the steps (of 20) whose global batch holds it."""
  create_source = sources.create_source
  source = create_source(config.data, config.seed)
  # The example the stream serves at position 100: inside the global batch of step 1.
  poisoned = int(datasets.train_example_ids(100, source.num_train_examples, config.seed))
  images = source.train_images.copy()
  images[poisoned] = np.nan
  monkeypatch.setattr(sources, 'create_source',
                      lambda *args: source.__class__(images, source.train_labels, source.eval_images,
                                                     source.eval_labels, source.num_classes))
  batch = datasets.examples_per_step(config)
  positions = np.arange(config.train.num_train_steps * batch)
  ids = datasets.train_example_ids(positions, source.num_train_examples, config.seed).numpy()
  return sorted({int(p) // batch for p in positions[ids == poisoned]})


def _skip_config(helpers, engine, loop):
  config = helpers.make_tiny_config()
  config.train.nonfinite = 'skip'
  config.loop = loop
  _set_engine(config, engine)
  return config


@pytest.fixture(scope='module')
def skipped_on_one_device(tmp_path_factory, helpers):
  """(workdir, summary, bad steps) of the poisoned run in skip mode on one device, custom loop: the
  reference the replicated runs must match (trained once for the module)."""
  config = _skip_config(helpers, 'default', 'custom')
  workdir = tmp_path_factory.mktemp('skip_reference')
  with pytest.MonkeyPatch.context() as monkeypatch:
    bad_steps = _poison_one_training_example(monkeypatch, config)
    summary = _train(config, workdir)
  return workdir, summary, bad_steps


@pytest.mark.parametrize('engine, loop', [('default', 'custom'), ('mirrored', 'custom'),
                                          ('mirrored', 'fit')])
def test_skip_mode_skips_every_step_that_sees_a_nan_on_every_replica(
    skipped_on_one_device, tmp_path, helpers, monkeypatch, engine, loop):
  reference, reference_summary, reference_bad_steps = skipped_on_one_device
  config = _skip_config(helpers, engine, loop)
  bad_steps = _poison_one_training_example(monkeypatch, config)
  assert 1 in bad_steps and bad_steps == reference_bad_steps
  if (engine, loop) == ('default', 'custom'):  # The reference run itself is this case's run.
    run, summary = reference, reference_summary
  else:
    run = tmp_path / 'run'
    summary = _train(config, run)
  assert summary['nonfinite_steps_skipped'] == len(bad_steps)
  assert np.isfinite(summary['train_loss']) and np.isfinite(summary['eval_loss'])
  with open(run / 'summary.json') as f:
    assert json.load(f)['nonfinite_steps_skipped'] == len(bad_steps)
  weights = helpers.checkpoint_weights(str(run))
  assert all(np.isfinite(w).all() for w in weights.values())
  if run != reference:
    # The bad example sits in one replica's slice (step 1); the skip must still be global, or the
    # mirrored run would differ from the single-device one by a whole half-batch update. Compared
    # at step 10: later, max-pool ties met on the way can amplify round-off past 1e-5.
    helpers.assert_same_weights(helpers.checkpoint_weights(str(run), 10),
                                helpers.checkpoint_weights(str(reference), 10), norm_rtol=1e-5)


def test_skip_count_survives_a_resume(tiny_config, tmp_path, monkeypatch):
  tiny_config.train.nonfinite = 'skip'
  bad_steps = _poison_one_training_example(monkeypatch, tiny_config)
  tiny_config.train.num_train_steps = 10
  _train(tiny_config, tmp_path / 'run')
  tiny_config.train.num_train_steps = 20
  summary = _train(tiny_config, tmp_path / 'run')
  assert summary['start_step'] == 10
  assert summary['nonfinite_steps_skipped'] == len(bad_steps)
