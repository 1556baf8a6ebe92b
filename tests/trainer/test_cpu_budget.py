"""Each process's CPU share: from affinity, cgroup quota, Slurm and its neighbours; then applied."""

import json
import os

import pytest

from configs import default
from trainer import cpu_budget


def _cores(env=None, affinity=8, quota=None, machine_cpus=8):
  return cpu_budget.available_cores(env or {}, affinity, quota or 0, machine_cpus)[0]


def test_a_lone_process_gets_every_cpu_it_may_run_on():
  assert _cores() == 8
  assert _cores(affinity=3) == 3  # taskset / launch.local --pin_cpus / Slurm binding


def test_a_cgroup_quota_caps_the_share_rounded_down():
  assert _cores(quota=2.5) == 2
  assert _cores(quota=0.5) == 1  # Never below one thread.


def test_slurm_cpus_per_task_caps_the_share():
  assert _cores({'SLURM_CPUS_PER_TASK': '4'}) == 4


@pytest.mark.parametrize('env, cores', [
    ({'HOROVOD_LOCAL_SIZE': '4'}, 2),
    ({'TF_CONFIG': json.dumps({'cluster': {'worker': ['localhost:1', 'localhost:2']},
                               'task': {'type': 'worker', 'index': 0}})}, 4),
    ({'TF_CONFIG': json.dumps({'cluster': {'worker': ['localhost:1', 'node7.example:2']},
                               'task': {'type': 'worker', 'index': 0}})}, 8),
])
def test_local_processes_sharing_the_machine_split_it(env, cores):
  assert _cores(env) == cores


def test_a_process_already_confined_is_not_split_again():
  # launch.local --pin_cpus gives each of 2 workers 4 of the 8 CPUs: that is already its share.
  assert _cores({'HOROVOD_LOCAL_SIZE': '2'}, affinity=4) == 4


def test_the_limits_that_applied_are_reported():
  _, limits = cpu_budget.available_cores({'SLURM_CPUS_PER_TASK': '6', 'HOROVOD_LOCAL_SIZE': '2'},
                                         8, 5.0, 8)
  assert limits == {'affinity': 8, 'cgroup_quota': 5.0, 'slurm_cpus_per_task': 6,
                    'local_processes': 2}


def test_cgroup_v2_and_v1_quotas_are_read(tmp_path):
  (tmp_path / 'cpu.max').write_text('150000 100000\n')
  assert cpu_budget.cgroup_quota(str(tmp_path)) == 1.5
  (tmp_path / 'cpu.max').write_text('max 100000\n')
  assert cpu_budget.cgroup_quota(str(tmp_path)) is None
  v1 = tmp_path / 'v1'
  (v1 / 'cpu').mkdir(parents=True)
  (v1 / 'cpu' / 'cpu.cfs_quota_us').write_text('300000')
  (v1 / 'cpu' / 'cpu.cfs_period_us').write_text('100000')
  assert cpu_budget.cgroup_quota(str(v1)) == 3.0
  (v1 / 'cpu' / 'cpu.cfs_quota_us').write_text('-1')
  assert cpu_budget.cgroup_quota(str(v1)) is None


def test_thread_pools_follow_the_share_unless_overridden():
  config = default.get_config()
  budget = cpu_budget.compute_budget(config, {'HOROVOD_LOCAL_SIZE': '2'}, 8, 0, 8)
  assert (budget.cores, budget.intra_op_threads, budget.inter_op_threads,
          budget.tf_data_threads) == (4, 4, 2, 4)
  config.engine.intra_op_threads = 3
  config.engine.inter_op_threads = 5
  config.data.private_threadpool_size = 7
  budget = cpu_budget.compute_budget(config, {'HOROVOD_LOCAL_SIZE': '2'}, 8, 0, 8)
  assert (budget.intra_op_threads, budget.inter_op_threads, budget.tf_data_threads) == (3, 5, 7)


def test_budget_off_leaves_tensorflow_defaults():
  config = default.get_config()
  config.engine.cpu_budget = 'off'
  budget = cpu_budget.compute_budget(config, {}, 8, 0, 8)
  assert (budget.intra_op_threads, budget.inter_op_threads, budget.tf_data_threads) == (0, 0, 0)


@pytest.mark.slow
def test_two_local_workers_each_apply_half_the_machine(local_tiny_run):
  # The session's tiny run of 2 multi_worker workers through launch.local (shared, only read).
  workdir, result = local_tiny_run('multi_worker')
  with open(workdir / 'summary.json') as f:
    budget = json.load(f)['cpu_budget']
  share = max(1, len(os.sched_getaffinity(0)) // 2)
  assert budget['applied'] and budget['limits']['local_processes'] == 2
  assert (budget['cores'], budget['intra_op_threads'], budget['tf_data_threads']) == (share,) * 3
  assert 'CPU budget:' in result.stdout + result.stderr


@pytest.mark.slow
def test_benchmark_measures_both_settings_from_real_runs():
  from trainer.benchmarks import cpu_budget as bench  # pylint: disable=g-import-not-at-top
  results = bench.measure(['multi_worker'], 2, steps=50, repeats=1,
                          trainer_args=['--config.train.steps_per_loop=10'])
  runs = results['multi_worker']
  assert runs['auto']['budget']['applied'] and runs['auto']['budget']['intra_op_threads'] >= 1
  assert runs['off']['budget']['intra_op_threads'] == 0  # TensorFlow's defaults.
  assert all(runs[s]['images_per_second'] > 0 for s in bench.SETTINGS) and runs['ratio'] > 0
  assert 'auto / off' in bench.format_report(results, 2, 50, 1)
