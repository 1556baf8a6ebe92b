"""A real single-node Slurm on this machine (munge, slurmctld, slurmd): for tests, CI and users.

    python -m launch.slurm_cluster start   [--state_dir=/tmp/convoy-slurm] [--timeout_seconds=60]
    python -m launch.slurm_cluster status
    python -m launch.slurm_cluster stop

`start` needs root. It installs the Debian packages `slurm-wlm` and `munge` with apt-get when they
are missing, creates a munge key if there is none, starts munged, writes a one-node slurm.conf (this
machine, all its CPUs, one default partition `debug`), starts slurmctld and slurmd, and waits until
`sinfo` shows the node ready. Running it again while the cluster is up only re-checks it. State,
spool, pid and log files live under `--state_dir`. `stop` stops the Slurm daemons, and munged if
`start` started it.

The configuration is written to /etc/slurm/slurm.conf so that plain `sbatch`, `srun` and `sinfo`
find it; a slurm.conf that this module did not write is never overwritten (give `--conf=PATH` and
`export SLURM_CONF=PATH` to use another file). The node has no GPUs (no GRES): submit CPU jobs.
"""

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from absl import app
from absl import flags

DEFAULT_STATE_DIR = '/tmp/convoy-slurm'
DEFAULT_CONF = '/etc/slurm/slurm.conf'
PACKAGES = ('slurm-wlm', 'munge')
PROGRAMS = ('/usr/sbin/munged', '/usr/bin/munge', '/usr/bin/unmunge', '/usr/sbin/slurmctld',
            '/usr/sbin/slurmd', '/usr/bin/sinfo', '/usr/bin/scontrol', '/usr/bin/sbatch',
            '/usr/bin/srun')
MARKER = '# Written by launch.slurm_cluster (Convoy); it overwrites this file on the next start.'
MUNGE_KEY = '/etc/munge/munge.key'
MUNGE_SOCKET_DIR = '/run/munge'
MUNGE_PID_FILE = '/run/munge/munged.pid'
READY_STATES = ('idle', 'mixed', 'allocated', 'completing')


class ClusterError(RuntimeError):
  """The local Slurm could not be set up, started or stopped; the message says why."""


class NotRootError(ClusterError):
  """Starting or stopping the local Slurm needs root."""


class PackagesUnavailableError(ClusterError):
  """The Slurm or munge programs are missing and apt-get could not install them."""


def short_hostname():
  """This machine's short host name, as slurmd looks itself up in slurm.conf."""
  return socket.gethostname().split('.')[0]


def default_real_memory_mb():
  """90% of this machine's memory in MiB: slurmd drains a node that has less than it claims."""
  with open('/proc/meminfo') as f:
    for line in f:
      if line.startswith('MemTotal:'):
        return max(1, int(line.split()[1]) * 9 // 10 // 1024)
  return 1024


@dataclasses.dataclass
class Cluster:
  """Where the local Slurm keeps its files, and what it offers (one node, one partition)."""
  state_dir: str = DEFAULT_STATE_DIR
  conf_path: str = DEFAULT_CONF
  cluster_name: str = 'convoy'
  partition: str = 'debug'
  hostname: str = dataclasses.field(default_factory=short_hostname)
  cpus: int = dataclasses.field(default_factory=lambda: len(os.sched_getaffinity(0)))
  real_memory_mb: int = dataclasses.field(default_factory=default_real_memory_mb)

  def path(self, name):
    """The absolute path of `name` inside the state directory."""
    return os.path.join(os.path.abspath(self.state_dir), name)

  @property
  def env(self):
    """The environment for Slurm commands (SLURM_CONF set when the config is not the default)."""
    env = dict(os.environ)
    if os.path.abspath(self.conf_path) != DEFAULT_CONF:
      env['SLURM_CONF'] = os.path.abspath(self.conf_path)
    return env


def render_slurm_conf(cluster):
  """The text of slurm.conf for `cluster`: one node (this machine) and one default partition.

  Args:
    cluster: a `Cluster`.

  Returns:
    The configuration file's text.
  """
  lines = [
      MARKER,
      f'ClusterName={cluster.cluster_name}',
      f'SlurmctldHost={cluster.hostname}',
      'SlurmUser=root',
      'SlurmdUser=root',
      'AuthType=auth/munge',
      'CredType=cred/munge',
      f'StateSaveLocation={cluster.path("state")}',
      f'SlurmdSpoolDir={cluster.path("spool")}',
      f'SlurmctldPidFile={cluster.path("slurmctld.pid")}',
      f'SlurmdPidFile={cluster.path("slurmd.pid")}',
      f'SlurmctldLogFile={cluster.path("slurmctld.log")}',
      f'SlurmdLogFile={cluster.path("slurmd.log")}',
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_Core',
      'MpiDefault=none',
      'ReturnToService=2',
      'SchedulerParameters=batch_sched_delay=0',
      'JobCompType=jobcomp/none',
      'AccountingStorageType=accounting_storage/none',
      'InactiveLimit=0',
      'KillWait=30',
      'MinJobAge=300',
      'SlurmctldTimeout=120',
      'SlurmdTimeout=300',
      'Waittime=0',
      f'NodeName={cluster.hostname} CPUs={cluster.cpus} RealMemory={cluster.real_memory_mb} '
      'State=UNKNOWN',
      f'PartitionName={cluster.partition} Nodes={cluster.hostname} Default=YES MaxTime=INFINITE '
      'OverSubscribe=YES State=UP',
  ]
  return '\n'.join(lines) + '\n'


def _require_root(command):
  if os.geteuid() != 0:
    raise NotRootError(f'`{command}` of the local Slurm needs root (it installs packages and runs '
                       'munged, slurmctld and slurmd as root); run it as root, e.g. '
                       f'`sudo {sys.executable} -m launch.slurm_cluster {command}`')


def _run(argv, env=None, timeout=60):
  """Runs `argv`; returns CompletedProcess (text, captured output), never raises on exit code."""
  return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                        check=False)


def _tail(path, lines=20):
  """The last `lines` lines of the file at `path`, or a note that it does not exist."""
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:]).rstrip() or '(empty)'
  except OSError as e:
    return f'({e.strerror}: {path})'


def missing_programs():
  """The Slurm and munge programs that are not installed."""
  return [p for p in PROGRAMS if not os.access(p, os.X_OK)]


def ensure_packages():
  """Installs `slurm-wlm` and `munge` with apt-get if any of their programs is missing.

  Raises:
    NotRootError: if packages are missing and this process is not root.
    PackagesUnavailableError: if apt-get is absent or fails (its output's tail is in the message).
  """
  if not missing_programs():
    return
  _require_root('start')
  if not shutil.which('apt-get'):
    raise PackagesUnavailableError(f'missing {", ".join(missing_programs())} and apt-get is not '
                                   f'available: install the packages {" ".join(PACKAGES)} yourself')
  env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
  install = ['apt-get', 'install', '-y', '-q', *PACKAGES]
  result = _run(install, env=env, timeout=900)
  if result.returncode != 0:  # Usually stale or absent package lists: update once and retry.
    _run(['apt-get', 'update', '-q'], env=env, timeout=900)
    result = _run(install, env=env, timeout=900)
  if result.returncode != 0 or missing_programs():
    output = (result.stdout + result.stderr).strip().splitlines()[-15:]
    raise PackagesUnavailableError(f'`{" ".join(install)}` failed (exit {result.returncode}):\n' +
                                   '\n'.join(output))


def _pid_from_file(path):
  try:
    with open(path) as f:
      return int(f.read().split()[0])
  except (OSError, ValueError, IndexError):
    return None


def process_alive(pid, name):
  """Whether process `pid` exists, is not a zombie and is named `name` (not a recycled pid)."""
  try:
    with open(f'/proc/{pid}/comm') as f:
      comm = f.read().strip()
    with open(f'/proc/{pid}/stat') as f:
      state = f.read().rsplit(')', 1)[1].split()[0]
  except (OSError, IndexError):
    return False
  return comm == name[:15] and state not in ('Z', 'X')


def running_pid(pid_file, name):
  """The pid in `pid_file` if that process is alive and named `name`, else None."""
  pid = _pid_from_file(pid_file)
  return pid if pid is not None and process_alive(pid, name) else None


def munge_works():
  """Whether a munge credential can be created and decoded (munged is up and has a key)."""
  try:
    encoded = subprocess.run(['munge', '-n'], capture_output=True, timeout=10, check=False)
    if encoded.returncode != 0:
      return False
    return subprocess.run(['unmunge'], input=encoded.stdout, capture_output=True, timeout=10,
                          check=False).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    return False


def _ensure_munge_key():
  """Creates a 1 KiB random munge key (owner munge, mode 0400) unless one exists."""
  if os.path.exists(MUNGE_KEY):
    return
  os.makedirs(os.path.dirname(MUNGE_KEY), exist_ok=True)
  fd = os.open(MUNGE_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
  with os.fdopen(fd, 'wb') as f:
    f.write(os.urandom(1024))
  shutil.chown(MUNGE_KEY, 'munge', 'munge')


def ensure_munge(cluster, timeout_seconds=20):
  """Starts munged (as user munge) unless munge already works.

  Returns:
    True if this call started munged.

  Raises:
    ClusterError: if munged does not come up within `timeout_seconds`.
  """
  if munge_works():
    return False
  _ensure_munge_key()
  _run(['install', '-d', '-o', 'munge', '-g', 'munge', '-m', '0755', MUNGE_SOCKET_DIR])
  started = _run(['runuser', '-u', 'munge', '--', '/usr/sbin/munged'])
  deadline = time.monotonic() + timeout_seconds
  while not munge_works():
    if time.monotonic() > deadline:
      raise ClusterError(f'munged did not start (exit {started.returncode}): '
                         f'{(started.stdout + started.stderr).strip() or "no output"}; '
                         f'log /var/log/munge/munged.log:\n{_tail("/var/log/munge/munged.log")}')
    time.sleep(0.2)
  with open(cluster.path('munged.started-by-convoy'), 'w') as f:
    f.write(str(_pid_from_file(MUNGE_PID_FILE) or ''))
  return True


def write_conf(cluster):
  """Writes slurm.conf for `cluster`, unless a slurm.conf this module did not write is in the way.

  Raises:
    ClusterError: if `cluster.conf_path` exists and was not written by this module.
  """
  text = render_slurm_conf(cluster)
  if os.path.exists(cluster.conf_path):
    with open(cluster.conf_path) as f:
      current = f.read()
    if current == text:
      return
    if not current.startswith(MARKER):
      raise ClusterError(f'{cluster.conf_path} exists and was not written by launch.slurm_cluster; '
                         'not overwriting it. Use --conf=PATH (then `export SLURM_CONF=PATH` for '
                         'sbatch and sinfo), or move that file away.')
  os.makedirs(os.path.dirname(os.path.abspath(cluster.conf_path)), exist_ok=True)
  with open(cluster.conf_path, 'w') as f:
    f.write(text)


def node_state(cluster):
  """The state of this node as `sinfo` reports it ('idle', 'down', ...), or None if unreachable."""
  try:
    result = _run(['sinfo', '-h', '-N', '-n', cluster.hostname, '-o', '%T'], env=cluster.env,
                  timeout=20)
  except (OSError, subprocess.TimeoutExpired):
    return None
  states = result.stdout.split()
  return states[0].rstrip('*~#!%$@^-').lower() if result.returncode == 0 and states else None


def _start_daemon(cluster, name):
  """Starts slurmctld or slurmd (they daemonize) unless its pid file names a live process."""
  if running_pid(cluster.path(f'{name}.pid'), name):
    return False
  argv = [f'/usr/sbin/{name}']
  if os.path.abspath(cluster.conf_path) != DEFAULT_CONF:
    argv += ['-f', os.path.abspath(cluster.conf_path)]
  result = _run(argv, env=cluster.env)
  if result.returncode != 0:
    raise ClusterError(f'{name} failed to start (exit {result.returncode}): '
                       f'{(result.stdout + result.stderr).strip()}\n{_logs(cluster)}')
  return True


def _logs(cluster):
  return '\n'.join(f'--- last lines of {cluster.path(n)} ---\n{_tail(cluster.path(n))}'
                   for n in ('slurmctld.log', 'slurmd.log'))


def wait_until_ready(cluster, timeout_seconds=60):
  """Waits until `sinfo` shows the node usable (idle, or busy with jobs).

  A node left down or drained by an earlier run is resumed once.

  Raises:
    ClusterError: after `timeout_seconds`, with the daemons' log tails.
  """
  deadline = time.monotonic() + timeout_seconds
  resumed = False
  state = None
  while time.monotonic() < deadline:
    state = node_state(cluster)
    if state in READY_STATES:
      return state
    if state in ('down', 'drained', 'draining', 'drain', 'fail') and not resumed:
      _run(['scontrol', 'update', f'NodeName={cluster.hostname}', 'State=RESUME'], env=cluster.env)
      resumed = True
    time.sleep(0.5)
  raise ClusterError(f'node {cluster.hostname} not ready within {timeout_seconds} s (sinfo state: '
                     f'{state or "no answer from slurmctld"})\n{_logs(cluster)}')


def start(cluster, timeout_seconds=60):
  """Installs what is missing, starts munged, slurmctld and slurmd, and waits for the node.

  Idempotent: daemons that already run are left alone.

  Args:
    cluster: a `Cluster`.
    timeout_seconds: how long to wait for the node to become ready.

  Returns:
    The names of the daemons this call started (empty if all were running).

  Raises:
    NotRootError, PackagesUnavailableError, ClusterError: with what went wrong and how to fix it.
  """
  _require_root('start')
  ensure_packages()
  write_conf(cluster)
  for name in ('state', 'spool'):
    os.makedirs(cluster.path(name), exist_ok=True)
  started = ['munged'] if ensure_munge(cluster) else []
  started += [name for name in ('slurmctld', 'slurmd') if _start_daemon(cluster, name)]
  wait_until_ready(cluster, timeout_seconds)
  return started


def is_running(cluster):
  """Whether slurmctld and slurmd of `cluster` are alive and the node is usable."""
  return (bool(running_pid(cluster.path('slurmctld.pid'), 'slurmctld')) and
          bool(running_pid(cluster.path('slurmd.pid'), 'slurmd')) and
          node_state(cluster) in READY_STATES)


def _terminate(pid, name, timeout_seconds):
  """SIGTERM, then SIGKILL after `timeout_seconds`; waits until the process is gone."""
  os.kill(pid, signal.SIGTERM)
  deadline = time.monotonic() + timeout_seconds
  while process_alive(pid, name):
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      deadline = float('inf')
    time.sleep(0.1)


def stop(cluster, timeout_seconds=30):
  """Stops slurmd and slurmctld of `cluster`, and munged if `start` started it.

  Returns:
    The names of the daemons that were stopped.

  Raises:
    NotRootError: if not root.
  """
  _require_root('stop')
  stopped = []
  for name in ('slurmd', 'slurmctld'):
    pid = running_pid(cluster.path(f'{name}.pid'), name)
    if pid:
      _terminate(pid, name, timeout_seconds)
      stopped.append(name)
  marker = cluster.path('munged.started-by-convoy')
  if os.path.exists(marker):
    pid = running_pid(MUNGE_PID_FILE, 'munged')
    if pid:
      _terminate(pid, 'munged', timeout_seconds)
      stopped.append('munged')
    os.remove(marker)
  return stopped


def status(cluster):
  """The state of the local Slurm: daemon pids and the node's state.

  Returns:
    A dict with keys 'munge' (bool), 'slurmctld' and 'slurmd' (pid or None), 'node' (state or
    None) and 'ready' (bool).
  """
  info = {'munge': munge_works(),
          'slurmctld': running_pid(cluster.path('slurmctld.pid'), 'slurmctld'),
          'slurmd': running_pid(cluster.path('slurmd.pid'), 'slurmd'),
          'node': node_state(cluster) if not missing_programs() else None}
  info['ready'] = bool(info['slurmctld'] and info['slurmd'] and info['node'] in READY_STATES)
  return info


_STATE_DIR = flags.DEFINE_string('state_dir', DEFAULT_STATE_DIR, 'Folder for Slurm state, spool, '
                                 'pid and log files.')
_CONF = flags.DEFINE_string('conf', DEFAULT_CONF, 'Where to write slurm.conf (other than the '
                            'default needs `export SLURM_CONF=PATH` for sbatch and sinfo).')
_TIMEOUT = flags.DEFINE_integer('timeout_seconds', 60, 'start: how long to wait for the node to be '
                                'ready; stop: how long before SIGKILL.', lower_bound=1)
COMMANDS = ('start', 'stop', 'status')


def _print_status(cluster):
  info = status(cluster)
  print(f'munge: {"ok" if info["munge"] else "not working"}; slurmctld: '
        f'{info["slurmctld"] or "not running"}; slurmd: {info["slurmd"] or "not running"}; node '
        f'{cluster.hostname}: {info["node"] or "unknown"}; logs in {cluster.path("")}')
  return 0 if info['ready'] else 1


def main(argv):
  """Runs `start`, `stop` or `status`; returns the exit code (1 on failure, with a message)."""
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f'give one command: {" | ".join(COMMANDS)} (got {argv[1:]})')
  cluster = Cluster(state_dir=_STATE_DIR.value, conf_path=_CONF.value)
  try:
    if argv[1] == 'start':
      started = start(cluster, _TIMEOUT.value)
      print(f'Slurm is up ({"started " + ", ".join(started) if started else "already running"}); '
            f'node {cluster.hostname}, {cluster.cpus} CPUs, partition {cluster.partition}.')
      if 'SLURM_CONF' in cluster.env and 'SLURM_CONF' not in os.environ:
        print(f'export SLURM_CONF={cluster.env["SLURM_CONF"]}  # for sbatch, srun and sinfo')
    elif argv[1] == 'stop':
      stopped = stop(cluster, _TIMEOUT.value)
      print(f'stopped {", ".join(stopped)}' if stopped else 'nothing to stop')
    else:
      return _print_status(cluster)
  except ClusterError as e:
    print(f'slurm_cluster: error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)))
