"""The engine benchmark runs every engine and reports sane figures; it never asserts speed."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tf_keras

from input_pipeline import sources
from launch import local
from trainer import engines
from trainer import experiment
from trainer import loops as loops_lib
from trainer.benchmarks import engines as bench
from trainer.benchmarks import loops as loops_bench

_MODULE = 'trainer.benchmarks.engines'
_TINY_FLAGS = ('--config.train.steps_per_loop=5', '--steps=10', '--warmup_steps=5', '--repeats=1')


def _assert_sane(summary):
  rates = summary['images_per_second']
  for rate in rates['runs'] + [rates['median']] + summary['no_comm_images_per_second']['runs']:
    assert math.isfinite(rate) and rate > 0, summary
  assert 0.0 <= summary['comm_share'] <= 1.0, summary
  for key in ('step_ms', 'no_comm_step_ms', 'comm_ms', 'comm_share_raw', 'allreduce_ms',
              'train_loss'):
    assert math.isfinite(summary[key]), (key, summary)
  assert summary['step_ms'] > 0 and summary['no_comm_step_ms'] > 0
  assert summary['parameters'] > 0


def _worker_result(full_rates, no_comm_rates, index=0, num_workers=1):
  """A worker's result file as `run_worker` writes it, with made-up figures."""
  return {'engine': 'horovod', 'worker_index': index, 'num_workers': num_workers,
          'num_replicas': num_workers, 'devices': ['/cpu:0'], 'full_rates': full_rates,
          'no_comm_rates': no_comm_rates, 'train_loss': 1.5, 'parameters': 1000,
          'allreduce_ms_runs': [2.0, 3.0], 'fill_ms_runs': [0.5, 0.5], 'threads': {},
          'cpus': [index], 'versions': {}, 'load_average': {'start': 0.5, 'end': 1.3}}


def _replica_values_after_training(config, engine, source):
  """Trains 5 custom-loop steps on `engine`; returns each replica's copy of every variable."""
  tf_keras.backend.clear_session()
  tf_keras.utils.set_random_seed(config.seed)
  model, optimizer, _ = experiment.create_model_and_optimizer(config, engine, source, 5)
  data = experiment.create_loop_data(config, engine, source)
  loops_lib.custom_loop(config, engine, model, optimizer, data, loops_bench.StopwatchController(5))
  return [[value.numpy() for value in variable.values] for variable in model.trainable_variables]


def test_without_gradient_communication_mirrored_replicas_drift_apart(tiny_config):
  # The premise of the comm share: the variant step really exchanges no gradient, the full one does.
  tiny_config.train.steps_per_loop = 5
  engine = engines.create_engine(tiny_config.engine)
  source = sources.create_source(tiny_config.data, tiny_config.seed)
  full = _replica_values_after_training(tiny_config, engine, source)
  alone = _replica_values_after_training(tiny_config, bench.NoGradientCommunication(engine), source)
  assert all(np.array_equal(a, b) for a, b in full)
  assert not any(np.allclose(a, b) for a, b in alone[:1])  # First conv kernel: replicas differ.
  assert sum(not np.array_equal(a, b) for a, b in alone) >= len(alone) // 2


def test_measure_engine_in_process_gives_sane_figures(tiny_config):
  engine = engines.create_engine(tiny_config.engine)  # mirrored x2 on logical CPU devices
  source = sources.create_source(tiny_config.data, tiny_config.seed)
  plan = loops_bench.make_plan(tiny_config, ['custom'], steps=10, warmup_steps=5, eager_steps=None,
                               repeats=2)
  result = bench.measure_engine(tiny_config, engine, source, plan)
  assert (result['num_workers'], result['num_replicas']) == (1, 2)
  assert len(result['full_rates']) == len(result['no_comm_rates']) == 2
  summary = bench.summarize_engine('mirrored', [dict(result, cpus=[0], threads={}, versions={},
                                                     load_average={'start': 0, 'end': 0})], 64)
  _assert_sane(summary)
  assert summary['parameters'] == sum(int(np.prod(v.shape)) for v in
                                      experiment.create_model_and_optimizer(
                                          tiny_config, engine, source, 10)[0].trainable_variables)


def test_summary_clamps_the_share_and_keeps_the_raw_value():
  faster_without = bench.summarize_engine('horovod', [_worker_result([3200.0, 3000, 3400],
                                                                     [6400.0, 6000, 6600])], 64)
  assert faster_without['step_ms'] == pytest.approx(20.0)
  assert faster_without['no_comm_step_ms'] == pytest.approx(10.0)
  assert faster_without['comm_ms'] == pytest.approx(10.0)
  assert faster_without['comm_share'] == pytest.approx(0.5)
  assert faster_without['allreduce_ms'] == pytest.approx(2.0)  # median 2.5 minus fill 0.5
  noise = bench.summarize_engine('default', [_worker_result([6400.0], [6000.0])], 64)
  assert noise['comm_share'] == 0.0 and noise['comm_share_raw'] < 0


def test_report_has_one_row_per_engine_and_names_failures():
  results = {
      'command': 'python -m trainer.benchmarks.engines --repeats=3', 'config': {
          'model': 'small_cnn', 'global_batch_size': 64, 'steps_per_loop': 50,
          'data_source': 'digits', 'batch_norm': 'none', 'tensorflow': '2.18.1'},
      'steps': 200, 'warmup_steps': 50, 'repeats': 3, 'num_workers': 2, 'pin_cpus': True,
      'cpus': 2, 'load_average': {'start': 0.1, 'end': 0.2},
      'engines': {
          'horovod': bench.summarize_engine('horovod', [_worker_result([3200.0], [6400.0], 0, 2),
                                                        _worker_result([3190.0], [6300.0], 1, 2)],
                                            64),
          'multi_worker': {'error': 'failed (exit code 3; see its output above)'}}}
  lines = bench.format_report(results).splitlines()
  assert lines[0] == 'Command: python -m trainer.benchmarks.engines --repeats=3'
  row = next(line for line in lines if line.startswith('horovod'))
  assert row.split()[1:4] == ['2', 'x', '1'] and '3200' in row and '0.50 (+0.50)' in row
  assert row.endswith('0.5-1.3    0|1')  # load at start and end of the engine, CPUs per process
  assert any(line.startswith('multi_worker') and 'exit code 3' in line for line in lines)


def test_workers_run_this_module_with_each_engines_overrides(tmp_path):
  args = ['--steps=10', '--config.engine.name=horovod']
  workers = bench.worker_processes('multi_worker', 2, args, str(tmp_path), pin_cpus=False)
  assert [w.label for w in workers] == ['multi_worker 0', 'multi_worker 1']
  for index, worker in enumerate(workers):
    assert worker.argv[1:3] == ['-m', _MODULE] and 'trainer.train' not in worker.argv
    # The engine's own overrides come last: they win over the user's --config.engine.* flags.
    assert worker.argv[-2:] == ['--config.engine.name=multi_worker',
                                '--config.engine.num_replicas=1']
    assert {'--steps=10', '--worker', f'--result_dir={tmp_path}', '--pin_cpus=False'} <= set(
        worker.argv)
    assert json.loads(worker.env['TF_CONFIG'])['task']['index'] == index
  mirrored, = bench.worker_processes('mirrored', 2, args, str(tmp_path), pin_cpus=False)
  assert mirrored.argv[-1] == '--config.engine.num_replicas=2' and mirrored.cpus is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='needs 2 usable CPUs')
def test_pinned_single_process_engines_get_their_replicas_cpus(tmp_path):
  shares = local.cpu_shares(2, os.sched_getaffinity(0))
  default, = bench.worker_processes('default', 2, [], str(tmp_path), pin_cpus=True)
  mirrored, = bench.worker_processes('mirrored', 2, [], str(tmp_path), pin_cpus=True)
  assert default.cpus == shares[0]
  assert mirrored.cpus == shares[0] + shares[1]
  assert '--pin_cpus=True' in default.argv


def test_horovod_worker_is_horovodrun_running_this_module(tmp_path):
  try:
    hvd, = bench.worker_processes('horovod', 2, [], str(tmp_path), pin_cpus=True)
  except FileNotFoundError:
    pytest.skip('horovodrun is not installed')
  assert os.path.basename(hvd.argv[0]) == 'horovodrun' and '--gloo' in hvd.argv
  assert ['-m', 'launch.pin'] == hvd.argv[hvd.argv.index('--gloo') + 2:][:2]
  assert hvd.argv[hvd.argv.index(_MODULE) - 1] == '-m'


def test_plan_rejects_bad_flags_and_configs(tiny_config):
  with pytest.raises(ValueError) as error:
    bench.make_plan(tiny_config, ['default', 'tpu', 'default'], 0, False, 10, 5, 1)
  message = str(error.value)
  for part in ("'tpu'", 'at most once', '--num_workers=0'):
    assert part in message
  with pytest.raises(ValueError, match='--steps=12'):
    bench.make_plan(tiny_config, ['default'], 2, False, 12, 5, 1)
  with pytest.raises(ValueError, match='global_batch_size'):  # 64 over 3 workers.
    bench.make_plan(tiny_config, ['multi_worker'], 3, False, 10, 5, 1)
  plan = bench.make_plan(tiny_config, ['default'], 3, False, 10, 5, 2)
  assert (plan.loops, plan.steps, plan.warmup_steps, plan.repeats) == (('custom',), 10, 5, 2)


def test_bad_flags_exit_2_before_running_anything(helpers):
  proc = subprocess.run([sys.executable, '-m', _MODULE, '--engines=default,gpu', *_TINY_FLAGS],
                        cwd=helpers.repo, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "unknown engine 'gpu'" in proc.stderr and 'Command:' not in proc.stdout


@pytest.mark.slow
def test_command_runs_every_engine_prints_table_and_writes_json(tmp_path, helpers):
  json_out = tmp_path / 'engines.json'
  pin = len(os.sched_getaffinity(0)) >= 2
  args = [*_TINY_FLAGS, f'--json_out={json_out}'] + (['--pin_cpus'] if pin else [])
  proc = subprocess.run([sys.executable, '-m', _MODULE, *args], cwd=helpers.repo,
                        capture_output=True, text=True, timeout=420)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  command = f'Command: python -m {_MODULE} ' + ' '.join(args)
  lines = proc.stdout.splitlines()
  assert lines[0] == command and lines.count(command) == 2  # At the start and atop the table.
  results = json.loads(json_out.read_text())
  assert list(results['engines']) == list(bench.DEFAULT_ENGINES)
  assert (results['steps'], results['warmup_steps'], results['repeats']) == (10, 5, 1)
  layouts = {'default': (1, 1), 'mirrored': (1, 2), 'multi_worker': (2, 2), 'horovod': (2, 2)}
  for name, summary in results['engines'].items():
    assert any(line.split()[:1] == [name] for line in lines), name
    _assert_sane(summary)
    assert (summary['workers'], summary['replicas']) == layouts[name]
    assert len(summary['worker_images_per_second']) == summary['workers']
    if pin and summary['workers'] == 2:  # Each process on its own CPUs, single-threaded.
      assert not set(summary['cpus'][0]) & set(summary['cpus'][1])
      assert summary['threads'] == {'intra_op': 1, 'inter_op': 1}
  assert results['engines']['horovod']['versions']['horovod']
