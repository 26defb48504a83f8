"""Read a run's results.json for a report, refusing files that are not what vlcl writes; find the runs of a
comparison directory."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlcl.errors import BadInputError
from vlcl.fileio import read_json_file
from vlcl.schema import results_format
from vlcl.schema import task_metric_of

REQUIRED_KEYS: dict[str, type] = {
    "method": str,
    "benchmark": str,
    "tasks": list,
    "heldout_retrieval": list,
    "zeroshot_sets": list,
    "stages": list,
    "matrices": dict,
    "summary": dict,
}


class ReportError(BadInputError, ValueError):
    """A results file that cannot be reported: one line naming it and what is wrong."""


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """The results of ``run_dir`` (or a results.json path), checked for the keys and types every report reads."""
    path = Path(run_dir)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise ReportError(f"{path}: not found (is {run_dir} a vlcl run directory?)")
    results = read_json_file(path, "results file", ReportError, strict=True)
    if not isinstance(results, dict):
        raise ReportError(f"{path}: expected a JSON object with a vlcl run's results, got a {type(results).__name__}")
    try:
        results_format(results, str(path))
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    for key, kind in REQUIRED_KEYS.items():
        if key not in results:
            raise ReportError(f"{path}: no '{key}' (not a results.json written by vlcl run)")
        if not isinstance(results[key], kind):
            raise ReportError(f"{path}: '{key}' is a {type(results[key]).__name__}, expected a {kind.__name__}")
    if not results["stages"]:
        raise ReportError(f"{path}: 'stages' is empty (not even the pre-trained evaluation)")
    return results


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_stage_metrics(results: dict[str, Any], path: str | Path) -> None:
    """Every stage's numbers that the tables and plots read: the task metric of every task (its setting's: mean
    R@1, top-1 for classification tasks...), every held-out set's mean R@1 and every zero-shot set's top-1. The first one missing
    is a :class:`ReportError` naming ``path``, the stage and the key (null is a number not measured: shown as ``-``)."""
    metric = task_metric_of(results)
    wanted = [(metric["kind"], t, metric["headline"]) for t in results["tasks"]]
    wanted += [("retrieval", h, "mean_R@1") for h in results["heldout_retrieval"]]
    wanted += [("zeroshot", z, "top1") for z in results["zeroshot_sets"]]
    for i, stage in enumerate(results["stages"]):
        if not isinstance(stage, dict) or not isinstance(stage.get("name"), str):
            raise ReportError(f"{path}: lacks what a report needs: stages[{i}] has no 'name'")
        where = f"{path}: lacks what a report needs: stage '{stage['name']}' (stages[{i}])"
        metrics = stage.get("metrics")
        if not isinstance(metrics, dict):
            raise ReportError(f"{where} has no 'metrics'")
        for kind, name, key in wanted:
            values = metrics.get(kind, {}).get(name) if isinstance(metrics.get(kind), dict) else None
            if not isinstance(values, dict) or key not in values or not (values[key] is None or _is_number(values[key])):
                raise ReportError(f"{where} has no number at metrics.{kind}.{name}.{key}")
        if "per_class" in stage:
            check_per_class(stage["per_class"], where)
    check_warnings(results, path)


WARNING_FIELDS: dict[str, tuple[type, ...]] = {"kind": (str,), "message": (str,), "stage": (int, type(None)), "set": (str, type(None))}
"""The fields of one entry of results.json's ``warnings`` and their types (``stage``/``set``: null when the warning
is about the whole run)."""


def check_warnings(results: dict[str, Any], path: str | Path) -> None:
    """``warnings``, where present: a list of ``{"kind", "message", "stage", "set"}`` (:data:`WARNING_FIELDS`); a
    report must not drop a warning it cannot read, so a malformed one is a :class:`ReportError` naming it."""
    if "warnings" not in results:
        return
    warnings = results["warnings"]
    if not isinstance(warnings, list):
        raise ReportError(f"{path}: 'warnings' is a {type(warnings).__name__}, expected a list of {{kind, message, stage, set}}")
    for i, warning in enumerate(warnings):
        if not isinstance(warning, dict):
            raise ReportError(f"{path}: warnings[{i}] is a {type(warning).__name__}, expected an object {{kind, message, stage, set}}")
        for field, kinds in WARNING_FIELDS.items():
            value = warning.get(field)
            if (field in ("kind", "message") and field not in warning) or not isinstance(value, kinds) or isinstance(value, bool):
                expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise ReportError(f"{path}: warnings[{i}].{field} is {json_kind(value) if field in warning else 'missing'}, expected {expected}")


def json_kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def check_per_class(per_class: Any, where: str) -> None:
    """``per_class`` of a stage: ``{set: {"classes": [str], "support": [int], "top1": [number|null], "confusion":
    [[int]] (optional, classes x classes)}}``, lengths agreeing; else a :class:`ReportError` naming the set."""
    if not isinstance(per_class, dict):
        raise ReportError(f"{where}: 'per_class' is {json_kind(per_class)}, expected an object by set")
    for name, entry in per_class.items():
        at = f"{where}: per_class.{name}"
        if not isinstance(entry, dict):
            raise ReportError(f"{at} is {json_kind(entry)}, expected an object with classes, support, top1")
        classes = entry.get("classes")
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise ReportError(f"{at}.classes is not a non-empty list of class names")
        n = len(classes)
        for field, ok in (("support", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
                          ("top1", lambda v: v is None or _is_number(v))):
            values = entry.get(field)
            if not isinstance(values, list) or len(values) != n or not all(ok(v) for v in values):
                raise ReportError(f"{at}.{field} is not a list of {n} {'counts' if field == 'support' else 'numbers'} (one per class)")
        confusion = entry.get("confusion")
        if confusion is not None and (
            not isinstance(confusion, list) or len(confusion) != n
            or not all(isinstance(row, list) and len(row) == n and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in row) for row in confusion)
        ):
            raise ReportError(f"{at}.confusion is not a {n} x {n} matrix of counts (rows: true class, columns: predicted)")


RUN_FILES = ("results.json", "config.yaml", "log.jsonl", "metrics.csv", "data_fingerprint.json")
"""What ``vlcl run`` writes into a run directory besides its report: never overwritten by ``vlcl report -o``."""
COMPARE_FILES = ("leaderboard.md", "leaderboard.csv", "timeline.jsonl")
"""What ``vlcl compare`` writes into its directory besides its report."""


def check_output(output: str | Path, runs: list["FoundRun"] = (), plot_dir: Path | None = None) -> None:
    """Refuse, before anything is computed or written, an ``-o`` that cannot be written as a whole: a directory, a
    file inside something that is not a directory, an unwritable folder, a file that a run or comparison of the
    report wrote (:data:`RUN_FILES`, :data:`COMPARE_FILES`), or (HTML) a plot folder that exists as something else
    or is not writable."""
    import os

    output = Path(output)
    if output.is_dir():
        raise ReportError(f"{output}: is a directory; -o takes the Markdown file to write (X.md) or the HTML page (X.html)")
    parent = next((p for p in [output.parent, *output.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise ReportError(f"{output}: cannot be written, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportError(f"{output}: cannot be written, the folder {parent} is not writable")
    target = output.resolve()
    for run in runs:
        folder = run.path if run.path.is_dir() else run.path.parent
        if any(target == (folder / name).resolve() for name in RUN_FILES):
            raise ReportError(f"{output}: is a file of the run {run.name} that vlcl wrote; -o takes a new file (X.md or X.html)")
        compare_dir = Path(run.group).parent if run.group else None
        if compare_dir and any(target == (compare_dir / name).resolve() for name in COMPARE_FILES):
            raise ReportError(f"{output}: is a file of the comparison {compare_dir} that vlcl wrote; -o takes a new file (X.md or X.html)")
    if plot_dir is not None and plot_dir.exists():
        if not plot_dir.is_dir():
            raise ReportError(f"{plot_dir}: exists and is not a directory; the plots of {output.name} go there (remove it or choose another -o)")
        if not os.access(plot_dir, os.W_OK | os.X_OK):
            raise ReportError(f"{plot_dir}: the plot folder of {output.name} is not writable")


@dataclass
class FoundRun:
    """One run of a report: where it is, how the page names it, its results and the method it is a seed of."""

    path: Path
    """The run directory (or the results.json given)."""
    name: str
    """``finetune/seed-0`` for a run of a comparison directory, else the path as given."""
    results: dict[str, Any]
    group: str | None = None
    """``<compare dir>/<method directory>`` for a run of a comparison directory (its seeds are one method), None for
    a run given directly (grouped by its run label)."""


SEED_DIR = re.compile(r"^seed-(-?\d+)$")


def _method_order(compare_dir: Path, names: list[str]) -> list[str]:
    """The method directories in the leaderboard's order (leaderboard.csv's ``run`` column), the rest by name."""
    order: list[str] = []
    board = compare_dir / "leaderboard.csv"
    if board.is_file():
        try:
            with open(board, encoding="utf-8", newline="") as handle:
                order = [row[0] for row in list(csv.reader(handle))[1:] if row]
        except (OSError, UnicodeDecodeError, csv.Error):
            order = []
    listed = [n for n in order if n in names]
    return listed + sorted(n for n in names if n not in listed)


def compare_run_dirs(compare_dir: Path) -> list[tuple[str, Path]]:
    """(method directory, run directory) of every run of a ``vlcl compare`` directory: ``<method>/results.json`` or
    ``<method>/seed-S/results.json`` (seeds in numeric order); the tuning runs (``tuning/``) are not among them."""
    methods: dict[str, list[Path]] = {}
    for child in sorted(p for p in compare_dir.iterdir() if p.is_dir() and p.name != "tuning" and not p.name.startswith(".")):
        if (child / "results.json").is_file():
            methods[child.name] = [child]
            continue
        seeds = [(int(m.group(1)), p) for p in child.iterdir() if p.is_dir() and (m := SEED_DIR.match(p.name)) and (p / "results.json").is_file()]
        if seeds:
            methods[child.name] = [p for _, p in sorted(seeds)]
    return [(name, run) for name in _method_order(compare_dir, list(methods)) for run in methods[name]]


def is_compare_dir(path: Path) -> bool:
    """A directory without a results.json of its own that holds a leaderboard or method runs."""
    return path.is_dir() and not (path / "results.json").exists() and ((path / "leaderboard.md").is_file() or bool(compare_run_dirs(path)))


def find_runs(paths: list[str | Path]) -> tuple[list[FoundRun], list[str]]:
    """The runs of the report: every path is a run directory (or its results.json) or a comparison directory,
    which stands for its finished runs. Returns the runs, read and checked (:func:`read_results`,
    :func:`check_stage_metrics`), and notes on what was left out (a comparison's unfinished runs)."""
    runs: list[FoundRun] = []
    notes: list[str] = []
    for given in paths:
        path = Path(given)
        if not is_compare_dir(path):
            results = read_results(path)
            check_stage_metrics(results, path / "results.json" if path.is_dir() else path)
            runs.append(FoundRun(path, str(given), results))
            continue
        found = compare_run_dirs(path)
        unfinished = []
        for method, run_dir in found:
            results = read_results(run_dir)
            name = run_dir.relative_to(path).as_posix()
            if not results["summary"].get("complete"):
                unfinished.append(name)
                continue
            check_stage_metrics(results, run_dir / "results.json")
            runs.append(FoundRun(run_dir, name, results, group=f"{path}/{method}"))
        if unfinished:
            notes.append(f"{path}: left out {len(unfinished)} unfinished run(s): {', '.join(unfinished)}")
        if len(found) == len(unfinished):
            raise ReportError(f"{path}: a comparison directory without finished runs (no <method>/results.json or <method>/seed-S/results.json)")
    return runs, notes
