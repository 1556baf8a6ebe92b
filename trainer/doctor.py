"""`python -m trainer.doctor`: what this machine can run, and whether a given config can run here.

    python -m trainer.doctor                                  # environment report
    python -m trainer.doctor --json                           # the same, one JSON object
    python -m trainer.doctor --config=configs/horovod.py [--config.FIELD=VALUE ...]

The report lists Python, TensorFlow, the Keras that `tf.keras` resolves to, Horovod's build, GPUs,
CPUs, Slurm and munge, then marks each engine and launch path READY or NOT READY, with the command
that fixes each gap. TensorFlow and Horovod are imported in a child process (with a timeout), so a
broken install is a NOT READY line, never a crash of the doctor. Without --config it exits 0; with a
config it exits 0 when that config can run here, else with the trainer's exit code for the first
reason: 2 invalid config, 3 the engine cannot start here, 4 the data is missing.

The trainer and the launchers run the same checks before expensive work: `check_config(config)` and
`require_ready(config)` (engine, replicas, data; probed in this process, without initializing
TensorFlow's runtime), and `check_launch(name)` for 'local-multi_worker', 'local-horovod' and
'slurm' (cheap: no TensorFlow import).
"""

import trainer  # noqa: F401  (Keras 2 must be selected before TensorFlow is imported)

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig

from configs import validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_VERSION = 1
# The trainer's exit codes (trainer/train.py), by cause.
USAGE_ERROR = 2  # Invalid config: nothing can run.
STARTUP_ERROR = 3  # The engine cannot start here (missing or broken package, too few devices).
DATA_ERROR = 4  # The data is missing (empty glob, unprepared TFDS dataset).

ENGINES = validation.ENGINES
LAUNCH_PATHS = ('local-multi_worker', 'local-horovod', 'slurm')
PACKAGES = ('tensorflow', 'tensorflow-cpu', 'tf-keras', 'keras', 'horovod', 'tensorflow-datasets',
            'scikit-learn', 'ml-collections', 'absl-py')
SLURM_COMMANDS = ('sbatch', 'srun', 'squeue', 'sinfo', 'scontrol')
# What launch.slurm's batch scripts need: sbatch submits, srun starts the tasks, scontrol expands
# node lists (multi_worker roles) and requeues.
SLURM_REQUIRED = ('sbatch', 'srun', 'scontrol')
# Horovod's framework extensions (as its own `check_extension` calls name them).
HOROVOD_EXTENSIONS = {'TensorFlow': ('tensorflow', 'mpi_lib'), 'PyTorch': ('torch', 'mpi_lib_v2'),
                      'MXNet': ('mxnet', 'mpi_lib')}
_CHILD_MARK = 'CONVOY_DOCTOR '


@dataclasses.dataclass(frozen=True)
class Problem:
  """One reason something cannot run here, and the command that fixes it.

  Attributes:
    subject: what is not ready ('engine horovod', 'slurm', 'data', 'config', ...).
    reason: what is wrong.
    fix: the command (or setting) that fixes it; empty when `reason` already says.
    exit_code: the trainer's exit code for this kind of problem (2, 3 or 4).
  """
  subject: str
  reason: str
  fix: str = ''
  exit_code: int = STARTUP_ERROR

  def __str__(self):
    return f'{self.subject}: {self.reason}' + (f'\n    fix: {self.fix}' if self.fix else '')


@dataclasses.dataclass
class Status:
  """Whether one engine, launch path or config can run here: problems block it, warnings do not."""
  detail: str = ''
  problems: list = dataclasses.field(default_factory=list)
  warnings: list = dataclasses.field(default_factory=list)

  @property
  def ready(self):
    return not self.problems

  def to_json(self):
    """The status as a JSON-ready dict: ready, detail, problems (dicts) and warnings."""
    return {'ready': self.ready, 'detail': self.detail,
            'problems': [dataclasses.asdict(p) for p in self.problems], 'warnings': self.warnings}


# --- Commands that fix things ---------------------------------------------------------------------


def _python():
  """This interpreter as a command (relative to the repository when it is the repo's venv)."""
  if sys.executable.startswith(REPO + os.sep):
    return os.path.relpath(sys.executable, REPO)
  return sys.executable


def _in_repo_venv():
  return os.path.realpath(sys.prefix) == os.path.realpath(os.path.join(REPO, '.venv'))


def _sudo():
  return '' if os.geteuid() == 0 else 'sudo '


def setup_fix():
  """The command that (re)installs Convoy's pinned stack into this environment."""
  if _in_repo_venv():
    return 'rm -f .venv/.convoy-installed && make setup'
  return f'{_python()} -m pip install -e {REPO}'


def horovod_fix():
  """The command that rebuilds Horovod 0.28.1 against the installed TensorFlow."""
  if _in_repo_venv():
    command = (f'{_python()} -m pip uninstall -y horovod && rm -f .venv/.convoy-installed && '
               'make setup')
  else:
    command = ('HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 '
               f'HOROVOD_WITHOUT_MXNET=1 {_python()} -m pip install --no-build-isolation '
               '--no-cache-dir --force-reinstall --no-deps horovod==0.28.1')
  return f'{command}  (rebuilds Horovod; then `horovodrun --check-build` lists TensorFlow and Gloo)'


def local_slurm_fix():
  """The command that starts (installing if needed) the one-node Slurm of launch.slurm_cluster."""
  return f'{_sudo()}{_python()} -m launch.slurm_cluster start'


# --- Probes: facts about this machine; none of them raises ----------------------------------------


def _describe(error):
  """`error` as one short line: its type and the first line of its message."""
  lines = str(error).strip().splitlines()
  text = f'{type(error).__name__}: {lines[0] if lines else ""}'.rstrip(': ')
  return text if len(text) <= 300 else text[:297] + '...'


def _version(distribution):
  try:
    return importlib.metadata.version(distribution)
  except Exception:  # PackageNotFoundError, or broken metadata.
    return None


def probe_cpus():
  """CPUs this process may run on (affinity) and CPUs of the machine."""
  try:
    available = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    available = os.cpu_count() or 1
  return {'available': available, 'machine': os.cpu_count()}


def probe_horovod_files():
  """Horovod's installation without importing it: where it is, which framework extensions were
  built, the TensorFlow version it was built against (its metadata.json) and `horovodrun`."""
  facts = {'version': _version('horovod'), 'package_dir': None, 'built_against_tensorflow': None,
           'extensions': {name: False for name in HOROVOD_EXTENSIONS}, 'horovodrun': None,
           'importable': None, 'error': None, 'controllers': [], 'tensor_operations': [],
           'cuda_built': None, 'rocm_built': None}
  try:
    spec = importlib.util.find_spec('horovod')
    locations = list(spec.submodule_search_locations or []) if spec else []
  except Exception:  # A broken package on sys.path.
    locations = []
  if locations:
    package_dir = facts['package_dir'] = locations[0]
    suffix = sysconfig.get_config_var('EXT_SUFFIX') or '.so'
    for name, (folder, library) in HOROVOD_EXTENSIONS.items():
      library_path = os.path.join(package_dir, folder, library + suffix)
      facts['extensions'][name] = os.path.exists(library_path)
    try:
      with open(os.path.join(package_dir, 'metadata.json')) as f:
        facts['built_against_tensorflow'] = json.load(f).get('tensorflow')
    except (OSError, ValueError, AttributeError):
      pass
  try:
    # The launcher's own lookup: next to the interpreter, then PATH.
    from launch import local  # pylint: disable=g-import-not-at-top
    facts['horovodrun'] = local.horovod_processes(1, [])[0].argv[0]
  except Exception:  # FileNotFoundError: no horovodrun.
    pass
  return facts


def probe_installation():
  """What is installed, without importing TensorFlow or Horovod: Python, package versions, CPUs,
  Horovod's files. Cheap (milliseconds)."""
  return {
      'schema_version': SCHEMA_VERSION,
      'host': socket.gethostname(),
      'python': {'version': sys.version.split()[0], 'executable': sys.executable},
      'packages': {name: _version(name) for name in PACKAGES},
      'cpus': probe_cpus(),
      'horovod': probe_horovod_files(),
      'tensorflow': None,  # Filled by a runtime probe (probe_tensorflow).
      'keras': None,
      'gpus': None,
  }


def probe_tensorflow(list_gpus=True):
  """Imports TensorFlow in this process (Keras 2 selected by `import trainer`) and lists GPUs.

  Does not initialize TensorFlow's runtime: engines can still be created afterwards.

  Returns:
    {'tensorflow': {importable, version, error}, 'keras': {module, flavour, version, ok, error},
     'gpus': {count, names, error} or None if not listed}.
  """
  facts = {'tensorflow': {'importable': False, 'version': None, 'error': None},
           'keras': {'module': None, 'flavour': None, 'version': None, 'ok': False, 'error': None},
           'gpus': None}
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except Exception as e:
    facts['tensorflow']['error'] = _describe(e)
    return facts
  facts['tensorflow'].update(importable=True, version=tf.__version__)
  try:
    module = tf.keras.__name__
    legacy = module.startswith('tf_keras')
    keras = sys.modules[module.split('.')[0]]
    facts['keras'].update(module=module, ok=legacy, version=getattr(keras, '__version__', None),
                          flavour='Keras 2 (tf-keras)' if legacy else 'Keras 3')
  except Exception as e:
    facts['keras']['error'] = _describe(e)
  if list_gpus:
    try:
      gpus = tf.config.list_physical_devices('GPU')
      facts['gpus'] = {'count': len(gpus), 'names': [g.name for g in gpus], 'error': None}
    except Exception as e:
      facts['gpus'] = {'count': 0, 'names': [], 'error': _describe(e)}
  return facts


def probe_horovod_import():
  """Imports horovod.tensorflow (and its Keras module, as the engine does) in this process.

  Returns:
    {importable, error, controllers, tensor_operations, cuda_built, rocm_built}: the build as
    `horovodrun --check-build` reports it.
  """
  facts = {'importable': False, 'error': None, 'controllers': [], 'tensor_operations': [],
           'cuda_built': None, 'rocm_built': None}
  try:
    import horovod.tensorflow as hvd  # pylint: disable=g-import-not-at-top
    import horovod.tensorflow.keras  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except Exception as e:  # ImportError, or a build against another TensorFlow.
    facts['error'] = _describe(e)
    return facts
  facts['importable'] = True
  try:
    facts['controllers'] = [
        name for name, built in (('MPI', hvd.mpi_built), ('Gloo', hvd.gloo_built)) if built()]
    facts['tensor_operations'] = [
        name for name, built in (('NCCL', hvd.nccl_built), ('DDL', hvd.ddl_built),
                                 ('CCL', hvd.ccl_built), ('MPI', hvd.mpi_built),
                                 ('Gloo', hvd.gloo_built)) if built()]
    facts['cuda_built'], facts['rocm_built'] = hvd.cuda_built(), hvd.rocm_built()
  except Exception as e:
    facts['error'] = _describe(e)
  return facts


def child_probe():
  """Entry point of the child process of `probe_runtime_in_child`: prints one marked JSON line
  per probe, TensorFlow's first, so that a crash while importing Horovod keeps what came before."""
  print(_CHILD_MARK + json.dumps(probe_tensorflow(list_gpus=True)), flush=True)
  print(_CHILD_MARK + json.dumps({'horovod': probe_horovod_import()}), flush=True)


def probe_runtime_in_child(timeout_seconds=60):
  """Runs `probe_tensorflow` and `probe_horovod_import` in a fresh Python process.

  A crash, hang or noisy import there cannot take the caller down; whatever did not report is
  marked with the reason.

  Returns:
    {'tensorflow': ..., 'keras': ..., 'gpus': ..., 'horovod': {runtime facts}}.
  """
  facts = {'tensorflow': {'importable': False, 'version': None, 'error': None},
           'keras': {'module': None, 'flavour': None, 'version': None, 'ok': False, 'error': None},
           'gpus': None,
           'horovod': {'importable': False, 'error': None}}
  command = [sys.executable, '-c', 'from trainer import doctor; doctor.child_probe()']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  try:
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            errors='replace', timeout=timeout_seconds, check=False)
    stdout, stderr, failure = result.stdout, result.stderr, f'exit code {result.returncode}'
  except subprocess.TimeoutExpired as e:
    stdout = e.stdout.decode(errors='replace') if isinstance(e.stdout, bytes) else (e.stdout or '')
    stderr, failure = '', f'no answer within {timeout_seconds} s'
  except OSError as e:
    stdout, stderr, failure = '', '', _describe(e)
  reports = [json.loads(line[len(_CHILD_MARK):]) for line in stdout.splitlines()
             if line.startswith(_CHILD_MARK)]
  for report in reports:
    if 'horovod' in report:
      facts['horovod'].update(report['horovod'])
    else:
      facts.update(report)
  if len(reports) < 2:
    last = (stderr.strip().splitlines() or [''])[-1][:300]
    reason = f'the probe process stopped ({failure}){": " + last if last else ""}'
    if not reports:
      facts['tensorflow']['error'] = f'importing TensorFlow failed: {reason}'
    facts['horovod']['error'] = f'importing horovod.tensorflow failed: {reason}'
  return facts


def _run(argv, timeout_seconds):
  """Runs `argv` and returns (exit code, stdout + stderr); (None, reason) if it could not run."""
  try:
    result = subprocess.run(argv, capture_output=True, text=True, errors='replace',
                            timeout=timeout_seconds, check=False)
  except subprocess.TimeoutExpired:
    return None, f'no answer within {timeout_seconds} s'
  except OSError as e:
    return None, _describe(e)
  return result.returncode, (result.stdout + result.stderr).strip()


def probe_slurm(timeout_seconds=5):
  """Slurm's commands on PATH, whether a controller answers (`scontrol ping`, else `sinfo`), and
  its partitions and node states (`sinfo`), each call bounded by `timeout_seconds`."""
  from launch import slurm_cluster  # pylint: disable=g-import-not-at-top  (defines its flags)
  commands = {name: shutil.which(name) for name in SLURM_COMMANDS}
  conf = os.environ.get('SLURM_CONF', slurm_cluster.DEFAULT_CONF)
  try:
    with open(conf) as f:
      conf_from_convoy = f.readline().rstrip('\n') == slurm_cluster.MARKER
  except OSError:
    conf_from_convoy = None  # No configuration file here.
  facts = {'commands': commands, 'conf': conf, 'conf_from_convoy': conf_from_convoy,
           'answers': None, 'detail': '', 'partitions': [], 'usable_nodes': 0}
  if commands['scontrol']:
    code, output = _run([commands['scontrol'], 'ping'], timeout_seconds)
    facts['answers'] = code == 0 and ' is UP' in output
    facts['detail'] = f'scontrol ping: {(output.splitlines() or ["no output"])[0]}'
  if commands['sinfo'] and facts['answers'] is not False:
    code, output = _run([commands['sinfo'], '-h', '-o', '%P|%a|%D|%T'], timeout_seconds)
    if code == 0:
      facts['answers'] = True
      for line in output.splitlines():
        fields = line.split('|')
        if len(fields) == 4:
          name, available, nodes, state = fields
          state = state.rstrip('*~#!%$@^-').lower()
          facts['partitions'].append({'name': name, 'available': available,
                                      'nodes': int(nodes) if nodes.isdigit() else 0,
                                      'state': state})
          if available == 'up' and state in slurm_cluster.READY_STATES and nodes.isdigit():
            facts['usable_nodes'] += int(nodes)
    elif facts['answers'] is None:
      facts['answers'] = False
      facts['detail'] = f'sinfo: {(output.splitlines() or ["no output"])[-1]}'
  return facts


def probe_munge():
  """munge and unmunge on PATH, and whether a credential round-trips (munged runs)."""
  from launch import slurm_cluster  # pylint: disable=g-import-not-at-top
  facts = {'munge': shutil.which('munge'), 'unmunge': shutil.which('unmunge'), 'works': False}
  if facts['munge'] and facts['unmunge']:
    facts['works'] = slurm_cluster.munge_works()
  return facts


def probe_environment(timeout_seconds=60):
  """Every fact the report needs: installation, TensorFlow and Horovod (in a child process), GPUs,
  Slurm and munge."""
  facts = probe_installation()
  runtime = probe_runtime_in_child(timeout_seconds)
  facts['horovod'].update(runtime.pop('horovod'))
  facts.update(runtime)
  facts['slurm'] = probe_slurm(min(timeout_seconds, 10))
  facts['munge'] = probe_munge()
  return facts


def probe_for_config(config):
  """The facts `config` needs, probed in this process (TensorFlow imported, its runtime not
  initialized; Horovod imported only for the horovod engine)."""
  facts = probe_installation()
  facts.update(probe_tensorflow(list_gpus=config.engine.name in ('mirrored', 'multi_worker')))
  if config.engine.name == 'horovod':
    facts['horovod'].update(probe_horovod_import())
  return facts


# --- Assessment: facts -> READY / NOT READY with fixes --------------------------------------------


def _tensorflow_version(facts):
  """TensorFlow's version: imported if probed, else installed (either wheel), else None."""
  runtime, packages = facts.get('tensorflow') or {}, facts['packages']
  return runtime.get('version') or packages.get('tensorflow') or packages.get('tensorflow-cpu')


def tensorflow_problems(facts):
  """TensorFlow importable with Keras 2 as tf.keras (from the runtime probe if it ran, else from
  the installed packages)."""
  subject = 'tensorflow'
  runtime, packages = facts.get('tensorflow'), facts['packages']
  if runtime is None:
    missing = [name for name, found in (('tensorflow', _tensorflow_version(facts)),
                                        ('tf-keras', packages.get('tf-keras'))) if not found]
    if missing:
      return [Problem(subject, f'{" and ".join(missing)} not installed', setup_fix())]
    return []
  if not runtime['importable']:
    return [Problem(subject, f'TensorFlow cannot be imported ({runtime["error"]})', setup_fix())]
  keras = facts['keras']
  if keras['error']:
    return [Problem(subject, f'tf.keras cannot be loaded ({keras["error"]}); Convoy needs tf-keras '
                    '(Keras 2)', f"{_python()} -m pip install 'tf-keras==2.18.*'")]
  if not keras['ok']:
    return [Problem(subject, f'tf.keras resolves to {keras["module"]} ({keras["flavour"]} '
                    f'{keras["version"]}); Convoy needs tf-keras (Keras 2)',
                    f"{_python()} -m pip install 'tf-keras==2.18.*'")]
  return []


def horovod_problems(facts):
  """Horovod installed, built for this TensorFlow, importable, with a controller."""
  subject = 'horovod'
  hvd, tf_version = facts['horovod'], _tensorflow_version(facts)
  if hvd['importable'] is False:
    return [Problem(subject, f'`import horovod.tensorflow` fails ({hvd["error"]})', horovod_fix())]
  if not hvd['package_dir']:
    return [Problem(subject, 'Horovod is not installed', horovod_fix())]
  if not hvd['extensions']['TensorFlow']:
    return [Problem(subject, f'the horovod package at {hvd["package_dir"]} has no TensorFlow '
                    'extension (tensorflow/mpi_lib): it was built without TensorFlow, or is not '
                    'Horovod', horovod_fix())]
  built_for = hvd['built_against_tensorflow']
  if built_for and tf_version and built_for != tf_version:
    return [Problem(subject, f'Horovod was built against TensorFlow {built_for} but TensorFlow '
                    f'{tf_version} is installed', horovod_fix())]
  if hvd['importable'] and not hvd['controllers']:
    return [Problem(subject, 'Horovod was built without a controller (neither Gloo nor MPI)',
                    horovod_fix())]
  return []


def engine_status(name, facts):
  """Whether engine `name` can start here (its packages), and what it would run on.

  Raises:
    ValueError: for an unknown engine.
  """
  if name not in ENGINES:
    raise ValueError(f'unknown engine {name!r}: one of {", ".join(ENGINES)}')
  problems = tensorflow_problems(facts) + (horovod_problems(facts) if name == 'horovod' else [])
  gpus = (facts.get('gpus') or {}).get('count')
  controllers = facts['horovod'].get('controllers')
  detail = {
      'default': f'one device: {"GPU 0" if gpus else "the CPU"}',
      'mirrored': (f'one replica per GPU ({gpus} GPU(s))' if gpus else 'replicas on logical CPU '
                   f'devices (no GPU; {facts["cpus"]["available"]} CPU core(s) shared)'),
      'multi_worker': 'one process per worker, roles from TF_CONFIG or Slurm (local devices: '
                      f'{f"{gpus} GPU(s)" if gpus else "the CPU"})',
      'horovod': 'one replica per rank' + (f' ({", ".join(controllers)})' if controllers else ''),
  }[name]
  return Status(detail, [dataclasses.replace(p, subject=f'engine {name}') for p in problems])


def slurm_problems(facts):
  """Slurm's commands on PATH and a controller that answers (for `launch.slurm submit`)."""
  slurm, munge = facts['slurm'], facts.get('munge') or {}
  missing = [name for name in SLURM_REQUIRED if not slurm['commands'][name]]
  if missing:
    elsewhere = {}  # Standard folders that hold them, one per real path (/bin may be /usr/bin).
    for folder in ('/usr/local/bin', '/usr/bin', '/bin'):
      if any(os.access(os.path.join(folder, name), os.X_OK) for name in missing):
        elsewhere.setdefault(os.path.realpath(folder), folder)
    fix = (f'export PATH="$PATH:{":".join(elsewhere.values())}"' if elsewhere else
           f'{_sudo()}apt-get install -y slurm-wlm munge  (Debian/Ubuntu; or '
           f'`{local_slurm_fix()}`, which installs them and starts a one-node test cluster here)')
    return [Problem('slurm', f'{", ".join(missing)} not on PATH', fix)]
  if not slurm['answers']:
    reason = f'no Slurm controller answers ({slurm["detail"] or "no answer"})'
    if munge.get('munge') and not munge.get('works'):
      reason += '; munged is not running either (munge -n | unmunge fails)'
    if slurm['conf_from_convoy'] is False:
      fix = (f'start slurmctld for the cluster of {slurm["conf"]} (ask its administrators); '
             '`scontrol ping` says when it answers')
    else:
      fix = f'{local_slurm_fix()}  (starts munged, slurmctld and slurmd: a one-node test cluster)'
    return [Problem('slurm', reason, fix)]
  return []


def launch_status(name, facts):
  """Whether launch path `name` ('local-multi_worker', 'local-horovod', 'slurm') can start jobs."""
  if name == 'local-multi_worker':
    problems = engine_status('multi_worker', facts).problems
    return Status('python -m launch.local --engine=multi_worker (TF_CONFIG per worker)', problems)
  if name == 'local-horovod':
    hvd = facts['horovod']
    problems = engine_status('horovod', facts).problems
    if not hvd['horovodrun']:
      problems.append(Problem('engine horovod', 'horovodrun not found next to the Python '
                              'interpreter or on PATH', horovod_fix()))
    elif hvd['importable'] and 'Gloo' not in hvd['controllers']:
      problems.append(Problem('engine horovod', 'launch.local runs `horovodrun --gloo` but '
                              'Horovod was built without Gloo', horovod_fix()))
    return Status('python -m launch.local --engine=horovod (horovodrun --gloo)', problems)
  if name == 'slurm':
    slurm = facts['slurm']
    warnings = [f'{command} not on PATH (only for watching jobs)' for command in ('squeue', 'sinfo')
                if not slurm['commands'][command]]
    if slurm['answers'] and not slurm['usable_nodes']:
      states = ', '.join(sorted({p['state'] for p in slurm['partitions']})) or 'none listed'
      warnings.append(f'no node is usable now (node states: {states}): jobs will wait; for the '
                      f'local test cluster, `{local_slurm_fix()}` resumes its node')
    return Status('python -m launch.slurm submit (sbatch, srun)', slurm_problems(facts), warnings)
  raise ValueError(f'unknown launch path {name!r}: one of {", ".join(LAUNCH_PATHS)}')


def _replica_status(config, facts):
  """Replicas and roles of `config.engine` against this machine's devices and environment."""
  engine, problems, warnings = config.engine, [], []
  gpus = (facts.get('gpus') or {}).get('count')
  cpus = facts['cpus']['available']
  subject = f'engine {engine.name}'
  if engine.name == 'mirrored':
    if engine.device == 'gpu' and gpus is not None and gpus < engine.num_replicas:
      fix = "--config.engine.device=cpu (replicas on logical CPU devices)"
      fix += (f' or --config.engine.num_replicas={gpus}' if gpus else
              f", or install TensorFlow's CUDA build: {_python()} -m pip install -e '.[gpu]'")
      problems.append(Problem(subject, f"engine.device='gpu' with engine.num_replicas="
                              f'{engine.num_replicas} but TensorFlow sees {gpus} GPU(s)', fix))
    elif engine.device != 'gpu' and not (engine.device == 'auto' and gpus and
                                         gpus >= engine.num_replicas):
      if engine.num_replicas > cpus:
        warnings.append(f'{engine.num_replicas} replicas on logical CPU devices share {cpus} CPU '
                        'core(s): right results, not speed')
  elif engine.name == 'multi_worker':
    from trainer.engines import cluster  # pylint: disable=g-import-not-at-top
    try:
      tf_config = cluster.resolve_tf_config()
    except Exception as e:  # Bad TF_CONFIG JSON, Slurm variables, no scontrol.
      return [Problem(subject, f"cannot work out this worker's role ({_describe(e)})",
                      'give every worker a valid TF_CONFIG (python -m launch.local does), or start '
                      'the workers with srun inside a Slurm job')], warnings
    if tf_config is None:
      warnings.append('no TF_CONFIG and not under srun: runs as a single worker; start N with '
                      'python -m launch.local --engine=multi_worker --num_workers=N')
    else:
      replicas = len(tf_config['cluster']['worker']) * max(1, gpus or 0)
      try:
        validation.validate_topology(config, replicas)
      except validation.ConfigError as e:
        problems.append(Problem('config', str(e), exit_code=USAGE_ERROR))
    if engine.collective == 'nccl' and gpus == 0:
      warnings.append("engine.collective='nccl' needs GPUs and TensorFlow sees none; use 'auto' "
                      "or 'ring' on CPUs")
  elif engine.name == 'horovod':
    size = os.environ.get('HOROVOD_SIZE') or os.environ.get('OMPI_COMM_WORLD_SIZE')
    if size and size.isdigit():
      try:
        validation.validate_topology(config, int(size))
      except validation.ConfigError as e:
        problems.append(Problem('config', str(e), exit_code=USAGE_ERROR))
    else:
      warnings.append('not started by horovodrun (HOROVOD_SIZE unset): start N ranks with '
                      'python -m launch.local --engine=horovod --num_workers=N')
  return problems, warnings


def _tfds_status(data):
  """A TFDS dataset: the built-in convoy_digits prepares itself offline; others must be prepared."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (no TensorFlow import)
  from input_pipeline import sources  # pylint: disable=g-import-not-at-top
  from input_pipeline import tfds_digits  # pylint: disable=g-import-not-at-top
  if data.tfds_name == tfds_digits.NAME:
    data_dir = (os.path.expanduser(data.data_dir) if data.data_dir
                else tfds.core.constants.get_default_data_dir())
    problems = _split_problems(data, list(tfds_digits.SPLITS))
    if tfds.builder(tfds_digits.NAME, data_dir=data_dir).is_prepared():
      return Status(f'TFDS {tfds_digits.NAME}, prepared in {data_dir}', problems)
    if importlib.util.find_spec('sklearn') is None:
      problems.append(Problem('data', f'{tfds_digits.NAME} is built from scikit-learn, which is '
                              'not installed', setup_fix(), DATA_ERROR))
    existing = data_dir
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
      existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK):
      problems.append(Problem('data', f'{data_dir} is not writable: {tfds_digits.NAME} cannot be '
                              'prepared there', '--config.data.data_dir=<a writable directory>',
                              DATA_ERROR))
    return Status(f'TFDS {tfds_digits.NAME}, prepared offline into {data_dir} on first use',
                  problems)
  try:
    # pylint: disable-next=protected-access  (the trainer's own check and message)
    builder = sources._tfds_builder(data)
  except sources.DataError as e:
    return Status(f'TFDS {data.tfds_name}', [Problem('data', str(e), exit_code=DATA_ERROR)])
  return Status(f'TFDS {data.tfds_name}, prepared in {builder.data_dir}',
                _split_problems(data, list(builder.info.splits)))


def _split_problems(data, splits):
  """The configured TFDS splits that the dataset does not have."""
  names = ', '.join(splits)
  return [Problem('data', f'data.{field}={data[field]!r}: not a split of {data.tfds_name} (has '
                  f'{names})', f'--config.data.{field}=<one of {names}>', DATA_ERROR)
          for field in ('train_split', 'eval_split') if data[field] not in splits]


def data_status(data):
  """Whether the data of `data` (the config's data section) can be read here."""
  try:
    if data.source == 'digits':
      if importlib.util.find_spec('sklearn') is None:
        return Status('scikit-learn digits', [Problem('data', 'scikit-learn is not installed',
                                                      setup_fix(), DATA_ERROR)])
      return Status('scikit-learn digits (in memory)')
    if data.source == 'synthetic':
      return Status(f'synthetic {data.synthetic_examples} images')
    if data.source == 'tfds':
      return _tfds_status(data)
    from input_pipeline import sources  # pylint: disable=g-import-not-at-top
    problems, counts = [], []
    for field in ('train_files', 'eval_files'):
      try:
        # pylint: disable-next=protected-access  (the trainer's own glob and message)
        counts.append(len(sources._glob(data[field], f'data.{field}')))
      except sources.DataError as e:
        problems.append(Problem('data', str(e), exit_code=DATA_ERROR))
    detail = f'TFRecord files: {counts[0]} train, {counts[1]} eval' if not problems else 'TFRecord'
    return Status(detail, problems)
  except Exception as e:  # A probe that broke: say so rather than crash.
    return Status(f'{data.source}', [Problem('data', f'cannot check the data ({_describe(e)})',
                                             exit_code=DATA_ERROR)])


def config_status(config, facts):
  """Whether `config` can run here: valid, its engine ready, its replicas placeable, its data there.

  Problems come in the order the trainer would meet them (config, engine, data).
  """
  try:
    validation.validate(config)
  except validation.ConfigError as e:
    return Status('invalid', [Problem('config', str(e), exit_code=USAGE_ERROR)])
  engine = engine_status(config.engine.name, facts)
  replica_problems, warnings = _replica_status(config, facts)
  data = data_status(config.data)
  replicas = (f'x{config.engine.num_replicas}' if config.engine.name == 'mirrored' else
              'one device' if config.engine.name == 'default' else 'one replica per process')
  detail = f'engine {config.engine.name} ({replicas}); data: {data.detail}'
  return Status(detail, engine.problems + replica_problems + data.problems, warnings)


# --- The API the trainer and launchers call -------------------------------------------------------


def exit_code(problems):
  """The trainer's exit code for `problems`: that of the first cause it would meet (0 if none)."""
  return min((p.exit_code for p in problems), default=0)


def format_problems(problems):
  """`problems` as text: one line each, with its fix on the next line."""
  if len(problems) == 1:
    return str(problems[0])
  return 'cannot run here:\n  ' + '\n  '.join(str(p) for p in problems)


def check_config(config, facts=None):
  """The problems that stop `config` from running here (empty: it can run).

  Args:
    config: an experiment ConfigDict.
    facts: from `probe_environment` / `probe_for_config`; default: probed in this process, only what
      the config needs (no TensorFlow runtime initialization, so engines can be created after).

  Returns:
    A list of `Problem`s, in the order the trainer would meet them.
  """
  try:
    validation.validate(config)
  except validation.ConfigError as e:
    return [Problem('config', str(e), exit_code=USAGE_ERROR)]
  return config_status(config, facts or probe_for_config(config)).problems


def require_ready(config, facts=None):
  """Raises if `config` cannot run here, with every problem and its fix in the message.

  Raises:
    validation.ConfigError: the config is invalid (trainer exit code 2).
    trainer.engines.EngineStartupError: the engine cannot start here (exit code 3).
    input_pipeline.sources.DataError: the data is missing (exit code 4).
  """
  problems = check_config(config, facts)
  code = exit_code(problems)
  if code == USAGE_ERROR:
    raise validation.ConfigError(format_problems(problems))
  if code == STARTUP_ERROR:
    from trainer.engines import base  # pylint: disable=g-import-not-at-top
    raise base.EngineStartupError(format_problems(problems))
  if code == DATA_ERROR:
    from input_pipeline import sources  # pylint: disable=g-import-not-at-top
    raise sources.DataError(format_problems(problems))


def check_launch(name, facts=None):
  """The problems that stop launch path `name` from starting jobs here (empty: it can).

  Cheap by default (no TensorFlow or Horovod import; Slurm probed with short timeouts), for the
  launchers to call before they start workers or submit.

  Args:
    name: 'local-multi_worker', 'local-horovod' or 'slurm'.
    facts: from `probe_environment`; default: `probe_installation` (+ Slurm and munge for 'slurm').

  Raises:
    ValueError: for an unknown launch path.
  """
  if name not in LAUNCH_PATHS:
    raise ValueError(f'unknown launch path {name!r}: one of {", ".join(LAUNCH_PATHS)}')
  if facts is None:
    facts = probe_installation()
    if name == 'slurm':
      facts['slurm'], facts['munge'] = probe_slurm(), probe_munge()
  return launch_status(name, facts).problems


# --- The report -----------------------------------------------------------------------------------


def build_report(facts, config=None, config_name=None):
  """The doctor's report: the facts, each engine's and launch path's status, and the config's.

  Returns:
    A JSON-ready dict (see README "doctor" for the keys).
  """
  report = dict(facts)
  report['engines'] = {name: engine_status(name, facts).to_json() for name in ENGINES}
  report['launch'] = {name: launch_status(name, facts).to_json() for name in LAUNCH_PATHS}
  report['config'] = None
  code = 0
  if config is not None:
    status = config_status(config, facts)
    code = exit_code(status.problems)
    report['config'] = dict(status.to_json(), file=config_name, exit_code=code)
  report['exit_code'] = code
  return report


def _yes_no(flag):
  return 'yes' if flag else 'no'


def _environment_lines(r):
  """The 'Environment' section of the human report."""
  tf, keras, hvd, gpus, cpus = r['tensorflow'], r['keras'], r['horovod'], r['gpus'], r['cpus']
  packages = r['packages']
  if keras['ok']:
    keras_line = f'tf.keras is {keras["module"]}: {keras["flavour"]} {keras["version"]}'
    if packages.get('keras'):
      keras_line += f' (keras {packages["keras"]} is installed too, unused)'
  else:
    keras_line = (f'tf.keras is {keras["module"]}: {keras["flavour"]} {keras["version"]}'
                  if keras['module'] else f'not loaded ({keras["error"] or "TensorFlow missing"})')
  if hvd['importable']:
    frameworks = [name for name, built in hvd['extensions'].items() if built]
    hvd_line = (f'{hvd["version"]}, built against TensorFlow {hvd["built_against_tensorflow"]}; '
                f'frameworks: {", ".join(frameworks) or "none"}; controllers: '
                f'{", ".join(hvd["controllers"]) or "none"}; tensor operations: '
                f'{", ".join(hvd["tensor_operations"]) or "none"}; '
                f'CUDA: {_yes_no(hvd["cuda_built"])}')
  elif hvd['package_dir'] or hvd['version']:
    hvd_line = f'{hvd["version"] or "?"} at {hvd["package_dir"]}: not importable ({hvd["error"]})'
  else:
    hvd_line = 'not installed'
  if gpus is None:
    gpu_line = 'not listed'
  elif gpus['error']:
    gpu_line = f'cannot list ({gpus["error"]})'
  else:
    gpu_line = f'{gpus["count"]}: {", ".join(gpus["names"])}' if gpus['count'] else (
        'none visible to TensorFlow')
  slurm, munge = r['slurm'], r['munge']
  on_path = [n for n in SLURM_COMMANDS if slurm['commands'][n]]
  missing = [n for n in SLURM_COMMANDS if not slurm['commands'][n]]
  slurm_line = (f'{", ".join(on_path) or "no command"} on PATH'
                + (f' ({", ".join(missing)} missing)' if missing and on_path else ''))
  if slurm['answers']:
    parts = ', '.join(f'{p["name"]} {p["nodes"]} {p["state"]}' for p in slurm['partitions'])
    slurm_line += f'; controller answers; partitions: {parts or "none"}'
  elif slurm['answers'] is False:
    slurm_line += f'; controller not answering ({slurm["detail"]})'
  if munge['munge']:
    munge_line = f'{munge["munge"]}; munged {"answers" if munge["works"] else "not answering"}'
  else:
    munge_line = 'not on PATH'
  rows = [
      ('Python', f'{r["python"]["version"]} ({r["python"]["executable"]})'),
      ('TensorFlow', tf['version'] if tf['importable'] else f'not importable ({tf["error"]})'),
      ('Keras', keras_line),
      ('Horovod', hvd_line),
      ('horovodrun', hvd['horovodrun'] or 'not found'),
      ('GPUs', gpu_line),
      ('CPUs', f'{cpus["available"]} available to this process ({cpus["machine"]} on the machine)'),
      ('Slurm', slurm_line),
      ('munge', munge_line),
  ]
  return ['Environment'] + [f'  {name:<12}{value}' for name, value in rows]


def _status_lines(name, status, width, subjects=False):
  """One READY / NOT READY line for `status` (a to_json dict), then its problems (with their
  subjects if `subjects`) and warnings."""
  label = 'READY' if status['ready'] else 'NOT READY'
  lines = [f'  {label:<10} {name:<{width}} {status["detail"]}'.rstrip()]
  for problem in status['problems']:
    subject = f'{problem["subject"]}: ' if subjects else ''
    reason = problem['reason'].replace('\n', f'\n  {"":<10}   ')
    lines.append(f'  {"":<10} - {subject}{reason}')
    if problem['fix']:
      lines.append(f'  {"":<10}   fix: {problem["fix"]}')
  lines += [f'  {"":<10} ! {warning}' for warning in status['warnings']]
  return lines


def format_report(report):
  """The report as text for people."""
  lines = [f'Convoy doctor on {report["host"]} (commands run from {REPO})', '']
  lines += _environment_lines(report) + ['', 'Engines']
  for name, status in report['engines'].items():
    lines += _status_lines(name, status, 13)
  lines += ['', 'Launch paths']
  for name, status in report['launch'].items():
    lines += _status_lines(name, status, 19)
  config = report['config']
  if config is not None:
    lines += ['', f'Config {config["file"] or ""}'.rstrip()]
    lines += _status_lines('this config', config, 12, subjects=True)
    if not config['ready']:
      lines.append(f'  exit code {config["exit_code"]}')
  return '\n'.join(lines)


# --- Command line ---------------------------------------------------------------------------------

_JSON = _CONFIG = _TIMEOUT = None  # Flags, defined by define_flags() (not on import: the trainer
# imports this module and has its own --config).


def define_flags():
  """Defines the doctor's flags (only when run as a program)."""
  global _JSON, _CONFIG, _TIMEOUT  # pylint: disable=global-statement
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  _JSON = flags.DEFINE_bool('json', False, 'Print one JSON object (for scripts) instead of text.')
  _TIMEOUT = flags.DEFINE_integer('probe_timeout_seconds', 60, 'How long the TensorFlow/Horovod '
                                  'probe may take (Slurm calls get at most 10 s).', lower_bound=1)
  # Overrides alone (--config.FIELD=...) apply to the trainer's default config file.
  wanted = any(arg.split('=')[0].split('.')[0] in ('--config', '-config') for arg in sys.argv[1:])
  try:
    _CONFIG = config_flags.DEFINE_config_file(
        'config', 'configs/default.py' if wanted else None, 'Experiment config to check (as for '
        'trainer.train), e.g. configs/horovod.py; fields can be overridden, e.g. '
        '--config.engine.num_replicas=4 (alone: on configs/default.py). Without either, only the '
        'environment is reported.', lock_config=True)
  except Exception as e:  # The file or an override is bad: ml_collections parses while defining.
    _fail_config(e)


def _fail(message):
  print(f'doctor: error: {message}', file=sys.stderr, flush=True)
  sys.exit(USAGE_ERROR)


def _fail_config(error):
  """Reports a config file that cannot be loaded, or a bad --config.FIELD override."""
  if isinstance(error, (KeyError, AttributeError)):
    _fail(f'unknown config field in a --config.* override: {error.args[0] if error.args else error}'
          ' (configs/default.py lists every field)')
  _fail(f'could not load --config: {error}')


def _parse_flags(argv):
  """Parses the command line; every error is one line and exit code 2."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f'{e} (see --helpfull)')
  except Exception as e:  # A bad --config.FIELD override.
    _fail_config(e)


def main(argv):
  """Prints the report; returns 0, or the config's exit code when it cannot run here."""
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  config = None
  if _CONFIG.value is not None:
    try:
      config = _CONFIG.value
      config.keys()  # A config file that failed to load raises on first use.
    except Exception as e:
      _fail_config(e)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # TFDS logs every dataset_info it reads.
  facts = probe_environment(_TIMEOUT.value)
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  name = config_flags.get_config_filename(flags.FLAGS['config']) if config else None
  report = build_report(facts, config, name)
  print(json.dumps(report, indent=2) if _JSON.value else format_report(report), flush=True)
  return report['exit_code']


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)
