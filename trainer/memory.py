"""Whether this process's C allocator gives freed memory back to the OS between training steps.

TensorFlow's CPU tensors come from the C library's `malloc`. With glibc's defaults, a large block
freed at the end of a step can be returned to the OS (the heap is trimmed, or an arena's top is
released with madvise), and the next step's allocation of the same size then faults every page in
again: the kernel zeroes each 4 KiB page on first touch. Whether that happens depends on the order
of allocations, so two equivalent steps can differ. On this project's 2-core VM the custom loop on
MirroredStrategy x1 (small_cnn, batch 64) took 451 page faults per step where the same loop without
a strategy took 1, and ran at 0.85 of its images/s; with freed memory kept, 1 fault per step and
0.99 (`python -m trainer.benchmarks.strategy_overhead`, README "Memory allocator").

`engine.malloc`:

* `'retain'` (default): glibc keeps freed memory in the process (`M_TRIM_THRESHOLD` 1 GiB), and
  blocks up to 32 MiB come from its heaps rather than from their own mappings (`M_MMAP_THRESHOLD`
  32 MiB, the value glibc's own adaptive threshold grows to, pinned: setting the trim threshold
  turns the adaptation off). The process keeps its high-water mark resident instead of shrinking
  between steps; blocks above 32 MiB are still mapped and unmapped one by one.
* `'system'`: the C library's defaults, untouched.

The setting acts on the whole process from the moment it is applied, and 'system' cannot undo an
earlier 'retain' in the same process. Other C libraries (musl, macOS) are left alone.
"""

import ctypes

from absl import logging

from configs import validation

# glibc's mallopt parameters (malloc.h) and the values 'retain' sets.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
RETAIN_OPTIONS = {'trim_threshold': (_M_TRIM_THRESHOLD, 1 << 30),
                  'mmap_threshold': (_M_MMAP_THRESHOLD, 32 << 20)}


def _mallopt():
  """glibc's `mallopt`, or None where the C library has none."""
  try:
    return ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return None


def apply_malloc_setting(setting):
  """Applies `engine.malloc` to this process (see the module docstring).

  Args:
    setting: 'retain' or 'system'.

  Returns:
    A dict for summary.json: `setting`, and `applied`: True if every option was accepted, False
    if this C library has no `mallopt` or refused one (the defaults then stay), None for 'system'.

  Raises:
    ValueError: for a setting not in `validation.MALLOC_SETTINGS`.
  """
  if setting not in validation.MALLOC_SETTINGS:
    raise ValueError(f'engine.malloc={setting!r}: choose among '
                     f'{", ".join(validation.MALLOC_SETTINGS)}')
  if setting == 'system':
    return {'setting': setting, 'applied': None}
  mallopt = _mallopt()
  accepted = mallopt is not None and all(
      mallopt(param, value) == 1 for param, value in RETAIN_OPTIONS.values())
  if not accepted:
    logging.warning("engine.malloc='retain': this C library has no usable mallopt; its defaults "
                    'stay (freed memory may be returned to the OS between steps)')
  return {'setting': setting, 'applied': accepted}
