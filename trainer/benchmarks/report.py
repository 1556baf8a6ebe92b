"""The report of a scaling sweep: CSV, JSON, PNG plots and a Markdown page that embeds them.

    rows = create_rows(results)                    # one flat row per run, with scaling efficiency
    combined = combine_rounds(rows)                # one row per cell and replica count (--rounds)
    paths = create_report(out_dir, results, meta)  # results.csv/.json, 3 PNGs, report.md

`results` are the runs' `result.json` dicts (`trainer.benchmarks.scaling.summarize_run`), or for a
failed or missing run `{'status': 'failed' | 'missing', 'error': ..., 'spec': ...}`; every one has
the sweep's `spec` (engine, workers, replicas, scaling, batch_size, loop, fields, ...). `meta`
describes the sweep (command, machine, plan; see `create_markdown`).

Scaling efficiency of a run = images/s / (replicas x images/s of its baseline), the baseline being
the 1-replica run of the same grid cell (same engine, scaling, batch, loop and fields; else the
`default` engine's). With one replica in the baseline this is both weak scaling's per-replica
throughput ratio (per-replica batch fixed) and strong scaling's speedup / N (global batch fixed).

A sweep with `--rounds` runs every cell several times (`spec['round']`); a run's baseline is then
the 1-replica run of the same round (a pair measured next to each other in time), and
`combine_rounds` gives one row per cell and replica count: the median of the paired efficiencies
with their range, and the other figures of the median round. The plots and the text table show the
combined rows; results.csv keeps every run.

A predicted curve (rows with `workers`, `images_per_second`, `efficiency` and optionally `engine`
or `label`, e.g. from `trainer.benchmarks.scaling_model.predict_curve`) may be passed to the plots
and the report; it is drawn as dashed lines beside the measured points.
"""

import csv
import json
import math
import os
import statistics

import matplotlib
matplotlib.use('Agg')  # Files only: no display needed.
from matplotlib import pyplot  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import ticker  # pylint: disable=g-import-not-at-top,wrong-import-position

PLOTS = {'throughput': 'throughput.png', 'efficiency': 'efficiency.png',
         'breakdown': 'breakdown.png'}
SPEC_COLUMNS = ('run_id', 'status', 'engine', 'workers', 'processes', 'replicas', 'scaling',
                'batch_size', 'global_batch_size', 'per_replica_batch_size', 'loop', 'round')
MEASURED_COLUMNS = (
    'images_per_second', 'images_per_second_min', 'images_per_second_max',
    'images_per_second_per_replica', 'scaling_efficiency', 'scaling_efficiency_min',
    'scaling_efficiency_max', 'rounds', 'efficiency_baseline',
    'no_comm_images_per_second', 'scaling_efficiency_no_comm', 'step_ms',
    'input_ms', 'compute_ms', 'comm_ms', 'input_ms_raw', 'compute_ms_raw', 'comm_ms_raw',
    'comm_measured_with', 'forward_flops_per_image', 'train_flops_per_image',
    'achieved_flops_per_second', 'machine_peak_flops_per_second', 'machine_peak_fraction',
    'allocation_peak_flops_per_second', 'allocation_peak_fraction', 'cpu_busy',
    'busiest_thread_share', 'peak_rss_mb', 'total_rss_mb', 'gpu_peak_mb', 'train_loss', 'pinned',
    'cpus', 'threads', 'load_start', 'load_end', 'run_seconds', 'error')
# Figures every successful run has (finite numbers); gpu_peak_mb is None without GPUs, the
# machine's peak None under Slurm, the efficiency None without a 1-replica baseline.
NUMERIC_COLUMNS = ('images_per_second', 'images_per_second_min', 'images_per_second_max',
                   'images_per_second_per_replica', 'no_comm_images_per_second', 'step_ms',
                   'input_ms', 'compute_ms', 'comm_ms',
                   'input_ms_raw', 'compute_ms_raw', 'comm_ms_raw', 'forward_flops_per_image',
                   'train_flops_per_image', 'achieved_flops_per_second',
                   'allocation_peak_flops_per_second', 'allocation_peak_fraction', 'cpu_busy',
                   'peak_rss_mb', 'total_rss_mb', 'train_loss')
_BREAKDOWN_COLORS = {'input_ms': '#f2a541', 'compute_ms': '#3c78d8', 'comm_ms': '#cc4125'}


# ---------------------------------------------------------------------------------------------
# Rows.


def grid_fields(results):
  """The config fields varied or set by the grid, in the order they first appear."""
  fields = []
  for result in results:
    for field in (result.get('spec') or {}).get('fields', {}):
      if field not in fields:
        fields.append(field)
  return fields


def _cell_key(row, fields, engine=None, with_round=True):
  """What identifies a run's grid cell (and round) apart from its replica count."""
  key = ((engine or row['engine']), row['scaling'], row['batch_size'], row['loop'],
         tuple(json.dumps(row.get(f), sort_keys=True) for f in fields))
  return key + ((row.get('round') or 1,) if with_round else ())


def create_row(result, fields):
  """One flat row of a run's result (see `SPEC_COLUMNS`, `MEASURED_COLUMNS` and the fields)."""
  spec = result.get('spec') or {}
  row = {name: spec.get(name) for name in SPEC_COLUMNS}
  row['run_id'] = result.get('run_id') or spec.get('run_id')
  row['status'] = result.get('status', 'ok')
  row.update({field: spec.get('fields', {}).get(field) for field in fields})
  row.update({name: None for name in MEASURED_COLUMNS})
  row['error'] = result.get('error')
  row['run_seconds'] = result.get('run_seconds')
  if row['status'] != 'ok':
    return row
  rates, breakdown = result['images_per_second'], result['breakdown']
  row.update({
      'images_per_second': rates['median'], 'images_per_second_min': rates['min'],
      'images_per_second_max': rates['max'],
      'images_per_second_per_replica': result['images_per_second_per_replica'],
      'no_comm_images_per_second': result['variants_images_per_second']['no_comm']['median'],
      'step_ms': result['step_ms'],
      **{key: breakdown.get(key) for key in ('input_ms', 'compute_ms', 'comm_ms', 'input_ms_raw',
                                         'compute_ms_raw', 'comm_ms_raw', 'comm_measured_with')},
      **{key: result.get(key) for key in (
          'forward_flops_per_image', 'train_flops_per_image', 'achieved_flops_per_second',
          'machine_peak_flops_per_second', 'machine_peak_fraction',
          'allocation_peak_flops_per_second', 'allocation_peak_fraction', 'cpu_busy',
          'busiest_thread_share', 'peak_rss_mb', 'total_rss_mb', 'gpu_peak_mb', 'train_loss',
          'pinned')},
      'cpus': ' | '.join(','.join(map(str, cpus)) for cpus in result.get('cpus', [])),
      'threads': '{intra_op}/{inter_op}'.format(**result['threads']) if result.get('threads')
                 else None,
      'load_start': result['load_average']['start'], 'load_end': result['load_average']['end'],
  })
  row['replicas'] = row['replicas'] or result['num_replicas']
  return row


def add_scaling_efficiency(rows, fields):
  """Sets `scaling_efficiency`, `scaling_efficiency_no_comm` and `efficiency_baseline` (run id)
  of every successful row.

  Efficiency = images/s / (replicas / baseline replicas x baseline images/s), the baseline being
  the 1-replica run of the same cell and round, else the `default` engine's 1-replica run of that
  cell and round; None when neither ran. The no-comm efficiency is the same ratio for the step
  without gradient communication (the `no_comm` variant of both runs): the efficiency the run
  would have if communication were free, so 1 - it is what the machine itself loses (cores
  sharing memory bandwidth and caches, stragglers at each step's synchronization).
  """
  baselines = {}
  for row in rows:
    if row['status'] == 'ok' and row['replicas'] == 1:
      baselines.setdefault(_cell_key(row, fields), row)
  for row in rows:
    if row['status'] != 'ok':
      continue
    base = (baselines.get(_cell_key(row, fields)) or
            baselines.get(_cell_key(row, fields, engine='default')))
    if base is None:
      continue
    scale = row['replicas'] / base['replicas']
    row['scaling_efficiency'] = row['images_per_second'] / (scale * base['images_per_second'])
    row['scaling_efficiency_no_comm'] = row['no_comm_images_per_second'] / (
        scale * base['no_comm_images_per_second'])
    row['efficiency_baseline'] = base['run_id']
  return rows


def create_rows(results):
  """Flat rows of `results` (in order) with their scaling efficiency; see `create_row`."""
  fields = grid_fields(results)
  return add_scaling_efficiency([create_row(r, fields) for r in results], fields)


def has_rounds(rows):
  """Whether the rows come from a sweep with more than one round."""
  return any((row.get('round') or 1) > 1 for row in rows)


def combine_rounds(rows):
  """One row per grid cell and replica count of a sweep with rounds (the rows as they are
  without rounds), in the order each first appears.

  A combined row is the row of the cell's median round (ranked by images/s; the lower middle for
  an even count), with `images_per_second_min`/`_max` the range of the rounds' images/s,
  `scaling_efficiency` and `scaling_efficiency_no_comm` the median of the rounds' paired
  efficiencies (each against the 1-replica run of its own round) and `scaling_efficiency_min`/
  `_max` their range, `rounds` the number of successful rounds and `round` None. A cell with no
  successful round keeps the row of its last round (failed or missing).
  """
  if not has_rounds(rows):
    return rows
  fields = row_fields(rows)
  groups = {}
  for row in rows:
    groups.setdefault(_cell_key(row, fields, with_round=False) + (row['replicas'],),
                      []).append(row)
  combined = []
  for group in groups.values():
    ok = [r for r in group if r['status'] == 'ok']
    if not ok:
      combined.append(dict(group[-1], round=None, rounds=0))
      continue
    rates = [r['images_per_second'] for r in ok]
    row = dict(sorted(ok, key=lambda r: r['images_per_second'])[(len(ok) - 1) // 2],
               round=None, rounds=len(ok), images_per_second_min=min(rates),
               images_per_second_max=max(rates))
    paired = [r['scaling_efficiency'] for r in ok if r['scaling_efficiency'] is not None]
    paired_no_comm = [r['scaling_efficiency_no_comm'] for r in ok
                      if r['scaling_efficiency_no_comm'] is not None]
    if paired:
      row.update(scaling_efficiency=statistics.median(paired),
                 scaling_efficiency_min=min(paired), scaling_efficiency_max=max(paired))
    row['scaling_efficiency_no_comm'] = (statistics.median(paired_no_comm) if paired_no_comm
                                         else None)
    combined.append(row)
  return combined


def row_fields(rows):
  """The grid's config fields among the rows' keys, in order."""
  return list(dict.fromkeys(key for row in rows for key in row
                            if key not in SPEC_COLUMNS and key not in MEASURED_COLUMNS))


def columns(rows):
  """CSV columns: the spec, the grid's fields, then the figures."""
  return [*SPEC_COLUMNS, *row_fields(rows), *MEASURED_COLUMNS]


# ---------------------------------------------------------------------------------------------
# CSV and JSON.


def _csv_value(value):
  if value is None:
    return ''
  if isinstance(value, (list, tuple, dict)):
    return json.dumps(value)
  return value


def create_csv(rows, path):
  """Writes `rows` as CSV (empty cells for missing figures); returns `path`."""
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns(rows))
    writer.writeheader()
    for row in rows:
      writer.writerow({key: _csv_value(value) for key, value in row.items()})
  return path


def create_json(rows, meta, path, predicted=None):
  """Writes `{'meta', 'runs' (the rows), 'predicted'}` as JSON, plus 'combined'
  (`combine_rounds`) for a sweep with rounds; returns `path`."""
  data = {'meta': meta, 'runs': rows, 'predicted': list(predicted or [])}
  if has_rounds(rows):
    data['combined'] = combine_rounds(rows)
  with open(path, 'w') as f:
    f.write(json.dumps(data, indent=2, default=str) + '\n')
  return path


# ---------------------------------------------------------------------------------------------
# Plots.


def _varying(rows, keys):
  """The keys among `keys` whose value differs between rows."""
  return [k for k in keys if len({json.dumps(r.get(k), sort_keys=True) for r in rows}) > 1]


def series_label(row, varying):
  """A short label of a run's series: its engine and the varying settings other than replicas."""
  parts = [row['engine']]
  for key in varying:
    value = row.get(key)
    parts.append(f'b{value}' if key == 'batch_size' else
                 str(value) if key in ('loop', 'scaling') else f'{key}={value}')
  return ' '.join(parts)


def _series(rows, fields):
  """{scaling mode: {label: rows sorted by replicas}} of the successful rows."""
  by_mode = {}
  for row in rows:
    if row['status'] == 'ok':
      by_mode.setdefault(row['scaling'], []).append(row)
  modes = {}
  for mode, mode_rows in by_mode.items():
    varying = _varying(mode_rows, ['loop', 'batch_size', *fields])
    series = modes.setdefault(mode, {})
    for row in sorted(mode_rows, key=lambda r: r['replicas']):
      series.setdefault(series_label(row, varying), []).append(row)
  return modes


def _predicted_label(row):
  name = row.get('label') or row.get('engine')
  return f'predicted ({name})' if name else 'predicted'


def _plot_predicted(axes, predicted, key):
  curves = {}
  for row in predicted or []:
    if row.get(key) is not None:
      curves.setdefault(_predicted_label(row), []).append(row)
  for label, points in curves.items():
    points.sort(key=lambda r: r['workers'])
    axes.plot([p['workers'] for p in points], [p[key] for p in points], linestyle='--',
              marker='x', label=label)


def _mode_axes(modes):
  figure, axes = pyplot.subplots(1, max(1, len(modes)), figsize=(6.4 * max(1, len(modes)), 4.6),
                                 squeeze=False)
  return figure, axes[0]


def _finish(figure, axes, path):
  for ax in axes:
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize='small')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)
  return path


def _replica_ticks(ax, rows):
  ticks = sorted({r['replicas'] for r in rows})
  if ticks:
    ax.set_xticks(ticks)


def _plot_per_mode(rows, path, fields, predicted, draw, key, ylabel, title):
  """One panel per scaling mode: `draw(ax, label, points)` for each series, the `predicted` curve
  of `key` (dashed) beside the first panel's points, replica ticks and labels. Returns `path`."""
  modes = _series(rows, list(fields))
  figure, axes = _mode_axes(modes)
  for index, (ax, (mode, series)) in enumerate(zip(axes, sorted(modes.items()) or [('', {})])):
    for label, points in series.items():
      draw(ax, label, points)
    ticks = [p for points in series.values() for p in points]
    if index == 0 and predicted:
      _plot_predicted(ax, predicted, key)
      # Predictions reach far more workers than measured: powers of two on a log axis.
      ax.set_xscale('log', base=2)
      if key == 'images_per_second':
        ax.set_yscale('log')
      ticks += [{'replicas': r['workers']} for r in predicted]
    _replica_ticks(ax, ticks)
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.set_xlabel('replicas (workers x replicas per worker)')
    ax.set_ylabel(ylabel)
    ax.set_title(f'{title}, {mode} scaling' if mode else title)
    if ax.get_yscale() == 'linear':
      ax.set_ylim(bottom=0)
  return _finish(figure, axes, path)


def _draw_throughput(ax, label, points):
  """Median images/s with min-max error bars, and ideal scaling (dotted) from 1 replica."""
  x = [p['replicas'] for p in points]
  y = [p['images_per_second'] for p in points]
  errors = [[p['images_per_second'] - p['images_per_second_min'] for p in points],
            [p['images_per_second_max'] - p['images_per_second'] for p in points]]
  line = ax.errorbar(x, y, yerr=errors, marker='o', capsize=3, label=label)
  if points[0]['replicas'] == 1 and len(points) > 1:
    ax.plot(x, [y[0] * n for n in x], linestyle=':', color=line[0].get_color(), alpha=0.6)


def _draw_efficiency(ax, label, points):
  """Efficiency per replica count, with reference lines at 1.0 and 0.9."""
  ax.plot([p['replicas'] for p in points], [p['scaling_efficiency'] for p in points], marker='o',
          label=label)
  ax.axhline(1.0, color='grey', linewidth=0.8)
  ax.axhline(0.9, color='grey', linewidth=0.8, linestyle=':')


def create_throughput_plot(rows, path, fields=(), predicted=None):
  """Images/s vs replicas, one line per engine (and varying setting), min-max as error bars.

  One panel per scaling mode; a dotted line shows ideal scaling from each series' 1-replica
  point; `predicted` rows are drawn dashed. Returns `path`.
  """
  return _plot_per_mode(rows, path, fields, predicted, _draw_throughput, 'images_per_second',
                        'images/s (median, min-max)', 'Throughput (dotted: ideal)')


def create_efficiency_plot(rows, path, fields=(), predicted=None):
  """Scaling efficiency vs replicas, one line per engine (and varying setting); `predicted`
  dashed; reference lines at 1.0 and 0.9. Returns `path`."""
  rows = [r for r in rows if r['scaling_efficiency'] is not None]
  return _plot_per_mode(rows, path, fields, predicted, _draw_efficiency, 'efficiency',
                        'efficiency vs 1 replica', 'Scaling efficiency')


def create_breakdown_plot(rows, path):
  """Stacked bars of input wait, compute and gradient communication (ms per step) per run."""
  ok = [r for r in rows if r['status'] == 'ok']
  figure, ax = pyplot.subplots(figsize=(max(6.4, 0.9 * len(ok) + 2), 4.8))
  labels = [r['run_id'] for r in ok]
  bottom = [0.0] * len(ok)
  for key, color in _BREAKDOWN_COLORS.items():
    values = [r[key] for r in ok]
    ax.bar(range(len(ok)), values, bottom=bottom, color=color, label=key[:-3])
    bottom = [b + v for b, v in zip(bottom, values)]
  ax.set_xticks(range(len(ok)))
  ax.set_xticklabels(labels, rotation=60, ha='right', fontsize='x-small')
  ax.set_ylabel('ms per step')
  ax.set_title('Step time: input wait, compute, gradient communication')
  return _finish(figure, [ax], path)


# ---------------------------------------------------------------------------------------------
# Markdown.


def _number(value, digits=0, scale=1.0, suffix=''):
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return '-'
  return f'{value / scale:.{digits}f}{suffix}'


def _table(header, lines):
  out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  out += ['| ' + ' | '.join(str(cell) for cell in line) + ' |' for line in lines]
  return out


def _is_combined(rows):
  return any(r.get('rounds') is not None for r in rows)


def _efficiency(row):
  """The efficiency, with the range over rounds for a combined row: '0.85 [0.80-0.90]'."""
  text = _number(row['scaling_efficiency'], 2)
  if row.get('rounds') is not None and row.get('scaling_efficiency_min') is not None:
    text += (f" [{_number(row['scaling_efficiency_min'], 2)}-"
             f"{_number(row['scaling_efficiency_max'], 2)}]")
  return text


def _round_header(rows):
  """The round column of a table: 'rounds' (combined rows), 'round' (runs of a sweep with
  rounds) or none."""
  return ['rounds'] if _is_combined(rows) else ['round'] if has_rounds(rows) else []


def _round_cells(row, header):
  return [row.get(name) for name in header]


def create_table(rows, fields=()):
  """The Markdown table of the runs (one line each; failed runs show their status), or of the
  combined rows of a sweep with rounds (`combine_rounds`: a rounds column, the efficiency's range).
  """
  rounds = _round_header(rows)
  header = ['run', 'status', 'engine', 'w x r', 'scaling', 'batch/replica', 'global', 'loop',
            *fields, *rounds, 'images/s [min-max]',
            'eff. [min-max]' if _is_combined(rows) else 'eff.', 'eff. no comm', 'step ms',
            'input', 'compute', 'comm',
            'GFLOP/img (train)', 'GFLOP/s', '% machine peak', '% run peak', '% CPU busy',
            '% busiest thread', 'peak RSS MB']
  lines = []
  for r in rows:
    layout = (f"{r['processes']} x {r['replicas'] // r['processes']}"
              if r.get('processes') and r.get('replicas') else '-')
    spread = (f"{_number(r['images_per_second'])} [{_number(r['images_per_second_min'])}-"
              f"{_number(r['images_per_second_max'])}]" if r['status'] == 'ok' else '-')
    lines.append([
        f"`{r['run_id']}`", r['status'], r['engine'], layout, r['scaling'],
        r['per_replica_batch_size'], r['global_batch_size'], r['loop'],
        *[r.get(f) for f in fields], *_round_cells(r, rounds), spread, _efficiency(r),
        _number(r['scaling_efficiency_no_comm'], 2),
        _number(r['step_ms'], 2), _number(r['input_ms'], 2), _number(r['compute_ms'], 2),
        _number(r['comm_ms'], 2), _number(r['train_flops_per_image'], 4, 1e9),
        _number(r['achieved_flops_per_second'], 1, 1e9),
        _number(r['machine_peak_fraction'], 1, 0.01), _number(r['allocation_peak_fraction'], 1,
                                                              0.01),
        _number(r['cpu_busy'], 0, 0.01), _number(r['busiest_thread_share'], 0, 0.01),
        _number(r['peak_rss_mb'])])
  return '\n'.join(_table(header, lines))


def create_text_table(rows, fields=()):
  """A compact plain-text table of the runs for the terminal: layout, images/s, efficiencies and
  the step-time breakdown (ms); report.md and results.csv have every column. Combined rows of a
  sweep with rounds (`combine_rounds`) get a rounds column and the efficiency's range."""
  rounds = _round_header(rows)
  header = ['engine', 'w x r', 'batch', 'loop', *fields, *rounds, 'images/s [min-max]',
            'eff. [min-max]' if _is_combined(rows) else 'eff.',
            'no comm', 'step ms', 'input', 'compute', 'comm', 'cpu %', 'top thr %']
  lines = []
  for r in rows:
    layout = (f"{r['processes']} x {r['replicas'] // r['processes']}"
              if r.get('processes') and r.get('replicas') else '-')
    first = [r['engine'], layout, r['per_replica_batch_size'], r['loop'],
             *[r.get(f) for f in fields], *_round_cells(r, rounds)]
    if r['status'] != 'ok':
      lines.append(first + [r['status']] + [''] * 8)
      continue
    lines.append([
        *first,
        f"{_number(r['images_per_second'])} [{_number(r['images_per_second_min'])}-"
        f"{_number(r['images_per_second_max'])}]", _efficiency(r),
        _number(r['scaling_efficiency_no_comm'], 2), _number(r['step_ms'], 2),
        _number(r['input_ms'], 2), _number(r['compute_ms'], 2), _number(r['comm_ms'], 2),
        _number(r['cpu_busy'], 0, 0.01), _number(r['busiest_thread_share'], 0, 0.01)])
  cells = [[str(c) for c in line] for line in [header] + lines]
  widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
  text_columns = 4 + len(fields) + len(rounds)  # Left-aligned; the figures are right-aligned.
  return '\n'.join('  '.join(c.ljust(w) if i < text_columns else c.rjust(w)
                              for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                    for line in cells)


def _predicted_table(predicted):
  lines = [[_predicted_label(p), p['workers'], _number(p.get('images_per_second')),
            _number(p.get('efficiency'), 2)] for p in predicted]
  return '\n'.join(_table(['curve', 'workers', 'images/s', 'efficiency'], lines))


def _pinning_note(meta):
  if meta.get('mode') == 'slurm':
    return ('Runs were Slurm jobs: CPUs come from the allocation (`--cpus_per_task`), no pinning '
            'by the sweep; the machine\'s peak was not measured (the "% run peak" column is the '
            'allocation\'s own matmul peak).')
  if meta.get('pin_cpus'):
    share = meta.get('cpus_per_worker', 1)
    return (f'Each worker (replica) was pinned to its own {share} core(s) with `launch.local`\'s '
            '`cpu_shares` (`--pin_cpus`), with 1 intra-op thread per process and 1 inter-op '
            'thread per local replica (`trainer.benchmarks.engines.configure_threads`): a run with '
            'N replicas uses N times the cores of a 1-replica run, so weak scaling compares like '
            'with like.')
  return ('Workers were **not** pinned: every process could use every core with TensorFlow\'s '
          'default thread pools, so N replicas share the same cores as one (this measures '
          'overheads, not scaling).')


def create_markdown(meta, rows, plots=None, predicted=None):
  """The Markdown report.

  Args:
    meta: the sweep's description: `command`, `created`, `mode` ('local' or 'slurm'), `machine`
      (dict of name -> text), `machine_peak` (the session's `--peak_only` result or None),
      `pin_cpus`, `cpus_per_worker`, `plan` (steps, warmup_steps, repeats, rounds), `grid` (axis ->
      values), `config` (file and overrides), `notes` (extra lines).
    rows: `create_rows`.
    plots: {'throughput' | 'efficiency' | 'breakdown': file name relative to the report}.
    predicted: optional predicted rows (see the module docstring).
  """
  fields = row_fields(rows)
  plots = plots or {}
  plan = meta.get('plan', {})
  counts = {status: sum(r['status'] == status for r in rows) for status in ('ok', 'failed',
                                                                           'missing')}
  peak = meta.get('machine_peak') or {}
  lines = [
      '# Scaling sweep', '',
      f"Created {meta.get('created', '?')} by:", '', '```', meta.get('command', '?'), '```', '',
      '## What was run', '',
      f"{len(rows)} run(s): {counts['ok']} ok, {counts['failed']} failed, {counts['missing']} "
      'not run yet.', '',
  ]
  lines += [f'- {axis}: {", ".join(map(str, values))}' for axis, values in
            meta.get('grid', {}).items()]
  config = meta.get('config', {})
  if config:
    overrides = ' '.join(f'`--config.{k}={v}`' for k, v in config.get('overrides', {}).items())
    lines.append(f"- experiment config: `{config.get('file')}` {overrides}".rstrip())
  lines += [
      f"- each run: fresh processes; {plan.get('warmup_steps')} warm-up + {plan.get('steps')} "
      f"measured steps per variant, {plan.get('repeats')} repeat(s) with a fresh model; images/s "
      'is the median over repeats of the rate from the end of the warm-up to the last step '
      '(the chief\'s clock), with the min-max over repeats.',
      '- weak scaling: the per-replica batch is fixed (global batch = batch x replicas); strong: '
      'the global batch is fixed and divided among the replicas.',
      '- scaling efficiency: images/s / (replicas x images/s of the 1-replica run of the same '
      'grid cell and engine, else of the `default` engine): the per-replica throughput ratio '
      '(weak) or speedup / N (strong). "eff. no comm" is the same ratio for the step without '
      'gradient communication: the efficiency if communication were free; what it lacks of 1 is '
      'lost by the machine itself (shared memory bandwidth and caches, stragglers at each '
      'step\'s synchronization), what lies between it and "eff." is communication.', '',
      '## Machine', '']
  lines += [f'- {name}: {value}' for name, value in meta.get('machine', {}).items()]
  if peak:
    lines.append(f"- peak: {_number(peak.get('machine_peak_flops_per_second'), 1, 1e9)} GFLOP/s, "
                 f"float32 {peak.get('matmul_size')}x{peak.get('matmul_size')} matmul in a "
                 'tf.function, best of a few, measured at the start of this session in a fresh '
                 'process with every CPU and TensorFlow\'s default threads.')
  lines.append(f'- pinning: {_pinning_note(meta)}')
  if has_rounds(rows):
    rounds = max(r.get('round') or 1 for r in rows)
    lines += [
        '', '## Results', '',
        f'Each cell ran in {rounds} rounds, one after the other, its worker counts in alternating '
        'order; each run\'s efficiency is against the 1-replica run of its own round. One line '
        'per cell and replica count: "rounds" is the number of successful rounds, images/s is '
        'that of the median round with the range of all rounds, "eff." is the median of the '
        'paired efficiencies with their range; the other figures are those of the median round '
        '(the run named). Every run is listed under "Every run".', '',
        create_table(combine_rounds(rows), fields), '', '## Every run', '',
        create_table(rows, fields), '']
  else:
    lines += ['', '## Results', '', create_table(rows, fields), '']
  for name, title in (('throughput', 'Throughput'), ('efficiency', 'Scaling efficiency'),
                      ('breakdown', 'Step-time breakdown')):
    if name in plots:
      lines += [f'![{title}]({plots[name]})', '']
  if predicted:
    lines += ['## Predicted (scaling model)', '', _predicted_table(predicted), '']
  failed = [r for r in rows if r['status'] != 'ok']
  if failed:
    lines += ['## Failed or missing runs', '']
    lines += [f"- `{r['run_id']}` ({r['status']}): {r.get('error') or 'not run yet'}"
              for r in failed]
    lines.append('')
  lines += [
      '## How to read it', '',
      '- **Step-time breakdown** (ms per optimizer step), from variants of the same step run in '
      'the same processes: input wait = full step - step on a fixed, cached batch; gradient '
      'communication = fixed-batch step - the same without gradient all-reduce '
      '(`NoGradientCommunication`); compute = the rest. The parts are clamped to [0, step] so '
      'that they add up to the step; the raw differences are in results.csv (`*_raw`). For '
      '`loop=fit` the communication variants run with the custom loop (Keras fit always '
      'aggregates gradients itself).',
      '- **FLOPs**: TensorFlow\'s profiler on the forward graph of one image (2 FLOPs per '
      'multiply-add; SE-free ResNet-50 counts 8.19 GFLOPs = 4.09 G multiply-adds at 224x224); a '
      'training image counts 3x forward. GFLOP/s = images/s x that. "% machine peak" compares it '
      'with the session\'s float32 matmul peak of the whole machine; "% run peak" with the '
      'matmul peak of the run\'s own workers (measured in them, all at once, with their pinning '
      'and threads). Mixed-precision runs are still compared with the float32 peak.',
      '- **CPU use** of the full step, over its measured steps: "% CPU busy" is each process\'s '
      'CPU seconds / (wall seconds x the CPUs it may use), averaged over the processes: what is '
      'missing to 100% was spent waiting (for peers at each all-reduce, for input, for other '
      'processes on its cores). "% busiest thread" is the share of that CPU time used by the '
      'process\'s busiest thread (with one intra-op thread, the thread running the step\'s '
      'kernels): the rest went to the runtime\'s other threads (tf.data, the inter-op pool, '
      'Horovod\'s background and Gloo threads, gRPC) and, on pinned cores, was taken from the '
      'step.',
      '- **Peak RSS**: the largest `ru_maxrss` among the run\'s processes (results.csv also has '
      'the sum, `total_rss_mb`); on GPUs `get_memory_info` peak (untested: no GPU here).',
      '- **Noise**: on a shared machine other processes skew the figures; results.csv has the '
      '1-minute load average at the start and end of each run (`load_start`, `load_end`). '
      'Compare ratios from one sweep, and rerun doubtful cells (delete their `runs/<id>` '
      'folder).',
  ]
  lines += [f'- {note}' for note in meta.get('notes', [])]
  return '\n'.join(lines) + '\n'


def create_report(out_dir, results, meta, predicted=None):
  """Writes results.csv, results.json, throughput.png, efficiency.png, breakdown.png and
  report.md into `out_dir`.

  Args:
    out_dir: the sweep's directory.
    results: the runs' result dicts (see the module docstring), in grid order.
    meta: see `create_markdown`. With rounds, the plots show `combine_rounds`'s rows.
    predicted: optional predicted rows, drawn beside the measured points.

  Returns:
    {name: path} of every file written.
  """
  rows = create_rows(results)
  fields = grid_fields(results)
  paths = {'csv': create_csv(rows, os.path.join(out_dir, 'results.csv')),
           'json': create_json(rows, meta, os.path.join(out_dir, 'results.json'), predicted)}
  shown = combine_rounds(rows)  # The rows themselves without rounds.
  paths['throughput'] = create_throughput_plot(shown, os.path.join(out_dir, PLOTS['throughput']),
                                               fields, predicted)
  paths['efficiency'] = create_efficiency_plot(shown, os.path.join(out_dir, PLOTS['efficiency']),
                                               fields, predicted)
  paths['breakdown'] = create_breakdown_plot(shown, os.path.join(out_dir, PLOTS['breakdown']))
  paths['report'] = os.path.join(out_dir, 'report.md')
  with open(paths['report'], 'w') as f:
    f.write(create_markdown(meta, rows, PLOTS, predicted))
  return paths
