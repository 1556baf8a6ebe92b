"""The side-by-side benchmark pairs each worker's together and alone phases; it never asserts speed."""

import json
import math
import os
import subprocess
import sys

import pytest

from trainer.benchmarks import side_by_side as bench


def test_every_round_runs_each_phase_once_in_a_rotating_order():
  orders = [bench.phase_order(r) for r in range(4)]
  assert all(sorted(order) == sorted(bench.PHASES) for order in orders)
  assert [order[0] for order in orders] == ['together', 'alone 0', 'alone 1', 'together']
  assert bench.phase_workers('together') == (0, 1)
  assert bench.phase_workers('alone 1') == (1,)


def test_the_benchmark_config_differs_only_in_the_engine(tiny_config):
  config = bench.benchmark_config(tiny_config)
  assert (config.engine.name, config.engine.num_replicas) == ('default', 1)
  config.engine.name = tiny_config.engine.name
  config.engine.num_replicas = tiny_config.engine.num_replicas
  assert config.to_dict() == tiny_config.to_dict()


def _round(together, alone):
  phases = {'together': {w: {'images_per_second': together[w], 'cpu_busy': 1.0} for w in (0, 1)}}
  for w in (0, 1):
    phases[f'alone {w}'] = {w: {'images_per_second': alone[w], 'cpu_busy': 1.0}}
  return bench.add_ratios({'order': list(bench.PHASES), 'phases': phases})


def test_ratios_pair_each_worker_with_itself_and_summarize_takes_the_median_round():
  rounds = [_round((90, 80), (100, 100)), _round((50, 60), (100, 50)), _round((70, 70), (70, 100))]
  assert rounds[0]['ratios'] == pytest.approx([0.9, 0.8]) and rounds[0]['ratio'] == pytest.approx(0.85)
  assert rounds[1]['ratios'] == pytest.approx([0.5, 1.2])
  summary = bench.summarize(rounds)
  assert (summary['ratio'], summary['min'], summary['max']) == pytest.approx((0.85, 0.85, 0.85))
  summary = bench.summarize(rounds[:1] + [_round((60, 60), (100, 100))])
  assert (summary['min'], summary['max']) == pytest.approx((0.6, 0.85))
  assert summary['workers'][1]['alone_images_per_second'] == 100


@pytest.mark.parametrize('args, message', [
    (dict(rounds=0), '--rounds=0'),
    (dict(phase_steps=7), '--phase_steps=7'),
    (dict(warmup_steps=0), '--warmup_steps=0'),
    (dict(cpus=(0, 0)), '--cpus=0,0'),
    (dict(cpus=(0, 99)), '--cpus=0,99'),
])
def test_make_plan_names_each_bad_flag(tiny_config, args, message):
  flags = dict(rounds=2, phase_steps=10, warmup_steps=5, cpus=(0, 1), usable_cpus=[0, 1])
  with pytest.raises(ValueError, match=message):
    bench.make_plan(tiny_config, **{**flags, **args})


@pytest.mark.slow
def test_command_runs_two_pinned_workers_through_every_phase_and_writes_json(tmp_path, helpers):
  json_out = tmp_path / 'side_by_side.json'
  args = ['--config.train.steps_per_loop=5', '--rounds=2', '--phase_steps=10', '--warmup_steps=5',
          f'--json_out={json_out}']
  proc = subprocess.run([sys.executable, '-m', 'trainer.benchmarks.side_by_side', *args],
                        cwd=helpers.repo, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.splitlines()[0] == (
      'Command: python -m trainer.benchmarks.side_by_side ' + ' '.join(args))
  results = json.loads(json_out.read_text())
  assert results['cpus'] == [0, 1] and results['config']['loop'] == 'custom'
  assert len(results['rounds']) == 2
  for r in results['rounds']:
    assert sorted(r['phases']) == sorted(bench.PHASES)
    assert sorted(r['phases']['together']) == ['0', '1']  # JSON keys
    assert list(r['phases']['alone 1']) == ['1']
    for measured in r['phases'].values():
      for m in measured.values():
        assert m['images_per_second'] > 0 and 0 < m['cpu_busy'] <= 1.5
        assert math.isfinite(m['train_loss'])
    assert r['ratio'] == pytest.approx(sum(r['ratios']) / 2)
  s = results['summary']
  assert s['min'] <= s['ratio'] <= s['max']
  assert 'side-by-side ratio' in proc.stdout


@pytest.mark.parametrize('args, message', [
    (['--config.loop=eager'], "'eager'"),
    (['--cpus=0,x'], '--cpus=0,x'),
    (['--phase_steps=30', '--config.train.steps_per_loop=20'], '--phase_steps=30'),
])
def test_bad_flags_exit_2_naming_the_value(helpers, args, message):
  proc = subprocess.run([sys.executable, '-m', 'trainer.benchmarks.side_by_side', *args],
                        cwd=helpers.repo, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert message in proc.stderr
