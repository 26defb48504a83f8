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


def _value(summary: dict[str, Any], *path: str) -> float | None:
    node: Any = summary
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def run_label(results: dict[str, Any]) -> str:
    """``method`` plus its options and learning rate, so that variants of one method stay apart."""
    config = results.get("config", {})
    options = {k: v for k, v in config.get("method", {}).items() if k != "name"}
    parts = [results["method"]]
    if "train" in config and results["method"] != "zeroshot":
        parts.append(f"lr={config['train']['lr']:g}")
    parts += [f"{k}={v}" for k, v in options.items()]
    return " ".join(parts)


def comparison_rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per run: retrieval summary (mean R@1), mean zero-shot PD, base-world R@1 final."""
    header = ["method", "Last", "Avg", "Transfer", "BWT", "forgetting", "zero-shot PD (mean)", "base R@1 final"]
    rows = []
    for results in runs:
        s = results["summary"]
        rows.append(
            [run_label(results)]
            + [
                _fmt(_value(s, "retrieval", "mean_R@1", key) if "retrieval" in s else _value(s, "classification", "top1", key))
                for key in ("last", "avg", "transfer", "bwt", "forgetting")
            ]
            + [_fmt(s.get("zeroshot_mean_pd")), _fmt(_value(s, "heldout_mean_R@1", "base", "final"))]
        )
    return header, rows


def comparison_markdown(runs: list[dict[str, Any]]) -> str:
    """A leaderboard followed by every run's matrix and summary."""
    header, rows = comparison_rows(runs)
    parts = [markdown_table(header, rows), ""]
    parts += [markdown_report(results) for results in runs]
    return "\n".join(parts)
