"""What the two loops hand the Controller: the same global window metrics, whatever runs the step."""

import json

import pytest

from input_pipeline import sources
from trainer import engines
from trainer import experiment
from trainer.benchmarks import loops as loops_bench


@pytest.mark.parametrize('accumulation_steps', [1, 2])  # 2: fit runs Convoy's step (ConvoyStepModel)
def test_fit_reports_the_window_metrics_of_the_custom_loop_on_two_replicas(tiny_config,
                                                                          accumulation_steps):
  tiny_config.train.accumulation_steps = accumulation_steps
  engine = engines.create_engine(tiny_config.engine)
  assert engine.num_replicas == 2
  source = sources.create_source(tiny_config.data, tiny_config.seed)
  plan = loops_bench.make_plan(tiny_config, ['custom', 'fit'], steps=10, warmup_steps=5,
                               eager_steps=5, repeats=1)
  windows = {loop: loops_bench.measure_loop(loop, tiny_config, engine, source, plan).train_metrics
             for loop in ('custom', 'fit')}
  assert windows['fit'].keys() == windows['custom'].keys() == {
      'train_loss', 'train_accuracy', 'train_examples'}
  assert windows['fit']['train_examples'] == windows['custom']['train_examples'] == (
      5 * accumulation_steps * tiny_config.train.global_batch_size)
  for key in ('train_loss', 'train_accuracy'):
    assert windows['fit'][key] == pytest.approx(windows['custom'][key], rel=1e-4), key


@pytest.mark.slow
def test_fit_with_convoy_step_reports_global_metrics_on_two_workers(tmp_path, helpers):
  # Keras's default log reduction sums every step's logs over the workers of a
  # MultiWorkerMirroredStrategy; fit once reported those sums (train accuracy 1.62) when it ran
  # Convoy's step. The reference is the same run on mirrored x2 with the custom loop.
  config = helpers.make_tiny_config()
  config.train.accumulation_steps = 2
  experiment.train_and_evaluate(config, str(tmp_path / 'reference'))
  result = helpers.run_launcher('multi_worker', 2, '--config=configs/multi_worker.py',
                                f'--workdir={tmp_path / "fit"}', *helpers.tiny_args,
                                '--config.loop=fit', '--config.train.accumulation_steps=2')
  assert result.returncode == 0, result.stderr[-4000:]
  fit, reference = (json.loads((tmp_path / name / 'summary.json').read_text())
                    for name in ('fit', 'reference'))
  assert 0 <= fit['train_accuracy'] <= 1
  for key in ('train_loss', 'train_accuracy', 'eval_loss', 'eval_accuracy'):
    assert fit[key] == pytest.approx(reference[key], rel=1e-4), key
