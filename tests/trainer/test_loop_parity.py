"""Both loops, and 1 vs 2 replicas, compute the same training: same weights after K steps."""

import pytest

from trainer import experiment


def _train(config, workdir):
  experiment.train_and_evaluate(config, str(workdir))


@pytest.fixture
def reference_weights(tiny_run, helpers):
  """Weights after 20 steps: custom loop, 2 mirrored replicas (the default engine); the session's
  shared tiny run."""
  return helpers.checkpoint_weights(tiny_run)


def test_fit_and_custom_loops_end_with_same_weights(tiny_config, reference_weights, tmp_path,
                                                    helpers):
  tiny_config.loop = 'fit'
  _train(tiny_config, tmp_path / 'fit')
  helpers.assert_same_weights(helpers.checkpoint_weights(str(tmp_path / 'fit')), reference_weights)


@pytest.mark.parametrize('loop', ['custom', 'fit'])
def test_one_replica_matches_two_replicas_at_same_global_batch(tiny_config, reference_weights,
                                                               tmp_path, helpers, loop):
  # This is the test that proves the loss scaling: per-replica losses are divided by the global
  # batch and the weight decay by the replica count, so N replicas apply the 1-device gradient.
  tiny_config.loop = loop
  tiny_config.engine.name = 'default'
  tiny_config.engine.num_replicas = 1
  _train(tiny_config, tmp_path / 'single')
  helpers.assert_same_weights(helpers.checkpoint_weights(str(tmp_path / 'single')),
                              reference_weights)


def test_sync_batch_norm_matches_across_replica_counts(tiny_config, tmp_path, helpers):
  # Synchronized batch norm normalizes over the global batch, so replicas do not change results.
  # Its statistics are summed in another order on 2 replicas: compare whole tensors (relative
  # error of the norm 5e-4; a loss-scaling bug gives errors of 1e-1 and more).
  tiny_config.model.batch_norm = 'sync'
  _train(tiny_config, tmp_path / 'two')
  tiny_config.engine.name = 'default'
  tiny_config.engine.num_replicas = 1
  _train(tiny_config, tmp_path / 'one')
  helpers.assert_same_weights(helpers.checkpoint_weights(str(tmp_path / 'one')),
                              helpers.checkpoint_weights(str(tmp_path / 'two')), norm_rtol=5e-4)


def test_wrong_loss_scaling_would_be_detected(tiny_config, reference_weights, tmp_path, helpers):
  # Guard on the guard: halving the learning rate (what a 1/N loss bug does on 2 replicas) must
  # break the parity assertion, so the tolerance above is tight enough to catch scaling bugs.
  tiny_config.engine.name = 'default'
  tiny_config.engine.num_replicas = 1
  tiny_config.train.base_learning_rate /= 2
  _train(tiny_config, tmp_path / 'half')
  with pytest.raises(AssertionError):
    helpers.assert_same_weights(helpers.checkpoint_weights(str(tmp_path / 'half')),
                                reference_weights)
