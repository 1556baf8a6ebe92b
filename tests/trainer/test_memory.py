"""engine.malloc: 'retain' keeps freed memory in the process; 'system' leaves glibc's defaults."""

import json
import platform
import subprocess
import sys

import pytest

from trainer import memory

# Allocates, touches and frees 64 blocks of 1 MiB twice, counting the minor page faults (pages the
# kernel had to supply) of each round. Runs in a fresh process: mallopt settings are process-wide.
_ROUNDS = r'''
import ctypes, json, resource, sys
from trainer import memory
applied = memory.apply_malloc_setting(sys.argv[1])
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
faults = []
for _ in range(2):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  blocks = [libc.malloc(1 << 20) for _ in range(64)]
  for block in blocks:
    libc.memset(block, 1, 1 << 20)
  for block in blocks:
    libc.free(block)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'applied': applied, 'faults': faults}))
'''


def _rounds(repo, setting):
  result = subprocess.run([sys.executable, '-c', _ROUNDS, setting], cwd=repo, capture_output=True,
                          text=True, timeout=120, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc\'s')


@glibc_only
def test_retain_keeps_freed_memory_for_the_next_allocations(helpers):
  out = _rounds(helpers.repo, 'retain')
  assert out['applied'] == {'setting': 'retain', 'applied': True}
  first, second = out['faults']
  assert first >= 64 * 256 // 2  # The first round really faulted its 64 MiB in (4 KiB pages).
  assert second < first // 10  # The second reused the freed memory: no fresh pages.


@glibc_only
def test_system_leaves_the_c_library_defaults(helpers):
  out = _rounds(helpers.repo, 'system')
  assert out['applied'] == {'setting': 'system', 'applied': None}
  # glibc maps blocks of 1 MiB (above its 128 KiB start threshold) and unmaps them when freed, so
  # the second round needs fresh pages too: the behaviour 'retain' changes.
  first, second = out['faults']
  assert second >= first // 2


def test_unknown_setting_names_the_value_and_the_choices():
  with pytest.raises(ValueError, match=r"engine.malloc='keep'.*retain, system"):
    memory.apply_malloc_setting('keep')
