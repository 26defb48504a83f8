"""``vlcl report ... -o report.html``: one self-contained HTML page with plots, and the same plots as PNG files.

The page needs nothing but itself: no network, no scripts, no external CSS or fonts; every plot is an embedded
``data:image/png;base64`` image, and a Content-Security-Policy forbids the page any other source. The PNGs are
also written to the folder ``<stem>_plots/`` beside ``<stem>.html`` (for slides and papers); a PNG there that
this report did not write is removed, so the folder always matches the page. Everything is computed before
anything is written; the PNGs are written first and the page last, each atomically.

What the page shows (docs/report.md): across runs (several runs, or a comparison directory) the leaderboard with
mean +- std over seeds (:func:`vlcl.report.tables.seeded_comparison`), plasticity against forgetting, Last and
zero-shot PD bars; then every run: the stage x task heatmap, per-task curves, zero-shot retention, alignment
diagnostics, the numbers, timings, data problems and config. With several seeds of a method, only its first seed
is plotted (the page says so). Stream runs (data.stream=online) have a leaderboard of their own (A_auc, A_avg,
A_last, F_last: :data:`vlcl.report.tables.STREAM_COLUMNS`) with the accuracy along the stream of every method and
A_auc bars instead of the plasticity-forgetting plot, and each stream run its own plot of accuracy along the stream.
"""

from __future__ import annotations

import base64
import html
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlcl.report import plots
from vlcl.report.files import FoundRun, ReportError, check_output, find_runs
from vlcl.report.tables import (
    COMPARISON_COLUMNS,
    STREAM_INCOMPLETE_NOTE,
    STREAM_TABLE_NOTE,
    WARNING_MARK,
    comparison_key,
    config_identity,
    final_per_class,
    format_mean_std,
    incomplete_mark,
    is_stream,
    lookup,
    lowest_classes,
    mean_std,
    run_label,
    run_labels,
    run_warnings,
    seeded_comparison,
    stage_rows,
    stream_lines,
    stream_section,
    summary_rows,
    table_groups,
    table_values,
    warning_lines,
)
from vlcl.schema import task_metric_of

REPORT_NAME = "report.html"
"""The page ``vlcl run`` and ``vlcl compare`` write into their directory."""


def plot_dir_for(page: str | Path) -> Path:
    """Where the PNGs of ``page`` go: ``<stem>_plots/`` beside it."""
    page = Path(page)
    return page.with_name(f"{page.stem}_plots")


@dataclass
class MethodRuns:
    """The runs of one method (its seeds): a comparison's method directory, or runs given directly whose configs
    are equal but for the seed (:func:`vlcl.report.tables.config_identity`)."""

    label: str
    runs: list[FoundRun]


def _seed(run: FoundRun) -> Any:
    config = run.results.get("config")
    return config.get("seed") if isinstance(config, dict) else None


def group_runs(runs: list[FoundRun]) -> list[MethodRuns]:
    """Runs grouped as seeds of one method, in the order of their first run. Runs given directly are seeds of one
    method when their configs are equal but for the seed, they are all finished or all not (a stream without its
    summary is not finished: :func:`vlcl.report.tables.incomplete_mark`), and their seeds differ
    (a second run at the same seed is another row, never averaged in)."""
    groups: list[tuple[Any, MethodRuns]] = []
    for run in runs:
        if run.group:
            key = ("dir", run.group)
        else:
            key = ("config", comparison_key(run.results), config_identity(run.results), not incomplete_mark(run.results))
        same = next((g for k, g in groups if k == key and (run.group or all(_seed(r) != _seed(run) for r in g.runs))), None)
        if same is None:
            same = MethodRuns(run_label(run.results), [])
            groups.append((key, same))
        same.runs.append(run)
    return [g for _, g in groups]


@dataclass
class WrittenReport:
    page: Path
    plot_dir: Path
    plots: list[Path]
    size: int
    """Bytes of the page."""
    seconds: float


# -- building blocks ---------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: list[str], rows: list[list[str]], *, raw: bool = False, numeric_from: int = 1) -> str:
    """An HTML table; cells are escaped unless ``raw`` (already HTML); columns from ``numeric_from`` right-aligned."""
    cell = (lambda v: v) if raw else _e
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i >= numeric_from else ''}>{cell(v)}</td>" for i, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _seconds(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or "run"


class Plots:
    """The page's plots: each one as an embedded image and as a file of the plot folder."""

    def __init__(self, folder_name: str):
        self.folder_name = folder_name
        self.files: dict[str, bytes] = {}

    def figure(self, name: str, title: str, png: bytes | None, caption: str, missing: str) -> str:
        """``<figure>`` with the PNG embedded (saved as ``name``.png), or a note saying why there is no plot."""
        if png is None:
            return f'<p class="missing"><strong>{_e(title)}</strong>: no plot, {_e(missing)}.</p>'
        filename = f"{_slug(name)}.png"
        number = 2
        while filename in self.files:
            filename, number = f"{_slug(name)}-{number}.png", number + 1
        self.files[filename] = png
        data = base64.b64encode(png).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}" data-plot="{_e(filename)}">'
            f'<figcaption><strong>{_e(title)}.</strong> {_e(caption)} <span class="file">({_e(self.folder_name)}/{_e(filename)})</span>'
            "</figcaption></figure>"
        )


STYLE = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;padding:0 18px 40px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{font-size:1.3em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1.1em;display:inline}h4{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.4em 0;font-size:.86em}th,td{border:1px solid #ccc;padding:2px 7px;text-align:left;vertical-align:top}
th{background:#f1f1f1}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.plots{display:flex;flex-wrap:wrap;gap:14px 22px;align-items:flex-start;margin:.6em 0}
figure{margin:0;max-width:calc(50% - 11px)}@media (max-width:900px){figure{max-width:100%}}figure img{max-width:100%;height:auto;border:1px solid #eee;display:block}
figcaption{font-size:.82em;color:#555;max-width:600px;margin-top:3px}.file{color:#888}
.warnbox{border:2px solid #a33;background:#fff4f4;border-radius:4px;padding:.2em .9em;margin:.8em 0}.warnbox h2{color:#a33;border:0;margin-top:.3em}
.meta,.note,.missing{font-size:.88em;color:#555}.missing{font-style:italic}.warn{color:#a33;font-weight:bold}
details{border:1px solid #ddd;border-radius:4px;padding:.3em .8em;margin:.6em 0}summary{cursor:pointer;padding:.2em 0}
pre{background:#f7f7f7;padding:.6em;font-size:.8em;overflow-x:auto;max-height:28em}code{font-size:.92em}
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""The page may load nothing: images only from its own data URIs, no scripts, its one inline style sheet."""


# -- across runs -------------------------------------------------------------------------------------------


def _column(name: str) -> int:
    return [n for n, _ in COMPARISON_COLUMNS].index(name)


def _plasticity(results: dict[str, Any]) -> float | None:
    summary = results["summary"]
    metric = task_metric_of(results)
    value = lookup(summary.get(metric["section"]), metric["headline"], "plasticity")
    return plots._number(value)


def _group_name(group: MethodRuns) -> str:
    """How a label names a method where two would collide: its comparison's method directory, or the run's name."""
    first = group.runs[0]
    return Path(first.name).parts[0] if first.group else first.name


def _group_label(label: str, group: MethodRuns) -> str:
    """A leaderboard label with the incomplete mark of the method's first unfinished run and the warning mark."""
    mark = next((incomplete_mark(run.results) for run in group.runs if incomplete_mark(run.results)), "")
    warned = any(run_warnings(run.results) for run in group.runs)
    return label + (f" {mark}" if mark else "") + (f" {WARNING_MARK}" if warned else "")


def _leaderboard_rows(groups: list[MethodRuns], names: list[str], rows: list[dict[str, Any]], labels: list[str]) -> list[list[str]]:
    body = []
    for label, row, group in zip(labels, rows, groups):
        cells = []
        for mean, std, mark in row["cells"]:
            text = _e(format_mean_std(mean, std))
            cells.append(f"<strong>{text}</strong>" if mark == "best" else f"{text} ~" if mark == "within" else text)
        seconds = mean_std([run.results.get("timings", {}).get("train_seconds") for run in group.runs])
        body.append([_e(label), str(row["seeds"])] + cells + [_e(format_mean_std(*seconds))])
    return body


def _stream_leaderboard_section(groups: list[MethodRuns], sink: Plots, *, heading: str, anchor: str, plot_prefix: str) -> str:
    """The leaderboard of stream runs (tables.STREAM_COLUMNS: A_auc, A_avg, A_last, F_last, PD, base R@1), the accuracy
    along the stream of every method (mean over its seeds, a band of one std where the seeds share the stream), and
    A_auc and zero-shot PD bars."""
    names, rows = seeded_comparison([[run.results for run in group.runs] for group in groups], [_group_name(g) for g in groups])
    labels = [_group_label(row["label"], group) for row, group in zip(rows, groups)]
    metrics = {task_metric_of(r.results)["name"] for g in groups for r in g.runs}
    metric = metrics.pop() if len(metrics) == 1 else "the task metric"
    parts = [
        f'<section id="{_e(anchor)}"><h2>{_e(heading)}</h2>',
        f'<p class="meta">{len(groups)} method(s), {sum(len(g.runs) for g in groups)} run(s), each trained on one stream '
        f"(data.stream=online). {_e(STREAM_TABLE_NOTE)} Zero-shot PD: pre-trained minus final zero-shot top-1, mean over "
        "the zero-shot sets.</p>",
        _table(["method", "seeds", *names, "train s"], _leaderboard_rows(groups, names, rows, labels), raw=True, numeric_from=1),
        '<p class="note">Cells: mean +- sample standard deviation (divisor n - 1) over the seeds; one seed: the value. '
        "<strong>Bold</strong>: the column's best mean (highest; lowest for F_last and zero-shot PD). "
        "~: within the seeds' spread of the best, |mean - best mean| &lt;= std + best std.</p>",
    ]
    marks = [incomplete_mark(run.results) for g in groups for run in g.runs]
    if any(m.startswith("(incomplete stream") for m in marks):
        parts.append(f'<p class="warn">{_e(STREAM_INCOMPLETE_NOTE)}</p>')
    if any(m and not m.startswith("(incomplete stream") for m in marks):
        parts.append('<p class="warn">(incomplete: k of n stages): the run stopped before its stream ended; it has no stream '
                     "points, and its other numbers are those before training.</p>")
    warned = [label for label, group in zip(labels, groups) if any(run_warnings(run.results) for run in group.runs)]
    if warned:
        parts.append(f'<p class="warn">{_e(WARNING_MARK)}: the run has warnings (listed under Warnings at the top of the page): '
                     f"{_e('; '.join(warned))}.</p>")
    curves, first_only, missing = [], [], []
    for i, (label, group) in enumerate(zip(labels, groups)):
        seeds = [c for c in (plots.stream_curve(run.results, label, i) for run in group.runs) if c is not None]
        if not seeds:
            missing.append(label)
            continue
        curve, averaged = plots.mean_stream_curve(seeds, label, i)
        curves.append(curve)
        if not averaged:
            first_only.append(label)
    edges = [plots.stream_boundaries(run.results) for g in groups for run in g.runs if stream_section(run.results)]
    shared = edges[0] if edges and all(e == edges[0] for e in edges) else []
    notes = ""
    if any(len(g.runs) > 1 for g in groups):
        notes += " With several seeds: their mean, the band one standard deviation each way."
    if first_only:
        notes += f" Seeds on different streams (other data.seed), first seed drawn: {', '.join(first_only)}."
    notes += (" Dashed: where each hidden task begins (numbered), the same in every run." if shared
              else " The runs' hidden-task boundaries differ: not drawn (each run's own plot has them)." if edges else "")
    if missing and curves:
        notes += f" No points: {', '.join(missing)}."
    figures = [sink.figure(
        f"{plot_prefix}_stream", "Accuracy along the stream", plots.stream_png(curves, shared, f"{metric} (%)"),
        f"{metric} on what the stream has shown so far against the samples seen, one line per method: the points every "
        f"eval.every_samples samples (their mean is A_auc), diamonds at the hidden tasks' ends (their mean is A_avg, the "
        f"last A_last).{notes}",
        "no run has stream points",
    )]
    for column, name, title, axis, what in (
        ("A_auc", "A_auc", "A_auc", f"A_auc ({metric}, %)", "A_auc, the mean of the periodic points along the stream"),
        ("zero-shot PD (mean)", "zeroshot_pd", "Zero-shot PD", "zero-shot PD (mean, %, lower is better)",
         "Pre-trained minus final zero-shot top-1, mean over the zero-shot sets"),
    ):
        index = names.index(column)
        bars = [plots.Point(label, row["cells"][index][0], row["cells"][index][1], colour=i)
                for i, (label, row) in enumerate(zip(labels, rows)) if row["cells"][index][0] is not None]
        no_value = [label for label, row in zip(labels, rows) if row["cells"][index][0] is None]
        figures.append(sink.figure(
            f"{plot_prefix}_{name}", title, plots.bars_png(bars, axis),
            f"{what}, per method; error bars: std over seeds." + (f" No value: {', '.join(no_value)}." if no_value and bars else ""),
            f"no method has a value for {axis}",
        ))
    parts.append('<div class="plots">' + "".join(figures) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _leaderboard_section(groups: list[MethodRuns], sink: Plots, *, heading: str = "Leaderboard", anchor: str = "leaderboard",
                         plot_prefix: str = "leaderboard") -> str:
    if all(is_stream(run.results) for g in groups for run in g.runs):
        return _stream_leaderboard_section(groups, sink, heading=heading, anchor=anchor, plot_prefix=plot_prefix)
    names, rows = seeded_comparison([[run.results for run in group.runs] for group in groups], [_group_name(g) for g in groups])
    labels = [_group_label(row["label"], group) for row, group in zip(rows, groups)]
    body = []
    for label, row, group in zip(labels, rows, groups):
        cells = []
        for mean, std, mark in row["cells"]:
            text = _e(format_mean_std(mean, std))
            cells.append(f"<strong>{text}</strong>" if mark == "best" else f"{text} ~" if mark == "within" else text)
        seconds = mean_std([run.results.get("timings", {}).get("train_seconds") for run in group.runs])
        body.append([_e(label), str(row["seeds"])] + cells + [_e(format_mean_std(*seconds))])
    metrics = {task_metric_of(r.results)["name"] for g in groups for r in g.runs}
    metric = metrics.pop() if len(metrics) == 1 else "the task metric"
    parts = [
        f'<section id="{_e(anchor)}"><h2>{_e(heading)}</h2>',
        f'<p class="meta">{len(groups)} method(s), {sum(len(g.runs) for g in groups)} run(s). Last, Avg, Transfer, BWT, '
        f"forgetting: {_e(metric)} (%) of the stage x task matrix; zero-shot PD: pre-trained minus final zero-shot top-1, "
        "mean over the zero-shot sets.</p>",
        _table(["method", "seeds", *names, "train s"], body, raw=True, numeric_from=1),
        '<p class="note">Cells: mean +- sample standard deviation (divisor n - 1) over the seeds; one seed: the value. '
        "<strong>Bold</strong>: the column's best mean (highest; lowest for forgetting, F_last of a stream included, and zero-shot PD). "
        "~: within the seeds' spread of the best, |mean - best mean| &lt;= std + best std.</p>",
    ]
    if any(incomplete_mark(run.results) for g in groups for run in g.runs):
        parts.append('<p class="warn">(incomplete: k of n stages): the run stopped early; its numbers (Last, PD, final R@1) are those '
                     "after stage k, not the run's end.</p>")
    warned = [label for label, group in zip(labels, groups) if any(run_warnings(run.results) for run in group.runs)]
    if warned:
        parts.append(f'<p class="warn">{_e(WARNING_MARK)}: the run has warnings (listed under Warnings at the top of the page): '
                     f"{_e('; '.join(warned))}.</p>")
    forgetting, last, pd = _column("forgetting"), _column("Last"), _column("zero-shot PD (mean)")
    scatter, left_out = [], []
    for i, (label, row, group) in enumerate(zip(labels, rows, groups)):
        y = mean_std([_plasticity(run.results) for run in group.runs])
        x_mean, x_std, _ = row["cells"][forgetting]
        if x_mean is None or y[0] is None:
            left_out.append(label)
            continue
        scatter.append(plots.Point(label, x_mean, x_std, y[0], y[1], colour=i))
    left = f" Left out (no plasticity or forgetting, e.g. joint training): {', '.join(left_out)}." if left_out and scatter else ""
    figures = [sink.figure(
        f"{plot_prefix}_plasticity_forgetting", "Plasticity against forgetting",
        plots.tradeoff_png(scatter, f"forgetting ({metric}, %, lower is better)", f"plasticity ({metric}, %: mean of the diagonal)"),
        f"Plasticity (each task right after learning it) against forgetting (best minus final), one point per method, "
        f"error bars: std over seeds.{left}",
        "no method has both plasticity and forgetting (they need one stage per task)",
    )]
    for index, name, title, axis, what in (
        (last, f"{plot_prefix}_last", "Last", f"Last ({metric}, %)", "Mean of the final row of the stage x task matrix"),
        (pd, f"{plot_prefix}_zeroshot_pd", "Zero-shot PD", "zero-shot PD (mean, %, lower is better)",
         "Pre-trained minus final zero-shot top-1, mean over the zero-shot sets"),
    ):
        bars = [
            plots.Point(label, row["cells"][index][0], row["cells"][index][1], colour=i)
            for i, (label, row) in enumerate(zip(labels, rows)) if row["cells"][index][0] is not None
        ]
        missing = [label for label, row in zip(labels, rows) if row["cells"][index][0] is None]
        figures.append(sink.figure(
            name, title, plots.bars_png(bars, axis),
            f"{what}, per method; error bars: std over seeds." + (f" No value: {', '.join(missing)}." if missing and bars else ""),
            f"no method has a value for {axis}",
        ))
    parts.append('<div class="plots">' + "".join(figures) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


# -- one run -------------------------------------------------------------------------------------------------


def _timings(results: dict[str, Any]) -> str:
    timings = results.get("timings") if isinstance(results.get("timings"), dict) else {}
    total = _table(
        ["wall seconds (this session)", "train seconds", "eval seconds"],
        [[_seconds(timings.get("wall_seconds_this_session")), _seconds(timings.get("train_seconds")), _seconds(timings.get("eval_seconds"))]],
        numeric_from=0,
    )
    rows = []
    for stage in results["stages"]:
        train = stage.get("train") if isinstance(stage.get("train"), dict) else {}
        loss = train.get("final_loss")
        rows.append([
            str(stage["name"]), ", ".join(map(str, stage.get("trained_on") or [])) or "-", str(train.get("steps", "-")), str(train.get("samples", "-")),
            _seconds(train.get("seconds")), _seconds(stage.get("eval_seconds")), f"{loss:.3f}" if isinstance(loss, (int, float)) else "-",
        ])
    return total + _table(["stage", "trained on", "steps", "samples", "train s", "eval s", "final loss"], rows, numeric_from=2)


def _data_problems(results: dict[str, Any]) -> str:
    data = results.get("data") if isinstance(results.get("data"), dict) else {}
    parts = []
    sets = data.get("sets") if isinstance(data.get("sets"), dict) else {}
    bad = {name: s for name, s in sets.items() if isinstance(s, dict) and s.get("skipped")}
    skipped = data.get("skipped_samples") or sum(s.get("skipped", 0) for s in bad.values())
    if skipped:
        parts.append(f"<p><strong>Skipped samples: {_e(skipped)}</strong> (data.on_bad_sample={_e(data.get('on_bad_sample', '?'))}).</p>")
        parts.append(_table(["set", "skipped", "first problems"], [[n, str(s.get("skipped")), "; ".join(map(str, s.get("problems") or []))] for n, s in bad.items()],
                            numeric_from=1))
    else:
        parts.append("<p>Skipped samples: none.</p>")
    unknown = data.get("unknown_words") if isinstance(data.get("unknown_words"), dict) else {}
    shares = {n: v for n, v in unknown.items() if isinstance(v, (int, float)) and v > 0}
    if shares:
        parts.append("<p>Unknown words (share of caption and prompt words the tokenizer reads only as unknown):</p>")
        parts.append(_table(["set", "unknown words"], [[n, f"{100 * v:.2f}%"] for n, v in shares.items()]))
    else:
        parts.append(f"<p>Unknown words: none{' (tokenizer coverage not recorded)' if not unknown else ''}.</p>")
    validation = data.get("validation")
    if isinstance(validation, dict):
        parts.append(f"<p>Evaluated on validation sets carved from the training data (fraction {_e(validation.get('fraction'))}); "
                     f"test sets dropped: {_e(', '.join(map(str, validation.get('dropped_test_sets') or [])) or 'none')}.</p>")
    if sets:
        rows = [[n, ", ".join(map(str, s.get("sources") or [])) or "-", str(s.get("train_images", "-")), str(s.get("test_images", "-"))]
                for n, s in sets.items() if isinstance(s, dict)]
        parts.append(f"<p>Data sets read from {_e(data.get('root', '?'))}:</p>" + _table(["set", "sources", "train images", "test images"], rows, numeric_from=2))
    return "\n".join(parts)


def _config(results: dict[str, Any]) -> str:
    import yaml

    config = results.get("config")
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=110) if isinstance(config, dict) and config else "not recorded"
    versions = results.get("versions") if isinstance(results.get("versions"), dict) else {}
    line = ", ".join(f"{k} {v}" for k, v in versions.items())
    return f"<pre>{_e(text)}</pre>" + (f'<p class="meta">Versions: {_e(line)}.</p>' if line else "")


def _run_slug(run: FoundRun) -> str:
    """The plot files' prefix: ``finetune_seed-0`` for a comparison's run, the directory's name for a run given
    directly (with its parent's when it is a ``seed-S`` directory)."""
    if run.group:
        return _slug(run.name)
    folder = run.path if run.path.is_dir() else run.path.parent
    folder = folder.resolve()
    return _slug(f"{folder.parent.name}_{folder.name}" if re.match(r"^seed-\d+$", folder.name) else folder.name)


def _run_section(run: FoundRun, sink: Plots, *, draw: bool, first_seed: str | None, open_: bool, anchor: str, label: str | None = None) -> str:
    results = run.results
    stages_done = len(results["stages"]) - 1
    stages_total = len(results.get("stage_names") or []) or stages_done
    complete = bool(results["summary"].get("complete"))
    seed = results.get("config", {}).get("seed") if isinstance(results.get("config"), dict) else None
    mark = incomplete_mark(results)
    stream = is_stream(results)
    headline = (f"{label or run_label(results)} on {results['benchmark']}" + (", stream" if stream else "")
                + (f", seed {seed}" if seed is not None else "") + (f" {mark}" if mark else ""))
    parts = [
        f'<details id="{_e(anchor)}"{" open" if open_ else ""}><summary><h3>{_e(headline)}</h3> <span class="meta">{_e(run.name)}</span></summary>',
        f'<p class="meta">Run directory: <code>{_e(run.path)}</code>. {stages_done} of {stages_total} stage(s) evaluated after training'
        + ("" if complete else ' - <span class="warn">incomplete run</span>') + ".</p>",
    ]
    warnings = warning_lines(results)
    if warnings:
        parts.append(f'<div class="warnbox"><strong>Warnings ({len(warnings)})</strong><ul>'
                     + "".join(f"<li>{_e(line)}</li>" for line in warnings) + "</ul></div>")
    metric = plots.task_metric_label(results)
    titled = (lambda title: f"{title} {mark}") if mark else (lambda title: title)
    if draw:
        slug = _run_slug(run)
        figures = [_stream_figure(results, sink, slug, titled)] if stream else []
        one_stage = " A stream run has one stage, stream, which trained every task in one pass." if stream else ""
        figures += [
            sink.figure(f"{slug}_heatmap", titled("Stage x task"), plots.heatmap_png(results),
                        f"{metric} of every task's test split (columns) after each stage (rows; pretrained: before any "
                        f"training); outlined: the stage that trained the task.{one_stage}", "the run has no tasks"),
            sink.figure(f"{slug}_tasks", titled("Per-task curves"), plots.task_curves_png(results),
                        f"{metric} of each task over the stages; star: the stage that trained it.", "the run has no task numbers"),
            sink.figure(f"{slug}_zeroshot", titled("Zero-shot retention"), plots.retention_png(results),
                        "Zero-shot top-1 of each zero-shot set (solid) and mean R@1 of each held-out retrieval set (dashed) over the stages.",
                        "the run has no zero-shot or held-out evaluation sets"),
            sink.figure(f"{slug}_alignment", titled("Alignment"), plots.alignment_png(results),
                        "Mean cosine of matched image-text pairs and the modality gap (distance between the image and text "
                        "embedding centroids) of each set over the stages.",
                        "the run's results hold no alignment diagnostics (metrics.alignment)"),
        ]
        parts.append('<div class="plots">' + "".join(figures) + "</div>")
    else:
        parts.append(f'<p class="note">Plots are drawn for the first seed of each method only ({_e(first_seed)}); '
                     "this section gives this seed's numbers.</p>")
    header, rows = stage_rows(results)
    parts += [
        "<h4>Numbers</h4>",
        f'<p class="meta">{_e(metric)}; held-out sets: mean R@1; zero-shot sets: top-1. Rows: evaluation after each stage.</p>',
        _table(header, rows),
        _table(["summary", "value"], [list(r) for r in summary_rows(results)]),
        *([f'<p class="{"warn" if line.startswith("incomplete stream") else "meta"}">{_e(line)}.</p>' for line in stream_lines(results)]
          if stream else []),
        _per_class(results, sink, _run_slug(run) if draw else None, mark),
        "<h4>Timings</h4>", _timings(results),
        "<h4>Data problems skipped</h4>", _data_problems(results),
        "<h4>Config</h4>", _config(results),
        "</details>",
    ]
    return "\n".join(parts)


def _stream_figure(results: dict[str, Any], sink: Plots, slug: str, titled: Callable[[str], str]) -> str:
    """A stream run's accuracy along the stream: its periodic points, its hidden-task ends and boundaries."""
    section = stream_section(results) or {}
    every = section.get("every_samples", "eval.every_samples")
    curve = plots.stream_curve(results)
    stopped = ""
    if curve is not None and not lookup(section, "summary"):
        reached = max(curve.samples + curve.end_samples)
        stopped = f" The stream stopped early: its points end at sample {reached:g}" + (f" of {curve.total:g}." if curve.total else ".")
    summary = lookup(section, "summary") or {}
    numbers = ", ".join(f"{k} {v:.1f}" for k in ("A_auc", "A_avg", "A_last") if isinstance((v := summary.get(k)), (int, float)))
    return sink.figure(
        f"{slug}_stream", titled("Accuracy along the stream"),
        plots.stream_png([curve] if curve else [], plots.stream_boundaries(results), plots.task_metric_label(results),
                         periodic_label=f"every {every} samples"),
        f"{task_metric_of(results)['name']} on what the stream has shown so far against the samples seen: the points every {every} "
        "samples (line; their mean is A_auc), diamonds at the hidden tasks' ends (their mean is A_avg, the last A_last), "
        f"dashed lines where each hidden task begins (numbered).{' ' + numbers + '.' if numbers else ''}{stopped}",
        "the stream recorded no points (it stopped before its first evaluation)" if section else "the run has no stream section (it stopped before its stream ended)",
    )


def _per_class(results: dict[str, Any], sink: Plots, slug: str | None, mark: str) -> str:
    """Per-class top-1 of every set of the last evaluated stage (lowest first), and, where drawn (``slug``), each
    set's confusion matrix up to :data:`vlcl.report.plots.MAX_CONFUSION_CLASSES` classes."""
    stage, per_class = final_per_class(results)
    if not per_class:
        return ""
    parts = [f"<h4>Per-class top-1 after {_e(stage)}{_e(' ' + mark) if mark else ''}</h4>"]
    figures = []
    for name, entry in per_class.items():
        rows = [[c, str(n), "-" if v is None else f"{v:.1f}"] for c, n, v in lowest_classes(entry)]
        parts.append(f'<p class="meta">{_e(name)}: {len(rows)} classes, lowest top-1 first.</p>'
                     + _table(["class", "test images", "top-1 (%)"], rows))
        if slug is None:
            continue
        classes, confusion = entry["classes"], entry.get("confusion")
        why = ("the results hold no confusion matrix for this set" if not confusion
               else f"{len(classes)} classes, more than the {plots.MAX_CONFUSION_CLASSES} a readable matrix has")
        figures.append(sink.figure(
            f"{slug}_confusion_{name}", f"Confusion matrix of {name}{' ' + mark if mark else ''}", plots.confusion_png(classes, confusion),
            f"Test images of {name} after {stage}: rows the true class, columns the predicted one; colour: share of the true class (%).",
            why,
        ))
    if figures:
        parts.append('<div class="plots">' + "".join(figures) + "</div>")
    return "\n".join(parts)


def _warnings_section(groups: list[MethodRuns]) -> str:
    """Every run's warnings at the top of the page (a warned number must not be read without them)."""
    items = [(run.name, line) for group in groups for run in group.runs for line in warning_lines(run.results)]
    if not items:
        return ""
    return ('<section id="warnings" class="warnbox"><h2>Warnings</h2><ul>'
            + "".join(f"<li><strong>{_e(name)}</strong>: {_e(line)}</li>" for name, line in items) + "</ul></section>")


def _method_labels(groups: list[MethodRuns]) -> list[str]:
    """Each method's label, telling it apart from the other methods of its table (:func:`run_labels`)."""
    labels = [""] * len(groups)
    for _, indices in table_groups([comparison_key(g.runs[0].results) for g in groups]):
        chosen = [groups[i] for i in indices]
        for i, label in zip(indices, run_labels([g.runs[0].results for g in chosen], [_group_name(g) for g in chosen], seeds_apart=False)):
            labels[i] = label
    return labels


def _tables(groups: list[MethodRuns]) -> list[tuple[str, list[MethodRuns]]]:
    """The leaderboards: (heading, methods) per benchmark, task metric and task list (:func:`table_groups`)."""
    return [(heading, [groups[i] for i in indices]) for heading, indices in table_groups([comparison_key(g.runs[0].results) for g in groups])]


# -- the page -------------------------------------------------------------------------------------------------


def _compare_commands(inputs: Iterable[str]) -> list[str]:
    """The ``Made with`` command of each comparison directory's leaderboard.md."""
    commands = []
    for given in inputs:
        board = Path(given) / "leaderboard.md"
        if board.is_file():
            match = re.search(r"```bash\n(.*?)\n```", board.read_text(encoding="utf-8", errors="replace"), re.S)
            if match:
                commands.append(match.group(1).strip())
    return commands


def render_report(groups: list[MethodRuns], *, plot_folder: str, inputs: list[str], notes: list[str] = (), across: bool | None = None) -> tuple[str, dict[str, bytes]]:
    """The page's HTML and its plots (file name -> PNG bytes). ``across``: draw the cross-run section (default:
    with more than one run). A results.json that lacks what is needed is a :class:`ReportError` naming it."""
    sink = Plots(plot_folder)
    runs = [run for group in groups for run in group.runs]
    across = len(runs) > 1 if across is None else across
    title = f"{runs[0].results['method']} on {runs[0].results['benchmark']}" if len(runs) == 1 else f"{len(groups)} method(s), {len(runs)} run(s)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vlcl report: {_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>vlcl report: {_e(title)}</h1>",
        f'<p class="meta">Made {_e(time.strftime("%Y-%m-%d %H:%M:%S %Z"))} by vlcl from {_e(", ".join(inputs))}. '
        f"The plots are also PNG files in <code>{_e(plot_folder)}/</code> beside this page.</p>",
    ]
    for command in _compare_commands(inputs):
        parts.append(f"<p class=\"meta\">Comparison made with:</p><pre>{_e(command)}</pre>")
    parts += [f'<p class="note">{_e(note)}</p>' for note in notes]
    parts.append(_warnings_section(groups))
    if across:
        tables = _tables(groups)
        for k, (heading, members) in enumerate(tables):
            single = len(tables) == 1
            parts.append(_leaderboard(
                members, sink, heading=f"Leaderboard: {heading}", anchor="leaderboard" if k == 0 else f"leaderboard-{k + 1}",
                plot_prefix="leaderboard" if single else f"leaderboard_{_slug(heading.split(':')[0])}_{k + 1}",
            ))
    parts.append('<section id="runs"><h2>Runs</h2>')
    if any(len(g.runs) > 1 for g in groups):
        parts.append('<p class="note">Methods run at several seeds: the plots are drawn for the first seed of each method; '
                     "every seed has its numbers, timings, data problems and config.</p>")
    labels = _method_labels(groups)
    for g, group in enumerate(groups):
        for s, run in enumerate(group.runs):
            try:
                parts.append(_run_section(run, sink, draw=s == 0, first_seed=group.runs[0].name, open_=g == s == 0, anchor=f"run-{g}-{s}",
                                          label=labels[g]))
            except ReportError:
                raise
            except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
                raise _lacks(run, exc) from None
    parts.append("</section></body></html>")
    return "\n".join(parts) + "\n", sink.files


def _lacks(run: FoundRun, exc: BaseException) -> ReportError:
    path = run.path / "results.json" if run.path.is_dir() else run.path
    return ReportError(f"{path}: lacks what a report needs ({type(exc).__name__}: {exc})")


def _leaderboard(groups: list[MethodRuns], sink: Plots, **section: str) -> str:
    for group in groups:  # what the leaderboard reads, run by run, so that a failure names the file
        for run in group.runs:
            try:
                table_values(run.results)
                _plasticity(run.results)
                mean_std([run.results.get("timings", {}).get("train_seconds")])
            except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
                raise _lacks(run, exc) from None
    return _leaderboard_section(groups, sink, **section)


def write_html_report(
    groups: list[MethodRuns], output: str | Path, *, inputs: list[str] | None = None, notes: list[str] = (), across: bool | None = None
) -> WrittenReport:
    """Write the page ``output`` and its PNGs into :func:`plot_dir_for` (``output``), atomically, page last."""
    from vlcl.fileio import atomic_write_bytes, atomic_write_text

    started = time.perf_counter()
    output = Path(output)
    if not groups:
        raise ReportError("no runs to report")
    folder = plot_dir_for(output)
    check_output(output, [run for group in groups for run in group.runs], folder)
    inputs = inputs if inputs is not None else [run.name for group in groups for run in group.runs]
    page, files = render_report(groups, plot_folder=folder.name, inputs=inputs, notes=list(notes), across=across)
    written = []
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
        written.append(folder / name)
    if folder.is_dir():  # plots of an earlier report that this one does not have
        for stale in folder.glob("*.png"):
            if stale.name not in files:
                stale.unlink(missing_ok=True)
    atomic_write_text(output, page)
    return WrittenReport(output, folder, written, len(page.encode("utf-8")), time.perf_counter() - started)


def report_paths(paths: list[str | Path], output: str | Path) -> WrittenReport:
    """``vlcl report PATH ... -o X.html``: run and comparison directories to one page."""
    runs, notes = find_runs(paths)
    across = len(runs) > 1 or any(run.group for run in runs)
    return write_html_report(group_runs(runs), output, inputs=[str(p) for p in paths], notes=notes, across=across)


def auto_report(
    output: Path, groups: list[MethodRuns], say: Callable[[str], None], *, inputs: list[str] | None = None, across: bool | None = None
) -> Path | None:
    """The report ``vlcl run`` / ``vlcl compare`` write at their end: a failure is one warning line through
    ``say`` (the run's results are already written and stay valid) and None, never an exception."""
    try:
        write_html_report(groups, output, inputs=inputs, across=across)
    except Exception as exc:  # noqa: BLE001 - the report must not turn a finished run into a failed one
        say(f"vlcl: warning: {output} not written ({type(exc).__name__}: {exc}); `vlcl report ... -o {output}` retries")
        return None
    return output


def run_groups(items: list[tuple[str, Path, dict[str, Any]]], group_of: Callable[[str], str] | None = None) -> list[MethodRuns]:
    """Groups from (name, run directory, results), e.g. a comparison's finished runs; ``group_of(name)`` names the
    method a run belongs to (default: its run label)."""
    runs = [FoundRun(path, name, results, group=group_of(name) if group_of else None) for name, path, results in items]
    return group_runs(runs)


__all__ = [
    "REPORT_NAME", "MethodRuns", "WrittenReport", "auto_report", "group_runs", "plot_dir_for", "render_report", "report_paths",
    "run_groups", "write_html_report",
]
