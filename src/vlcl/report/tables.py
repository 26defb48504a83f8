"""Stage x task tables from a ``results.json`` dictionary (terminal and Markdown)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def stage_rows(results: dict[str, Any], key: str = "mean_R@1") -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per evaluated stage; task columns, held-out R@1, zero-shot top-1."""
    tasks, heldout, zs = results["tasks"], results["heldout_retrieval"], results["zeroshot_sets"]
    header = ["after"] + tasks + [f"{h} (held out)" for h in heldout] + [f"{z} top1" for z in zs]
    rows = []
    for record in results["stages"]:
        m = record["metrics"]
        if results.get("task_metric") == "top1":  # classification tasks (MTIL): top-1 accuracy in the task's label space
            cells = [m["zeroshot"][t]["top1"] for t in tasks] + [m["retrieval"][h][key] for h in heldout]
        else:
            cells = [m["retrieval"][t][key] for t in tasks] + [m["retrieval"][h][key] for h in heldout]
        cells += [m["zeroshot"][z]["top1"] for z in zs]
        rows.append([record["name"]] + [_fmt(c) for c in cells])
    return header, rows


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    summary = results["summary"]
    rows = []
    for name, value in summary.get("retrieval", {}).get("mean_R@1", {}).items():
        rows.append((f"retrieval R@1 {name}", _fmt(value)))
    for name, value in summary.get("classification", {}).get("top1", {}).items():
        rows.append((f"accuracy top1 {name}", _fmt(value)))
    for name, value in summary.get("task_agnostic", {}).items():  # classification: every task's classes at once
        rows.append((f"task-agnostic top1 {name}", _fmt(value)))
    for name, value in summary.get("seen_classes", {}).items():
        rows.append((f"seen-classes top1 {name}", _fmt(value)))
    for name, value in summary.get("zeroshot_top1", {}).items():
        rows.append((f"{name} top1 pretrained -> final (PD)", f"{_fmt(value['pretrained'])} -> {_fmt(value['final'])} ({_fmt(value['pd'])})"))
    for name, value in summary.get("heldout_mean_R@1", {}).items():
        rows.append((f"{name} R@1 pretrained -> final (PD)", f"{_fmt(value['pretrained'])} -> {_fmt(value['final'])} ({_fmt(value['pd'])})"))
    return rows


def render_console(results: dict[str, Any], console: Console) -> None:
    header, rows = stage_rows(results)
    metric = "top-1 accuracy in each task's label space, %" if results.get("task_metric") == "top1" else "R@1 (mean of image->text and text->image, %)"
    table = Table(title=f"{results['method']} on {results['benchmark']}: {metric}")
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    summary = Table(title="summary (Last/Avg/Transfer: ZSCL; forgetting: max minus final)")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for name, value in summary_rows(results):
        summary.add_row(name, value)
    console.print(summary)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(results: dict[str, Any]) -> str:
    header, rows = stage_rows(results)
    parts = [
        f"### {run_label(results)} on {results['benchmark']}",
        "",
        ("top-1 accuracy (%, each task in its own label space)" if results.get("task_metric") == "top1" else "R@1 (mean of both directions, %)")
        + ", rows = evaluation after each stage:",
        "",
        markdown_table(header, rows),
        "",
        markdown_table(["metric", "value"], [list(r) for r in summary_rows(results)]),
    ]
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
    s = results["summary"]
    return [
        lookup(s, "retrieval", "mean_R@1", key) if "retrieval" in s else lookup(s, "classification", "top1", key)
        for key in ("last", "avg", "transfer", "bwt", "forgetting")
    ] + [s.get("zeroshot_mean_pd"), lookup(s, "heldout_mean_R@1", "base", "final"), lookup(s, "task_agnostic", "last")]


def comparison_rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per run: retrieval summary (mean R@1), mean zero-shot PD, base-world R@1 final."""
    header = ["method"] + [name for name, _ in COMPARISON_COLUMNS]
    return header, [[run_label(results)] + [_fmt(v) for v in comparison_values(results)] for results in runs]


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


def seeded_comparison(groups: list[list[dict[str, Any]]]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per method from its runs at several seeds: every column's mean, sample std and spread mark.

    Returns the column names and, per group, ``{"label", "seeds", "cells": [(mean, std, mark), ...]}`` with
    the cells in the order of COMPARISON_COLUMNS (marks: :func:`spread_marks`, over the groups given).
    """
    stats = [[mean_std(list(column)) for column in zip(*(comparison_values(r) for r in runs))] for runs in groups]
    marks = [spread_marks([row[j] for row in stats], higher) for j, (_, higher) in enumerate(COMPARISON_COLUMNS)]
    rows = []
    for i, runs in enumerate(groups):
        cells = [(stats[i][j][0], stats[i][j][1], marks[j][i]) for j in range(len(COMPARISON_COLUMNS))]
        rows.append({"label": run_label(runs[0]), "seeds": len(runs), "cells": cells})
    return [name for name, _ in COMPARISON_COLUMNS], rows


def format_mean_std(mean: float | None, std: float | None, mark: str = "") -> str:
    """``31.1 +- 0.4`` (``31.1`` without a spread, ``-`` without a value); bold when best, ``~`` when within spread."""
    if mean is None:
        return "-"
    text = _fmt(mean) if std is None else f"{_fmt(mean)} +- {_fmt(std)}"
    return f"**{text}**" if mark == "best" else f"{text} ~" if mark == "within" else text


def comparison_markdown(runs: list[dict[str, Any]]) -> str:
    """A leaderboard followed by every run's matrix and summary."""
    header, rows = comparison_rows(runs)
    parts = [markdown_table(header, rows), ""]
    parts += [markdown_report(results) for results in runs]
    return "\n".join(parts)
