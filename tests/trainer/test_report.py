"""The scaling sweep's report (trainer/benchmarks/report.py) from hand-made results, and the pure
parts of the per-run measurement (trainer/benchmarks/scaling.py): breakdown, summary, FLOPs count,
peak matmul and the fixed-batch engine view."""

import csv
import json
import math
import os
import types

import numpy as np
import pytest

from configs import default
from input_pipeline import datasets
from input_pipeline import sources
from trainer import engines
from trainer.benchmarks import loops as loops_bench
from trainer.benchmarks import report
from trainer.benchmarks import scaling

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def make_result(engine, replicas, images_per_second, scaling_mode='weak', batch=32, loop='custom',
                fields=None, processes=None, sweep_round=None):
  """A run's result.json as `scaling.summarize_run` writes it, with made-up figures."""
  processes = processes or (1 if engine in ('default', 'mirrored') else replicas)
  global_batch = batch * replicas if scaling_mode == 'weak' else batch
  in_round = f'-r{sweep_round}' if sweep_round else ''
  run_id = f'{engine}-x{replicas}-{scaling_mode}{batch}-{loop}{in_round}-{len(fields or {}):08x}'
  step_ms = 1000.0 * global_batch / images_per_second
  return {
      'status': 'ok', 'run_id': run_id,
      'spec': {'run_id': run_id, 'engine': engine, 'workers': replicas, 'processes': processes,
               'replicas': replicas, 'scaling': scaling_mode, 'batch_size': batch,
               'global_batch_size': global_batch,
               'per_replica_batch_size': global_batch // replicas, 'loop': loop,
               'fields': dict(fields or {}), 'round': sweep_round},
      'num_replicas': replicas, 'num_workers': processes,
      'images_per_second': {'median': images_per_second, 'min': 0.9 * images_per_second,
                            'max': 1.1 * images_per_second, 'runs': [images_per_second]},
      'images_per_second_per_replica': images_per_second / replicas, 'step_ms': step_ms,
      'variants_images_per_second': {'no_comm': {'median': images_per_second / 0.7}},
      'breakdown': scaling.create_breakdown(step_ms, 0.9 * step_ms, 0.9 * step_ms, 0.7 * step_ms),
      'forward_flops_per_image': 1e6, 'train_flops_per_image': 3e6,
      'achieved_flops_per_second': 3e6 * images_per_second,
      'machine_peak_flops_per_second': 1e11,
      'machine_peak_fraction': 3e6 * images_per_second / 1e11,
      'allocation_peak_flops_per_second': 5e10 * replicas,
      'allocation_peak_fraction': 3e6 * images_per_second / (5e10 * replicas),
      'cpu_busy': 0.9, 'busiest_thread_share': 0.8,
      'peak_rss_mb': 600.0, 'total_rss_mb': 600.0 * processes, 'gpu_peak_mb': None,
      'train_loss': 0.5, 'pinned': True, 'cpus': [[i] for i in range(processes)],
      'threads': {'intra_op': 1, 'inter_op': 1}, 'load_average': {'start': 0.5, 'end': 0.7},
      'run_seconds': 12.0,
  }


def failed(engine, replicas, error='exit code 4: convoy: error: no data'):
  result = make_result(engine, replicas, 1.0)
  return {'status': 'failed', 'run_id': result['run_id'] + 'f', 'spec': result['spec'],
          'error': error}


def sample_results():
  """2 engines x 1-2 replicas (weak), a failed run and a run not done yet."""
  return [make_result('mirrored', 1, 1000.0), make_result('mirrored', 2, 1800.0),
          make_result('multi_worker', 1, 900.0), make_result('multi_worker', 2, 1500.0),
          failed('horovod', 2),
          {'status': 'missing', 'run_id': 'horovod-x1', 'spec': make_result('horovod', 1,
                                                                           1.0)['spec']}]


META = {'command': 'python -m launch.sweep --out_dir=/tmp/x', 'created': '2026-01-01T00:00:00',
        'mode': 'local', 'machine': {'cpu': 'test CPU', 'cpus': '2'},
        'machine_peak': {'machine_peak_flops_per_second': 1e11, 'matmul_size': 4096},
        'pin_cpus': True, 'cpus_per_worker': 1,
        'plan': {'steps': 100, 'warmup_steps': 20, 'repeats': 3},
        'grid': {'engines': ['mirrored', 'multi_worker'], 'workers': [1, 2]},
        'config': {'file': 'configs/default.py', 'overrides': {'data.source': 'digits'}}}
PREDICTED = [{'workers': 1, 'images_per_second': 1000.0, 'efficiency': 1.0, 'engine': 'mirrored'},
             {'workers': 2, 'images_per_second': 1900.0, 'efficiency': 0.95, 'engine': 'mirrored'}]


# --- Rows and efficiency ------------------------------------------------------------------------


def test_weak_scaling_efficiency_is_per_replica_throughput_ratio():
  rows = {r['run_id']: r for r in report.create_rows(sample_results())}
  two = rows['mirrored-x2-weak32-custom-00000000']
  assert two['scaling_efficiency'] == pytest.approx(1800 / 2 / 1000)
  assert two['efficiency_baseline'] == 'mirrored-x1-weak32-custom-00000000'
  assert rows['multi_worker-x2-weak32-custom-00000000']['scaling_efficiency'] == pytest.approx(
      1500 / 2 / 900)
  assert rows['mirrored-x1-weak32-custom-00000000']['scaling_efficiency'] == 1.0


def test_no_comm_efficiency_is_the_same_ratio_for_the_step_without_communication():
  one, two = make_result('horovod', 1, 1000.0), make_result('horovod', 2, 1500.0)
  one['variants_images_per_second'] = {'no_comm': {'median': 1100.0}}
  two['variants_images_per_second'] = {'no_comm': {'median': 1980.0}}
  rows = report.create_rows([one, two])
  assert rows[1]['scaling_efficiency'] == pytest.approx(1500 / 2 / 1000)
  assert rows[1]['scaling_efficiency_no_comm'] == pytest.approx(1980 / 2 / 1100)
  assert rows[0]['scaling_efficiency_no_comm'] == 1.0
  table = report.create_table(rows).splitlines()
  header = [cell.strip() for cell in table[0].strip('|').split('|')]
  cells = [cell.strip() for cell in table[3].strip('|').split('|')]
  assert cells[header.index('eff.')] == '0.75' and cells[header.index('eff. no comm')] == '0.90'


def test_strong_scaling_efficiency_is_speedup_over_replicas():
  rows = report.create_rows([make_result('mirrored', 1, 1000.0, 'strong', 64),
                             make_result('mirrored', 2, 1500.0, 'strong', 64)])
  assert rows[1]['global_batch_size'] == 64 and rows[1]['per_replica_batch_size'] == 32
  assert rows[1]['scaling_efficiency'] == pytest.approx((1500 / 1000) / 2)


def test_efficiency_baseline_is_the_same_cell_else_default_engine_else_none():
  fields = {'train.precision': 'mixed_bfloat16'}
  rows = report.create_rows([
      make_result('default', 1, 1000.0), make_result('horovod', 2, 1600.0),
      make_result('mirrored', 2, 1200.0, fields=fields),  # No 1-replica run of this cell.
      make_result('mirrored', 2, 1200.0, batch=16)])  # Nor of this one, nor default's.
  assert rows[1]['efficiency_baseline'] == rows[0]['run_id']
  assert rows[1]['scaling_efficiency'] == pytest.approx(0.8)
  assert rows[2]['scaling_efficiency'] is None  # default ran with float32 only.
  assert rows[2]['train.precision'] == 'mixed_bfloat16' and rows[0]['train.precision'] is None
  assert rows[3]['scaling_efficiency'] is None


def round_results():
  """horovod x1/x2 in 3 rounds (x2 first in round 2), the 1-replica rate drifting between rounds;
  round 3's x2 run failed."""
  return [make_result('horovod', 1, 1000.0, sweep_round=1),
          make_result('horovod', 2, 1800.0, sweep_round=1),  # 0.90
          make_result('horovod', 2, 1500.0, sweep_round=2),
          make_result('horovod', 1, 800.0, sweep_round=2),  # 1500 / 1600 = 0.9375
          make_result('horovod', 1, 1200.0, sweep_round=3), dict(
              failed('horovod', 2), spec=dict(failed('horovod', 2)['spec'], round=3))]


def test_with_rounds_each_run_is_paired_with_the_one_replica_run_of_its_round():
  rows = report.create_rows(round_results())
  assert [r['round'] for r in rows] == [1, 1, 2, 2, 3, 3]
  assert rows[1]['scaling_efficiency'] == pytest.approx(1800 / 2 / 1000)
  assert rows[1]['efficiency_baseline'] == 'horovod-x1-weak32-custom-r1-00000000'
  assert rows[2]['scaling_efficiency'] == pytest.approx(1500 / 2 / 800)
  assert rows[2]['efficiency_baseline'] == 'horovod-x1-weak32-custom-r2-00000000'
  assert rows[5]['scaling_efficiency'] is None


def test_combined_rounds_give_the_median_paired_efficiency_with_its_range():
  rows = report.create_rows(round_results() + [
      make_result('horovod', 2, 2100.0, sweep_round=4),
      make_result('horovod', 1, 1000.0, sweep_round=4)])  # Round 4: 2100 / 2000 = 1.05.
  combined = report.combine_rounds(rows)
  assert [(r['replicas'], r['rounds'], r['round']) for r in combined] == [(1, 4, None),
                                                                        (2, 3, None)]
  one, two = combined
  assert two['scaling_efficiency'] == pytest.approx(0.9375)  # Median of 0.90, 0.9375, 1.05.
  assert (two['scaling_efficiency_min'], two['scaling_efficiency_max']) == pytest.approx(
      (0.90, 1.05))
  assert two['run_id'] == 'horovod-x2-weak32-custom-r1-00000000'  # Median images/s: 1800.
  assert (two['images_per_second'], two['images_per_second_min'],
          two['images_per_second_max']) == (1800.0, 1500.0, 2100.0)
  assert one['images_per_second'] == 1000.0 and one['scaling_efficiency'] == 1.0
  text = report.create_text_table(combined, []).splitlines()
  assert text[0].split()[6:11] == ['rounds', 'images/s', '[min-max]', 'eff.', '[min-max]']
  assert '0.94 [0.90-1.05]' in text[2] and '1800 [1500-2100]' in text[2]
  assert report.combine_rounds(report.create_rows(sample_results())) == report.create_rows(
      sample_results())  # Without rounds: the rows as they are.


def test_report_of_a_sweep_with_rounds_shows_combined_rows_then_every_run(tmp_path):
  paths = report.create_report(str(tmp_path), round_results(), META)
  with open(paths['report']) as f:
    text = f.read()
  results, every = text.split('## Results')[1].split('## Every run')
  assert results.count('| `horovod-') == 2 and every.count('| `horovod-') == 6
  # x2: two successful rounds (1800 at 0.90, 1500 at 0.9375); the lower middle one is shown.
  assert '| 2 | 1500 [1500-1800] | 0.92 [0.90-0.94] |' in results
  assert '| 3 | 1000 [800-1200] | 1.00 [1.00-1.00] |' in results
  with open(paths['json']) as f:
    data = json.load(f)
  assert len(data['runs']) == 6 and len(data['combined']) == 2
  with open(paths['csv']) as f:
    assert [row['round'] for row in csv.DictReader(f)] == ['1', '1', '2', '2', '3', '3']


def test_failed_and_missing_rows_keep_spec_and_error_without_figures():
  rows = report.create_rows(sample_results())
  bad = rows[4]
  assert (bad['status'], bad['engine'], bad['replicas']) == ('failed', 'horovod', 2)
  assert bad['error'].startswith('exit code 4') and bad['images_per_second'] is None
  assert rows[5]['status'] == 'missing' and rows[5]['scaling_efficiency'] is None


# --- Files ----------------------------------------------------------------------------------------


def test_csv_has_every_column_and_empty_cells_for_missing_figures(tmp_path):
  rows = report.create_rows(sample_results() + [make_result(
      'mirrored', 2, 1100.0, fields={'train.jit_compile': True})])
  path = report.create_csv(rows, tmp_path / 'results.csv')
  with open(path) as f:
    read = list(csv.DictReader(f))
  assert list(read[0]) == report.columns(rows)
  assert 'train.jit_compile' in read[0] and read[-1]['train.jit_compile'] == 'True'
  for row in read[:4]:
    for name in report.NUMERIC_COLUMNS + ('scaling_efficiency', 'machine_peak_fraction'):
      assert math.isfinite(float(row[name])), (name, row)
  assert read[4]['images_per_second'] == '' and read[4]['status'] == 'failed'


def test_create_report_writes_csv_json_plots_and_markdown(tmp_path):
  paths = report.create_report(str(tmp_path), sample_results(), META, predicted=PREDICTED)
  assert sorted(os.listdir(tmp_path)) == ['breakdown.png', 'efficiency.png', 'report.md',
                                          'results.csv', 'results.json', 'throughput.png']
  for name in ('throughput', 'efficiency', 'breakdown'):
    with open(paths[name], 'rb') as f:
      data = f.read()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
  with open(paths['json']) as f:
    data = json.load(f)
  assert data['meta']['command'] == META['command'] and len(data['runs']) == 6
  assert data['predicted'] == PREDICTED
  with open(paths['report']) as f:
    text = f.read()
  for needle in ('![Throughput](throughput.png)', '![Scaling efficiency](efficiency.png)',
                 '![Step-time breakdown](breakdown.png)', META['command'], 'test CPU',
                 '`mirrored-x2-weak32-custom-00000000` | ok | mirrored | 1 x 2 | weak | 32 | 64',
                 '| 0.90 |', 'pinned to its own 1 core(s)', '## Predicted (scaling model)',
                 'predicted (mirrored) | 2 | 1900 | 0.95', '## Failed or missing runs',
                 'exit code 4: convoy: error: no data', '100.0 GFLOP/s'):
    assert needle in text, needle


def test_markdown_table_has_one_line_per_run_and_the_grid_fields():
  rows = report.create_rows([make_result('default', 1, 500.0, fields={'train.precision': 'x'})])
  text = report.create_markdown(dict(META, mode='slurm', pin_cpus=False), rows)
  table = [line for line in text.splitlines() if line.startswith('| `')]
  assert len(table) == 1 and '| x |' in table[0]
  assert 'train.precision' in text and 'Slurm jobs' in text
  assert '![' not in text  # No plots given.


def test_plots_without_successful_runs_still_write_files(tmp_path):
  rows = report.create_rows([failed('mirrored', 2)])
  for create in (report.create_throughput_plot, report.create_efficiency_plot):
    with open(create(rows, tmp_path / f'{create.__name__}.png', predicted=PREDICTED), 'rb') as f:
      assert f.read().startswith(PNG_MAGIC)
  with open(report.create_breakdown_plot(rows, tmp_path / 'b.png'), 'rb') as f:
    assert f.read().startswith(PNG_MAGIC)


def test_plots_split_weak_and_strong_scaling_into_panels(tmp_path):
  rows = report.create_rows([make_result('mirrored', 1, 1000.0), make_result('mirrored', 2, 1800.0),
                             make_result('mirrored', 1, 1000.0, 'strong', 64),
                             make_result('mirrored', 2, 1500.0, 'strong', 64)])
  modes = report._series(rows, [])  # pylint: disable=protected-access
  assert sorted(modes) == ['strong', 'weak']
  assert [p['replicas'] for p in modes['weak']['mirrored']] == [1, 2]
  report.create_throughput_plot(rows, tmp_path / 't.png', predicted=PREDICTED)


# --- Measurement pieces (scaling.py) ------------------------------------------------------------


def test_breakdown_parts_add_up_to_the_step_and_keep_raw_differences():
  parts = scaling.create_breakdown(step_ms=10.0, fixed_batch_ms=8.0, comm_reference_ms=8.5,
                                   no_comm_ms=6.0)
  assert parts['input_ms'] == pytest.approx(2.0) and parts['comm_ms'] == pytest.approx(2.5)
  assert parts['compute_ms'] == pytest.approx(5.5)
  noisy = scaling.create_breakdown(step_ms=10.0, fixed_batch_ms=11.0, comm_reference_ms=9.0,
                                   no_comm_ms=9.5)
  assert noisy['input_ms'] == 0.0 and noisy['comm_ms'] == 0.0 and noisy['compute_ms'] == 10.0
  assert noisy['input_ms_raw'] == pytest.approx(-1.0)
  assert noisy['comm_ms_raw'] == pytest.approx(-0.5)
  huge = scaling.create_breakdown(step_ms=10.0, fixed_batch_ms=4.0, comm_reference_ms=20.0,
                                  no_comm_ms=1.0)
  assert huge['input_ms'] + huge['comm_ms'] + huge['compute_ms'] == pytest.approx(10.0)
  assert huge['compute_ms'] == 0.0


def _worker(index, full, peak, rss, fit=False):
  rates = {'full': full, 'fixed_batch': [2000.0], 'no_comm': [2500.0]}
  if fit:
    rates['custom_fixed_batch'] = [2200.0]
  return {'engine': 'multi_worker', 'worker_index': index, 'num_workers': 2, 'num_replicas': 2,
          'devices': ['/cpu:0'], 'rates': rates, 'train_loss': 1.0,
          'comm_reference': scaling.comm_reference('fit' if fit else 'custom'),
          'max_rss_mb': rss, 'gpu_peak_mb': None, 'peak_flops_per_second': peak,
          'peak_matmul_size': 512, 'threads': {'intra_op': 1, 'inter_op': 1}, 'cpus': [index],
          'pinned': True, 'versions': {}, 'load_average': {'start': 1.0, 'end': 2.0},
          'seconds': 10.0, 'forward_flops_per_image': 1_000_000}


@pytest.mark.parametrize('loop', ['custom', 'fit'])
def test_summarize_run_takes_the_chiefs_clock_and_sums_peaks_and_memory(loop):
  config = default.get_config()
  config.loop = loop
  config.train.global_batch_size = 64
  plan = loops_bench.Plan((loop,), 20, 10, 10, 2)
  spec = {'run_id': 'r', 'session': {'machine_peak_flops_per_second': 1e10}}
  workers = [_worker(0, [1000.0, 1600.0, 1200.0], 4e9, 500.0, loop == 'fit'),
             _worker(1, [999.0], 3e9, 700.0, loop == 'fit')]
  result = scaling.summarize_run(workers, config, plan, spec)
  assert result['images_per_second'] == {'median': 1200.0, 'min': 1000.0, 'max': 1600.0,
                                         'runs': [1000.0, 1600.0, 1200.0]}
  assert result['step_ms'] == pytest.approx(1000 * 64 / 1200)
  breakdown = result['breakdown']
  reference = 2000.0 if loop == 'custom' else 2200.0
  assert breakdown['input_ms_raw'] == pytest.approx(result['step_ms'] - 1000 * 64 / 2000)
  assert breakdown['comm_ms_raw'] == pytest.approx(1000 * 64 / reference - 1000 * 64 / 2500)
  assert breakdown['comm_measured_with'] == ('same loop' if loop == 'custom' else 'custom loop')
  assert result['train_flops_per_image'] == 3_000_000
  assert result['achieved_flops_per_second'] == pytest.approx(1200 * 3e6)
  assert result['allocation_peak_flops_per_second'] == 7e9
  assert result['allocation_peak_fraction'] == pytest.approx(1200 * 3e6 / 7e9)
  assert result['machine_peak_fraction'] == pytest.approx(1200 * 3e6 / 1e10)
  assert (result['peak_rss_mb'], result['total_rss_mb']) == (700.0, 1200.0)
  assert result['per_replica_batch_size'] == 32 and result['run_id'] == 'r'
  assert result['worker_images_per_second'] == [1200.0, 999.0]
  assert result['cpu_busy'] is None and result['busiest_thread_share'] is None  # Not measured.


def test_cpu_use_is_each_workers_median_over_repeats_averaged_over_workers():
  def use(busy, share):
    return {'cpu_busy': busy, 'busiest_thread_share': share}

  workers = [{'cpu_use': {'full': [use(0.9, 0.7), use(0.5, 0.9), use(0.8, 0.8)],
                          'no_comm': [use(0.1, 0.1)]}},
             {'cpu_use': {'full': [use(0.6, 0.6)]}}]
  assert scaling.summarize_cpu_use(workers) == pytest.approx(
      {'cpu_busy': (0.8 + 0.6) / 2, 'busiest_thread_share': (0.8 + 0.6) / 2})
  assert scaling.summarize_cpu_use(workers, 'no_comm') == {'cpu_busy': None,
                                                           'busiest_thread_share': None}
  workers[1]['cpu_use']['full'] = [use(0.6, None)]  # No /proc on that worker.
  assert scaling.summarize_cpu_use(workers)['busiest_thread_share'] is None


def test_variants_remove_input_then_communication():
  engine = types.SimpleNamespace(name='x')
  custom = scaling.create_variants(engine, 'custom')
  assert list(custom) == ['full', 'fixed_batch', 'no_comm']
  assert [loop for loop, _ in custom.values()] == ['custom'] * 3
  fit = scaling.create_variants(engine, 'fit')
  assert list(fit) == ['full', 'fixed_batch', 'custom_fixed_batch', 'no_comm']
  assert [loop for loop, _ in fit.values()] == ['fit', 'fit', 'custom', 'custom']
  assert isinstance(fit['custom_fixed_batch'][1], scaling.FixedBatchEngine)


def test_fixed_batch_engine_repeats_the_first_batch(tiny_config):
  tiny_config.data.source = 'digits'
  engine = engines.create_engine(tiny_config.engine)  # mirrored x2 on logical CPU devices
  source = sources.create_source(tiny_config.data, tiny_config.seed)
  make = lambda ctx: datasets.create_train_dataset(tiny_config, source, ctx)  # noqa: E731
  fixed = iter(scaling.FixedBatchEngine(engine).distribute_dataset(make))
  real = iter(engine.distribute_dataset(make))
  first, second = next(fixed), next(fixed)
  real_first, real_second = next(real), next(real)
  images = lambda batch: [v.numpy() for v in engine.strategy.experimental_local_results(  # noqa
      batch[0])]
  assert all(np.array_equal(a, b) for a, b in zip(images(first), images(second)))
  assert all(np.array_equal(a, b) for a, b in zip(images(first), images(real_first)))
  assert not all(np.array_equal(a, b) for a, b in zip(images(real_first), images(real_second)))


def test_resnet50_forward_flops_match_the_known_figure():
  # ResNet-50 (no SE) at 224x224: about 4.1 G multiply-adds, i.e. 8.2 GFLOPs at 2 FLOPs each.
  config = default.get_config()
  config.model.name, config.model.se_ratio, config.model.batch_norm = 'resnet50', 0.0, 'local'
  config.data.source, config.data.synthetic_image_size = 'synthetic', 224
  config.data.synthetic_num_classes = 1000
  source = types.SimpleNamespace(image_shape=(224, 224, 3), num_classes=1000)
  flops = scaling.count_forward_flops(config, source)
  assert 4.0e9 <= flops / 2 <= 4.2e9, flops


def test_peak_matmul_gives_a_positive_rate():
  rate = scaling.measure_peak_flops(['/cpu:0'], size=128, repeats=2, min_seconds=0.01)
  assert math.isfinite(rate) and rate > 1e8


def test_memory_is_this_process_peak_rss():
  memory = scaling.measure_memory()
  assert memory['max_rss_mb'] > 50 and memory['gpu_peak_mb'] is None


def test_text_table_has_one_aligned_line_per_run_and_marks_failed_runs():
  results = sample_results() + [failed('horovod', 2)]
  rows = report.create_rows(results)
  lines = report.create_text_table(rows, report.row_fields(rows)).splitlines()
  assert lines[0].split()[:4] == ['engine', 'w', 'x', 'r']
  assert len(lines) == 1 + len(results)
  two = next(line for line in lines if line.startswith('mirrored') and '1 x 2' in line)
  assert '1800 [1620-1980]' in two and ' 0.90 ' in two
  assert lines[-1].split()[-1] == 'failed'
