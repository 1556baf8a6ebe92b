"""Convoy's entrypoint: `python -m trainer.train --config=configs/default.py --workdir=DIR`.

Kept short on purpose: parse flags, validate the config, then `experiment.train_and_evaluate`.
"""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import json
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from configs import validation

_DEFAULT_CONFIG = 'configs/default.py'

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs, the '
                               'exported model and summary.json. Reusing it resumes training.',
                               required=True)
_CONFIG = config_flags.DEFINE_config_file(
    'config', _DEFAULT_CONFIG, 'Experiment config file (a Python file with get_config()); any '
    'field can then be overridden, e.g. --config.train.global_batch_size=128.', lock_config=True)


def _rate(images_per_second):
  if images_per_second is None:
    return 'n/a images/s (no step trained in this run)'
  return f'{images_per_second:.0f} images/s'


def _print_summary(summary):
  lines = [
      f"Convoy: {summary['model']} | engine {summary['engine']} x{summary['num_replicas']} | "
      f"loop {summary['loop']} | {summary['steps']} steps of {summary['global_batch_size']}",
      f"  train: loss {summary.get('train_loss', float('nan')):.4f}  "
      f"accuracy {summary.get('train_accuracy', float('nan')):.4f}",
      f"  eval:  loss {summary.get('eval_loss', float('nan')):.4f}  "
      f"accuracy {summary.get('eval_accuracy', float('nan')):.4f}  "
      f"({int(summary.get('eval_examples', 0))} held-out examples)",
      f"  speed: {_rate(summary['images_per_second'])} (median after warm-up); "
      f"wall time {summary['wall_seconds']:.1f} s",
      f"  checkpoint: {summary['checkpoint']}",
      f"  export:     {summary['export']}",
      f"  summary:    {summary['workdir']}/summary.json",
  ]
  print('\n'.join(lines), flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  config = _CONFIG.value
  try:
    validation.validate(config)
  except validation.ConfigError as e:
    logging.error('%s', e)
    print(e, file=sys.stderr)
    sys.exit(2)
  from trainer import experiment  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  experiment.quiet_tensorflow_logs()
  summary = experiment.train_and_evaluate(config, _WORKDIR.value)
  if summary.get('checkpoint') is not None or summary['num_workers'] == 1:
    _print_summary(summary)
  logging.debug('%s', json.dumps(summary))


def run():
  """Console-script entry point (`convoy-train`)."""
  app.run(main)


if __name__ == '__main__':
  run()
