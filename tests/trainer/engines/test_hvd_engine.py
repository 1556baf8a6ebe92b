"""engine.horovod_threads: the scheduling priority of the threads hvd.init() starts."""

import json
import logging
import os
import subprocess
import sys
import threading

import pytest

from trainer.engines import hvd_engine

linux_only = pytest.mark.skipif(not hasattr(os, 'SCHED_IDLE'),
                                reason='per-thread priorities: Linux')


@pytest.mark.parametrize('setting, allowed_cpus, expected', [
    ('auto', 1, 'idle'), ('auto', 2, 'normal'), ('auto', 16, 'normal'), ('auto', None, 'normal'),
    ('normal', 1, 'normal'), ('low', 8, 'low'), ('idle', 8, 'idle')])
def test_auto_priority_is_idle_when_pinned_to_one_cpu_else_normal(setting, allowed_cpus, expected):
  assert hvd_engine.resolve_thread_priority(setting, allowed_cpus) == expected


@linux_only
def test_set_thread_priority_changes_only_the_given_threads():
  release = threading.Event()
  threads = [threading.Thread(target=release.wait) for _ in range(3)]
  for thread in threads:
    thread.start()
  try:
    idle, low, untouched = (thread.native_id for thread in threads)
    assert hvd_engine.set_thread_priority({idle}, 'idle') == 1
    assert hvd_engine.set_thread_priority({low}, 'low') == 1
    assert hvd_engine.set_thread_priority({untouched}, 'normal') == 0
    assert os.sched_getscheduler(idle) == os.SCHED_IDLE
    assert os.sched_getscheduler(low) == os.SCHED_OTHER
    assert os.getpriority(os.PRIO_PROCESS, low) == 19
    assert os.sched_getscheduler(untouched) == os.SCHED_OTHER
    assert os.getpriority(os.PRIO_PROCESS, untouched) == os.getpriority(os.PRIO_PROCESS, 0)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # This (main) thread kept its priority.
  finally:
    release.set()
    for thread in threads:
      thread.join()


@linux_only
def test_a_thread_that_is_gone_is_skipped_with_a_warning(caplog):
  # A thread id no thread can have (ids stay below pid_max). Not an ended thread's id: the kernel
  # may already have given it to a new thread, which would then be changed.
  with open('/proc/sys/kernel/pid_max') as f:
    gone = int(f.read())
  with caplog.at_level(logging.WARNING):
    assert hvd_engine.set_thread_priority({gone}, 'idle') == 0
  assert f'thread {gone} left as is' in caplog.text


# One Horovod rank in a fresh process (an unprivileged process cannot raise priorities again).
_ENGINE = r'''
import json, os, sys
import tensorflow as tf
from configs import default
from trainer.engines import hvd_engine
config = default.get_config()
config.engine.horovod_threads = sys.argv[1]
engine = hvd_engine.HorovodEngine(config.engine)
total = float(engine.all_reduce_sum(tf.constant(2.0)))  # Horovod's threads still do their work.
policies = [os.sched_getscheduler(tid) for tid in sorted(engine.thread_ids)]
print(json.dumps({'priority': engine.thread_priority, 'main': os.sched_getscheduler(0),
                  'total': total, 'policies': policies}))
'''


@linux_only
@pytest.mark.parametrize('setting', ['idle', 'normal'])
def test_horovod_threads_setting_applies_to_the_threads_hvd_init_started(setting, helpers):
  pytest.importorskip('horovod.tensorflow')
  result = subprocess.run([sys.executable, '-c', _ENGINE, setting], cwd=helpers.repo,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  policy = os.SCHED_IDLE if setting == 'idle' else os.SCHED_OTHER
  assert out['priority'] == setting
  # Horovod's background thread and Gloo's, all given the setting.
  assert len(out['policies']) >= 1 and set(out['policies']) == {policy}
  assert out['main'] == os.SCHED_OTHER  # The step's threads keep theirs.
  assert out['total'] == 2.0
