"""The step benchmark measures the bare step, both loops and the peak, and relates them."""

import math
import subprocess
import sys

from trainer.benchmarks import step as bench


def test_measures_every_variant_in_both_precisions(tiny_config):
  tiny_config.engine.name = 'default'
  tiny_config.engine.num_replicas = 1
  plan = bench.make_plan(tiny_config, steps=5, warmup_steps=5, repeats=1)
  results = bench.measure(tiny_config, ['float32', 'mixed_bfloat16'], plan)
  assert results['peak_flops'] > 0
  for by_variant in results['precisions'].values():
    assert by_variant['flops_per_image'] > 0
    for name in ('bare', *bench.LOOPS):
      r = by_variant[name]
      assert r['images_per_second'] > 0 and 0 < r['of_peak'] < 1 and math.isfinite(r['of_bare'])
    assert by_variant['bare']['of_bare'] == 1
  assert set(results['bfloat16_speedup']) == {'bare', 'custom', 'fit'}
  report = bench.format_report(results, tiny_config)
  assert 'of peak' in report and 'mixed_bfloat16 / float32 (custom)' in report


def test_command_rejects_steps_off_the_window_before_measuring(helpers):
  proc = subprocess.run([sys.executable, '-m', 'trainer.benchmarks.step', '--steps=4',
                         '--warmup_steps=3'], cwd=helpers.repo, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert '--steps=4: must be a positive multiple of config.train.steps_per_loop=5' in proc.stderr
  assert '--warmup_steps=3' in proc.stderr
  assert 'Command:' not in proc.stdout  # Stopped before the engine and the peak matmul.
