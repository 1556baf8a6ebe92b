"""The scaling model: its formulas, the alpha-beta fit, the published check, and the command."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from launch import sweep

from trainer.benchmarks import engines as engines_bench
from trainer.benchmarks import scaling_model as sm

_MODULE = 'trainer.benchmarks.scaling_model'
_WORKERS = sm.worker_counts(512, [3, 48])
# A small CNN on a fast link, and a VGG-like model on a slow one.
_CASES = [
    dict(compute_seconds=0.010, gradient_bytes=0.6e6, bandwidth_bytes_per_second=3.1e9,
         latency_seconds=10e-6, per_worker_batch=64),
    dict(compute_seconds=0.4, gradient_bytes=553e6, bandwidth_bytes_per_second=1.25e9,
         latency_seconds=50e-6, per_worker_batch=32),
]


def _curve(overlap, **case):
  return sm.predict_curve(workers=_WORKERS, overlap=overlap, **case)


@pytest.mark.parametrize('overlap', [False, True])
@pytest.mark.parametrize('case', _CASES)
def test_one_worker_is_the_compute_time_at_efficiency_one(case, overlap):
  one, = sm.predict_curve(workers=[1], overlap=overlap, **case)
  assert one == {'workers': 1, 'step_seconds': case['compute_seconds'], 'comm_seconds': 0.0,
                 'images_per_second': case['per_worker_batch'] / case['compute_seconds'],
                 'efficiency': 1.0}


@pytest.mark.parametrize('overlap', [False, True])
@pytest.mark.parametrize('case', _CASES)
def test_more_workers_never_step_faster_and_never_scale_better(case, overlap):
  curve = _curve(overlap, **case)
  assert [p['workers'] for p in curve] == _WORKERS
  for before, after in zip(curve, curve[1:]):
    assert after['step_seconds'] >= before['step_seconds']
    assert after['comm_seconds'] >= before['comm_seconds']
    assert after['efficiency'] <= before['efficiency']
    if before['workers'] >= 2:  # From 1 to 2 workers, communication can cost more than it adds.
      assert after['images_per_second'] > before['images_per_second']
  for p in curve:
    assert p['images_per_second'] == pytest.approx(
        p['workers'] * case['per_worker_batch'] / p['step_seconds'])
    assert p['efficiency'] == pytest.approx(
        p['images_per_second'] / (p['workers'] * curve[0]['images_per_second']))


@pytest.mark.parametrize('case', _CASES)
def test_overlap_is_never_slower_and_hides_at_most_the_backward_pass(case):
  for plain, overlapped in zip(_curve(False, **case), _curve(True, **case)):
    assert overlapped['comm_seconds'] == plain['comm_seconds']
    assert overlapped['step_seconds'] <= plain['step_seconds']
    assert overlapped['step_seconds'] >= case['compute_seconds']
    saved = plain['step_seconds'] - overlapped['step_seconds']
    assert saved == pytest.approx(min(plain['comm_seconds'],
                                      sm.BACKWARD_FRACTION * case['compute_seconds']))


def test_ring_all_reduce_time_is_the_textbook_formula():
  # p = 2: 2 steps of latency, n / B of data (each worker sends half, twice).
  assert sm.ring_allreduce_seconds(1e6, 2, 1e9, 1e-4) == pytest.approx(2e-4 + 1e-3)
  # p = 8, 4 buckets: 14 steps x 4 buckets of latency, 2 x 7/8 n / B.
  assert sm.ring_allreduce_seconds(1e6, 8, 1e9, 1e-4, buckets=4) == pytest.approx(
      14 * 4e-4 + 1.75e-3)
  assert sm.ring_allreduce_seconds(1e6, 1, 1e9, 1e-4) == 0.0
  assert sm.fusion_buckets(100e6, 64 * 2**20) == 2 and sm.fusion_buckets(100e6, 0) == 1


@pytest.mark.parametrize('case', _CASES)
def test_infinite_bandwidth_leaves_only_the_latency(case):
  case = dict(case, bandwidth_bytes_per_second=math.inf)
  for p in _curve(False, **case):
    latency = 2 * (p['workers'] - 1) * case['latency_seconds']
    assert p['comm_seconds'] == pytest.approx(latency)
    assert p['efficiency'] == pytest.approx(
        case['compute_seconds'] / (case['compute_seconds'] + latency))
  no_latency = dict(case, latency_seconds=0.0)
  assert all(p['efficiency'] == 1.0 for p in _curve(False, **no_latency))


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match='compute_seconds=0'):
    sm.predict_curve(0, 1e6, 1e9, 0, [1, 2], 32, False)
  with pytest.raises(ValueError, match='worker count 0'):
    sm.predict_curve(0.01, 1e6, 1e9, 0, [0], 32, False)
  with pytest.raises(ValueError, match='backward_fraction'):
    sm.predict_curve(0.01, 1e6, 1e9, 0, [1], 32, True, backward_fraction=1.5)


def test_worker_counts_are_powers_of_two_plus_the_asked_sizes():
  assert sm.worker_counts(512) == [2**i for i in range(10)]
  assert sm.worker_counts(16, [3, 48, 16]) == [1, 2, 3, 4, 8, 16, 48]


@pytest.mark.parametrize('workers', [2, 4])
def test_fit_recovers_latency_and_bandwidth_from_synthetic_ring_timings(workers):
  bandwidth, latency = 0.4e9, 300e-6  # This machine's local link is of this order.
  sizes = [kb * 1024 for kb in sm.DEFAULT_MESSAGE_KB]
  exact = [sm.ring_allreduce_seconds(n, workers, bandwidth, latency) for n in sizes]
  fitted = sm.point_to_point_from_ring(*sm.fit_alpha_beta(sizes, exact), workers)
  assert fitted == pytest.approx((bandwidth, latency), rel=1e-9)
  # With +-5% multiplicative noise, both stay within 10%.
  noise = np.random.default_rng(0).uniform(0.95, 1.05, len(sizes))
  noisy = sm.point_to_point_from_ring(*sm.fit_alpha_beta(sizes, exact * noise), workers)
  assert noisy[0] == pytest.approx(bandwidth, rel=0.1)
  assert noisy[1] == pytest.approx(latency, rel=0.1)


def test_fit_refuses_what_it_cannot_read():
  with pytest.raises(ValueError, match='2 distinct sizes'):
    sm.fit_alpha_beta([1024, 1024], [1e-3, 1.1e-3])
  with pytest.raises(ValueError, match='positive'):
    sm.fit_alpha_beta([1024, 4096], [1e-3, -1e-4])
  with pytest.raises(ValueError, match='does not grow'):
    sm.point_to_point_from_ring(1e-3, -1e-12, 2)
  assert sm.point_to_point_from_ring(-1e-5, 1e-9, 2)[1] == 0.0  # Negative intercept: no latency.


def test_published_check_reproduces_the_documented_numbers():
  # The figures of README's "Scaling model" section (25 Gbit/s, 10 us, 512 GPUs, batch 64).
  rows = {r['model']: r for r in sm.published_check()}
  assert sm.P100_IMAGES_PER_SECOND['resnet101'] == pytest.approx(129.4, abs=0.05)
  documented = {'ResNet-101': (44.6, 178, 495, 124, 0.80, 1.00, 0.90, 0.56),
                'VGG-16': (138.4, 553, 416, 364, 0.53, 0.83, 0.68, 0.46)}
  for model, (params, mb, compute, comm, plain, overlap, published, hidden) in documented.items():
    r = rows[model]
    assert round(r['parameters'] / 1e6, 1) == params and round(r['gradient_mb']) == mb
    assert round(r['compute_ms']) == compute and round(r['comm_ms']) == comm
    assert round(r['efficiency_no_overlap'], 2) == plain
    assert round(r['efficiency_overlap'], 2) == overlap
    assert r['published_efficiency'] == published and round(r['hidden_share'], 2) == hidden
    # Horovod's published efficiency lies between the model's no-overlap and full-overlap bounds.
    assert r['efficiency_no_overlap'] < published < r['efficiency_overlap']
  # With Horovod's 64 MB fusion buffers, each paying the ring latency (README's sensitivity note).
  fused = {r['model']: r for r in sm.published_check(fusion_buffer_bytes=64 * 2**20)}
  assert (fused['ResNet-101']['buckets'], fused['VGG-16']['buckets']) == (3, 9)
  assert round(fused['ResNet-101']['efficiency_no_overlap'], 2) == 0.77
  assert round(fused['VGG-16']['efficiency_overlap'], 2) == 0.71


def _engine_summary(full_rates, no_comm_rates, global_batch, workers=2):
  """`engines_bench.summarize_engine` of made-up worker results (images/s per repeat)."""
  results = [{'engine': 'multi_worker', 'worker_index': i, 'num_workers': workers,
              'num_replicas': workers, 'devices': ['/cpu:0'], 'full_rates': full_rates,
              'no_comm_rates': no_comm_rates, 'train_loss': 1.0, 'parameters': 1000,
              'allreduce_ms_runs': [3.0], 'fill_ms_runs': [0.1], 'threads': {}, 'cpus': [i],
              'versions': {}, 'load_average': {'start': 0.2, 'end': 0.4}} for i in range(workers)]
  return engines_bench.summarize_engine('multi_worker', results, global_batch)


def test_measured_run_check_compares_with_the_fastest_repeat():
  # 2 workers x 64 images: fastest full repeat 10 ms, fastest without all-reduce 8 ms.
  measured = _engine_summary([12800.0, 10000.0, 11000.0], [16000.0, 15000.0, 12000.0], 128)
  p2p = {'bandwidth_bytes_per_second': 0.5e9, 'latency_seconds': 250e-6}
  check = sm.measured_run_check(0.008, 0.5e6, p2p, measured, 64)
  # Predicted: 8 ms + 2 x 0.25 ms + 0.5 MB / 0.5 GB/s = 9.5 ms, 5% under 10 ms.
  assert check['predicted_step_ms'] == pytest.approx(9.5)
  assert check['measured_step_ms'] == pytest.approx(10.0)
  assert check['error'] == pytest.approx(-0.05) and check['within_10_percent']
  assert check['predicted_comm_ms'] == pytest.approx(1.5)
  assert check['measured_comm_ms'] == pytest.approx(2.0)
  assert check['measured_median_step_ms'] == pytest.approx(1000 * 128 / 11000)
  assert check['same_compute_step_ms'] == pytest.approx(8.0 + 1.5)  # Its own 8 ms without comm.
  assert check['same_compute_error'] == pytest.approx(-0.05)
  assert not sm.measured_run_check(0.006, 0.5e6, p2p, measured, 64)['within_10_percent']


def test_config_arguments_keep_only_the_config_flags():
  argv = ['prog', '--config=configs/mirrored.py', '--config.train.steps_per_loop=5', '--validate',
          '--config.model.name', 'resnet_cifar', '--network_gbits=25', '--compute_ms=3']
  assert sm.config_arguments(argv) == ['--config=configs/mirrored.py',
                                       '--config.train.steps_per_loop=5', '--config.model.name',
                                       'resnet_cifar']


def test_microbenchmark_workers_run_this_module_with_the_engine_benchmarks_set_up(tmp_path):
  workers = sm.allreduce_worker_processes('multi_worker', 2, ['--message_kb=4,64'], str(tmp_path),
                                          pin_cpus=False)
  reference = engines_bench.worker_processes('multi_worker', 2, ['--message_kb=4,64'],
                                             str(tmp_path), pin_cpus=False)
  for worker, engine_worker in zip(workers, reference):
    assert worker.argv[1:3] == ['-m', _MODULE]
    assert worker.argv[3:] == engine_worker.argv[3:]  # --worker, --result_dir, engine overrides.
    tf_config = json.loads(worker.env['TF_CONFIG'])
    assert tf_config['task'] == json.loads(engine_worker.env['TF_CONFIG'])['task']
    assert len(tf_config['cluster']['worker']) == 2


def _run(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', _MODULE, *args], capture_output=True, text=True,
                        timeout=timeout, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__)))))


def test_command_with_given_figures_measures_nothing_and_writes_json_and_plot(tmp_path):
  json_out, plot_out = tmp_path / 'model.json', tmp_path / 'model.png'
  proc = _run('--compute_ms=10', '--parameters=150000', '--per_worker_batch=64',
              '--p2p_bandwidth_gbits=3.2', '--p2p_latency_us=500', '--network_gbits=25,100',
              '--workers=3', f'--json_out={json_out}', f'--plot_out={plot_out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '[scaling]' not in proc.stdout  # Nothing was measured.
  results = json.loads(json_out.read_text())
  assert results['inputs']['compute_seconds'] == pytest.approx(0.010)
  assert results['inputs']['gradient_bytes'] == 600000
  assert results['workers'] == sm.worker_counts(512, [3])
  assert [link['name'] for link in results['networks']] == ['here', '25 Gbit/s', '100 Gbit/s']
  here = results['networks'][0]
  assert here['bandwidth_bytes_per_second'] == pytest.approx(0.4e9)
  expected = sm.predict_curve(0.010, 600000, 0.4e9, 500e-6, results['workers'], 64, False)
  for got, want in zip(here['curves']['no_overlap'], expected, strict=True):
    assert got == pytest.approx(want)
  for link in results['networks']:
    for name in ('no_overlap', 'overlap'):
      assert [p['workers'] for p in link['curves'][name]] == results['workers']
      assert all(0 < p['efficiency'] <= 1 for p in link['curves'][name])
  assert plot_out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  # The sweep draws these predictions beside its measured points (launch.sweep --predict_from).
  rows = sweep.load_predicted(str(json_out), max_workers=2)
  here_rows = [r for r in rows if r['label'] == 'here, no overlap']
  assert [r['workers'] for r in here_rows] == [1, 2]
  assert here_rows[1]['efficiency'] == pytest.approx(expected[1]['efficiency'])
  assert len(rows) == 2 + 2 * len(results['workers'])
  with pytest.raises(ValueError, match='not a scaling-model JSON'):
    sweep.load_predicted(str(plot_out), 2)
  assert '25 Gbit/s: B 25 Gbit/s' in proc.stdout and results['validation'] is None


def test_bad_flags_exit_2_naming_each_problem():
  proc = _run('--compute_ms=-1', '--p2p_bandwidth_gbits=3', '--network_gbits=25,fast',
              '--message_kb=4', '--parameters=1000')
  assert proc.returncode == 2, proc.stderr[-3000:]
  for part in ('--compute_ms=-1', '--p2p_latency_us', '--network_gbits', '--message_kb=4'):
    assert part in proc.stderr
  assert 'Command:' not in proc.stdout


@pytest.mark.slow
def test_command_runs_the_real_microbenchmark_with_tiny_sizes(tmp_path):
  json_out = tmp_path / 'model.json'
  pin = len(os.sched_getaffinity(0)) >= 2
  # Sizes 2,000x apart: the 8 MB all-reduce takes clearly longer than the 4 KB one even when
  # another test shares the machine (with 4-512 KB the fit once failed on such noise).
  proc = _run('--compute_ms=10', '--parameters=150000', '--message_kb=4,512,8192',
              '--allreduce_repeats=1', '--allreduce_iterations=5', '--max_workers=8',
              f'--pin_cpus={pin}', '--timeout_seconds=150', f'--json_out={json_out}', timeout=180)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  p2p = json.loads(json_out.read_text())['p2p']
  assert (p2p['engine'], p2p['workers']) == ('multi_worker', 2)
  assert [s['bytes'] for s in p2p['sizes']] == [4096, 524288, 8388608]
  assert all(s['seconds'] > 0 and s['iterations'] >= 3 for s in p2p['sizes'])
  assert 0 < p2p['bandwidth_bytes_per_second'] < math.inf and p2p['latency_seconds'] >= 0
  if pin:
    assert p2p['cpus'][0] != p2p['cpus'][1]
  assert 'All-reduce microbenchmark: multi_worker, 2 processes' in proc.stdout
