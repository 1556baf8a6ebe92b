"""The scaling sweep (launch/sweep.py): grid parsing and errors, runs and their ids, Slurm scripts
(--dry_run, and stub sbatch/squeue), and real small sweeps: outputs, rerun skipping, a failing
run."""

import csv
import json
import math
import os
import stat
import subprocess
import sys

import pytest

from configs import default
from configs import sweep_resnet_cifar
from launch import sweep
from trainer.benchmarks import report
from trainer.benchmarks import scaling

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# A tiny measurement: digits, windows of 5 steps, 5 warm-up + 10 measured steps, one repeat.
TINY = ('--config.data.source=digits', '--config.train.steps_per_loop=5', '--steps=10',
        '--warmup_steps=5', '--repeats=1', '--peak_matmul_size=256', '--peak_repeats=2')
PIN = () if len(os.sched_getaffinity(0)) >= 2 else ('--nopin_cpus',)


def run_sweep_cli(*args, timeout=600, env=None):
  """`python -m launch.sweep ARGS` in a fresh process; returns the CompletedProcess."""
  return subprocess.run([sys.executable, '-m', 'launch.sweep', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, **(env or {})))


def settings(**overrides):
  return dict(sweep.DEFAULTS, **overrides)


def make_plan(entries=(), **overrides):
  """The plan of DEFAULTS with `overrides` and `--grid` `entries`, on 2 CPUs."""
  return sweep.create_plan(settings(**overrides), list(entries), default.get_config(), [0, 1])


def make_runs(entries=(), **overrides):
  plan = make_plan(entries, **overrides)
  return sweep.create_runs(plan, default.get_config(), ['--config=configs/default.py'])


# --- The grid -------------------------------------------------------------------------------------


def test_grid_entries_are_typed_like_their_fields():
  config = default.get_config()
  assert sweep.parse_grid_entry('train.jit_compile=[False,True]', config) == (
      'train.jit_compile', [False, True])
  assert sweep.parse_grid_entry('train.precision=float32,mixed_bfloat16', config) == (
      'train.precision', ['float32', 'mixed_bfloat16'])
  assert sweep.parse_grid_entry('train.steps_per_loop=5, 10', config) == (
      'train.steps_per_loop', [5, 10])
  assert sweep.parse_grid_entry('train.base_learning_rate=[0.1,1]', config) == (
      'train.base_learning_rate', [0.1, 1.0])
  assert sweep.parse_grid_entry('train.lr_boundaries=[(0.5,0.75),(0.3,)]', config) == (
      'train.lr_boundaries', [(0.5, 0.75), (0.3,)])
  assert sweep.parse_grid_entry("model.name='small_cnn',resnet_cifar", config) == (
      'model.name', ['small_cnn', 'resnet_cifar'])


@pytest.mark.parametrize('entry, message', [
    ('train.nosuch=1,2', "grid field 'train.nosuch': unknown config field"),
    ('engine.name=default', "grid field 'engine.name': set by the sweep itself; use --engines"),
    ('loop=fit', 'use --loops'),
    ('train.global_batch_size=64', 'use --batch_sizes with --scaling'),
    ('train=1', "grid field 'train': is a section, not a field"),
    ('train.jit_compile=[yes]', "--grid train.jit_compile: 'yes' is not True or False"),
    ('train.steps_per_loop=ten', "--grid train.steps_per_loop: 'ten' is not a int"),
    ('train.steps_per_loop=', '--grid=\'train.steps_per_loop=\': give at least one value'),
    ('train.steps_per_loop', 'must be FIELD=V1,V2 or FIELD=[V1,V2]'),
])
def test_bad_grid_entries_are_named(entry, message):
  with pytest.raises(ValueError) as error:
    make_plan([entry])
  assert message in str(error.value)


def test_every_plan_problem_is_listed_at_once():
  with pytest.raises(ValueError) as error:
    make_plan(['train.nosuch=1'], engines=[], workers=['a', 0], scaling=['weak', 'huge'],
              loops=['eager'], steps=0, rounds=0, grid={'model.width': []})
  text = str(error.value)
  assert text.startswith('Invalid sweep:')
  for needle in ('--engines: empty', "--workers: 'a' is not a positive integer",
                 '--workers: 0 is not a positive integer', "--scaling: unknown value 'huge'",
                 "--loops: unknown value 'eager' (choose among fit, custom)",
                 '--steps: 0 is not a positive integer', '--rounds: 0 is not a positive integer',
                 "'model.width': give at least one value",
                 "'train.nosuch': unknown config field"):
    assert needle in text, needle


def test_pinning_needs_a_cpu_per_worker_and_default_alone_needs_one_worker():
  with pytest.raises(ValueError, match='--pin_cpus needs one CPU per worker: --workers up to 4, '
                     '2 usable'):
    make_plan(workers=[1, 4])
  assert make_plan(workers=[1, 4], pin_cpus=False).workers == (1, 4)
  with pytest.raises(ValueError, match='the default engine runs only with --workers=1'):
    make_plan(engines=['default'], workers=[2])
  with pytest.raises(ValueError, match='does not fit the field'):
    make_plan(grid={'train.jit_compile': ['no']})


def test_sweep_small_config_defines_experiment_and_sweep():
  spec = sweep.load_sweep_spec(os.path.join(REPO, 'configs', 'sweep_small.py'))
  assert spec['engines'] == ['default', 'mirrored', 'multi_worker', 'horovod']
  plan = sweep.create_plan(settings(**spec), [], default.get_config(), [0, 1])
  assert len(sweep.create_runs(plan, default.get_config(), [])) == 7  # default x1, 3 engines x 2
  assert sweep.load_sweep_spec(os.path.join(REPO, 'configs', 'default.py')) == {}


def test_sweep_resnet_cifar_config_is_resnet20_with_local_batch_norm_in_paired_rounds():
  config = sweep_resnet_cifar.get_config()
  assert (config.model.name, config.model.batch_norm, config.data.source) == (
      'resnet_cifar', 'local', 'synthetic')
  spec = sweep.load_sweep_spec(os.path.join(REPO, 'configs', 'sweep_resnet_cifar.py'))
  plan = sweep.create_plan(settings(**spec), [], config, [0, 1])
  runs = sweep.create_runs(plan, config, [])
  # 2 engines x 2 loops x workers 1, 2, in 3 rounds; the windows fit the config's steps_per_loop.
  assert len(runs) == 24
  assert {(r.engine, r.loop, r.spec()['per_replica_batch_size']) for r in runs} == {
      (e, l, 64) for e in ('horovod', 'multi_worker') for l in ('custom', 'fit')}
  assert [r.workers for r in runs[:4]] == [1, 2, 1, 2]  # Round 1; round 2 reverses the order.
  assert [r.workers for r in runs[8:10]] == [2, 1]


# --- Runs -----------------------------------------------------------------------------------------


def test_runs_cover_the_grid_with_workers_innermost_and_default_only_once():
  runs = make_runs(['train.jit_compile=False,True'], engines=['default', 'mirrored'],
                   workers=[1, 2], batch_sizes=[16], scaling=['weak', 'strong'])
  layout = [(r.engine, r.scaling, r.fields['train.jit_compile'], r.workers) for r in runs]
  assert layout[:4] == [('default', 'weak', False, 1), ('default', 'weak', True, 1),
                        ('default', 'strong', False, 1), ('default', 'strong', True, 1)]
  assert layout[4:8] == [('mirrored', 'weak', False, 1), ('mirrored', 'weak', False, 2),
                         ('mirrored', 'weak', True, 1), ('mirrored', 'weak', True, 2)]
  assert len(runs) == 4 + 8
  weak2, strong2 = runs[5], runs[9]
  assert (weak2.global_batch_size, weak2.spec()['per_replica_batch_size']) == (32, 16)
  assert (strong2.global_batch_size, strong2.spec()['per_replica_batch_size']) == (16, 8)
  assert weak2.run_id.startswith('mirrored-x2-weak16-custom-')
  assert len({r.run_id for r in runs}) == len(runs)
  assert '--config.train.jit_compile=False' in weak2.worker_args
  assert '--config.train.global_batch_size=32' in weak2.worker_args
  assert all(r.error is None for r in runs)


def test_run_ids_are_stable_and_change_with_anything_that_defines_the_run():
  first, again = make_runs(engines=['mirrored']), make_runs(engines=['mirrored'])
  assert [r.run_id for r in first] == [r.run_id for r in again]
  assert make_runs(engines=['mirrored'], steps=200)[0].run_id != first[0].run_id
  assert make_runs(engines=['mirrored'], pin_cpus=False)[0].run_id != first[0].run_id
  assert make_runs(['model.width=16'], engines=['mirrored'])[0].run_id != first[0].run_id


def test_rounds_repeat_the_grid_with_worker_counts_in_alternating_order():
  runs = make_runs(engines=['default', 'horovod'], workers=[1, 2], loops=['custom', 'fit'],
                   rounds=3)
  layout = [(r.sweep_round, r.engine, r.loop, r.workers) for r in runs]
  one_round = [('default', 'custom', 1), ('default', 'fit', 1), ('horovod', 'custom', 1),
               ('horovod', 'custom', 2), ('horovod', 'fit', 1), ('horovod', 'fit', 2)]
  reverse = [('default', 'custom', 1), ('default', 'fit', 1), ('horovod', 'custom', 2),
             ('horovod', 'custom', 1), ('horovod', 'fit', 2), ('horovod', 'fit', 1)]
  assert layout == ([(1, *cell) for cell in one_round] + [(2, *cell) for cell in reverse] +
                    [(3, *cell) for cell in one_round])
  assert len({r.run_id for r in runs}) == len({r.digest for r in runs}) == len(runs)
  assert runs[9].run_id.startswith('horovod-x1-weak32-custom-r2-')
  assert runs[9].spec()['round'] == 2
  # Each round is its own measurement with an id that does not change with --rounds; one round
  # keeps the ids of a sweep without rounds.
  assert [r.run_id for r in make_runs(engines=['horovod'], rounds=2)] == [
      r.run_id for r in runs if r.engine == 'horovod' and r.loop == 'custom' and
      r.sweep_round <= 2]
  plain = make_runs(engines=['horovod'])
  assert plain[0].run_id.startswith('horovod-x1-weak32-custom-') and '-r1-' not in (
      plain[0].run_id)
  assert [r.run_id for r in plain] == [r.run_id for r in make_runs(engines=['horovod'],
                                                                   rounds=1)]


def test_a_cell_with_an_invalid_value_carries_its_error():
  runs = make_runs(['model.batch_norm=none,bogus'], engines=['mirrored'], workers=[1])
  assert runs[0].error is None
  assert "model.batch_norm='bogus': must be one of 'none', 'local', 'sync'" in runs[1].error
  strong = make_runs(engines=['mirrored'], workers=[1, 2], scaling=['strong'], batch_sizes=[15])
  assert strong[0].error is None and 'train.global_batch_size=15' in strong[1].error
  misfit = make_runs(['train.steps_per_loop=7'], engines=['mirrored'], workers=[1], steps=100)
  assert '--steps=100: must be a positive multiple of config.train.steps_per_loop=7' in (
      misfit[0].error)


def test_default_steps_are_whole_windows_of_each_cell():
  runs = make_runs(['train.steps_per_loop=7,50'], engines=['mirrored'], workers=[1])
  assert [r.error for r in runs] == [None, None]
  assert {'--warmup_steps=7', '--steps=105'} <= set(runs[0].worker_args)
  assert {'--warmup_steps=50', '--steps=100'} <= set(runs[1].worker_args)


def test_a_run_whose_config_fails_is_recorded_without_starting_anything(tmp_path):
  run = make_runs(['model.batch_norm=bogus'], engines=['mirrored'], workers=[1])[0]
  plan = make_plan(engines=['mirrored'], workers=[1])
  result = sweep.run_local(run, str(tmp_path), plan, {'started': 'now'}, [0, 1])
  assert result['status'] == 'failed' and "model.batch_norm='bogus'" in result['error']
  directory = tmp_path / 'runs' / run.run_id
  assert sorted(os.listdir(directory)) == ['result.json', 'spec.json']
  with open(directory / 'result.json') as f:
    assert json.load(f)['spec']['engine'] == 'mirrored'
  assert sweep.is_done(result, rerun_failed=False) and not sweep.is_done(result, True)
  assert not sweep.is_done(None, False)


@pytest.mark.parametrize('engine, processes', [('default', 1), ('mirrored', 1),
                                               ('multi_worker', 2), ('horovod', 1)])
def test_workers_run_the_scaling_module_on_their_cpu_shares(engine, processes):
  if engine == 'horovod' and not os.path.exists(os.path.join(os.path.dirname(sys.executable),
                                                             'horovodrun')):
    pytest.skip('horovodrun is not installed')
  workers = 1 if engine == 'default' else 2
  run = make_runs(engines=[engine], workers=[workers])[0]
  plan = make_plan(engines=[engine], workers=[1, 2])
  with sweep.cpu_allocation(sweep.run_cpus(run, plan, [0, 1])):
    started = sweep.create_worker_processes(run, '/tmp/r', pin_cpus=True)
  assert len(started) == processes
  for worker in started:
    assert 'trainer.benchmarks.engines' not in worker.argv
    assert worker.argv[worker.argv.index(scaling.MODULE) - 1] == '-m'
    assert '--worker' in worker.argv and '--result_dir=/tmp/r' in worker.argv
  if engine == 'multi_worker':
    assert [w.cpus for w in started] == [[0], [1]]
  if engine == 'default':
    assert started[0].cpus == [0]  # One share, as each worker of a 2-worker run gets.


def test_run_cpus_give_each_worker_one_share():
  plan = make_plan(workers=[1, 2])
  run1, run2 = make_runs(engines=['mirrored'], workers=[1, 2])
  assert sweep.run_cpus(run1, plan, [0, 1, 2, 3]) == [0, 1]
  assert sweep.run_cpus(run2, plan, [0, 1, 2, 3]) == [0, 1, 2, 3]
  assert sweep.run_cpus(run2, make_plan(pin_cpus=False), [0, 1]) is None


def test_error_line_is_convoys_own_or_the_exception_not_cuda_noise():
  lines = ['[w] E0000 cuda_driver.cc:152] failed call to cuInit: INTERNAL: CUDA error: Failed',
           '[w] Traceback (most recent call last):', '[w] ValueError: boom',
           '[launch] w exited with code 1; stopping the others']
  assert sweep.extract_error(lines, 1) == 'exit code 1: [w] ValueError: boom'
  assert sweep.extract_error(lines + ['[w] convoy: error: no data'], 4) == (
      'exit code 4: [w] convoy: error: no data')
  assert not sweep.is_error_line(lines[0])
  assert sweep.extract_error([], 124) == 'exit code 124: no output'
  assert sweep.format_duration(3725) == '1h02m' and sweep.format_duration(65) == '1m05s'


# --- Command line ---------------------------------------------------------------------------------


def test_bad_command_lines_exit_2_naming_every_problem(tmp_path):
  result = run_sweep_cli(f'--out_dir={tmp_path}', '--engines=', '--workers=1,x',
                         '--grid=train.nosuch=1,2', '--grid=train.jit_compile=maybe')
  assert result.returncode == 2, result.stderr
  for needle in ('Invalid sweep:', '--engines: empty', "--workers: 'x' is not a positive integer",
                 "grid field 'train.nosuch': unknown config field",
                 "--grid train.jit_compile: 'maybe' is not True or False"):
    assert needle in result.stderr, needle
  assert not os.listdir(tmp_path)
  reserved = run_sweep_cli('--config.loop=fit', '--time=00:10:00')
  assert reserved.returncode == 2
  for needle in ('invalid command line:', '--out_dir is required',
                 '--time: a Slurm option; add --slurm',
                 '--config.loop: set by the sweep itself; use --loops'):
    assert needle in reserved.stderr, needle


def test_slurm_dry_run_prints_one_script_per_run_and_submits_nothing(tmp_path):
  out = tmp_path / 'out'
  result = run_sweep_cli(f'--out_dir={out}', '--slurm', '--dry_run', '--engines=mirrored,'
                         'multi_worker,horovod', '--workers=1,2', '--time=00:20:00',
                         '--partition=debug', '--tasks_per_node=1', '--cpus_per_task=4',
                         '--setup_line=module load tf', *TINY)
  assert result.returncode == 0, result.stderr
  scripts = result.stdout.split('#!/bin/bash\n')[1:]
  assert len(scripts) == 6
  by_run = {}
  for script in scripts:
    run_id = next(line.split('runs/')[1].split('/')[0] for line in script.splitlines()
                  if line.startswith('#SBATCH --output='))
    by_run[run_id.split('-weak')[0]] = script
  assert sorted(by_run) == ['horovod-x1', 'horovod-x2', 'mirrored-x1', 'mirrored-x2',
                            'multi_worker-x1', 'multi_worker-x2']
  mw2 = by_run['multi_worker-x2']
  for needle in ('#SBATCH --nodes=2\n', '#SBATCH --ntasks-per-node=1\n', '#SBATCH --time=00:20:00',
                 '#SBATCH --partition=debug', '#SBATCH --cpus-per-task=4', 'module load tf',
                 f'#SBATCH --output={out}/runs/multi_worker-x2-weak32-custom-',
                 '-m trainer.benchmarks.scaling', '--worker', f'--result_dir={out}/runs/',
                 '--pin_cpus=False', '--config.engine.name=multi_worker',
                 '--config.train.global_batch_size=64', '--steps=10'):
    assert needle in mw2, needle
  assert '#SBATCH --nodes=1\n' in by_run['mirrored-x2'] and (
      '--config.engine.num_replicas=2' in by_run['mirrored-x2'])
  assert 'launch.slurm horovod-task --' in by_run['horovod-x2']
  assert not out.exists()


def test_local_dry_run_with_rounds_lists_every_round_in_order(tmp_path):
  result = run_sweep_cli(f'--out_dir={tmp_path / "out"}', '--dry_run', '--engines=multi_worker',
                         '--workers=1,2', '--rounds=2', *TINY, *PIN)
  assert result.returncode == 0, result.stderr
  listed = [line.split()[3].rstrip(':') for line in result.stdout.splitlines()
            if line.startswith('[sweep] run ')]
  assert [run_id.split('-weak')[0] + run_id.split('custom')[1][:3] for run_id in listed] == [
      'multi_worker-x1-r1', 'multi_worker-x2-r1', 'multi_worker-x2-r2', 'multi_worker-x1-r2']


def _stub(directory, name, body):
  path = directory / name
  path.write_text('#!/bin/sh\n' + body)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_jobs_are_submitted_once_tracked_and_collected(tmp_path):
  stubs, out = tmp_path / 'bin', tmp_path / 'out'
  stubs.mkdir()
  _stub(stubs, 'sbatch', f'cat > {stubs}/script.$$\necho "$$;cluster"\n')
  _stub(stubs, 'squeue', f'cat {tmp_path}/queue 2>/dev/null\n')
  env = {'PATH': f'{stubs}{os.pathsep}{os.environ["PATH"]}'}
  args = (f'--out_dir={out}', '--slurm', '--engines=mirrored', '--workers=1,2', *TINY)
  first = run_sweep_cli(*args, '--nowait', env=env)
  assert first.returncode == 0, first.stderr
  assert first.stdout.count('submitted as job') == 2
  jobs = sorted(json.load(open(p))['job_id'] for p in
                [out / 'runs' / d / 'job.json' for d in os.listdir(out / 'runs')])
  assert len(jobs) == 2 and len([p for p in os.listdir(stubs) if p.startswith('script.')]) == 2
  with open(out / 'results.csv') as f:
    assert [row['status'] for row in csv.DictReader(f)] == ['missing', 'missing']
  (tmp_path / 'queue').write_text('\n'.join(jobs) + '\n')
  second = run_sweep_cli(*args, '--nowait', env=env)
  assert second.returncode == 0 and second.stdout.count('still in Slurm as job') == 2
  assert len([p for p in os.listdir(stubs) if p.startswith('script.')]) == 2
  (tmp_path / 'queue').write_text('')
  third = run_sweep_cli(*args, env=env)  # Waits: the jobs are gone without a result.
  assert third.returncode == 1, third.stdout + third.stderr
  assert third.stdout.count('ended, FAILED') == 2
  with open(out / 'results.json') as f:
    runs = json.load(f)['runs']
  assert {r['status'] for r in runs} == {'failed'}
  assert all(r['error'].startswith('job ') and 'no output file' in r['error'] for r in runs)


# --- Real small sweeps ----------------------------------------------------------------------------


def _csv_rows(out):
  with open(os.path.join(out, 'results.csv')) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_small_sweep_writes_every_output_and_a_rerun_skips_finished_runs(tmp_path):
  out = str(tmp_path / 'sweep')
  args = (f'--out_dir={out}', '--engines=mirrored,multi_worker', '--workers=1,2',
          '--batch_sizes=16', *TINY, *PIN)
  result = run_sweep_cli(*args)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert '4 to run' in result.stdout and 'run 4/4' in result.stdout and 'ETA' in result.stdout
  assert sorted(os.listdir(out)) == ['breakdown.png', 'efficiency.png', 'machine.json',
                                     'report.md', 'results.csv', 'results.json', 'runs',
                                     'throughput.png']
  rows = _csv_rows(out)
  assert [(r['engine'], r['replicas']) for r in rows] == [
      ('mirrored', '1'), ('mirrored', '2'), ('multi_worker', '1'), ('multi_worker', '2')]
  for row in rows:
    assert row['status'] == 'ok', row
    for name in report.NUMERIC_COLUMNS + ('scaling_efficiency', 'machine_peak_flops_per_second',
                                          'machine_peak_fraction'):
      value = float(row[name])
      assert math.isfinite(value), (name, row)
      if name not in ('input_ms_raw', 'comm_ms_raw', 'compute_ms_raw', 'input_ms', 'comm_ms',
                      'compute_ms'):
        assert value > 0, (name, row)
    parts = float(row['input_ms']) + float(row['compute_ms']) + float(row['comm_ms'])
    assert parts == pytest.approx(float(row['step_ms']))
    assert row['comm_measured_with'] == 'same loop' and row['gpu_peak_mb'] == ''
    # Processes cannot use more than their cores; one thread does most of the work.
    assert 0 < float(row['cpu_busy']) <= 1.05 and 0 < float(row['busiest_thread_share']) <= 1
  assert float(rows[0]['scaling_efficiency']) == 1.0
  assert rows[1]['efficiency_baseline'] == rows[0]['run_id']
  assert float(rows[0]['forward_flops_per_image']) == float(rows[3]['forward_flops_per_image'])
  if not PIN:
    assert rows[3]['cpus'] == '0 | 1' and rows[3]['threads'] == '1/1'
  with open(os.path.join(out, 'results.json')) as f:
    data = json.load(f)
  assert [r['run_id'] for r in data['runs']] == [r['run_id'] for r in rows]
  assert data['meta']['command'].startswith('python -m launch.sweep --out_dir=')
  for name in ('throughput', 'efficiency', 'breakdown'):
    with open(os.path.join(out, f'{name}.png'), 'rb') as f:
      assert f.read().startswith(PNG_MAGIC)
  with open(os.path.join(out, 'report.md')) as f:
    text = f.read()
  assert all(f"`{r['run_id']}`" in text for r in rows)
  assert '![Throughput](throughput.png)' in text and 'GFLOP/s, float32 256x256 matmul' in text
  mw2 = os.path.join(out, 'runs', rows[3]['run_id'])
  assert sorted(os.listdir(mw2)) == ['log.txt', 'multi_worker.0.json', 'multi_worker.1.json',
                                     'result.json', 'spec.json']
  stamps = {r['run_id']: os.path.getmtime(os.path.join(out, 'runs', r['run_id'], 'result.json'))
            for r in rows}

  rerun = run_sweep_cli(*args)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert '4 finished earlier (skipped), 0 to run' in rerun.stdout
  assert rerun.stdout.count(': skipped, ok:') == 4 and 'machine peak' not in rerun.stdout
  assert stamps == {r['run_id']: os.path.getmtime(os.path.join(out, 'runs', r['run_id'],
                                                               'result.json')) for r in rows}
  assert [r['images_per_second'] for r in _csv_rows(out)] == [r['images_per_second']
                                                              for r in rows]


@pytest.mark.slow
def test_a_failing_run_is_recorded_with_its_error_and_the_others_complete(tmp_path):
  out = str(tmp_path / 'sweep')
  args = (f'--out_dir={out}', '--engines=default', '--workers=1', '--batch_sizes=16',
          '--grid=data.tfds_name=no_such_dataset,convoy_digits', *TINY[1:], '--peak_matmul_size=64',
          '--config.data.source=tfds')
  result = run_sweep_cli(*args)
  assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
  rows = _csv_rows(out)
  assert [(r['data.tfds_name'], r['status']) for r in rows] == [('no_such_dataset', 'failed'),
                                                                 ('convoy_digits', 'ok')]
  assert rows[0]['error'].startswith('exit code 4: [default] convoy: error: '
                                     "data.tfds_name='no_such_dataset'"), rows[0]['error']
  assert 'FAILED: exit code 4' in result.stdout and '1 ok, 1 failed' in result.stdout
  with open(os.path.join(out, 'runs', rows[0]['run_id'], 'result.json')) as f:
    failed = json.load(f)
  assert failed['exit_code'] == 4 and failed['error_tail']
  with open(os.path.join(out, 'report.md')) as f:
    assert "no_such_dataset" in f.read().split('## Failed or missing runs')[1]
  kept = run_sweep_cli(*args, '--norerun_failed')
  assert kept.returncode == 1 and '2 finished earlier (skipped), 0 to run' in kept.stdout
