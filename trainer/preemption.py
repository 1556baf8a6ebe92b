"""Preemption and bad numbers: stop at a step boundary with a checkpoint, or refuse to save NaNs.

SIGTERM (sent by Slurm, Kubernetes or `kill`) and SIGUSR1 (Slurm's warning before the time limit,
forwarded by the generated sbatch script) only set a flag here; the controller checks it after each
window of `steps_per_loop` steps, all workers agree on it (one small all-reduce), every worker
saves the checkpoint of that step, and the run exits with PREEMPTED_EXIT_CODE, which the sbatch
script turns into a requeue.
"""

import math
import signal

from absl import logging

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; the sbatch script requeues the job.
NONFINITE_EXIT_CODE = 5  # The loss became NaN or Inf; the last good checkpoint is kept.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
  """Training stopped at a step boundary because a preemption signal arrived (checkpoint saved)."""

  def __init__(self, step, checkpoint):
    super().__init__(f'preempted: stopped at step {step} after saving {checkpoint}; rerun the same '
                     f'command to resume (exit code {PREEMPTED_EXIT_CODE} asks a scheduler to requeue)')
    self.step = step


class NonFiniteLoss(Exception):
  """The training loss became NaN or Inf; nothing was saved after the last good checkpoint."""

  def __init__(self, step, loss, last_checkpoint):
    super().__init__(
        f'training loss is {loss} in the window ending at step {step}; stopped without saving. '
        f'Last good checkpoint: {last_checkpoint or "none"} (kept). Lower train.base_learning_rate, '
        'raise train.warmup_steps, or check the data.')
    self.step = step


class SignalWatcher:
  """Records preemption signals until `close()`; `requested` says whether one arrived."""

  def __init__(self, signals=SIGNALS):
    self.requested = False
    self.signal_name = None
    self._previous = {}
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. inside a test runner's worker thread).
        logging.warning('Cannot watch %s outside the main thread', signal.Signals(sig).name)

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    self.signal_name = signal.Signals(signum).name
    logging.warning('%s received: will checkpoint and stop at the next step boundary',
                    self.signal_name)

  def close(self):
    """Restores the handlers that were there before."""
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}


def check_finite(step, metrics, last_checkpoint):
  """Raises NonFiniteLoss if the window's training loss is NaN or Inf."""
  loss = metrics.get('train_loss')
  if loss is not None and not math.isfinite(loss):
    raise NonFiniteLoss(step, loss, last_checkpoint)
