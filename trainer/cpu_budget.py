"""Each process's share of the CPU, and TensorFlow's and tf.data's thread pools sized from it.

Without a budget every worker or rank on a node sizes its pools for the whole machine (TensorFlow's
intra-op and inter-op pools and tf.data's pool all default to the machine's core count), so N
processes run N x cores threads on the cores and steal time from each other. Convoy computes what
this process may really use:

* the CPUs it may run on (`os.sched_getaffinity`: taskset, `launch.local --pin_cpus`, Slurm's task
  binding, a container's cpuset);
* a cgroup CPU quota (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`): a
  container or a Slurm job confined by time rather than by CPU set;
* `SLURM_CPUS_PER_TASK`, when Slurm did not bind the task;
* and, when the process is not confined to part of the machine, the local processes that share it:
  Horovod's `HOROVOD_LOCAL_SIZE`, or the workers of TF_CONFIG's cluster on this host.

The share (at least 1) sizes the intra-op pool (threads of one op), the tf.data private pool, and
the inter-op pool (ops run at once: 2, or one per local replica if more). Positive
`engine.intra_op_threads` / `engine.inter_op_threads` and `data.private_threadpool_size` override
the computed values; `engine.cpu_budget='off'` leaves TensorFlow's defaults.
"""

import dataclasses
import json
import math
import os
import socket

from absl import logging
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class CpuBudget:
  """What this process may use and the thread counts set from it (written to summary.json)."""
  machine_cpus: int  # os.cpu_count()
  cores: int  # this process's share
  limits: dict  # what bounded it: {'affinity': n, 'cgroup_quota': x, 'slurm_cpus_per_task': n, ...}
  intra_op_threads: int  # 0: TensorFlow's default
  inter_op_threads: int  # 0: TensorFlow's default
  tf_data_threads: int  # 0: tf.data's shared pool
  applied: bool  # False if TensorFlow had already started (thread pools are fixed then)

  def to_dict(self):
    """The budget as a JSON-ready dict."""
    return dataclasses.asdict(self)


def _read(path):
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return None


def cgroup_quota(root='/sys/fs/cgroup'):
  """CPUs allowed by this process's cgroup quota (a float), or None when unlimited or unknown."""
  v2 = _read(os.path.join(root, 'cpu.max'))
  if v2:
    quota, _, period = v2.partition(' ')
    if quota != 'max' and period:
      return int(quota) / int(period)
    return None
  quota, period = (_read(os.path.join(root, 'cpu', name))
                   for name in ('cpu.cfs_quota_us', 'cpu.cfs_period_us'))
  if quota and period and int(quota) > 0:
    return int(quota) / int(period)
  return None


def _same_host(host):
  return host.split(':')[0] in ('localhost', '127.0.0.1', socket.gethostname(),
                                socket.getfqdn())


def local_processes(env):
  """Training processes of this job on this machine (1 when unknown)."""
  if env.get('HOROVOD_LOCAL_SIZE'):
    return max(1, int(env['HOROVOD_LOCAL_SIZE']))
  if env.get('TF_CONFIG'):
    try:
      cluster = json.loads(env['TF_CONFIG']).get('cluster', {})
    except ValueError:
      return 1
    hosts = [address for role in ('chief', 'worker') for address in cluster.get(role, [])]
    return max(1, sum(_same_host(address) for address in hosts))
  return 1


def affinity_cpus():
  """How many CPUs this process may run on (its affinity), or None where that is unknown."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None


def available_cores(env=None, affinity=None, quota=None, machine_cpus=None):
  """(cores this process may use, the limits that applied) from affinity, quota, Slurm, neighbours.

  Args default to this process's values; tests pass their own.
  """
  env = os.environ if env is None else env
  machine_cpus = machine_cpus or os.cpu_count() or 1
  if affinity is None:
    affinity = affinity_cpus() or machine_cpus
  quota = cgroup_quota() if quota is None else quota
  limits = {'affinity': affinity}
  cores = affinity
  if quota:
    limits['cgroup_quota'] = quota
    cores = min(cores, max(1, math.floor(quota)))
  if env.get('SLURM_CPUS_PER_TASK'):
    limits['slurm_cpus_per_task'] = int(env['SLURM_CPUS_PER_TASK'])
    cores = min(cores, limits['slurm_cpus_per_task'])
  neighbours = local_processes(env)
  if neighbours > 1 and affinity >= machine_cpus:
    # Not confined to part of the machine: the job's local processes share all of it.
    limits['local_processes'] = neighbours
    cores = max(1, cores // neighbours)
  return max(1, cores), limits


def compute_budget(config, env=None, affinity=None, quota=None, machine_cpus=None):
  """The CpuBudget of `config` for this process (nothing is applied)."""
  machine_cpus = machine_cpus or os.cpu_count() or 1
  cores, limits = available_cores(env, affinity, quota, machine_cpus)
  engine = config.engine
  if engine.cpu_budget == 'off':
    intra, inter, data_threads = 0, 0, 0
  else:
    intra, inter, data_threads = cores, max(2, engine.num_replicas), cores
  if engine.intra_op_threads > 0:
    intra = engine.intra_op_threads
  if engine.inter_op_threads > 0:
    inter = engine.inter_op_threads
  if config.data.private_threadpool_size > 0:
    data_threads = config.data.private_threadpool_size
  return CpuBudget(machine_cpus=machine_cpus, cores=cores, limits=limits, intra_op_threads=intra,
                   inter_op_threads=inter, tf_data_threads=data_threads, applied=False)


def apply_budget(budget):
  """Sets TensorFlow's thread pools from `budget`; must run before TensorFlow starts.

  Returns:
    The budget with `applied` True, or False (with a warning) if TensorFlow had already started.
  """
  try:
    if budget.intra_op_threads:
      tf.config.threading.set_intra_op_parallelism_threads(budget.intra_op_threads)
    if budget.inter_op_threads:
      tf.config.threading.set_inter_op_parallelism_threads(budget.inter_op_threads)
  except RuntimeError:
    # Thread pools are created with the runtime; a process that already ran TensorFlow (a test,
    # a notebook) keeps them. Only this case lands here.
    same = (tf.config.threading.get_intra_op_parallelism_threads() == budget.intra_op_threads and
            tf.config.threading.get_inter_op_parallelism_threads() == budget.inter_op_threads)
    if not same:
      logging.warning('CPU budget not applied: TensorFlow had already started in this process '
                      '(its thread pools stay as they are)')
    return dataclasses.replace(budget, applied=same)
  logging.info('CPU budget: %d of %d CPU(s) (%s): intra-op %s, inter-op %s, tf.data %s threads',
               budget.cores, budget.machine_cpus,
               ', '.join(f'{k}={v}' for k, v in budget.limits.items()),
               budget.intra_op_threads or 'default', budget.inter_op_threads or 'default',
               budget.tf_data_threads or 'shared pool')
  return dataclasses.replace(budget, applied=True)
