"""The loop benchmark runs every loop and reports sane figures; never asserts speed (too noisy)."""

import json
import math
import os
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf

from input_pipeline import sources
from trainer import engines
from trainer import steps
from trainer.benchmarks import loops as bench

_LOOP_KEYS = {'images_per_second', 'min', 'max', 'runs', 'steps', 'train_loss', 'vs_fit',
              'vs_eager'}
_CONFIG_KEYS = {'engine', 'num_replicas', 'devices', 'model', 'global_batch_size',
                'steps_per_loop', 'data_source', 'tensorflow'}


def _assert_sane(results, loops, num_replicas):
  assert results['config'].keys() == _CONFIG_KEYS
  assert results['config']['num_replicas'] == num_replicas
  assert list(results['loops']) == list(loops)
  for name, result in results['loops'].items():
    assert result.keys() == _LOOP_KEYS, name
    assert len(result['runs']) == results['repeats']
    for rate in result['runs'] + [result['images_per_second']]:
      assert math.isfinite(rate) and rate > 0, (name, rate)
    assert math.isfinite(result['train_loss']), name
    assert result['vs_fit'] > 0 and result['vs_eager'] > 0
  assert results['loops']['fit']['vs_fit'] == pytest.approx(1.0)
  assert results['loops']['eager']['vs_eager'] == pytest.approx(1.0)


def test_command_prints_table_and_writes_json(tmp_path, helpers):
  json_out = tmp_path / 'loops.json'
  args = ['--config.engine.name=default', '--config.engine.num_replicas=1',
          '--config.train.steps_per_loop=2', '--steps=10', '--warmup_steps=2', '--repeats=1',
          f'--json_out={json_out}']
  proc = subprocess.run([sys.executable, '-m', 'trainer.benchmarks.loops', *args],
                        cwd=helpers.repo, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ))
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert lines[0] == 'Command: python -m trainer.benchmarks.loops ' + ' '.join(args)
  for loop in ('fit', 'custom', 'eager'):
    assert any(line.split()[:1] == [loop] for line in lines), proc.stdout
  results = json.loads(json_out.read_text())
  assert {'command', 'config', 'loops', 'steps', 'warmup_steps', 'eager_steps', 'repeats', 'cpus',
          'load_average'} <= results.keys()
  assert (results['steps'], results['warmup_steps'], results['eager_steps']) == (10, 2, 2)
  assert results['loops']['eager']['steps'] == 2
  assert results['load_average'].keys() == {'start', 'end'}
  _assert_sane(results, ('fit', 'custom', 'eager'), num_replicas=1)


def test_every_loop_runs_on_two_mirrored_replicas(tiny_config):
  plan = bench.make_plan(tiny_config, ['fit', 'custom', 'eager'], steps=10, warmup_steps=5,
                         eager_steps=5, repeats=1)
  results = bench.run_benchmark(tiny_config, plan)
  _assert_sane(results, plan.loops, num_replicas=2)
  assert results['config']['engine'] == 'mirrored'
  assert not tf.config.functions_run_eagerly()
  report = bench.format_report(results)
  assert 'engine mirrored x2' in report and 'eager is measured over 5 steps' in report


@pytest.mark.parametrize('loop, eager', [('custom', False), ('eager', True)])
def test_only_the_eager_loop_runs_train_step_eagerly(tiny_config, monkeypatch, loop, eager):
  # The premise of the benchmark: 'eager' is the custom loop without tf.function, nothing else.
  tiny_config.engine.name = 'default'
  tiny_config.engine.num_replicas = 1
  modes = []
  create_train_step = steps.create_train_step

  def create_spy(*args, **kwargs):
    train_step = create_train_step(*args, **kwargs)

    def spy(batch):
      modes.append(tf.executing_eagerly())
      return train_step(batch)
    return spy

  monkeypatch.setattr(steps, 'create_train_step', create_spy)
  plan = bench.make_plan(tiny_config, [loop], steps=5, warmup_steps=5, eager_steps=5, repeats=1)
  source = sources.create_source(tiny_config.data, tiny_config.seed)
  engine = engines.create_engine(tiny_config.engine)
  rate, metrics, _ = bench.measure_loop(loop, tiny_config, engine, source, plan)
  assert rate > 0 and math.isfinite(metrics['train_loss'])
  # Traced once inside tf.function, or called once per step (10 steps) without it.
  assert modes == ([True] * 10 if eager else [False])
  assert not tf.config.functions_run_eagerly()


def test_plan_rejects_bad_flags_at_once(tiny_config):
  with pytest.raises(ValueError) as error:
    bench.make_plan(tiny_config, ['fit', 'graph'], steps=12, warmup_steps=0, eager_steps=None,
                    repeats=0)
  message = str(error.value)
  for flag in ("'graph'", '--steps=12', '--warmup_steps=0', '--repeats=0'):
    assert flag in message


def test_eager_steps_default_to_a_quarter_of_steps_in_whole_windows(tiny_config):
  plan = bench.make_plan(tiny_config, ['eager'], steps=100, warmup_steps=5, eager_steps=None,
                         repeats=1)
  assert plan.eager_steps == 25 and plan.measured_steps('eager') == 25
  plan = bench.make_plan(tiny_config, ['eager'], steps=10, warmup_steps=5, eager_steps=None,
                         repeats=1)
  assert plan.eager_steps == 5  # At least one window of steps_per_loop=5.


def test_config_check_ignores_run_length_and_intervals(tiny_config):
  tiny_config.train.steps_per_loop = 7  # Not a divisor of num_train_steps or the intervals.
  bench.validate_config(tiny_config)
  tiny_config.train.global_batch_size = 63  # Not divisible by 2 replicas: still an error.
  with pytest.raises(ValueError, match='global_batch_size'):
    bench.validate_config(tiny_config)


def _spin(seconds):
  end = time.process_time() + seconds
  while time.process_time() < end:
    pass


def test_cpu_use_counts_busy_and_idle_time_the_busiest_thread_and_page_faults():
  clock = bench.StopwatchController(10, warmup_steps=5)
  clock.end_of_loop(5, {}, 0.0, False)
  _spin(0.3)  # This thread works...
  time.sleep(0.3)  # ...then the process waits.
  clock.end_of_loop(10, {}, 0.0, False)
  use = clock.cpu_use(cores=1)
  # Busy about half of the wall time (less if the machine is loaded: CPU time is what it got).
  assert 0.1 < use['cpu_busy'] < 0.7, use
  assert use['busiest_thread_share'] > 0.7, use  # Nearly all of it on this thread.
  assert use['page_faults_per_step'] >= 0

  clock = bench.StopwatchController(10, warmup_steps=5)
  clock.end_of_loop(5, {}, 0.0, False)
  fresh = b'\x01' * (64 << 20)  # Above glibc's largest mmap threshold: new pages, each faulted.
  clock.end_of_loop(10, {}, 0.0, False)
  del fresh
  # 64 MiB is 16,384 pages of 4 KiB over 5 steps (32 of 2 MiB with transparent huge pages).
  assert clock.cpu_use(cores=1)['page_faults_per_step'] >= 32 / 5

  clock = bench.StopwatchController(10, warmup_steps=5)
  clock.end_of_loop(5, {}, 0.0, False)
  done, release = [threading.Event() for _ in range(2)], threading.Event()

  def work(finished):
    _spin(0.2)
    finished.set()
    release.wait()  # Alive at the last stamp: a thread that has ended is not counted.

  workers = [threading.Thread(target=work, args=(event,)) for event in done]
  for worker in workers:
    worker.start()
  for event in done:
    event.wait()
  clock.end_of_loop(10, {}, 0.0, False)
  release.set()
  for worker in workers:
    worker.join()
  # Two threads did the work: neither used much more than half of it, and this one little.
  assert clock.cpu_use(cores=2)['busiest_thread_share'] < 0.75


def test_thread_cpu_seconds_lists_this_thread():
  seconds = bench.thread_cpu_seconds()
  assert str(threading.get_native_id()) in seconds and all(v >= 0 for v in seconds.values())
