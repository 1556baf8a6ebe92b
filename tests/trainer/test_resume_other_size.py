"""A checkpoint written by N workers resumes on M: step, state and stream position kept, LR rescaled.

The example-by-example coverage across such a resume is checked on the pipeline itself in
tests/input_pipeline/test_datasets.py (`test_resuming_with_another_topology_...`); here real runs
show that the trainer records and resumes the stream position, on every engine.
"""

import json

import pytest

from trainer import experiment
from trainer import optimization

PER_REPLICA = 32


def _check_resumed(first, second, base_learning_rate):
  """Asserts `second` (a summary) resumed `first` exactly where it stopped, at its own batch; each
  run trained 10 steps."""
  assert first['steps'] == first['start_step'] + 10
  assert first['data_position'] == first['data_position_start'] + 10 * first['examples_per_step']
  assert second['start_step'] == first['steps'] and second['steps'] == first['steps'] + 10
  assert second['data_position_start'] == first['data_position']
  assert second['data_position'] == (second['data_position_start'] +
                                     10 * second['examples_per_step'])
  assert second['peak_learning_rate'] == pytest.approx(
      base_learning_rate * second['examples_per_step'] / 256)


def test_mirrored_checkpoint_resumes_on_one_device_with_half_the_batch(tiny_config, tmp_path):
  tiny_config.train.num_train_steps = 10
  tiny_config.train.global_batch_size = 2 * PER_REPLICA
  first = experiment.train_and_evaluate(tiny_config, str(tmp_path))
  tiny_config.engine.name, tiny_config.engine.num_replicas = 'default', 1
  tiny_config.train.num_train_steps = 20
  tiny_config.train.global_batch_size = PER_REPLICA
  second = experiment.train_and_evaluate(tiny_config, str(tmp_path))
  assert (first['start_step'], first['data_position_start']) == (0, 0)
  _check_resumed(first, second, tiny_config.train.base_learning_rate)


def test_linear_scaling_can_be_turned_off(tiny_config):
  tiny_config.train.global_batch_size = 512
  assert optimization.peak_learning_rate(tiny_config.train) == pytest.approx(
      tiny_config.train.base_learning_rate * 2)
  tiny_config.train.lr_scaling = 'none'
  assert optimization.peak_learning_rate(tiny_config.train) == tiny_config.train.base_learning_rate


def _summary(workdir):
  with open(workdir / 'summary.json') as f:
    return json.load(f)


@pytest.fixture(scope='module')
def resumed_chain(tmp_path_factory, helpers):
  """`resumed_chain(engine)`: summaries of one workdir trained 10 steps on 2 workers, then resumed
  for 10 steps on 1 worker, then for 10 more on 2 workers; by worker count before and after."""
  chains = {}

  def get(engine):
    if engine not in chains:
      workdir = tmp_path_factory.mktemp(f'chain_{engine}') / 'run'
      summaries = []
      for workers, steps in ((2, 10), (1, 20), (2, 30)):
        # Weak scaling: each worker keeps its batch of 32, so the global batch changes with the
        # workers.
        result = helpers.run_launcher(
            engine, workers, f'--workdir={workdir}', *helpers.tiny_args,
            f'--config.train.num_train_steps={steps}',
            f'--config.train.global_batch_size={PER_REPLICA * workers}')
        summaries.append((result, _summary(workdir) if result.returncode == 0 else None))
        if result.returncode != 0:
          break
      chains[engine] = summaries
    return chains[engine]
  return get


@pytest.mark.slow
@pytest.mark.parametrize('engine', ['multi_worker', 'horovod'])
@pytest.mark.parametrize('before, after', [(2, 1), (1, 2)])
def test_checkpoint_of_n_workers_resumes_on_m_workers(resumed_chain, helpers, engine, before,
                                                      after):
  # One chain 2 -> 1 -> 2 workers serves both cases: the run on `before` workers, then its resume.
  runs = resumed_chain(engine)
  index = 1 if (before, after) == (2, 1) else 2
  for result, _ in runs[:index + 1]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  first, second = runs[index - 1][1], runs[index][1]
  assert (first['num_workers'], second['num_workers']) == (before, after)
  if index == 1:
    assert (first['start_step'], first['data_position_start']) == (0, 0)
  _check_resumed(first, second, helpers.make_tiny_config().train.base_learning_rate)
