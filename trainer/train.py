"""Convoy's entrypoint: `python -m trainer.train --config=configs/default.py --workdir=DIR`.

Kept short on purpose: parse flags, validate the config, then `experiment.train_and_evaluate`.
"""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from configs import validation
from trainer import doctor

USAGE_ERROR = 2  # Exit code for a bad command line or config (nothing was run).
STARTUP_ERROR = 3  # Exit code when the engine cannot start or lost a peer (missing package, ...).
DATA_ERROR = 4  # Exit code when the data cannot be read (missing, unprepared, corrupt).

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs, the '
                               'exported model and summary.json. Reusing it resumes training.')


def _fail(message, code=USAGE_ERROR):
  print(f'convoy: error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


def _fail_config(error):
  """Reports an error raised while loading the config file or applying a --config.* override."""
  if isinstance(error, (KeyError, AttributeError)):
    message = error.args[0] if error.args else error
    _fail(f'unknown config field in a --config.* override: {message} '
          '(configs/default.py lists every field)')
  _fail(f'could not load --config: {error}')


_CONFIG_ERRORS = (KeyError, AttributeError, OSError, ValueError, TypeError)


def _define_config_flag():
  """Defines --config; ml_collections parses the file and its overrides as it is defined."""
  try:
    return config_flags.DEFINE_config_file(
        'config', 'configs/default.py', 'Experiment config file (a Python file with get_config()); '
        'any field can then be overridden, e.g. --config.train.global_batch_size=128.',
        lock_config=True)
  except _CONFIG_ERRORS as e:
    _fail_config(e)


def _parse_flags(argv):
  """Parses the command line, turning every flag error into one line and exit code 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f'{e} (see --helpfull)')
  except _CONFIG_ERRORS as e:
    _fail_config(e)


def _rate(images_per_second):
  if images_per_second is None:
    return 'n/a images/s (no step trained in this run)'
  return f'{images_per_second:.0f} images/s'


def _print_summary(summary):
  nan = float('nan')
  print('\n'.join([
      f"Convoy: {summary['model']} | engine {summary['engine']} x{summary['num_replicas']} | "
      f"loop {summary['loop']} | {summary['steps']} steps of {summary['examples_per_step']}",
      f"  train: loss {summary.get('train_loss', nan):.4f}  "
      f"accuracy {summary.get('train_accuracy', nan):.4f}",
      f"  eval:  loss {summary.get('eval_loss', nan):.4f}  "
      f"accuracy {summary.get('eval_accuracy', nan):.4f}  "
      f"({int(summary.get('eval_examples', 0))} held-out examples)",
      f"  speed: {_rate(summary['images_per_second'])} (median after warm-up); "
      f"wall time {summary['wall_seconds']:.1f} s",
      f"  checkpoint: {summary['checkpoint']}",
      f"  export:     {summary['export']}",
      f"  summary:    {summary['workdir']}/summary.json",
  ]), flush=True)


def main(argv, config_flag):
  """Validates the config, trains and evaluates, and prints the summary (chief only)."""
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _WORKDIR.value:
    _fail('--workdir is required (where checkpoints, logs and summary.json go)')
  try:
    config = config_flag.value
    config.keys()  # A config file that failed to load raises on first use.
  except _CONFIG_ERRORS as e:
    _fail_config(e)
  try:
    validation.validate(config)
  except validation.ConfigError as e:
    _fail(e)
  problems = doctor.check_config(config)
  if problems:  # A missing package, too few GPUs, missing data: one message, before any work.
    _fail(doctor.format_problems(problems), doctor.exit_code(problems))
  from trainer import experiment  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  from input_pipeline import sources  # pylint: disable=g-import-not-at-top
  from trainer import engines  # pylint: disable=g-import-not-at-top
  from trainer import checkpoints  # pylint: disable=g-import-not-at-top
  from trainer import preemption  # pylint: disable=g-import-not-at-top
  from trainer import workdir  # pylint: disable=g-import-not-at-top
  experiment.quiet_tensorflow_logs()
  try:
    summary = experiment.train_and_evaluate(config, _WORKDIR.value)
  except (engines.EngineStartupError, engines.PeerLostError) as e:
    _fail(e, STARTUP_ERROR)
  except sources.DataError as e:
    _fail(e, DATA_ERROR)
  except (workdir.WorkdirError, checkpoints.CheckpointError) as e:
    _fail(e)
  except preemption.Preempted as e:
    _fail(e, preemption.PREEMPTED_EXIT_CODE)
  except preemption.NonFiniteLoss as e:
    _fail(e, preemption.NONFINITE_EXIT_CODE)
  if summary['worker_index'] == 0:  # Only the chief reports.
    _print_summary(summary)


def run():
  """Console-script entry point (`convoy-train`)."""
  config_flag = _define_config_flag()
  app.run(lambda argv: main(argv, config_flag), flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
