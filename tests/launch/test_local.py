"""Tests of launch/local.py with tiny `python -c` workers (no TensorFlow training is started)."""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from launch import local

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALLOWED_CPUS = sorted(os.sched_getaffinity(0))
needs_two_cpus = pytest.mark.skipif(len(ALLOWED_CPUS) < 2, reason='needs at least 2 usable CPUs')


def py(code):
  """The argv of a worker running `code` in a fresh (TensorFlow-free) Python."""
  return [sys.executable, '-c', code]


def worker(label, code, env=None, cpus=None):
  return local.Worker(label, py(code), env or {}, cpus)


def alive(pid):
  """Whether `pid` is a live (not zombie) process."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      state = f.read().rsplit(')', 1)[1].split()[0]
  except (FileNotFoundError, ProcessLookupError):
    return False
  return state not in ('Z', 'X')


def pids(text, label):
  """The pids a worker announced with `print('pid', os.getpid())`."""
  return [int(p) for p in re.findall(rf'^\[{re.escape(label)}\] pid (\d+)$', text, re.M)]


def kill_all(pid_list):
  for pid in pid_list:
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


# A worker that announces its pid, then sleeps for a minute (it must be stopped by the launcher).
SLEEPER = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"


def run(workers, **kwargs):
  out, err = io.StringIO(), io.StringIO()
  start = time.monotonic()
  code = local.run(workers, out=out, err=err, **kwargs)
  return code, out.getvalue(), err.getvalue(), time.monotonic() - start


# --- free_ports ---------------------------------------------------------------------------------


def test_free_ports_are_distinct_and_bindable():
  ports = local.free_ports(4)
  assert len(ports) == 4 and len(set(ports)) == 4
  assert all(isinstance(p, int) and 0 < p < 65536 for p in ports)
  sockets = []
  try:
    for port in ports:
      s = socket.socket()
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      s.bind(('localhost', port))
      sockets.append(s)
  finally:
    for s in sockets:
      s.close()


# --- cpu_shares ---------------------------------------------------------------------------------


def test_cpu_shares_two_workers_over_two_cpus_get_one_each():
  assert local.cpu_shares(2, {0, 1}) == [[0], [1]]


@pytest.mark.parametrize('num_workers, cpus', [(1, [3]), (2, range(8)), (3, range(7)),
                                               (4, [9, 1, 5, 3, 7, 2, 4, 8]), (5, range(5))])
def test_cpu_shares_are_equal_disjoint_contiguous_and_nonempty(num_workers, cpus):
  shares = local.cpu_shares(num_workers, cpus)
  ordered = sorted(cpus)
  assert len(shares) == num_workers
  sizes = {len(share) for share in shares}
  assert len(sizes) == 1 and sizes.pop() >= 1
  flat = [c for share in shares for c in share]
  assert flat == ordered[:len(flat)]  # contiguous, in order, each CPU at most once


def test_cpu_shares_with_fewer_cpus_than_workers_names_both_counts():
  with pytest.raises(ValueError, match=r'3 workers.*2 CPUs'):
    local.cpu_shares(3, {0, 1})


# --- multi_worker_processes ---------------------------------------------------------------------


def test_multi_worker_processes_share_one_cluster_with_own_task_index():
  workers = local.multi_worker_processes(2, ['--workdir=x'], python='py', ports=[1111, 2222])
  assert len(workers) == 2
  for index, w in enumerate(workers):
    assert w.argv == ['py', '-m', 'trainer.train', '--workdir=x']
    assert w.cpus is None
    tf_config = json.loads(w.env['TF_CONFIG'])
    assert tf_config['cluster'] == {'worker': ['localhost:1111', 'localhost:2222']}
    assert tf_config['task'] == {'type': 'worker', 'index': index}
  assert len({w.label for w in workers}) == 2


def test_multi_worker_processes_pin_gives_each_worker_its_own_cpu():
  workers = local.multi_worker_processes(2, [], python='py', ports=[1111, 2222], pin=True,
                                         cpus=[0, 1])
  assert [w.cpus for w in workers] == [[0], [1]]


def test_multi_worker_processes_picks_free_ports_by_default():
  workers = local.multi_worker_processes(3, [], python='py')
  cluster = json.loads(workers[0].env['TF_CONFIG'])['cluster']['worker']
  assert len(set(cluster)) == 3 and all(a.startswith('localhost:') for a in cluster)


# --- horovod_processes --------------------------------------------------------------------------


def test_horovod_processes_is_one_horovodrun_with_gloo_then_trainer():
  (w,) = local.horovod_processes(2, ['--workdir=x'], python=sys.executable)
  assert os.path.basename(w.argv[0]) == 'horovodrun' and os.access(w.argv[0], os.X_OK)
  assert w.argv[1:] == ['-np', '2', '-H', 'localhost:2', '--gloo',
                        sys.executable, '-m', 'trainer.train', '--workdir=x']
  assert w.cpus is None  # horovodrun itself is never pinned; the ranks pin themselves


def test_horovod_processes_pin_wraps_trainer_in_launch_pin():
  (w,) = local.horovod_processes(2, ['--workdir=x'], python=sys.executable, pin=True)
  assert w.argv[1:6] == ['-np', '2', '-H', 'localhost:2', '--gloo']
  assert w.argv[6:] == [sys.executable, '-m', 'launch.pin', '--num_workers=2', '--',
                        sys.executable, '-m', 'trainer.train', '--workdir=x']


def test_horovod_processes_without_horovodrun_says_make_setup(tmp_path, monkeypatch):
  empty = tmp_path / 'bin'
  empty.mkdir()
  monkeypatch.setenv('PATH', str(empty))
  with pytest.raises(FileNotFoundError, match='make setup'):
    local.horovod_processes(2, [], python=str(empty / 'python'))


# --- run ----------------------------------------------------------------------------------------


def test_run_prefixes_every_line_with_label_and_routes_stdout_and_stderr():
  code_a = ("import sys\n"
            "for i in range(50): print('a', i)\n"
            "print('oops', file=sys.stderr)")
  code_b = "import sys; print('b out'); sys.stderr.write('b err 1\\nb err 2\\n')"
  code, out, err, _ = run([worker('w0', code_a), worker('w1', code_b)])
  assert code == 0
  assert sorted(out.splitlines()) == sorted([f'[w0] a {i}' for i in range(50)] + ['[w1] b out'])
  assert [l for l in out.splitlines() if l.startswith('[w0] ')] == [f'[w0] a {i}'
                                                                    for i in range(50)]
  assert sorted(err.splitlines()) == ['[w0] oops', '[w1] b err 1', '[w1] b err 2']


def test_run_returns_zero_when_all_workers_succeed():
  code, _, err, _ = run([worker(f'w{i}', 'pass') for i in range(3)])
  assert code == 0
  assert err == ''


def test_run_stops_others_and_returns_first_failure_code():
  failing = worker('bad', 'import sys, time; time.sleep(1); sys.exit(7)')
  code, out, err, elapsed = run([worker('sleeper', SLEEPER), failing])
  (pid,) = pids(out, 'sleeper')
  try:
    assert code == 7
    assert elapsed < 30
    assert not alive(pid)
    assert 'bad exited with code 7' in err
  finally:
    kill_all([pid])


def test_run_sends_sigterm_first_so_workers_can_clean_up():
  graceful = ("import signal, sys, time\n"
              "def bye(*_):\n"
              "  print('cleaning up', flush=True); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, bye)\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)")
  code, out, _, elapsed = run([worker('graceful', graceful),
                               worker('bad', 'import sys, time; time.sleep(1); sys.exit(3)')])
  assert code == 3
  assert '[graceful] cleaning up' in out.splitlines()
  assert elapsed < 30


def test_run_kills_worker_ignoring_sigterm_after_grace_period(monkeypatch):
  monkeypatch.setattr(local, '_GRACE_SECONDS', 1)
  stubborn = ("import os, signal, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('pid', os.getpid(), flush=True)\n"
              "time.sleep(60)")
  code, out, _, elapsed = run([worker('stubborn', stubborn),
                               worker('bad', 'import sys, time; time.sleep(1); sys.exit(5)')])
  (pid,) = pids(out, 'stubborn')
  try:
    assert code == 5
    assert not alive(pid)
    assert elapsed < 15
  finally:
    kill_all([pid])


def test_run_also_stops_the_children_of_a_worker():
  # horovodrun starts the ranks as its children: stopping a worker must stop its process group.
  parent = ("import os, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print('pid', child.pid, flush=True)\n"
            "time.sleep(60)")
  code, out, _, elapsed = run([worker('parent', parent),
                               worker('bad', 'import sys, time; time.sleep(1); sys.exit(2)')])
  (child,) = pids(out, 'parent')
  try:
    assert code == 2
    deadline = time.monotonic() + 5  # the orphan is reaped by init asynchronously
    while alive(child) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert not alive(child)
    assert elapsed < 30
  finally:
    kill_all([child])


def test_run_timeout_stops_all_workers_and_returns_124():
  code, out, err, elapsed = run([worker('s0', SLEEPER), worker('s1', SLEEPER)],
                                timeout_seconds=2)
  sleepers = pids(out, 's0') + pids(out, 's1')
  try:
    assert code == 124
    assert 2 <= elapsed < 15
    assert 'timeout' in err
    assert len(sleepers) == 2 and not any(alive(p) for p in sleepers)
  finally:
    kill_all(sleepers)


@pytest.mark.parametrize('with_sleeper', [False, True], ids=['alone', 'with_peer'])
def test_run_worker_killed_by_signal_gives_128_plus_signal(with_sleeper):
  workers = [worker('killed', 'import os, time; time.sleep(0.5); os.kill(os.getpid(), 9)')]
  if with_sleeper:
    workers.append(worker('sleeper', SLEEPER))
  code, out, _, elapsed = run(workers)
  try:
    assert code == 128 + 9
    assert elapsed < 30
  finally:
    kill_all(pids(out, 'sleeper'))


def test_run_passes_worker_env_on_top_of_parent_env(monkeypatch):
  monkeypatch.setenv('CONVOY_TEST_PARENT', 'inherited')
  code, out, _, _ = run([worker(
      'env', "import os; print(os.environ['CONVOY_TEST_VAR'], os.environ['CONVOY_TEST_PARENT'])",
      env={'CONVOY_TEST_VAR': 'hello'})])
  assert code == 0
  assert out == '[env] hello inherited\n'
  assert 'CONVOY_TEST_VAR' not in os.environ  # the launcher's own environment is untouched


@needs_two_cpus
def test_run_pins_worker_to_its_cpus():
  first, second = ALLOWED_CPUS[0], ALLOWED_CPUS[1]
  show = 'import os; print(sorted(os.sched_getaffinity(0)))'
  code, out, _, _ = run([worker('p0', show, cpus=[first]), worker('p1', show, cpus=[second]),
                         worker('free', show)])
  assert code == 0
  lines = set(out.splitlines())
  assert {f'[p0] [{first}]', f'[p1] [{second}]', f'[free] {ALLOWED_CPUS}'} == lines


def test_run_survives_output_that_is_not_utf8():
  # A stray byte must not kill the relay thread (the worker would later block on a full pipe).
  code_ = ("import sys\n"
           "sys.stdout.buffer.write(b'caf\\xe9\\n'); sys.stdout.flush()\n"
           "print('x' * 100000)\n"
           "print('after')")
  proc_out = io.StringIO()
  start = time.monotonic()
  code = local.run([worker('w', code_)], timeout_seconds=8, out=proc_out, err=io.StringIO())
  assert code == 0, 'worker blocked writing to its pipe (output relay thread died)'
  assert time.monotonic() - start < 8
  assert proc_out.getvalue().splitlines()[-1] == '[w] after'


def test_run_that_cannot_start_a_worker_stops_those_already_started(tmp_path, monkeypatch):
  started = []

  class RecordingPopen(subprocess.Popen):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      started.append(self)

  monkeypatch.setattr(local.subprocess, 'Popen', RecordingPopen)
  missing = local.Worker('missing', [str(tmp_path / 'no-such-program')], {})
  try:
    with pytest.raises(FileNotFoundError):
      local.run([worker('sleeper', SLEEPER), missing], out=io.StringIO(), err=io.StringIO())
    assert len(started) == 1
    assert started[0].poll() is not None, 'a started worker was left running'
  finally:
    for process in started:
      if process.poll() is None:
        process.kill()
        process.wait()


# --- command line -------------------------------------------------------------------------------


def test_cli_rejects_zero_workers():
  result = subprocess.run([sys.executable, '-m', 'launch.local', '--num_workers=0'], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode != 0
  assert 'num_workers' in result.stderr


def test_cli_interrupt_stops_workers_and_exits_130(tmp_path):
  driver = ("import sys\n"
            "from launch import local\n"
            f"w = local.Worker('s', [sys.executable, '-c', {SLEEPER!r}], {{}})\n"
            "sys.exit(local.run([w]))")
  # SIGINT as a terminal gives it: a suite started in the background (`cmd &` in a script) inherits
  # SIGINT ignored, and Python then never raises KeyboardInterrupt.
  proc = subprocess.Popen([sys.executable, '-c', driver], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  pid = None
  try:
    line = proc.stdout.readline()
    pid = int(line.split()[-1])
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert 'interrupted' in stderr
    assert not alive(pid)
  finally:
    if proc.poll() is None:
      proc.kill()
    if pid:
      kill_all([pid])


def test_interrupt_while_starting_workers_stops_those_started_and_returns_130(monkeypatch):
  started = []
  real_popen = subprocess.Popen

  def popen(*args, **kwargs):
    if started:  # Ctrl-C arrives while the second worker is being started.
      raise KeyboardInterrupt
    started.append(real_popen(*args, **kwargs))
    return started[-1]

  monkeypatch.setattr(local.subprocess, 'Popen', popen)
  sleeper = [sys.executable, '-c', SLEEPER]
  code, _, err, seconds = run([local.Worker('a', sleeper, {}), local.Worker('b', sleeper, {})])
  assert code == 130
  assert 'interrupted while starting' in err
  assert started[0].poll() is not None  # Stopped, not orphaned.
  assert seconds < 30
