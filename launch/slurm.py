"""Runs an experiment as a Slurm batch job: renders the sbatch script, and submits it.

    python -m launch.slurm submit --nodes=2 --tasks_per_node=4 --gpus_per_task=1 \\
        --cpus_per_task=8 --time=02:00:00 --partition=gpu --account=proj --job_name=cnn \\
        --output=/shared/logs/%x-%j.out --sbatch_line=--mail-type=END \\
        --setup_line='module load cuda' -- --config=configs/multi_worker.py --workdir=/shared/run
    python -m launch.slurm render ... -- ...   # print the script only (same as submit --dry_run)

Everything after `--` goes to `python -m trainer.train` (relative paths there are relative to this
repository, where the job runs). The engine comes from the experiment config (or `--engine`, which
must agree with it); the config is loaded and validated before anything is submitted.

Inside the job, `srun` starts one task per rank and each task derives its role from Slurm's
environment:
- multi_worker: every task runs the trainer; the engine builds TF_CONFIG from SLURM_PROCID,
  SLURM_NTASKS and the node list (trainer/engines/cluster.py). No GPU probing: works on CPU nodes.
- horovod: the batch script starts Horovod's Gloo rendezvous server (the one `horovodrun` uses) on
  the first node, and each task sets Horovod's rank variables from SLURM_PROCID and the node list,
  then runs the trainer. No ssh and no MPI are needed, on one node or many.
- default / mirrored: a single task (one process using the GPUs of its node).

Requeue and preemption: the job is submitted with `--requeue` and `--signal=B:USR1@<warning>`.
Slurm sends USR1 to the batch shell that many seconds (up to 60 s more) before the time limit;
the script then sends SIGTERM to the tasks (so the trainer can write a checkpoint) and, once the
step has ended, requeues the job with `scontrol requeue` (Slurm does not requeue a job at its time
limit by itself). It also requeues when the step exits with code 75 (EX_TEMPFAIL: "preempted, please
requeue"). A requeued job resumes from the workdir's last checkpoint; Slurm holds it back for about
two minutes before it may start again.

Safety: every value that reaches the script is validated or shell-quoted. `#SBATCH` lines cannot be
quoted, so job name, partition, account, time and paths there must match strict patterns, and extra
`--sbatch_line`s must be single `--option` lines. `--setup_line`s are the user's own shell code and
are copied into the script as they are (e.g. `module load cuda`, `source venv/bin/activate`).
"""

import dataclasses
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Optional, Sequence

from absl import app
from absl import flags

from trainer.engines import cluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: the trainer was preempted and wants to be requeued.
ENGINES = ('multi_worker', 'horovod', 'default', 'mirrored')
SINGLE_TASK_ENGINES = ('default', 'mirrored')

_NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}')
_PARTITION_RE = re.compile(r'[A-Za-z0-9_.-]{1,64}(,[A-Za-z0-9_.-]{1,64})*')
_ACCOUNT_RE = re.compile(r'[A-Za-z0-9_.-]{1,64}')
_MODULE_RE = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')
# Slurm patterns (%j, %x, %N, ...) are allowed; spaces, quotes and shell characters are not.
_SBATCH_PATH_RE = re.compile(r'[A-Za-z0-9_./%@+,:=-]{1,4096}')
_SBATCH_LINE_RE = re.compile(r'--[A-Za-z][A-Za-z0-9-]*(=[^\x00-\x1f\x7f]*)?')
_TIME_FORMS = (  # Slurm's --time forms: (pattern, name of the form).
    (re.compile(r'(?P<m>\d+)'), 'minutes'),
    (re.compile(r'(?P<m>\d+):(?P<s>\d{1,2})'), 'minutes:seconds'),
    (re.compile(r'(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2})'), 'hours:minutes:seconds'),
    (re.compile(r'(?P<d>\d+)-(?P<h>\d{1,2})'), 'days-hours'),
    (re.compile(r'(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2})'), 'days-hours:minutes'),
    (re.compile(r'(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})'),
     'days-hours:minutes:seconds'),
)


@dataclasses.dataclass
class JobSpec:
  """What to run and what to ask Slurm for; `validate_spec` checks it, `render_sbatch` renders it.

  Attributes:
    trainer_args: arguments of `python -m trainer.train` (e.g. --config=..., --workdir=...).
    engine: 'multi_worker' or 'horovod' (one task per rank), or 'default'/'mirrored' (one task).
    nodes: nodes to allocate.
    tasks_per_node: tasks (workers, ranks) per node.
    gpus_per_task: GPUs per task (0: no GPU request, e.g. CPU-only nodes).
    cpus_per_task: CPUs per task; None leaves Slurm's default. Also sets the thread counts.
    time: time limit, in a Slurm form: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S.
    partition: partition (or comma-separated partitions); None: the cluster's default.
    account: account to charge; None: the user's default.
    job_name: job name.
    output: stdout file (Slurm patterns like %j allowed); None: Slurm's default slurm-%j.out.
    error: stderr file; None: together with stdout.
    sbatch_lines: extra sbatch options, one per item, e.g. '--mail-type=END'.
    setup_lines: shell lines run before the tasks start (the user's own code, not checked).
    warning_seconds: how long before the time limit Slurm sends the warning signal (USR1).
    max_requeues: the job requeues itself at most this many times.
    module: the Python module each task runs.
    python: the Python interpreter of the tasks (default: this one).
    repo_dir: where the job runs (`cd`), default this repository.
  """
  trainer_args: Sequence[str] = ()
  engine: str = 'multi_worker'
  nodes: int = 1
  tasks_per_node: int = 1
  gpus_per_task: int = 0
  cpus_per_task: Optional[int] = None
  time: str = '01:00:00'
  partition: Optional[str] = None
  account: Optional[str] = None
  job_name: str = 'convoy'
  output: Optional[str] = None
  error: Optional[str] = None
  sbatch_lines: Sequence[str] = ()
  setup_lines: Sequence[str] = ()
  warning_seconds: int = 300
  max_requeues: int = 100
  module: str = 'trainer.train'
  python: str = sys.executable
  repo_dir: str = REPO

  @property
  def num_tasks(self):
    return self.nodes * self.tasks_per_node


def parse_time_limit(value):
  """Seconds in a Slurm time limit ('90', '1:30:00', '2-12', ...).

  Raises:
    ValueError: naming --time, the bad value and the allowed forms.
  """
  for pattern, _ in _TIME_FORMS:
    match = pattern.fullmatch(str(value))
    if match:
      parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
      seconds = (parts.get('d', 0) * 86400 + parts.get('h', 0) * 3600 + parts.get('m', 0) * 60 +
                 parts.get('s', 0))
      if seconds > 0:
        return seconds
  forms = ', '.join(name for _, name in _TIME_FORMS)
  raise ValueError(f'--time={value!r}: must be a positive Slurm time limit, one of: {forms} '
                   '(e.g. 02:00:00 or 1-12:00:00)')


def _check_int(name, value, minimum, maximum=None):
  if (not isinstance(value, int) or isinstance(value, bool) or value < minimum or
      (maximum is not None and value > maximum)):
    bound = f'between {minimum} and {maximum}' if maximum is not None else f'>= {minimum}'
    raise ValueError(f'--{name}={value!r}: must be an integer {bound}')


def _check_pattern(name, value, pattern, allowed):
  if not isinstance(value, str) or not pattern.fullmatch(value):
    raise ValueError(f'--{name}={value!r}: must be {allowed} (it goes into an #SBATCH line, which '
                     'cannot be quoted)')


def _check_sbatch_path(name, value):
  _check_pattern(name, value, _SBATCH_PATH_RE, 'a path of letters, digits and _ . / % @ + , : = - '
                 '(Slurm patterns like %j allowed; no spaces, quotes or shell characters)')


def _check_sbatch_line(line):
  if not isinstance(line, str) or not _SBATCH_LINE_RE.fullmatch(line):
    raise ValueError(f'--sbatch_line={line!r}: must be one sbatch option on a single line, '
                     'starting with -- (e.g. --mail-type=END), without control characters')


def _check_no_nul(name, values):
  for value in values:
    if not isinstance(value, str) or '\x00' in value:
      raise ValueError(f'--{name}={value!r}: must be a string without NUL characters')


def validate_spec(spec):
  """Checks every field of `spec` that reaches the script.

  Raises:
    ValueError: naming the first bad option, its value and what is allowed.
  """
  if spec.engine not in ENGINES:
    raise ValueError(f'--engine={spec.engine!r}: must be one of {", ".join(ENGINES)}')
  _check_int('nodes', spec.nodes, 1)
  _check_int('tasks_per_node', spec.tasks_per_node, 1)
  _check_int('gpus_per_task', spec.gpus_per_task, 0)
  if spec.cpus_per_task is not None:
    _check_int('cpus_per_task', spec.cpus_per_task, 1)
  _check_int('warning_seconds', spec.warning_seconds, 1, 65535)
  _check_int('max_requeues', spec.max_requeues, 0)
  limit = parse_time_limit(spec.time)
  if spec.warning_seconds >= limit:
    raise ValueError(f'--warning_seconds={spec.warning_seconds}: must be shorter than the time '
                     f'limit --time={spec.time} ({limit} s)')
  if spec.engine in SINGLE_TASK_ENGINES and spec.num_tasks != 1:
    raise ValueError(f'--engine={spec.engine}: runs one process, so --nodes and --tasks_per_node '
                     f'must be 1 (got {spec.nodes} x {spec.tasks_per_node}); use multi_worker or '
                     'horovod for several')
  _check_pattern('job_name', spec.job_name, _NAME_RE,
                 '1-128 letters, digits and _ . + - (starting with a letter or digit)')
  if spec.partition is not None:
    _check_pattern('partition', spec.partition, _PARTITION_RE,
                   'partition names of letters, digits and _ . - (comma-separated)')
  if spec.account is not None:
    _check_pattern('account', spec.account, _ACCOUNT_RE, 'letters, digits and _ . -')
  for name in ('output', 'error'):
    if getattr(spec, name) is not None:
      _check_sbatch_path(name, getattr(spec, name))
  for line in spec.sbatch_lines:
    _check_sbatch_line(line)
  _check_pattern('module', spec.module, _MODULE_RE, 'a dotted Python module name')
  _check_no_nul('setup_line', spec.setup_lines)
  _check_no_nul('trainer argument', spec.trainer_args)
  _check_no_nul('python', [spec.python, spec.repo_dir])


def _sbatch_header(spec):
  """The #SBATCH lines (values validated: they cannot be quoted)."""
  options = [f'--job-name={spec.job_name}', f'--nodes={spec.nodes}',
             f'--ntasks-per-node={spec.tasks_per_node}']
  if spec.gpus_per_task:
    options.append(f'--gpus-per-task={spec.gpus_per_task}')
  if spec.cpus_per_task:
    options.append(f'--cpus-per-task={spec.cpus_per_task}')
  options.append(f'--time={spec.time}')
  options += [f'--{name}={getattr(spec, name)}' for name in ('partition', 'account', 'output',
                                                             'error') if getattr(spec, name)]
  options += ['--requeue', '--open-mode=append', f'--signal=B:USR1@{spec.warning_seconds}']
  options += list(spec.sbatch_lines)
  return ['#!/bin/bash'] + [f'#SBATCH {option}' for option in options]


def _environment_lines(spec):
  lines = [f'cd {shlex.quote(spec.repo_dir)} || exit 1', 'export PYTHONUNBUFFERED=1',
           f'CONVOY_PYTHON={shlex.quote(spec.python)}']
  if spec.cpus_per_task:
    # Each task sizes TensorFlow's op pool (and OpenMP) to its own CPUs, not the whole node.
    lines.append(f'export TF_NUM_INTRAOP_THREADS={spec.cpus_per_task} '
                 f'OMP_NUM_THREADS={spec.cpus_per_task}')
  if spec.setup_lines:
    lines += ['', '# --setup_line: the user\'s own shell code, run as given.', *spec.setup_lines]
  return lines


def _requeue_lines(spec):
  """Shell functions: the USR1 trap (SIGTERM to the tasks) and the bounded self-requeue."""
  return f'''convoy_warned=0
convoy_step=
convoy_on_warning() {{
  convoy_warned=1
  echo "convoy: time-limit warning (SIGUSR1): sending SIGTERM to the tasks so they checkpoint"
  if [ -n "$convoy_step" ]; then scancel --signal=TERM "$SLURM_JOB_ID"; fi
}}
trap convoy_on_warning USR1

convoy_requeue() {{  # $1: the exit code to report if the job cannot be requeued.
  if [ "${{SLURM_RESTART_COUNT:-0}}" -ge {spec.max_requeues} ]; then
    echo "convoy: not requeueing: already requeued ${{SLURM_RESTART_COUNT:-0}} times" \\
      "(max {spec.max_requeues})"
    exit "$1"
  fi
  echo "convoy: requeueing job $SLURM_JOB_ID (step exit code $1);" \\
    "it resumes from its last checkpoint"
  scontrol requeue "$SLURM_JOB_ID" && exit 0
  exit "$1"
}}'''.splitlines()


def _horovod_rendezvous_lines():
  """Starts Horovod's Gloo rendezvous server in the background and exports its address."""
  return '''convoy_rdv_file=$(mktemp)
"$CONVOY_PYTHON" -m launch.slurm horovod-rendezvous --port_file="$convoy_rdv_file" \\
  --parent_pid=$$ &
convoy_rdv_pid=$!
trap 'kill "$convoy_rdv_pid" 2>/dev/null; rm -f "$convoy_rdv_file"' EXIT
for _ in $(seq 600); do  # Up to a minute.
  if [ -s "$convoy_rdv_file" ] || ! kill -0 "$convoy_rdv_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if ! [ -s "$convoy_rdv_file" ]; then
  echo "convoy: the Horovod rendezvous server did not start" >&2
  exit 3
fi
export HOROVOD_GLOO_RENDEZVOUS_ADDR="$SLURMD_NODENAME"
export HOROVOD_GLOO_RENDEZVOUS_PORT="$(cat "$convoy_rdv_file")"'''.splitlines()


def _task_command(spec):
  """The srun command line (quoted words) that starts every task of the step.

  No --kill-on-bad-exit: when preempted, every rank exits 75, and a rank that is done first would
  get the chief killed while it writes the checkpoint. A crashed rank still ends the step: the
  others fail within engine.peer_timeout_seconds (multi_worker heartbeat) or at once (Horovod).
  """
  srun = ['srun', '--label']
  if spec.cpus_per_task:
    srun.append(f'--cpus-per-task={spec.cpus_per_task}')  # Slurm 22.05's srun does not inherit it.
  python = '"$CONVOY_PYTHON"'
  wrapper = [python, '-m', 'launch.slurm', 'horovod-task', '--'] if spec.engine == 'horovod' else []
  trainer = [python, '-m', spec.module, *map(shlex.quote, spec.trainer_args)]
  return ' '.join(srun + wrapper + trainer)


def render_sbatch(spec):
  """Renders the sbatch script of `spec` (a pure function: nothing is run or written).

  Args:
    spec: a `JobSpec`.

  Returns:
    The script's text.

  Raises:
    ValueError: if a field is invalid (see `validate_spec`).
  """
  validate_spec(spec)
  lines = _sbatch_header(spec)
  lines += [
      f'# Generated by `python -m launch.slurm` (Convoy): engine {spec.engine}, {spec.nodes} '
      f'node(s) x {spec.tasks_per_node} task(s).',
      '# At the time-limit warning (USR1) the tasks get SIGTERM to checkpoint, then the job',
      f'# requeues itself; also when the step exits {REQUEUE_EXIT_CODE} (preempted). It resumes '
      'from the last checkpoint.', '']
  lines += _requeue_lines(spec) + ['']
  lines += _environment_lines(spec) + ['']
  lines += ['echo "convoy: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on '
            '$SLURM_JOB_NODELIST, $SLURM_NTASKS task(s)"', '']
  if spec.engine == 'horovod':
    lines += _horovod_rendezvous_lines() + ['']
  lines += [
      'if [ "$convoy_warned" = 1 ]; then convoy_requeue 0; fi  # Warned before the step started.',
      f'{_task_command(spec)} &',
      'convoy_step=$!',
      '# `wait` returns early when a trapped signal arrives: wait until the step has really ended.',
      'while kill -0 "$convoy_step" 2>/dev/null; do wait "$convoy_step"; done',
      'wait "$convoy_step"',
      'convoy_code=$?',
      'echo "convoy: the tasks ended with exit code $convoy_code"',
      f'if [ "$convoy_code" = {REQUEUE_EXIT_CODE} ] || '
      '{ [ "$convoy_warned" = 1 ] && [ "$convoy_code" != 0 ]; }; then',
      '  convoy_requeue "$convoy_code"',
      'fi',
      'exit "$convoy_code"',
  ]
  return '\n'.join(lines) + '\n'


def submit(spec, sbatch='sbatch'):
  """Submits the rendered script of `spec` with `sbatch --parsable` (script on stdin).

  Returns:
    The job id (a string).

  Raises:
    ValueError: if `spec` is invalid.
    RuntimeError: if sbatch is missing or refuses the job (with its message).
  """
  script = render_sbatch(spec)
  try:
    result = subprocess.run([sbatch, '--parsable'], input=script, capture_output=True, text=True,
                            timeout=120, check=False)
  except FileNotFoundError as e:
    raise RuntimeError(f'{sbatch} not found: Slurm is not installed here (for a local test '
                       'cluster: python -m launch.slurm_cluster start)') from e
  if result.returncode != 0:
    raise RuntimeError(f'sbatch failed (exit {result.returncode}): {result.stderr.strip()}')
  return result.stdout.strip().split(';')[0]


class _InDir:
  """Context manager: runs its body with `directory` as the working directory."""

  def __init__(self, directory):
    self.directory, self.previous = directory, None

  def __enter__(self):
    self.previous = os.getcwd()
    os.chdir(self.directory)

  def __exit__(self, *exc):
    os.chdir(self.previous)


def load_config(trainer_args, repo_dir=REPO):
  """Loads and validates the experiment config of `trainer_args` as the trainer will (in repo_dir).

  Returns:
    The config (an ml_collections ConfigDict).

  Raises:
    ValueError: if the config cannot be loaded or is invalid (the message names each problem).
  """
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from configs import validation  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  argv = ['trainer.train', *trainer_args]
  try:
    with _InDir(repo_dir):
      holder = config_flags.DEFINE_config_file('config', 'configs/default.py', flag_values=values,
                                               lock_config=True, sys_argv=argv)
      flags.DEFINE_string('workdir', None, '', flag_values=values)
      values(argv, known_only=True)
      config = holder.value
      config.keys()
  except (flags.Error, KeyError, AttributeError, OSError, TypeError, ValueError) as e:
    raise ValueError(f'could not load the experiment config from the trainer arguments: {e}') from e
  try:
    validation.validate(config)
  except validation.ConfigError as e:
    raise ValueError(f'invalid experiment config: {e}') from e
  return config


def resolve_engine(spec, config):
  """Fills `spec.engine` from the config (or checks the one given), and checks the replica count.

  Returns:
    A copy of `spec` with the engine set.

  Raises:
    ValueError: if --engine disagrees with the config, or the global batch does not split.
  """
  from configs import validation  # pylint: disable=g-import-not-at-top
  name = config.engine.name
  if spec.engine not in (None, name):
    raise ValueError(f'--engine={spec.engine} but the experiment config has engine.name={name!r}: '
                     f'drop --engine, or add --config.engine.name={spec.engine} after --')
  spec = dataclasses.replace(spec, engine=name)
  if name == 'horovod':
    replicas = spec.num_tasks
  elif name == 'multi_worker':
    replicas = spec.num_tasks * max(1, spec.gpus_per_task)
  else:
    replicas = config.engine.num_replicas
  try:
    validation.validate_topology(config, replicas)
  except validation.ConfigError as e:
    raise ValueError(f'{e} ({spec.nodes} node(s) x {spec.tasks_per_node} task(s))') from e
  return spec


# --- Inside the job: Horovod over srun (rendezvous server and per-task environment) -------------


def horovod_plan(environ, step=True, expand=cluster.slurm_hostnames):
  """Horovod's slot plan (rank, local and cross ranks per host) for this job's or step's layout.

  Ranks follow Slurm's block distribution: the first node's tasks get the first ranks.

  Args:
    environ: a Slurm environment (SLURM_NTASKS, node list, tasks per node).
    step: read the step's layout (in a task) rather than the job's (in the batch script).
    expand: expands a node list into host names.

  Returns:
    A list of `horovod.runner.common.util.hosts.SlotInfo`, indexed by rank.
  """
  from horovod.runner.common.util import hosts  # pylint: disable=g-import-not-at-top
  if step and 'SLURM_STEP_NODELIST' in environ:
    nodelist, per_node = environ['SLURM_STEP_NODELIST'], environ['SLURM_STEP_TASKS_PER_NODE']
  else:
    nodelist, per_node = environ['SLURM_JOB_NODELIST'], environ['SLURM_TASKS_PER_NODE']
  nodes, counts = expand(nodelist), cluster.expand_tasks_per_node(per_node)
  if len(nodes) != len(counts):
    raise ValueError(f'Slurm layout mismatch: hosts {nodes}, tasks per node {counts}')
  return hosts.get_host_assignments([hosts.HostInfo(h, n) for h, n in zip(nodes, counts)],
                                    sum(counts))


def gloo_interface(environ, nodes, own_node):
  """The network interface Gloo should use: HOROVOD_GLOO_IFACE, 'lo' on one node, else the
  interface that routes to another node of the job."""
  if environ.get('HOROVOD_GLOO_IFACE'):
    return environ['HOROVOD_GLOO_IFACE']
  peers = [n for n in nodes if n != own_node]
  if not peers:
    return 'lo'
  import psutil  # pylint: disable=g-import-not-at-top  (a Horovod dependency)
  try:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
      probe.connect((peers[0], 9))  # UDP: picks the route, sends nothing.
      address = probe.getsockname()[0]
  except OSError as e:
    raise ValueError(f'cannot reach node {peers[0]} ({e}); set HOROVOD_GLOO_IFACE with a '
                     '--setup_line') from e
  for name, addresses in psutil.net_if_addrs().items():
    if any(a.address == address for a in addresses):
      return name
  raise ValueError(f'no interface has address {address}; set HOROVOD_GLOO_IFACE with a '
                   '--setup_line')


def horovod_task_env(environ, expand=cluster.slurm_hostnames):
  """Horovod's variables for this Slurm task (as `horovodrun --gloo` would set them).

  Raises:
    ValueError: if Slurm's or the rendezvous variables are missing, or tasks are not laid out in
      blocks (rank order must follow the node list).
  """
  try:
    rank = int(environ['SLURM_PROCID'])
    address = environ['HOROVOD_GLOO_RENDEZVOUS_ADDR']
    port = environ['HOROVOD_GLOO_RENDEZVOUS_PORT']
    plan = horovod_plan(environ, step=True, expand=expand)
  except KeyError as e:
    raise ValueError(f'{e} is not set: run this under srun in a script from launch.slurm') from e
  slot = plan[rank]
  own_node = environ.get('SLURMD_NODENAME', slot.hostname)
  if slot.hostname != own_node:
    raise ValueError(f'task {rank} runs on {own_node} but Horovod places rank {rank} on '
                     f'{slot.hostname}: use the default block distribution')
  iface = gloo_interface(environ, sorted({s.hostname for s in plan}), own_node)
  return {
      'HOROVOD_HOSTNAME': slot.hostname, 'HOROVOD_RANK': str(slot.rank),
      'HOROVOD_SIZE': str(slot.size), 'HOROVOD_LOCAL_RANK': str(slot.local_rank),
      'HOROVOD_LOCAL_SIZE': str(slot.local_size), 'HOROVOD_CROSS_RANK': str(slot.cross_rank),
      'HOROVOD_CROSS_SIZE': str(slot.cross_size), 'HOROVOD_CONTROLLER': 'gloo',
      'HOROVOD_CPU_OPERATIONS': 'gloo', 'HOROVOD_GLOO_RENDEZVOUS_ADDR': address,
      'HOROVOD_GLOO_RENDEZVOUS_PORT': port, 'HOROVOD_GLOO_IFACE': iface,
      'NCCL_SOCKET_IFNAME': environ.get('NCCL_SOCKET_IFNAME', iface), 'PYTHONUNBUFFERED': '1',
  }


def serve_rendezvous(port_file, parent_pid):
  """Runs Horovod's Gloo rendezvous server for this job until `parent_pid` ends or SIGTERM.

  Writes the server's port to `port_file` (atomically) once it listens.
  """
  from horovod.runner.http import http_server  # pylint: disable=g-import-not-at-top
  plan = horovod_plan(os.environ, step=False)
  server = http_server.RendezvousServer()
  port = server.start()
  server.init(plan)
  temporary = f'{port_file}.tmp'
  with open(temporary, 'w') as f:
    f.write(f'{port}\n')
  os.replace(temporary, port_file)
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
  while parent_pid <= 0 or os.path.exists(f'/proc/{parent_pid}'):
    time.sleep(1)


# --- Command line -------------------------------------------------------------------------------

_NODES = flags.DEFINE_integer('nodes', 1, 'Nodes to allocate.')
_TASKS_PER_NODE = flags.DEFINE_integer('tasks_per_node', 1, 'Tasks (workers, ranks) per node.')
_GPUS_PER_TASK = flags.DEFINE_integer('gpus_per_task', 0, 'GPUs per task (0: none requested).')
_CPUS_PER_TASK = flags.DEFINE_integer('cpus_per_task', None, 'CPUs per task (default: Slurm\'s).')
_TIME = flags.DEFINE_string('time', '01:00:00', 'Time limit (M, H:M:S, D-H:M:S, ...). The job '
                            'requeues itself at the limit and resumes from its checkpoint.')
_PARTITION = flags.DEFINE_string('partition', None, 'Partition (default: the cluster\'s default).')
_ACCOUNT = flags.DEFINE_string('account', None, 'Account to charge.')
_JOB_NAME = flags.DEFINE_string('job_name', 'convoy', 'Job name.')
_OUTPUT = flags.DEFINE_string('output', None, 'Job stdout file (Slurm patterns like %j allowed).')
_ERROR = flags.DEFINE_string('error', None, 'Job stderr file (default: with stdout).')
_SBATCH_LINES = flags.DEFINE_multi_string('sbatch_line', [], 'Extra sbatch option, e.g. '
                                          '--sbatch_line=--mail-type=END (repeatable).')
_SETUP_LINES = flags.DEFINE_multi_string('setup_line', [], 'Shell line run before the tasks, e.g. '
                                         '"module load cuda" (repeatable; your own shell code).')
_ENGINE = flags.DEFINE_enum('engine', None, ENGINES, 'Engine (default: the config\'s engine.name; '
                            'if given, it must agree with the config).')
_WARNING_SECONDS = flags.DEFINE_integer('warning_seconds', 300, 'Seconds before the time limit at '
                                        'which the tasks are told to checkpoint (then requeue).')
_MAX_REQUEUES = flags.DEFINE_integer('max_requeues', 100, 'The job requeues itself at most this '
                                     'many times.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'submit: print the script instead of submitting.')
_PORT_FILE = flags.DEFINE_string('port_file', None, 'horovod-rendezvous: where to write the port.')
_PARENT_PID = flags.DEFINE_integer('parent_pid', 0, 'horovod-rendezvous: stop when it ends.')

COMMANDS = ('submit', 'render', 'horovod-rendezvous', 'horovod-task')


def spec_from_flags(trainer_args):
  """A `JobSpec` from the command-line flags and the trainer arguments (engine still unresolved)."""
  return JobSpec(
      trainer_args=tuple(trainer_args), engine=_ENGINE.value, nodes=_NODES.value,
      tasks_per_node=_TASKS_PER_NODE.value, gpus_per_task=_GPUS_PER_TASK.value,
      cpus_per_task=_CPUS_PER_TASK.value, time=_TIME.value, partition=_PARTITION.value,
      account=_ACCOUNT.value, job_name=_JOB_NAME.value, output=_OUTPUT.value, error=_ERROR.value,
      sbatch_lines=tuple(_SBATCH_LINES.value), setup_lines=tuple(_SETUP_LINES.value),
      warning_seconds=_WARNING_SECONDS.value, max_requeues=_MAX_REQUEUES.value)


def _horovod_task(command):
  if not command:
    raise app.UsageError('horovod-task: give the command to run after --')
  os.environ.update(horovod_task_env(os.environ))
  os.execvp(command[0], command)


def _render_or_submit(command, trainer_args):
  spec = spec_from_flags(trainer_args)
  spec = resolve_engine(spec, load_config(trainer_args, spec.repo_dir))
  if command == 'render' or _DRY_RUN.value:
    sys.stdout.write(render_sbatch(spec))
    return 0
  from trainer import doctor  # pylint: disable=g-import-not-at-top  (doctor imports launch.local)
  problems = doctor.check_launch('slurm')
  if problems:
    print(f'launch.slurm: error: {doctor.format_problems(problems)}', file=sys.stderr)
    return doctor.STARTUP_ERROR
  job_id = submit(spec)
  print(job_id)
  return 0


def main(argv):
  """`submit`, `render`, or (inside a job) `horovod-rendezvous` / `horovod-task`.

  Returns:
    The exit code: 0, 2 for a bad option or config, 1 if sbatch fails.
  """
  if len(argv) < 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f'give a command first: {" | ".join(COMMANDS[:2])} (got {argv[1:2]})')
  command, rest = argv[1], argv[2:]
  if rest and rest[0] == '--':
    rest = rest[1:]
  try:
    if command == 'horovod-rendezvous':
      if not _PORT_FILE.value:
        raise app.UsageError('horovod-rendezvous needs --port_file')
      serve_rendezvous(_PORT_FILE.value, _PARENT_PID.value)
      return 0
    if command == 'horovod-task':
      _horovod_task(rest)
    return _render_or_submit(command, rest)
  except ValueError as e:
    print(f'launch.slurm: error: {e}', file=sys.stderr)
    return 2
  except RuntimeError as e:
    print(f'launch.slurm: error: {e}', file=sys.stderr)
    return 1


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)))
