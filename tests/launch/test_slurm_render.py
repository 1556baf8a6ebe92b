"""Fast tests of launch/slurm.py and launch/slurm_cluster.py without Slurm: the rendered sbatch
script (as text, and run by bash with stub srun/scontrol/scancel), validation of hostile values,
Horovod's per-task variables, config and engine resolution, the command line, and slurm.conf."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from launch import slurm
from launch import slurm_cluster

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOSTILE_WORKDIR = '/tmp/a b$(touch /tmp/pwned)\'"'  # From the issue.


def gpu_spec(**overrides):
  """The issue's example: 2 nodes x 4 tasks with one GPU and 8 CPUs each."""
  fields = dict(trainer_args=('--config=configs/multi_worker.py', '--workdir=/shared/run'),
                engine='multi_worker', nodes=2, tasks_per_node=4, gpus_per_task=1, cpus_per_task=8,
                time='02:00:00', partition='gpu', account='proj', job_name='cnn',
                output='/shared/logs/%x-%j.out', error='/shared/logs/%x-%j.err',
                sbatch_lines=('--mail-type=END',), setup_lines=('module load cuda',))
  fields.update(overrides)
  return slurm.JobSpec(**fields)


def sbatch_options(script):
  return [line[len('#SBATCH '):] for line in script.splitlines() if line.startswith('#SBATCH ')]


# --- The script as text ---------------------------------------------------------------------------


def test_two_nodes_by_four_gpus_script_asks_slurm_for_everything():
  script = slurm.render_sbatch(gpu_spec())
  assert script.startswith('#!/bin/bash\n')
  assert sbatch_options(script) == [
      '--job-name=cnn', '--nodes=2', '--ntasks-per-node=4', '--gpus-per-task=1',
      '--cpus-per-task=8', '--time=02:00:00', '--partition=gpu', '--account=proj',
      '--output=/shared/logs/%x-%j.out', '--error=/shared/logs/%x-%j.err', '--requeue',
      '--open-mode=append', '--signal=B:USR1@300', '--mail-type=END']


def test_sbatch_lines_come_before_any_command():
  # sbatch stops reading #SBATCH lines at the first command.
  lines = slurm.render_sbatch(gpu_spec()).splitlines()
  last_option = max(i for i, line in enumerate(lines) if line.startswith('#SBATCH'))
  assert all(line.startswith('#') for line in lines[:last_option + 1])


def test_script_cds_to_repo_uses_this_python_and_runs_trainer_under_srun():
  script = slurm.render_sbatch(gpu_spec())
  lines = script.splitlines()
  assert f'cd {REPO} || exit 1' in lines
  assert f'CONVOY_PYTHON={sys.executable}' in lines
  assert 'export PYTHONUNBUFFERED=1' in lines
  assert 'export TF_NUM_INTRAOP_THREADS=8 OMP_NUM_THREADS=8' in lines
  assert ('srun --label --cpus-per-task=8 "$CONVOY_PYTHON" -m trainer.train '
          '--config=configs/multi_worker.py --workdir=/shared/run &') in lines
  srun_line = next(i for i, line in enumerate(lines) if line.startswith('srun'))
  assert lines.index('module load cuda') < srun_line


def test_script_traps_the_warning_forwards_sigterm_and_requeues():
  script = slurm.render_sbatch(gpu_spec())
  assert 'trap convoy_on_warning USR1' in script
  assert 'scancel --signal=TERM "$SLURM_JOB_ID"' in script
  assert 'scontrol requeue "$SLURM_JOB_ID"' in script
  assert 'if [ "$convoy_code" = 75 ] ||' in script
  assert '-ge 100 ]' in script  # --max_requeues


def test_cpu_only_script_requests_no_gpus_and_leaves_cpus_to_slurm():
  script = slurm.render_sbatch(gpu_spec(gpus_per_task=0, cpus_per_task=None, partition=None,
                                        account=None, output=None, error=None, sbatch_lines=()))
  options = sbatch_options(script)
  assert not any(o.startswith(('--gpus', '--cpus', '--partition', '--account', '--output'))
                 for o in options)
  assert 'TF_NUM_INTRAOP_THREADS' not in script
  assert 'srun --label "$CONVOY_PYTHON"' in script
  assert 'kill-on-bad-exit' not in script  # A rank done first must not kill a saving chief.


def test_horovod_script_starts_rendezvous_and_wraps_each_task():
  script = slurm.render_sbatch(gpu_spec(engine='horovod',
                                        trainer_args=('--config=configs/horovod.py',)))
  assert '-m launch.slurm horovod-rendezvous --port_file="$convoy_rdv_file"' in script
  assert 'export HOROVOD_GLOO_RENDEZVOUS_PORT=' in script
  assert ('"$CONVOY_PYTHON" -m launch.slurm horovod-task -- "$CONVOY_PYTHON" -m trainer.train '
          '--config=configs/horovod.py &') in script
  assert 'horovodrun' not in script and 'ssh' not in script


def test_script_is_valid_bash():
  for engine in ('multi_worker', 'horovod'):
    script = slurm.render_sbatch(gpu_spec(engine=engine))
    result = subprocess.run(['bash', '-n'], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- Validation of values that cannot be quoted ---------------------------------------------------


@pytest.mark.parametrize('field, value, option', [
    ('job_name', 'x; rm -rf /', '--job_name'),
    ('job_name', 'a\n#SBATCH --uid=0', '--job_name'),
    ('job_name', '', '--job_name'),
    ('partition', 'gpu debug', '--partition'),
    ('partition', 'gpu;id', '--partition'),
    ('account', '$(id)', '--account'),
    ('output', '/tmp/a b.out', '--output'),
    ('output', '/tmp/x\n#SBATCH --uid=0', '--output'),
    ('error', "/tmp/'x'", '--error'),
    ('time', '2h', '--time'),
    ('time', '1:00:00; id', '--time'),
    ('time', '0', '--time'),
    ('time', 'INFINITE', '--time'),
    ('nodes', 0, '--nodes'),
    ('tasks_per_node', -1, '--tasks_per_node'),
    ('gpus_per_task', '1', '--gpus_per_task'),
    ('cpus_per_task', 0, '--cpus_per_task'),
    ('warning_seconds', 70000, '--warning_seconds'),
    ('max_requeues', -1, '--max_requeues'),
    ('engine', 'tpu', '--engine'),
    ('module', 'trainer.train; id', '--module'),
])
def test_bad_values_are_rejected_naming_option_and_value(field, value, option):
  with pytest.raises(ValueError) as error:
    slurm.render_sbatch(gpu_spec(**{field: value}))
  message = str(error.value)
  assert message.startswith(f'{option}={value!r}: must be'), message


@pytest.mark.parametrize('line', ['--mail-type=END\n#SBATCH --uid=0', 'mail-type=END',
                                  '--x=1\rid', '', '-N 2', '--a b'])
def test_extra_sbatch_lines_must_be_single_long_options(line):
  with pytest.raises(ValueError, match='--sbatch_line=.*single line, starting with --'):
    slurm.render_sbatch(gpu_spec(sbatch_lines=(line,)))


def test_warning_must_come_before_the_time_limit():
  with pytest.raises(ValueError, match=r'--warning_seconds=300: .*--time=5 \(300 s\)'):
    slurm.render_sbatch(gpu_spec(time='5'))


def test_single_process_engines_need_one_task():
  with pytest.raises(ValueError, match='--engine=mirrored: runs one process'):
    slurm.render_sbatch(gpu_spec(engine='mirrored'))
  script = slurm.render_sbatch(gpu_spec(engine='mirrored', nodes=1, tasks_per_node=1,
                                        gpus_per_task=4))
  assert '#SBATCH --gpus-per-task=4' in script


@pytest.mark.parametrize('value, seconds', [
    ('90', 5400), ('30:15', 1815), ('02:00:00', 7200), ('1-12', 129600), ('1-0:30', 88200),
    ('2-00:00:01', 172801)])
def test_parse_time_limit_accepts_slurm_forms(value, seconds):
  assert slurm.parse_time_limit(value) == seconds


def test_allowed_values_pass_through_unchanged():
  spec = gpu_spec(job_name='resnet-50_v1.2+se', partition='gpu,gpu-long', account='proj_1.a',
                  output='logs/%x_%j-%N.out', sbatch_lines=('--mail-user=me@example.org',
                                                            '--constraint=a100&ib'))
  options = sbatch_options(slurm.render_sbatch(spec))
  for expected in ('--job-name=resnet-50_v1.2+se', '--partition=gpu,gpu-long',
                   '--account=proj_1.a', '--output=logs/%x_%j-%N.out',
                   '--mail-user=me@example.org', '--constraint=a100&ib'):
    assert expected in options


# --- The script run by bash with stub Slurm commands ---------------------------------------------


def make_stubs(tmp_path, srun_body):
  """A folder with stub srun (running `srun_body`), scontrol and scancel that log their argv."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  log = tmp_path / 'calls.log'
  stubs = {
      'srun': f'echo $$ > {tmp_path}/srun.pid\nprintf "%s\\n" "$@" > {tmp_path}/srun.argv\n'
              f'{srun_body}',
      'scontrol': f'echo "scontrol $*" >> {log}',
      'scancel': f'echo "scancel $*" >> {log}\nkill -TERM "$(cat {tmp_path}/srun.pid)"',
  }
  for name, body in stubs.items():
    path = bin_dir / name
    path.write_text(f'#!/bin/bash\n{body}\n')
    path.chmod(0o755)
  return bin_dir, log


def run_script(script, tmp_path, bin_dir, restart_count=None, send_usr1=False):
  """Runs `script` with bash as Slurm would (job 123); returns (exit code, output)."""
  (tmp_path / 'job.sh').write_text(script)
  env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', SLURM_JOB_ID='123',
             SLURM_JOB_NODELIST='node1', SLURM_NTASKS='2')
  env.pop('SLURM_RESTART_COUNT', None)
  if restart_count is not None:
    env['SLURM_RESTART_COUNT'] = str(restart_count)
  process = subprocess.Popen(['bash', str(tmp_path / 'job.sh')], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  if send_usr1:
    deadline = time.monotonic() + 20
    while not (tmp_path / 'srun.argv').exists() and time.monotonic() < deadline:
      time.sleep(0.05)
    time.sleep(0.2)
    process.send_signal(signal.SIGUSR1)
  output, _ = process.communicate(timeout=60)
  return process.returncode, output


def calls(log):
  return log.read_text().splitlines() if log.exists() else []


def test_hostile_workdir_reaches_the_trainer_as_one_literal_argument(tmp_path):
  if os.path.exists('/tmp/pwned'):
    os.remove('/tmp/pwned')
  marker = tmp_path / 'pwned'
  workdir = f'{HOSTILE_WORKDIR}`touch {marker}`;touch {marker} && touch {marker} | $HOME \\'
  spec = gpu_spec(trainer_args=('--config=configs/multi_worker.py', f'--workdir={workdir}'),
                  repo_dir=str(tmp_path), python=str(tmp_path / "py thon$(id)"))
  bin_dir, _ = make_stubs(tmp_path, 'exit 0')
  code, output = run_script(slurm.render_sbatch(spec), tmp_path, bin_dir)
  assert code == 0, output
  argv = (tmp_path / 'srun.argv').read_text().split('\n')[:-1]
  assert argv == ['--label', '--cpus-per-task=8',
                  str(tmp_path / 'py thon$(id)'), '-m', 'trainer.train',
                  '--config=configs/multi_worker.py', f'--workdir={workdir}']
  assert not marker.exists() and not os.path.exists('/tmp/pwned')


def test_step_exit_75_requeues_the_job(tmp_path):
  bin_dir, log = make_stubs(tmp_path, 'exit 75')
  code, output = run_script(slurm.render_sbatch(gpu_spec(repo_dir=str(tmp_path))), tmp_path,
                            bin_dir)
  assert calls(log) == ['scontrol requeue 123']
  assert code == 0
  assert 'requeueing job 123 (step exit code 75)' in output


@pytest.mark.parametrize('step_exit', [0, 1, 137])
def test_other_exit_codes_end_the_job_without_requeue(tmp_path, step_exit):
  bin_dir, log = make_stubs(tmp_path, f'exit {step_exit}')
  code, output = run_script(slurm.render_sbatch(gpu_spec(repo_dir=str(tmp_path))), tmp_path,
                            bin_dir)
  assert calls(log) == []
  assert code == step_exit
  assert f'the tasks ended with exit code {step_exit}' in output


def test_requeues_stop_at_max_requeues(tmp_path):
  bin_dir, log = make_stubs(tmp_path, 'exit 75')
  spec = gpu_spec(repo_dir=str(tmp_path), max_requeues=3)
  code, output = run_script(slurm.render_sbatch(spec), tmp_path, bin_dir, restart_count=3)
  assert calls(log) == []
  assert code == 75
  assert 'not requeueing: already requeued 3 times (max 3)' in output


# The stub step: like the trainer of the preemption issue, it checkpoints on SIGTERM and exits 75.
CHECKPOINTING_STEP = textwrap.dedent('''\
    trap 'echo "step: SIGTERM, checkpointing"; sleep 1; exit 75' TERM
    for _ in $(seq 300); do sleep 0.1; done
    exit 0''')


@pytest.mark.parametrize('on_term, expected', [(CHECKPOINTING_STEP, 75),
                                               ('exec sleep 30', 143)], ids=['exits_75', 'killed'])
def test_usr1_warning_sends_sigterm_to_tasks_then_requeues(tmp_path, on_term, expected):
  bin_dir, log = make_stubs(tmp_path, on_term)
  start = time.monotonic()
  code, output = run_script(slurm.render_sbatch(gpu_spec(repo_dir=str(tmp_path))), tmp_path,
                            bin_dir, send_usr1=True)
  assert time.monotonic() - start < 20
  assert calls(log) == ['scancel --signal=TERM 123', 'scontrol requeue 123']
  assert 'time-limit warning (SIGUSR1)' in output
  assert f'the tasks ended with exit code {expected}' in output
  assert code == 0


# --- Horovod inside the job -----------------------------------------------------------------------


def fake_expand(nodelist):
  return {'n[1-2]': ['n1', 'n2'], 'n1': ['n1']}[nodelist]


def slurm_task_env(procid, node, **extra):
  env = {'SLURM_PROCID': str(procid), 'SLURM_NTASKS': '4', 'SLURM_JOB_NODELIST': 'n[1-2]',
         'SLURM_TASKS_PER_NODE': '2(x2)', 'SLURM_STEP_NODELIST': 'n[1-2]',
         'SLURM_STEP_TASKS_PER_NODE': '2(x2)', 'SLURMD_NODENAME': node,
         'HOROVOD_GLOO_RENDEZVOUS_ADDR': 'n1', 'HOROVOD_GLOO_RENDEZVOUS_PORT': '1234',
         'HOROVOD_GLOO_IFACE': 'ib0'}
  env.update(extra)
  return env


@pytest.mark.parametrize('procid, node, local_rank, cross_rank', [
    (0, 'n1', 0, 0), (1, 'n1', 1, 0), (2, 'n2', 0, 1), (3, 'n2', 1, 1)])
def test_horovod_task_env_follows_slurm_block_layout(procid, node, local_rank, cross_rank):
  env = slurm.horovod_task_env(slurm_task_env(procid, node), expand=fake_expand)
  assert env['HOROVOD_RANK'] == str(procid) and env['HOROVOD_SIZE'] == '4'
  assert (env['HOROVOD_LOCAL_RANK'], env['HOROVOD_LOCAL_SIZE']) == (str(local_rank), '2')
  assert (env['HOROVOD_CROSS_RANK'], env['HOROVOD_CROSS_SIZE']) == (str(cross_rank), '2')
  assert env['HOROVOD_HOSTNAME'] == node
  assert (env['HOROVOD_CONTROLLER'], env['HOROVOD_CPU_OPERATIONS']) == ('gloo', 'gloo')
  assert env['HOROVOD_GLOO_RENDEZVOUS_PORT'] == '1234' and env['HOROVOD_GLOO_IFACE'] == 'ib0'


def test_horovod_task_env_rejects_non_block_distribution():
  with pytest.raises(ValueError, match='task 1 runs on n2 but Horovod places rank 1 on n1'):
    slurm.horovod_task_env(slurm_task_env(1, 'n2'), expand=fake_expand)


def test_horovod_task_env_outside_a_job_says_so():
  env = slurm_task_env(0, 'n1')
  del env['HOROVOD_GLOO_RENDEZVOUS_PORT']
  with pytest.raises(ValueError, match='HOROVOD_GLOO_RENDEZVOUS_PORT.*is not set'):
    slurm.horovod_task_env(env, expand=fake_expand)


def test_horovod_on_one_node_uses_loopback():
  env = slurm_task_env(1, 'n1', SLURM_STEP_NODELIST='n1', SLURM_STEP_TASKS_PER_NODE='2',
                       SLURM_NTASKS='2')
  del env['HOROVOD_GLOO_IFACE']
  assert slurm.horovod_task_env(env, expand=fake_expand)['HOROVOD_GLOO_IFACE'] == 'lo'


def test_rendezvous_plan_uses_the_job_layout_not_the_batch_step():
  env = slurm_task_env(0, 'n1', SLURM_STEP_NODELIST='n1', SLURM_STEP_TASKS_PER_NODE='1')
  plan = slurm.horovod_plan(env, step=False, expand=fake_expand)
  assert [(s.hostname, s.rank, s.local_rank) for s in plan] == [
      ('n1', 0, 0), ('n1', 1, 1), ('n2', 2, 0), ('n2', 3, 1)]


def test_tasks_per_node_expands_slurm_syntax():
  from trainer.engines import cluster  # pylint: disable=g-import-not-at-top
  assert cluster.expand_tasks_per_node('2(x3),1') == [2, 2, 2, 1]
  with pytest.raises(ValueError, match='cannot parse'):
    cluster.expand_tasks_per_node('two')


# --- Config and engine ----------------------------------------------------------------------------


def test_engine_comes_from_the_config():
  for engine in ('multi_worker', 'horovod'):
    args = (f'--config=configs/{engine}.py', '--workdir=/tmp/x')
    spec = slurm.JobSpec(trainer_args=args, engine=None, tasks_per_node=2)
    assert slurm.resolve_engine(spec, slurm.load_config(args)).engine == engine


def test_engine_option_must_agree_with_config():
  args = ('--config=configs/horovod.py',)
  with pytest.raises(ValueError, match="--engine=multi_worker but .*engine.name='horovod'"):
    slurm.resolve_engine(slurm.JobSpec(trainer_args=args, engine='multi_worker'),
                         slurm.load_config(args))


def test_global_batch_must_split_over_the_tasks():
  args = ('--config=configs/horovod.py', '--config.train.global_batch_size=64')
  with pytest.raises(ValueError, match=r'global_batch_size.*\(1 node\(s\) x 3 task\(s\)\)'):
    slurm.resolve_engine(slurm.JobSpec(trainer_args=args, engine=None, tasks_per_node=3),
                         slurm.load_config(args))


@pytest.mark.parametrize('args, match', [
    (('--config.no_such_field=1',), 'could not load the experiment config'),
    (('--config=configs/no_such_file.py',), 'could not load the experiment config'),
    (('--config.train.global_batch_size=0',), 'invalid experiment config'),
])
def test_bad_config_is_reported_before_submitting(args, match):
  with pytest.raises(ValueError, match=match):
    slurm.load_config(args)


# --- Submission and the command line -------------------------------------------------------------


def test_submit_pipes_the_script_to_sbatch_parsable_and_returns_job_id(tmp_path):
  stub = tmp_path / 'sbatch'
  stub.write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/args\ncat > {tmp_path}/script\n'
                  'echo "42;cluster"\n')
  stub.chmod(0o755)
  spec = gpu_spec()
  assert slurm.submit(spec, sbatch=str(stub)) == '42'
  assert (tmp_path / 'args').read_text() == '--parsable\n'
  assert (tmp_path / 'script').read_text() == slurm.render_sbatch(spec)


def test_submit_reports_sbatch_errors(tmp_path):
  stub = tmp_path / 'sbatch'
  stub.write_text('#!/bin/bash\necho "sbatch: error: invalid partition specified: gpu" >&2\n'
                  'exit 1\n')
  stub.chmod(0o755)
  with pytest.raises(RuntimeError, match='sbatch failed .*invalid partition specified: gpu'):
    slurm.submit(gpu_spec(), sbatch=str(stub))
  with pytest.raises(RuntimeError, match='not found.*launch.slurm_cluster start'):
    slurm.submit(gpu_spec(), sbatch=str(tmp_path / 'missing'))


def run_cli(*args, path=None):
  env = dict(os.environ)
  if path is not None:
    env['PATH'] = path
  return subprocess.run([sys.executable, '-m', 'launch.slurm', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120, env=env)


def test_cli_dry_run_prints_script_without_sbatch(tmp_path):
  result = run_cli('submit', '--dry_run', '--nodes=2', '--tasks_per_node=4', '--gpus_per_task=1',
                   '--cpus_per_task=8', '--time=02:00:00', '--partition=gpu', '--account=proj',
                   '--sbatch_line=--mail-type=END', '--setup_line=module load cuda', '--',
                   '--config=configs/multi_worker.py', f'--workdir={tmp_path}', path=str(tmp_path))
  assert result.returncode == 0, result.stderr
  assert result.stdout == slurm.render_sbatch(gpu_spec(
      trainer_args=('--config=configs/multi_worker.py', f'--workdir={tmp_path}'), job_name='convoy',
      output=None, error=None))


@pytest.mark.parametrize('args, message', [
    (('render', '--job_name=x; rm -rf /'), "--job_name='x; rm -rf /': must be"),
    (('render', '--engine=horovod'), "--engine=horovod but the experiment config has "
                                     "engine.name='mirrored'"),
    (('render', '--time=soon'), "--time='soon'"),
    (('render', '--', '--config.train.num_train_steps=x'), 'could not load the experiment config'),
])
def test_cli_errors_are_one_line_with_exit_2(args, message):
  result = run_cli(*args)
  assert result.returncode == 2
  assert message in result.stderr
  assert 'Traceback' not in result.stderr


# --- launch.slurm_cluster without daemons ---------------------------------------------------------


def local_cluster(tmp_path):
  return slurm_cluster.Cluster(state_dir=str(tmp_path / 'state'),
                               conf_path=str(tmp_path / 'slurm.conf'), hostname='node7', cpus=3,
                               real_memory_mb=2000)


def test_slurm_conf_has_what_worked_on_this_machine(tmp_path):
  conf = slurm_cluster.render_slurm_conf(local_cluster(tmp_path)).splitlines()
  state = tmp_path / 'state'
  for line in ['ClusterName=convoy', 'SlurmctldHost=node7', 'SlurmUser=root', 'SlurmdUser=root',
               'AuthType=auth/munge', f'StateSaveLocation={state}/state',
               f'SlurmdSpoolDir={state}/spool', f'SlurmctldPidFile={state}/slurmctld.pid',
               f'SlurmdLogFile={state}/slurmd.log', 'ProctrackType=proctrack/linuxproc',
               'TaskPlugin=task/none', 'SelectType=select/cons_tres',
               'SelectTypeParameters=CR_Core',
               'MpiDefault=none', 'ReturnToService=2', 'SchedulerParameters=batch_sched_delay=0',
               'NodeName=node7 CPUs=3 RealMemory=2000 State=UNKNOWN']:
    assert line in conf
  assert ('PartitionName=debug Nodes=node7 Default=YES MaxTime=INFINITE OverSubscribe=YES '
          'State=UP') in conf


def test_real_memory_is_below_the_machines():
  with open('/proc/meminfo') as f:
    total_mb = int(f.readline().split()[1]) // 1024
  assert 0 < slurm_cluster.default_real_memory_mb() < total_mb


def test_write_conf_never_overwrites_a_foreign_slurm_conf(tmp_path):
  cluster = local_cluster(tmp_path)
  (tmp_path / 'slurm.conf').write_text('ClusterName=production\n')
  with pytest.raises(slurm_cluster.ClusterError, match='not written by launch.slurm_cluster'):
    slurm_cluster.write_conf(cluster)
  assert (tmp_path / 'slurm.conf').read_text() == 'ClusterName=production\n'
  (tmp_path / 'slurm.conf').write_text(slurm_cluster.MARKER + '\nClusterName=old\n')
  slurm_cluster.write_conf(cluster)  # Its own file from an earlier start: rewritten.
  assert (tmp_path / 'slurm.conf').read_text() == slurm_cluster.render_slurm_conf(cluster)


def test_start_and_stop_need_root(tmp_path, monkeypatch):
  monkeypatch.setattr(os, 'geteuid', lambda: 1000)
  for action in (slurm_cluster.start, slurm_cluster.stop):
    with pytest.raises(slurm_cluster.NotRootError, match='needs root'):
      action(local_cluster(tmp_path))


def test_missing_packages_without_apt_get_say_what_to_install(monkeypatch):
  monkeypatch.setattr(os, 'geteuid', lambda: 0)
  monkeypatch.setattr(slurm_cluster, 'missing_programs', lambda: ['/usr/sbin/slurmd'])
  monkeypatch.setattr(slurm_cluster.shutil, 'which', lambda name: None)
  with pytest.raises(slurm_cluster.PackagesUnavailableError, match='slurm-wlm munge'):
    slurm_cluster.ensure_packages()


def test_node_not_ready_in_time_shows_the_daemon_logs(tmp_path, monkeypatch):
  cluster = local_cluster(tmp_path)
  os.makedirs(cluster.path(''))
  with open(cluster.path('slurmd.log'), 'w') as f:
    f.write('first\nerror: Unable to register: Zero Bytes were transmitted or received\n')
  monkeypatch.setattr(slurm_cluster, 'node_state', lambda cluster: None)
  with pytest.raises(slurm_cluster.ClusterError) as error:
    slurm_cluster.wait_until_ready(cluster, timeout_seconds=1)
  message = str(error.value)
  assert 'node node7 not ready within 1 s (sinfo state: no answer from slurmctld)' in message
  assert 'Unable to register' in message and 'slurmctld.log' in message
