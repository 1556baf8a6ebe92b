"""trainer.doctor: the environment report (text and JSON), configs that cannot run here, missing
pieces (no Slurm on PATH, an unimportable Horovod, a hung probe), and the launchers' checks."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from configs import default
from configs import validation
from input_pipeline import sources
from trainer import doctor
from trainer import engines

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORT_KEYS = {'schema_version', 'host', 'python', 'packages', 'cpus', 'horovod', 'tensorflow',
               'keras', 'gpus', 'slurm', 'munge', 'engines', 'launch', 'config', 'exit_code'}
STATUS_KEYS = {'ready', 'detail', 'problems', 'warnings'}
PROBLEM_KEYS = {'subject', 'reason', 'fix', 'exit_code'}
HOROVOD_BUILT = doctor.probe_horovod_files()['extensions']['TensorFlow']
HAS_GPU = bool(tf.config.list_physical_devices('GPU'))


def run(module, *args, env=None, timeout=180):
  """Runs `python -m MODULE ARGS` from the repository; returns the CompletedProcess."""
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def horovod_shim(tmp_path):
  """A PYTHONPATH whose `horovod` package raises ImportError (Horovod missing)."""
  shim = tmp_path / 'shim' / 'horovod'
  shim.mkdir(parents=True)
  (shim / '__init__.py').write_text('raise ImportError("horovod is not installed")\n')
  return {'PYTHONPATH': f'{shim.parent}{os.pathsep}{REPO}'}


def path_without_slurm(tmp_path):
  """A PATH with this interpreter's folder (python, horovodrun) and nothing of the system's."""
  empty = tmp_path / 'bin'
  empty.mkdir()
  return {'PATH': f'{empty}{os.pathsep}{os.path.dirname(sys.executable)}'}


def config_with(**fields):
  """The default config with `fields` ('engine__device': 'gpu' sets engine.device)."""
  config = default.get_config()
  for name, value in fields.items():
    section, field = name.split('__')
    config[section][field] = value
  return config


@pytest.fixture(scope='module')
def text_run():
  """`python -m trainer.doctor --config=configs/default.py` on this machine."""
  return run('trainer.doctor', '--config=configs/default.py')


@pytest.fixture(scope='module')
def json_report():
  """`python -m trainer.doctor --json` on this machine, parsed."""
  result = run('trainer.doctor', '--json')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  return json.loads(result.stdout)


# --- A ready environment --------------------------------------------------------------------------


def test_report_marks_this_machines_engines_ready(text_run):
  assert text_run.returncode == 0, text_run.stderr[-3000:]
  out = text_run.stdout
  assert f'TensorFlow  {tf.__version__}' in out
  assert 'Keras 2 (tf-keras)' in out
  for engine in ('default', 'mirrored', 'multi_worker') + (('horovod',) if HOROVOD_BUILT else ()):
    assert f'  READY      {engine} ' in out, out
  assert '  READY      local-multi_worker ' in out
  if HOROVOD_BUILT:
    assert 'controllers: Gloo' in out and '  READY      local-horovod ' in out
  assert 'Config configs/default.py\n  READY      this config' in out
  assert 'Traceback' not in text_run.stderr


def test_json_report_has_the_documented_keys(json_report):
  assert set(json_report) == REPORT_KEYS
  assert json_report['schema_version'] == 1 and json_report['exit_code'] == 0
  assert json_report['config'] is None
  assert set(json_report['engines']) == set(validation.ENGINES)
  assert set(json_report['launch']) == set(doctor.LAUNCH_PATHS)
  for status in [*json_report['engines'].values(), *json_report['launch'].values()]:
    assert set(status) == STATUS_KEYS
    assert all(set(problem) == PROBLEM_KEYS for problem in status['problems'])
  assert json_report['engines']['default']['ready'] and json_report['engines']['mirrored']['ready']
  assert json_report['tensorflow'] == {'importable': True, 'version': tf.__version__, 'error': None}
  assert json_report['keras']['ok'] and json_report['keras']['module'].startswith('tf_keras')
  assert json_report['gpus']['count'] == len(tf.config.list_physical_devices('GPU'))
  assert json_report['cpus']['available'] == len(os.sched_getaffinity(0))
  assert set(json_report['slurm']['commands']) == set(doctor.SLURM_COMMANDS)
  assert json_report['horovod']['importable'] == HOROVOD_BUILT
  if HOROVOD_BUILT:
    assert json_report['engines']['horovod']['ready']
    assert 'Gloo' in json_report['horovod']['controllers']
    assert json_report['horovod']['built_against_tensorflow'] == tf.__version__


def test_api_accepts_the_default_config_and_the_local_multi_worker_launch():
  assert doctor.check_config(default.get_config()) == []
  doctor.require_ready(default.get_config())  # Does not raise.
  assert doctor.check_launch('local-multi_worker') == []
  with pytest.raises(ValueError, match='unknown launch path'):
    doctor.check_launch('local-mpi')


def test_exit_codes_are_the_trainers():
  from trainer import train  # pylint: disable=g-import-not-at-top
  assert (doctor.USAGE_ERROR, doctor.STARTUP_ERROR, doctor.DATA_ERROR) == (
      train.USAGE_ERROR, train.STARTUP_ERROR, train.DATA_ERROR)


def test_config_checks_leave_tensorflow_uninitialized_for_the_engine():
  # The trainer checks before it creates the engine; MirroredStrategy's CPU split and
  # MultiWorkerMirroredStrategy's collectives must still be configurable afterwards.
  script = '''if True:
    from configs import default, horovod
    from trainer import doctor
    from tensorflow.python.eager import context
    config = default.get_config()
    hvd = horovod.get_config()
    gpu = default.get_config()
    gpu.engine.device = 'gpu'
    for c in (config, hvd, gpu):
      doctor.check_config(c)
    assert context.context()._context_handle is None, 'TensorFlow runtime initialized'
    from trainer.engines import tf_distribute
    print('replicas', tf_distribute.create_mirrored_engine(config.engine).num_replicas)
  '''
  result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                          text=True, timeout=180)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'replicas 2' in result.stdout


# --- Missing pieces -------------------------------------------------------------------------------


def test_no_slurm_commands_on_path_marks_slurm_not_ready(tmp_path):
  result = run('trainer.doctor', '--json', env=path_without_slurm(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout)
  assert not any(report['slurm']['commands'].values()) and report['munge']['munge'] is None
  slurm = report['launch']['slurm']
  assert not slurm['ready']
  (problem,) = slurm['problems']
  assert problem['reason'] == 'sbatch, srun, scontrol not on PATH'
  assert problem['fix'].startswith(('export PATH=', 'apt-get install', 'sudo apt-get install'))
  assert report['launch']['local-multi_worker']['ready'] and report['engines']['default']['ready']


def test_check_launch_slurm_names_missing_commands(tmp_path, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))
  (problem,) = doctor.check_launch('slurm')
  assert 'sbatch' in problem.reason and problem.fix and problem.exit_code == 3


def fake_slurm(folder, node_state):
  """Stub sbatch/srun/scontrol/sinfo in `folder`: a controller that answers, one node."""
  folder.mkdir()
  scripts = {'scontrol': 'echo "Slurmctld(primary) at node1 is UP"',
             'sinfo': f'echo "debug*|up|1|{node_state}"', 'sbatch': 'exit 1', 'srun': 'exit 1'}
  for name, body in scripts.items():
    (folder / name).write_text(f'#!/bin/sh\n{body}\n')
    (folder / name).chmod(0o755)


@pytest.mark.parametrize('node_state, usable', [('idle', 1), ('down*', 0)])
def test_slurm_that_answers_is_ready_and_reports_its_nodes(tmp_path, monkeypatch, node_state,
                                                           usable):
  fake_slurm(tmp_path / 'bin', node_state)
  monkeypatch.setenv('PATH', str(tmp_path / 'bin'))
  facts = dict(doctor.probe_installation(), slurm=doctor.probe_slurm(), munge=doctor.probe_munge())
  assert facts['slurm']['answers'] and facts['slurm']['usable_nodes'] == usable
  assert facts['slurm']['partitions'] == [
      {'name': 'debug*', 'available': 'up', 'nodes': 1, 'state': node_state.rstrip('*')}]
  status = doctor.launch_status('slurm', facts)
  assert status.ready and doctor.check_launch('slurm') == []
  assert any('no node is usable now (node states: down)' in w for w in status.warnings) == (
      not usable)


@pytest.mark.skipif(not HOROVOD_BUILT, reason='Horovod is not built in this environment')
def test_unimportable_horovod_blocks_engine_launch_and_config(tmp_path):
  result = run('trainer.doctor', '--config=configs/horovod.py', env=horovod_shim(tmp_path))
  assert result.returncode == 3, result.stdout + result.stderr[-3000:]
  out = result.stdout
  assert '  NOT READY  horovod ' in out and '  NOT READY  local-horovod ' in out
  assert 'horovod is not installed' in out
  assert 'make setup' in out and 'horovodrun --check-build' in out
  assert '  READY      default ' in out and '  NOT READY  this config' in out
  assert 'Traceback' not in result.stderr


def test_hung_probe_is_a_not_ready_line_not_a_crash(tmp_path):
  shim = tmp_path / 'shim' / 'tensorflow'
  shim.mkdir(parents=True)
  (shim / '__init__.py').write_text('import time\ntime.sleep(60)\n')  # An import that hangs.
  result = run('trainer.doctor', '--json', '--probe_timeout_seconds=1',
               env={'PYTHONPATH': f'{shim.parent}{os.pathsep}{REPO}'})
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout)
  assert 'no answer within 1 s' in report['tensorflow']['error']
  (problem,) = report['engines']['default']['problems']
  assert 'TensorFlow cannot be imported' in problem['reason'] and problem['fix']


# --- Configs that cannot run here -----------------------------------------------------------------


def test_tfrecord_glob_matching_nothing_exits_4_naming_the_field(tmp_path):
  result = run('trainer.doctor', '--config.data.source=tfrecord',
               f'--config.data.train_files={tmp_path}/train-*',
               f'--config.data.eval_files={tmp_path}/eval-*', '--config.data.num_classes=10',
               '--config.data.image_size=32')
  assert result.returncode == 4, result.stdout + result.stderr[-3000:]
  # Overrides alone apply to (and the report names) the trainer's default config file.
  assert '\nConfig configs/default.py\n' in result.stdout
  assert f"data: data.train_files='{tmp_path}/train-*' matches no file" in result.stdout
  assert 'exit code 4' in result.stdout and 'Traceback' not in result.stderr


def report_for(json_report, config):
  """The doctor's report for `config` (as for `--config.FIELD=...` alone) from the facts of this
  machine that `json_report` probed; its `exit_code` is the command's exit code."""
  facts = {k: v for k, v in json_report.items() if k not in ('engines', 'launch', 'config',
                                                             'exit_code')}
  return doctor.build_report(facts, config, 'configs/default.py')


@pytest.mark.skipif(HAS_GPU, reason='needs a machine without GPUs')
def test_more_gpu_replicas_than_gpus_exits_3(json_report):
  report = report_for(json_report, config_with(engine__device='gpu', engine__num_replicas=4))
  assert report['exit_code'] == 3
  config = report['config']
  assert not config['ready'] and config['exit_code'] == 3 and config['file'] == 'configs/default.py'
  (problem,) = config['problems']
  assert problem['reason'] == ("engine.device='gpu' with engine.num_replicas=4 but TensorFlow sees "
                               '0 GPU(s)')
  assert '--config.engine.device=cpu' in problem['fix']


def test_replicas_the_engine_does_not_allow_exit_2(json_report):
  report = report_for(json_report, config_with(engine__name='default', engine__num_replicas=4))
  assert report['exit_code'] == 2
  assert "engine.num_replicas=4: must be 1 with engine.name='default'" in doctor.format_report(
      report)


def test_require_ready_raises_the_trainers_exceptions(tmp_path):
  with pytest.raises(validation.ConfigError, match='engine.num_replicas=4: must be 1'):
    doctor.require_ready(config_with(engine__name='default', engine__num_replicas=4))
  with pytest.raises(sources.DataError, match='data.train_files=.* matches no file'):
    doctor.require_ready(config_with(data__source='tfrecord', data__train_files=f'{tmp_path}/x*',
                                     data__eval_files=f'{tmp_path}/y*', data__num_classes=10,
                                     data__image_size=8))
  if not HAS_GPU:
    with pytest.raises(engines.EngineStartupError, match="engine.device='gpu'"):
      doctor.require_ready(config_with(engine__device='gpu'))


# --- The launchers run the same checks ------------------------------------------------------------


@pytest.mark.skipif(not HOROVOD_BUILT, reason='Horovod is not built in this environment')
def test_launch_local_refuses_a_broken_horovod_before_starting_workers(tmp_path):
  workdir = tmp_path / 'run'
  result = run('launch.local', '--engine=horovod', '--num_workers=2', '--',
               '--config=configs/horovod.py', f'--workdir={workdir}', env=horovod_shim(tmp_path),
               timeout=60)
  assert result.returncode == 3, result.stderr[-3000:]
  assert result.stderr.startswith('launch: error: engine horovod: the horovod package at ')
  assert 'make setup' in result.stderr and 'horovodrun --check-build' in result.stderr
  assert not workdir.exists() and '[horovodrun]' not in result.stderr


def test_launch_slurm_submit_without_slurm_exits_3(tmp_path):
  result = run('launch.slurm', 'submit', '--tasks_per_node=2', '--',
               '--config=configs/multi_worker.py', f'--workdir={tmp_path}',
               env=path_without_slurm(tmp_path), timeout=120)
  assert result.returncode == 3, result.stderr[-3000:]
  assert 'launch.slurm: error: slurm: sbatch, srun, scontrol not on PATH' in result.stderr
  assert 'Traceback' not in result.stderr
