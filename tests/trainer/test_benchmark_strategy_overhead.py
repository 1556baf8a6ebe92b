"""The strategy-overhead benchmark pairs default and mirrored x1 runs; it never asserts speed."""

import json
import math
import os
import subprocess
import sys

import pytest

from trainer.benchmarks import strategy_overhead as bench


def test_engine_configs_differ_only_in_the_engine(tiny_config):
  configs = bench.engine_configs(tiny_config)
  assert sorted(configs) == ['default', 'mirrored']
  for name, config in configs.items():
    assert (config.engine.name, config.engine.num_replicas) == (name, 1)
    config.engine.name = tiny_config.engine.name
    config.engine.num_replicas = tiny_config.engine.num_replicas
    assert config.to_dict() == tiny_config.to_dict()


def test_command_pins_one_cpu_pairs_every_repeat_and_writes_json(tmp_path, helpers):
  json_out = tmp_path / 'overhead.json'
  args = ['--config.train.steps_per_loop=5', '--steps=10', '--warmup_steps=5', '--repeats=2',
          f'--json_out={json_out}']
  proc = subprocess.run([sys.executable, '-m', 'trainer.benchmarks.strategy_overhead', *args],
                        cwd=helpers.repo, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.splitlines()[0] == (
      'Command: python -m trainer.benchmarks.strategy_overhead ' + ' '.join(args))
  results = json.loads(json_out.read_text())
  assert results['cpus'] == [0] and results['config']['malloc'] == 'retain'
  assert results['config']['devices'] == {'default': ['/cpu:0'], 'mirrored': ['/cpu:0']}
  assert list(results['loops']) == ['custom', 'fit']
  for loop, r in results['loops'].items():
    for name in ('default', 'mirrored'):
      assert len(r[name]['runs']) == 2 and all(x > 0 and math.isfinite(x) for x in r[name]['runs'])
      assert r[name]['page_faults_per_step'] >= 0
    # Each ratio pairs the two engines of the same repeat.
    assert r['ratios'] == pytest.approx(
        [m / d for m, d in zip(r['mirrored']['runs'], r['default']['runs'])])
    assert r['min'] <= r['ratio'] <= r['max']
    assert any(line.split()[:1] == [loop] and line.split()[-3] in ('pass', 'FAIL')
               for line in proc.stdout.splitlines()), proc.stdout


@pytest.mark.parametrize('args, message', [
    (['--loops=custom,keras'], '--loops=custom,keras'),
    (['--cpu=99'], '--cpu=99'),
    (['--steps=7', '--config.train.steps_per_loop=5'], '--steps=7'),
])
def test_bad_flags_exit_2_naming_the_value(helpers, args, message):
  proc = subprocess.run([sys.executable, '-m', 'trainer.benchmarks.strategy_overhead', *args],
                        cwd=helpers.repo, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert message in proc.stderr
