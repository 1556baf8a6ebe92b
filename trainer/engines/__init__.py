"""Engines: how replicas are placed and synchronized. `create_engine` picks one by name.

Backends are imported when an engine is created, so that importing this package (for example
`trainer.engines.cluster` in the Slurm launcher) needs neither TensorFlow nor Horovod.
"""

import importlib

from trainer.engines.base import Engine
from trainer.engines.base import EngineStartupError
from trainer.engines.base import PeerLostError

# Engine name -> (module, constructor).
_CONSTRUCTORS = {
    'default': ('tf_distribute', 'create_default_engine'),
    'mirrored': ('tf_distribute', 'create_mirrored_engine'),
    'multi_worker': ('tf_distribute', 'create_multi_worker_engine'),
    'horovod': ('hvd_engine', 'create_horovod_engine'),
}

ENGINE_NAMES = tuple(_CONSTRUCTORS)


def create_engine(engine_config):
  """Creates the engine named by `engine_config.name`; call it before any other TensorFlow op.

  Args:
    engine_config: the `config.engine` section.

  Returns:
    An `Engine`.

  Raises:
    ValueError: for an unknown engine name.
  """
  try:
    module, constructor = _CONSTRUCTORS[engine_config.name]
  except KeyError:
    raise ValueError(f'engine.name={engine_config.name!r}: must be one of {", ".join(ENGINE_NAMES)}')
  return getattr(importlib.import_module(f'trainer.engines.{module}'), constructor)(engine_config)


__all__ = ['Engine', 'EngineStartupError', 'PeerLostError', 'create_engine', 'ENGINE_NAMES']
