"""Worker roles for multi-worker training: from TF_CONFIG, or derived from Slurm's environment.

TensorFlow's own SlurmClusterResolver calls `nvidia-smi` (absent on CPU nodes), crashes with
`gpus_per_node=0`, sorts hosts as strings (node10 before node9) and uses a fixed port that collides
between jobs sharing a node. Convoy derives TF_CONFIG from Slurm's variables itself instead.
"""

import json
import os
import re
import subprocess


def expand_tasks_per_node(spec):
  """'2(x3),1' -> [2, 2, 2, 1] (SLURM_TASKS_PER_NODE / SLURM_STEP_TASKS_PER_NODE syntax)."""
  counts = []
  for part in spec.split(','):
    match = re.fullmatch(r'(\d+)(?:\(x(\d+)\))?', part.strip())
    if not match:
      raise ValueError(f'cannot parse Slurm tasks-per-node {spec!r}')
    counts += [int(match.group(1))] * int(match.group(2) or 1)
  return counts


def slurm_hostnames(nodelist):
  """Expands a Slurm node list ('node[1-3,10]') with `scontrol show hostnames`, in Slurm's order."""
  output = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], check=True,
                          capture_output=True, text=True).stdout
  return output.split()


def slurm_port_base(environ):
  """First port of this job's workers on each node: from CONVOY_PORT_BASE or the job id.

  Derived from the job id so that two jobs sharing a node do not collide (each job gets 16 ports).
  """
  if 'CONVOY_PORT_BASE' in environ:
    return int(environ['CONVOY_PORT_BASE'])
  return 20000 + (int(environ.get('SLURM_JOB_ID', '0')) % 2000) * 16


def tf_config_from_slurm(environ, hostnames=None):
  """Builds the TF_CONFIG dict of this Slurm task (rank SLURM_PROCID of SLURM_NTASKS).

  Tasks are laid out as Slurm's default block distribution does: the first node's tasks get the
  first ranks. Ports are `port_base + local task index` on each node.

  Args:
    environ: a mapping with SLURM_PROCID, SLURM_NTASKS, SLURM_JOB_NODELIST (or SLURM_STEP_NODELIST)
      and SLURM_TASKS_PER_NODE (or SLURM_STEP_TASKS_PER_NODE).
    hostnames: the expanded node list (default: `slurm_hostnames` of the node list).

  Returns:
    `{'cluster': {'worker': [host:port, ...]}, 'task': {'type': 'worker', 'index': rank}}`.

  Raises:
    ValueError: when the variables are missing or inconsistent.
  """
  try:
    rank, num_tasks = int(environ['SLURM_PROCID']), int(environ['SLURM_NTASKS'])
    nodelist = environ.get('SLURM_STEP_NODELIST') or environ['SLURM_JOB_NODELIST']
    per_node = expand_tasks_per_node(
        environ.get('SLURM_STEP_TASKS_PER_NODE') or environ['SLURM_TASKS_PER_NODE'])
  except KeyError as e:
    raise ValueError(f'Slurm variable {e} is not set: run the workers with srun') from e
  hostnames = hostnames if hostnames is not None else slurm_hostnames(nodelist)
  if len(per_node) != len(hostnames) or sum(per_node) != num_tasks:
    raise ValueError(f'Slurm layout mismatch: hosts {hostnames}, tasks per node {per_node}, '
                     f'{num_tasks} tasks')
  base = slurm_port_base(environ)
  workers = [f'{host}:{base + local}' for host, count in zip(hostnames, per_node)
             for local in range(count)]
  return {'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': rank}}


def resolve_tf_config(environ=None):
  """TF_CONFIG of this process: the TF_CONFIG variable, else one derived from Slurm, else None."""
  environ = os.environ if environ is None else environ
  if environ.get('TF_CONFIG'):
    return json.loads(environ['TF_CONFIG'])
  if 'SLURM_PROCID' in environ and int(environ.get('SLURM_NTASKS', '1')) > 1:
    return tf_config_from_slurm(environ)
  return None
