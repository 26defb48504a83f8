"""Read a run's results.json for a report, refusing files that are not what vlcl writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlcl.engine.checkpoint import read_json_file

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


class ReportError(ValueError):
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
    for key, kind in REQUIRED_KEYS.items():
        if key not in results:
            raise ReportError(f"{path}: no '{key}' (not a results.json written by vlcl run)")
        if not isinstance(results[key], kind):
            raise ReportError(f"{path}: '{key}' is a {type(results[key]).__name__}, expected a {kind.__name__}")
    if not results["stages"]:
        raise ReportError(f"{path}: 'stages' is empty (not even the pre-trained evaluation)")
    return results

