"""Stage x task tables from a ``results.json`` dictionary (terminal and Markdown)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vlcl.schema import setting_of_results, task_metric_of


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def stage_rows(results: dict[str, Any], key: str = "mean_R@1") -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per evaluated stage; task columns, held-out R@1, zero-shot top-1."""
    tasks, heldout, zs = results["tasks"], results["heldout_retrieval"], results["zeroshot_sets"]
    header = ["after"] + tasks + [f"{h} (held out)" for h in heldout] + [f"{z} top1" for z in zs]
    rows = []
    metric = task_metric_of(results)  # where the run's setting scores its tasks
    task_key = key if key in metric["keys"] else metric["headline"]
    for record in results["stages"]:
        m = record["metrics"]
        cells = [m[metric["kind"]][t][task_key] for t in tasks] + [m["retrieval"][h][key] for h in heldout]
        cells += [m["zeroshot"][z]["top1"] for z in zs]
        rows.append([record["name"]] + [_fmt(c) for c in cells])
    rows += [[f"{name} (not run)"] + ["-"] * (len(header) - 1) for name in stages_not_run(results)]
    return header, rows


# -- complete or not ---------------------------------------------------------------------------------------


def completion(results: dict[str, Any]) -> tuple[int, int]:
    """(stages trained and evaluated, stages planned): ``stages`` holds the pre-trained evaluation and one record per
    finished stage, ``stage_names`` every stage of the run (older results without it: the stages recorded)."""
    done = max(len(results.get("stages") or []) - 1, 0)
    names = results.get("stage_names")
    return done, max(len(names), done) if isinstance(names, list) and names else done


def is_complete(results: dict[str, Any]) -> bool:
    """``summary.complete`` where recorded (vlcl run writes it), else whether every planned stage was evaluated."""
    recorded = results.get("summary", {}).get("complete") if isinstance(results.get("summary"), dict) else None
    if isinstance(recorded, bool):
        return recorded
    done, total = completion(results)
    return done >= total


def incomplete_mark(results: dict[str, Any]) -> str:
    """``(incomplete: 1 of 2 stages)`` for a run that stopped early, ``""`` for a finished one: every place that shows
    an unfinished run's numbers carries it, since its "Last" is the last stage it reached, not the run's end."""
    if is_complete(results):
        return stream_incomplete_mark(results)
    done, total = completion(results)
    return f"(incomplete: {done} of {total} stages)"


def stages_not_run(results: dict[str, Any]) -> list[str]:
    """The planned stages of an unfinished run that have no evaluation, in order."""
    names = results.get("stage_names")
    if not isinstance(names, list) or is_complete(results):
        return []
    done, _ = completion(results)
    return [str(n) for n in names[done:]]


# -- warnings ----------------------------------------------------------------------------------------------


def run_warnings(results: dict[str, Any]) -> list[dict[str, Any]]:
    """``results["warnings"]`` (absent in older results: none); :func:`vlcl.report.files.check_warnings` has
    checked its form."""
    warnings = results.get("warnings")
    return list(warnings) if isinstance(warnings, list) else []


def warning_text(warning: dict[str, Any], stage_names: list[str] | None = None) -> str:
    """``loss_flat, stage 1 (b), set b: the loss ...``: kind, where (when known) and the message."""
    where = []
    stage = warning.get("stage")
    if isinstance(stage, int) and not isinstance(stage, bool):
        name = stage_names[stage] if stage_names and 0 <= stage < len(stage_names) else None
        where.append(f"stage {stage}" + (f" ({name})" if name else ""))
    if warning.get("set"):
        where.append(f"set {warning['set']}")
    return ", ".join([str(warning.get("kind", "warning")), *where]) + f": {warning.get('message', '')}"


def warning_lines(results: dict[str, Any]) -> list[str]:
    names = results.get("stage_names") if isinstance(results.get("stage_names"), list) else None
    return [warning_text(w, names) for w in run_warnings(results)]


WARNING_MARK = "!"
"""Put after the label of a leaderboard row whose run has warnings (explained in a footnote under the table)."""


# -- per-class top-1 ---------------------------------------------------------------------------------------


def final_per_class(results: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """(name of the last evaluated stage, its ``per_class`` by set); ``{}`` where the stage holds none."""
    stage = results["stages"][-1]
    per_class = stage.get("per_class") if isinstance(stage, dict) else None
    return str(stage.get("name")), per_class if isinstance(per_class, dict) else {}


def lowest_classes(entry: dict[str, Any]) -> list[tuple[str, int, float | None]]:
    """(class, support, top-1) of one set, lowest top-1 first (classes without a number last, then by name order)."""
    rows = list(zip(entry["classes"], entry["support"], entry["top1"]))
    return sorted(rows, key=lambda r: (r[2] is None, r[2] if r[2] is not None else 0.0))


MARKDOWN_PER_CLASS_ROWS = 10
"""Classes per set in the Markdown report's per-class table (the lowest; the HTML page has them all)."""


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) of the summary; an unfinished run's rows say so (its "last"/"final" are where it stopped)."""
    rows = _summary_rows(results)
    mark = incomplete_mark(results)
    if not mark:
        return rows
    return [(name.replace("final", "latest") + f" {mark}", value) for name, value in rows]


def _summary_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    summary, setting = results["summary"], setting_of_results(results)
    metric = setting["metric"]
    stream = is_stream(results)
    rows = stream_summary_rows(results) if stream else []
    # a stream run has one stage: of the matrices' summaries only "last" means something (an "avg" over one row is
    # its last, not the stream's A_avg; BWT, forgetting and transfer need one stage per task) - STREAM_MATRIX_NOTE
    shown = (lambda name: name == "last") if stream else (lambda name: True)  # noqa: E731
    for name, value in summary.get(metric["section"], {}).get(metric["headline"], {}).items():
        if shown(name):
            rows.append((f"{metric['summary_label']} {name}", _fmt(value)))
    for key, label in setting["summary_rows"]:  # the setting's own (classification: every task's classes at once)
        for name, value in summary.get(key, {}).items():
            if shown(name):
                rows.append((f"{label} {name}", _fmt(value)))
    for name, value in summary.get("zeroshot_top1", {}).items():
        rows.append((f"{name} top1 pretrained -> final (PD)", f"{_fmt(value['pretrained'])} -> {_fmt(value['final'])} ({_fmt(value['pd'])})"))
    for name, value in summary.get("heldout_mean_R@1", {}).items():
        rows.append((f"{name} R@1 pretrained -> final (PD)", f"{_fmt(value['pretrained'])} -> {_fmt(value['final'])} ({_fmt(value['pd'])})"))
    return rows


def render_console(results: dict[str, Any], console: Console) -> None:
    header, rows = stage_rows(results)
    metric = task_metric_of(results)["label"]
    mark = incomplete_mark(results)
    stream = is_stream(results)
    table = Table(title=f"{results['method']} on {results['benchmark']}{', stream' if stream else ''}{' ' + mark if mark else ''}: {metric}")
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    title = ("summary (stream: A_auc/A_avg/A_last/F_last, vlcl.metrics.stream; the rest: after the stream)" if stream
             else "summary (Last/Avg/Transfer: ZSCL; forgetting: max minus final)")
    summary = Table(title=title)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for name, value in summary_rows(results):
        summary.add_row(name, value)
    console.print(summary)
    if stream:
        for line in stream_lines(results):
            console.print(line, markup=False)
    if mark and not is_complete(results):
        done, total = completion(results)
        console.print(f"incomplete run: {done} of {total} stages trained; its numbers are those after the last stage it finished", markup=False)
    for line in warning_lines(results):
        console.print(f"warning: {line}", markup=False, style="bold red")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def per_class_markdown(results: dict[str, Any]) -> list[str]:
    """The lowest classes of every set of the last evaluated stage (``per_class``), one table per set."""
    stage, per_class = final_per_class(results)
    parts = []
    for name, entry in per_class.items():
        rows = lowest_classes(entry)
        shown = rows[:MARKDOWN_PER_CLASS_ROWS]
        more = f"; {len(rows) - len(shown)} more in the HTML report" if len(rows) > len(shown) else ""
        parts += [
            "",
            f"Per-class top-1 of {name} after {stage} (%, lowest first, {len(rows)} classes{more}):",
            "",
            markdown_table(["class", "test images", "top-1"], [[str(c), str(n), _fmt(v)] for c, n, v in shown]),
        ]
    return parts


def markdown_report(results: dict[str, Any], label: str | None = None) -> str:
    """One run's section: the stage x task matrix, the summary, warnings and the lowest per-class top-1.
    ``label``: the run's name in a comparison (default: :func:`run_label`)."""
    header, rows = stage_rows(results)
    mark = incomplete_mark(results)
    warnings = warning_lines(results)
    parts = [
        f"### {label or run_label(results)} on {results['benchmark']}" + (", stream" if is_stream(results) else "") + (f" {mark}" if mark else ""),
        "",
        task_metric_of(results)["label"] + ", rows = evaluation after each stage:",
        "",
        markdown_table(header, rows),
        "",
        markdown_table(["metric", "value"], [list(r) for r in summary_rows(results)]),
    ]
    if is_stream(results):
        shape, *rest = stream_lines(results)
        parts += ["", f"**Stream**: {shape.removeprefix('stream: ')}."]
        for line in rest:
            parts += ["", f"**Incomplete stream**: {line.removeprefix('incomplete stream: ')}." if line.startswith("incomplete stream") else line]
    if mark and not is_complete(results):
        done, total = completion(results)
        parts += ["", f"**Incomplete run**: {done} of {total} stages trained; every number above is after the last stage it finished."]
    if warnings:
        parts += ["", f"**Warnings** ({len(warnings)}):", ""] + [f"- {line}" for line in warnings]
    parts += per_class_markdown(results)
    return "\n".join(parts) + "\n"


def lookup(node: Any, *path: str) -> Any:
    """``node[path[0]][path[1]]...``, or None where a key is missing (results files of older or other runs)."""
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _lr_text(lr: Any) -> str:
    """``train.lr``: one number, or a per-task list / mapping by task name (shown as given)."""
    if isinstance(lr, (int, float)):
        return f"{lr:g}"
    if isinstance(lr, list):
        return "[" + ",".join(f"{v:g}" for v in lr) + "]"
    if isinstance(lr, dict):
        return "{" + ",".join(f"{k}:{v:g}" for k, v in lr.items()) + "}"
    return str(lr)


def _uses_a_learning_rate(method: str) -> bool:
    """False for zeroshot and for methods without an optimiser (rail): their train.lr means nothing."""
    from vlcl.methods import UnknownMethodError, method_class

    try:
        cls = method_class(method)
    except UnknownMethodError:  # a results file of a method not installed here: show what it was run with
        return method != "zeroshot"
    return cls.trains and cls.optimises


def run_label(results: dict[str, Any]) -> str:
    """``method`` plus its options and learning rate, so that variants of one method stay apart."""
    config = results.get("config", {})
    options = {k: v for k, v in config.get("method", {}).items() if k != "name"}
    parts = [results["method"]]
    if "train" in config and _uses_a_learning_rate(results["method"]):
        parts.append(f"lr={_lr_text(config['train']['lr'])}")
    parts += [f"{k}={v}" for k, v in options.items()]
    return " ".join(parts)


LABEL_IGNORED = ("name", "output_dir", "threads", "device", "logging.", "checkpoint.", "data.workers", "eval.batch_size",
                 "eval.retrieval_memory_mb", "eval.chunk_size", "train.checkpoint_every_steps")
"""Config keys (and prefixes) that do not change a run's numbers: never in a label, never keep seeds apart."""


def _ignored(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in LABEL_IGNORED)


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.path": ..., "train.lr": ...}`` of a nested config dict."""
    if not isinstance(config, dict):
        return {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short_value(value: Any) -> str:
    """A config value as a label shows it: a path by its last part, a number as ``%g``."""
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return Path(value.rstrip("/\\")).name or value
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short_value(v) for v in value) + "]"
    return str(value)


def config_identity(results: dict[str, Any], *, without: tuple[str, ...] = ("seed",)) -> str:
    """The run's config as text, less the keys that do not change its numbers and ``without`` (the seed: runs that
    differ only there are seeds of one method)."""
    flat = {k: v for k, v in _flat(results.get("config")).items() if not _ignored(k) and k not in without}
    return json.dumps({"method": results.get("method"), "benchmark": results.get("benchmark"), **flat}, sort_keys=True, default=str)


def run_labels(runs: list[dict[str, Any]], names: list[str] | None = None, *, seeds_apart: bool = True) -> list[str]:
    """Labels that tell the runs of one table apart: :func:`run_label` (method, learning rate, options) plus every
    other config value that differs between them (``model.path=clip-b``, ``seed=1``, ``train.epochs=10``; the
    seed only with ``seeds_apart``), and where two labels still collide, the run's ``names`` entry in brackets."""
    flats = [{k: v for k, v in _flat(r.get("config")).items() if not _ignored(k)} for r in runs]
    keys = sorted({k for f in flats for k in f})
    in_base = lambda k: k.startswith("method.") or k == "train.lr"  # noqa: E731 - shown by run_label already
    differing = [k for k in keys if not in_base(k) and (seeds_apart or k != "seed") and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
    labels = [" ".join([run_label(r)] + [f"{k}={_short_value(f.get(k))}" for k in differing]) for r, f in zip(runs, flats)]
    if names and len(set(labels)) < len(labels):
        short = [directory_name(n) for n in names]
        names = short if len(set(short)) == len(short) else names  # runs/a/x and runs/b/x: the whole paths
        labels = [f"{label} [{name}]" if labels.count(label) > 1 else label for label, name in zip(labels, names)]
    return labels


def directory_name(name: str) -> str:
    """``runs/x`` -> ``x``, ``runs/x/seed-1`` -> ``x/seed-1``, ``runs/x/results.json`` -> ``x``: a run's short name."""
    path = Path(name)
    path = path.parent if path.name == "results.json" else path
    return f"{path.parent.name}/{path.name}" if re.match(r"^seed-\d+$", path.name) and path.parent.name else path.name or name


COMPARISON_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("Last", True),
    ("Avg", True),
    ("Transfer", True),
    ("BWT", True),
    ("forgetting", False),
    ("zero-shot PD (mean)", False),
    ("base R@1 final", True),
    ("task-agnostic Last", True),
)
"""The leaderboard's columns and whether higher is better (forgetting and PD: lower is)."""


def comparison_values(results: dict[str, Any]) -> list[float | None]:
    """One run's leaderboard numbers, in the order of COMPARISON_COLUMNS (None where undefined)."""
    s, metric = results["summary"], task_metric_of(results)
    return [
        lookup(s, metric["section"], metric["headline"], key)
        for key in ("last", "avg", "transfer", "bwt", "forgetting")
    ] + [s.get("zeroshot_mean_pd"), lookup(s, "heldout_mean_R@1", "base", "final"), lookup(s, "task_agnostic", "last")]


def comparison_rows(runs: list[dict[str, Any]], names: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """One row per run of one table (runs of one :func:`comparison_key`): retrieval summary (mean R@1), mean
    zero-shot PD, base-world R@1 final; for stream runs :data:`STREAM_COLUMNS` (:func:`table_columns`: stream and
    task-mode runs never share a table). The label tells the runs apart (:func:`run_labels`), carries
    :func:`incomplete_mark` and, for a run with warnings, :data:`WARNING_MARK`."""
    columns = table_columns(runs)
    header = ["method"] + [name for name, _ in columns]
    labels = [row_label(label, results) for label, results in zip(run_labels(runs, names), runs)]
    return header, [[label] + [_fmt(v) for v in table_values(results)] for label, results in zip(labels, runs)]


def row_label(label: str, results: dict[str, Any]) -> str:
    """A leaderboard row's label with the run's incomplete mark and its warning mark."""
    mark = incomplete_mark(results)
    return label + (f" {mark}" if mark else "") + (f" {WARNING_MARK}" if run_warnings(results) else "")


def comparison_key(results: dict[str, Any]) -> tuple[str, str, tuple[str, ...], str]:
    """What must be equal for two runs' numbers to share a column: the benchmark, the task metric (its title: mean
    R@1, top-1...; a stream's: the metric on what the stream has shown so far), the task list and the protocol
    (``tasks``, or ``stream`` for a stream run: its A_auc is never in a column with a task-mode run's Last)."""
    stream = is_stream(results)
    title = stream_metric_title(results) if stream else str(task_metric_of(results)["title"])
    return str(results["benchmark"]), title, tuple(map(str, results["tasks"])), "stream" if stream else "tasks"


def table_groups(keys: list[tuple[str, ...]]) -> list[tuple[str, list[int]]]:
    """The tables of a comparison: (heading, indices of its runs) per distinct :func:`comparison_key`, in the order of
    the first run of each. The heading names the benchmark and the metric (a stream table's says it is one), and the
    tasks where two tables share both."""
    order: dict[tuple[str, ...], list[int]] = {}
    for i, key in enumerate(keys):
        order.setdefault(tuple(key) if len(key) > 3 else (*key, "tasks"), []).append(i)
    shared = {k[:2] for k in order if sum(o[:2] == k[:2] for o in order) > 1}
    return [
        (f"{benchmark}: {metric}" + (f", tasks {', '.join(tasks)}" if (benchmark, metric) in shared else ""), indices)
        for (benchmark, metric, tasks, _), indices in order.items()
    ]


def table_footnotes(runs: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """Under a leaderboard table: what its stream columns are, what the incomplete marks mean, and each warned run's
    warnings."""
    notes = []
    if any(is_stream(r) for r in runs):
        notes.append(STREAM_TABLE_NOTE)
    if any(incomplete_mark(r).startswith("(incomplete stream") for r in runs):
        notes.append(STREAM_INCOMPLETE_NOTE)
    if any(incomplete_mark(r) and not incomplete_mark(r).startswith("(incomplete stream") for r in runs):
        notes.append("(incomplete: k of n stages): the run stopped early; its numbers (Last, PD, final R@1) are those after stage k, not the run's end.")
    for label, results in zip(labels, runs):
        lines = warning_lines(results)
        if lines:
            notes.append(f"{WARNING_MARK} {label}: " + "; ".join(lines))
    return notes


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (divisor n - 1) of the values that are not None.

    (None, None) without values; the standard deviation is None with a single value (no spread to measure).
    """
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    mean = sum(present) / len(present)
    if len(present) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in present) / (len(present) - 1)) ** 0.5


def spread_marks(cells: list[tuple[float | None, float | None]], higher_is_better: bool) -> list[str]:
    """Per row of one column of (mean, std): ``best``, ``within`` or ``""``.

    ``best``: the column's best mean (the highest, or the lowest where lower is better; every row that equals
    it). ``within``: a row whose difference from a best row is within the seeds' spread,
    ``|mean_a - mean_best| <= std_a + std_best`` (a missing std counts as 0). ``""``: neither, or no mean.
    """
    means = [m for m, _ in cells if m is not None]
    if not means:
        return ["" for _ in cells]
    best_mean = max(means) if higher_is_better else min(means)
    best = [(m, s or 0.0) for m, s in cells if m is not None and m == best_mean]
    marks = []
    for mean, std in cells:
        if mean is None:
            marks.append("")
        elif mean == best_mean:
            marks.append("best")
        elif any(abs(mean - bm) <= (std or 0.0) + bs for bm, bs in best):
            marks.append("within")
        else:
            marks.append("")
    return marks


def seeded_comparison(groups: list[list[dict[str, Any]]], names: list[str] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per method from its runs at several seeds: every column's mean, sample std and spread mark.

    The groups are the methods of one table (one :func:`comparison_key`); their labels tell them apart
    (:func:`run_labels` of their first runs, seeds not counted; ``names`` where two still collide).
    Returns the column names and, per group, ``{"label", "seeds", "cells": [(mean, std, mark), ...]}`` with
    the cells in the order of COMPARISON_COLUMNS, or of STREAM_COLUMNS for stream runs (:func:`table_columns`;
    marks: :func:`spread_marks`, over the groups given).
    """
    columns = table_columns([r for runs in groups for r in runs])
    stats = [[mean_std(list(column)) for column in zip(*(table_values(r) for r in runs))] for runs in groups]
    marks = [spread_marks([row[j] for row in stats], higher) for j, (_, higher) in enumerate(columns)]
    rows = []
    labels = run_labels([runs[0] for runs in groups], names, seeds_apart=False)
    for i, runs in enumerate(groups):
        cells = [(stats[i][j][0], stats[i][j][1], marks[j][i]) for j in range(len(columns))]
        rows.append({"label": labels[i], "seeds": len(runs), "cells": cells})
    return [name for name, _ in columns], rows


def format_mean_std(mean: float | None, std: float | None, mark: str = "") -> str:
    """``31.1 +- 0.4`` (``31.1`` without a spread, ``-`` without a value); bold when best, ``~`` when within spread."""
    if mean is None:
        return "-"
    text = _fmt(mean) if std is None else f"{_fmt(mean)} +- {_fmt(std)}"
    return f"**{text}**" if mark == "best" else f"{text} ~" if mark == "within" else text


def comparison_markdown(runs: list[dict[str, Any]], names: list[str] | None = None) -> str:
    """One leaderboard per benchmark and task metric (:func:`table_groups`: numbers that cannot be compared never
    share a column), each followed by its footnotes, then every run's matrix and summary. ``names``: the runs'
    directories, added to a label only where two would otherwise be equal."""
    parts: list[str] = []
    labels = [""] * len(runs)
    groups = table_groups([comparison_key(r) for r in runs])
    for heading, indices in groups:
        chosen = [runs[i] for i in indices]
        header, rows = comparison_rows(chosen, [names[i] for i in indices] if names else None)
        for i, label in zip(indices, run_labels(chosen, [names[i] for i in indices] if names else None)):
            labels[i] = label
        parts += [f"## {heading}", ""]
        parts += [markdown_table(header, rows), ""]
        notes = table_footnotes(chosen, [labels[i] for i in indices])
        parts += [f"- {note}" for note in notes] + ([""] if notes else [])
    parts += [markdown_report(results, label) for results, label in zip(runs, labels)]
    return "\n".join(parts)


# -- stream runs (data.stream=online) -------------------------------------------------------------------------

STREAM_KEYS = ("A_auc", "A_avg", "A_last", "F_last")
"""The stream's summary (results.json ``stream.summary``, also ``summary.stream``; vlcl.metrics.stream)."""

STREAM_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("A_auc", True),
    ("A_avg", True),
    ("A_last", True),
    ("F_last", False),
    ("zero-shot PD (mean)", False),
    ("base R@1 final", True),
)
"""The columns of a table of stream runs and whether higher is better (F_last and PD: lower is). A stream run's
table never holds a task-mode run (:func:`comparison_key`): A_auc is not a Last, A_avg not the matrix's Avg."""

STREAM_TABLE_NOTE = (
    "A_auc, A_avg, A_last, F_last: the stream's metrics (data.stream=online, vlcl.metrics.stream), each point scoring "
    "what the stream has shown so far; A_auc: mean of the points every eval.every_samples samples, A_avg: mean of the "
    "points at the hidden tasks' ends, A_last: the last, F_last: best earlier minus last (lower is better). Not "
    "comparable with a task-mode run's Last/Avg/forgetting, which are read from the stage x task matrix."
)
STREAM_INCOMPLETE_NOTE = (
    "(incomplete stream ...): the stream's points stop before its end, so it has no A_auc, A_avg, A_last, F_last (shown as -)."
)
STREAM_MATRIX_NOTE = (
    "The stage x task matrix of a stream run has one row (stream: after the whole stream): of its summaries only "
    "'last' is shown - an avg over one row is that row, not the stream's A_avg, and BWT, forgetting and transfer "
    "need one stage per task; the stream's own A_avg and F_last are above."
)


def stream_section(results: dict[str, Any]) -> dict[str, Any] | None:
    """results.json's ``stream`` (a stream run's points and shape), None for a task-mode run or where it is missing."""
    section = results.get("stream")
    return section if isinstance(section, dict) else None


def is_stream(results: dict[str, Any]) -> bool:
    """A stream run: results with a ``stream`` section, or whose config says ``data.stream: online`` (a stream run
    stopped before its one stage ended has no section yet)."""
    return stream_section(results) is not None or lookup(results, "config", "data", "stream") == "online"


def stream_summary(results: dict[str, Any]) -> dict[str, Any] | None:
    """A_auc, A_avg, A_last, F_last of a stream run that reached its end, else None."""
    summary = lookup(stream_section(results) or {}, "summary")
    if not isinstance(summary, dict):
        summary = lookup(results, "summary", "stream")
    return summary if isinstance(summary, dict) else None


def _count(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def stream_points(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's points that can be drawn or counted: a dict with a number ``samples`` (``score``: a number or None)."""
    points = (stream_section(results) or {}).get("points")
    return [p for p in points if isinstance(p, dict) and _count(p.get("samples"))] if isinstance(points, list) else []


def stream_incomplete_mark(results: dict[str, Any]) -> str:
    """``(incomplete stream: points up to sample 810 of 1990)`` for a stream run without its summary (its points stop
    before the stream's end), ``""`` for a finished stream or a task-mode run."""
    if not is_stream(results) or stream_summary(results) is not None:
        return ""
    points, total = stream_points(results), (stream_section(results) or {}).get("samples")
    if not points:
        return "(incomplete stream: no points)"
    reached = max(p["samples"] for p in points)
    return f"(incomplete stream: points up to sample {reached:g}" + (f" of {total:g})" if _count(total) else ")")


def stream_metric_title(results: dict[str, Any]) -> str:
    """The heading of a table of stream runs: ``stream (data.stream=online), top-1 (%, on what the stream has shown
    so far)``."""
    return f"stream (data.stream=online), {task_metric_of(results)['name']} (%, on what the stream has shown so far)"


def stream_summary_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary rows of a stream run: ``stream top-1 A_auc`` ... ``F_last``, or one row saying it has none."""
    name = task_metric_of(results)["name"]
    summary = stream_summary(results)
    if summary is None:
        return [(f"stream {name} A_auc, A_avg, A_last, F_last", "-")]  # summary_rows adds the incomplete mark
    return [(f"stream {name} {key}", _fmt(summary.get(key))) for key in STREAM_KEYS]


def _sizes(values: Any) -> str:
    return ", ".join(f"{v:g}" if _count(v) else str(v) for v in values) if isinstance(values, list) else "?"


def stream_shape(results: dict[str, Any]) -> str:
    """One line: the stream's boundaries, hidden tasks, samples, online_iters and evaluation period."""
    s = stream_section(results)
    if s is None:
        return "stream: none recorded, the run stopped before its stream ended (results.json gets its stream once the stream's one stage is done)"
    get = lambda key: s.get(key, "?")  # noqa: E731
    tasks = s.get("hidden_tasks") or s.get("task_sizes")
    count = len(tasks) if isinstance(tasks, list) else "?"
    dropped = s.get("dropped_samples")
    points = stream_points(results)
    ends = sum(1 for p in points if p.get("task_end"))
    return (
        f"stream: {get('boundaries')} boundaries, {count} hidden tasks of {_sizes(s.get('task_sizes'))} samples, "
        f"{get('samples')} samples in {get('batches')} batches" + (f" ({dropped} dropped)" if dropped else "")
        + (f", {s['classes']} classes" if s.get("classes") is not None else "")
        + f", online_iters {get('online_iters')}, evaluated every {get('every_samples')} samples "
        f"({len(points)} points, {ends} at hidden-task ends)"
    )


def stream_lines(results: dict[str, Any]) -> list[str]:
    """What a report says under a stream run's summary: its shape, then why the matrix's summaries are cut."""
    lines = [stream_shape(results)]
    if stream_section(results) is not None and stream_summary(results) is None:
        points, total = stream_points(results), stream_section(results).get("samples")
        where = (f"end at sample {max(p['samples'] for p in points):g}" + (f" of {total:g}" if _count(total) else "") if points
                 else "are missing (none recorded)")
        lines.append(f"incomplete stream: its points {where}, before the stream's end, so it has no A_auc, A_avg, A_last or F_last")
    return lines + ([STREAM_MATRIX_NOTE] if len(results.get("stages") or []) > 1 else [])


def table_columns(runs: list[dict[str, Any]]) -> tuple[tuple[str, bool], ...]:
    """The columns of one table: :data:`STREAM_COLUMNS` for stream runs, :data:`COMPARISON_COLUMNS` for task-mode
    runs; both in one table is a ValueError (their numbers must never share a column)."""
    kinds = {is_stream(r) for r in runs}
    if len(kinds) > 1:
        raise ValueError("stream runs (data.stream=online) and task-mode runs in one table: their numbers are of different "
                         "protocols and never share a column (comparison_key keeps them apart)")
    return STREAM_COLUMNS if kinds == {True} else COMPARISON_COLUMNS


def stream_values(results: dict[str, Any]) -> list[float | None]:
    """One stream run's numbers, in the order of STREAM_COLUMNS (None where undefined, e.g. an incomplete stream)."""
    s, stream = results["summary"], stream_summary(results) or {}
    return [stream.get(key) for key in STREAM_KEYS] + [s.get("zeroshot_mean_pd"), lookup(s, "heldout_mean_R@1", "base", "final")]


def table_values(results: dict[str, Any]) -> list[float | None]:
    """A run's numbers in the order of its table's columns (:func:`table_columns`)."""
    return stream_values(results) if is_stream(results) else comparison_values(results)
