"""Turn per-stage evaluations into the run's files: results.json and metrics.csv.

Matrices follow the field's convention: row t = evaluation after stage t,
column i = task i. The evaluation of the model before any training (the
``pretrained`` row) is kept apart: it is what Transfer and PD compare with.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from statistics import fmean
from typing import Any

from vlcl.data.benchmark import Benchmark
from vlcl.errors import RunFailedError
from vlcl.fileio import atomic_write_json, atomic_write_text
from vlcl.methods.base import Stage
from vlcl.metrics import continual_summary, stream_summary, zeroshot_retention_summary
from vlcl.schema import RESULTS_FORMAT
from vlcl.settings import Setting, setting_of

def _retrieval(record: dict[str, Any], set_name: str, key: str) -> float:
    return record["metrics"]["retrieval"][set_name][key]


def _is_continual(stages: list[Stage], num_tasks: int) -> bool:
    """One stage per task, in order: the T x T matrix and its summary are defined."""
    return len(stages) == num_tasks and all(s.task_indices == (i,) for i, s in enumerate(stages))


def assemble_results(
    *, config: dict, benchmark: Benchmark, stages: list[Stage], records: list[dict[str, Any]], wall_seconds: float, versions: dict,
    setting: Setting | None = None,
) -> dict[str, Any]:
    """results.json of a run: the setting (vlcl.settings) decides where a task's score is read, the matrices
    and their summary section, and what it adds (the classification setting's task-agnostic matrices)."""
    setting = setting or setting_of(benchmark)
    metric = setting.metric
    pretrained, trained = records[0], records[1:]
    tasks = benchmark.task_names
    heldout = [s.name for s in benchmark.heldout_retrieval]
    score = lambda record, task, key: setting.task_score(record["metrics"], task, key)  # noqa: E731
    heldout_zeroshot = list(benchmark.heldout_zeroshot)
    matrices = {key: [[score(r, t, key) for t in tasks] for r in trained] for key in metric.keys}
    complete = len(trained) == len(stages)
    continual = complete and _is_continual(stages, len(tasks))
    summary: dict[str, Any] = {
        "complete": complete,
        "definitions": "Last/Avg/Transfer: ZSCL; BWT; forgetting = max-minus-final (Mammoth); PD = pretrained - final",
    }
    if trained:
        if continual:
            summary[metric.section] = {key: continual_summary(m) for key, m in matrices.items()}
        else:  # joint training or an unfinished run: only the last row is meaningful
            summary[metric.section] = {key: {"last": sum(m[-1]) / len(m[-1])} for key, m in matrices.items()}
        summary["zeroshot_top1"] = {
            z.name: zeroshot_retention_summary(
                pretrained["metrics"]["zeroshot"][z.name]["top1"], [r["metrics"]["zeroshot"][z.name]["top1"] for r in trained]
            )
            for z in heldout_zeroshot
        }
        summary["heldout_mean_R@1"] = {
            h: zeroshot_retention_summary(_retrieval(pretrained, h, "mean_R@1"), [_retrieval(r, h, "mean_R@1") for r in trained])
            for h in heldout
        }
        pds = [v["pd"] for v in summary["zeroshot_top1"].values()]
        summary["zeroshot_mean_pd"] = sum(pds) / len(pds) if pds else None
    sections, extra_summary = setting.results_sections(tasks, pretrained, trained, continual=continual)
    summary.update(extra_summary)
    stream = trained[-1]["train"].get("stream") if trained else None
    if stream is not None:
        sections["stream"] = stream_results(stream, setting)
        if "summary" in sections["stream"]:
            summary["stream"] = sections["stream"]["summary"]
    return {
        "format": RESULTS_FORMAT,
        "config": config,
        "benchmark": benchmark.name,
        "method": config["method"]["name"],
        "setting": setting.to_json(),
        "tasks": tasks,
        "heldout_retrieval": heldout,
        "zeroshot_sets": [z.name for z in heldout_zeroshot],
        "task_metric": metric.headline,
        "stage_names": [s.name for s in stages],
        "pretrained": {metric.pretrained_row: {key: [score(pretrained, t, key) for t in tasks] for key in metric.keys}},
        "matrices": matrices,
        **sections,
        "summary": summary,
        "warnings": [w for r in records for w in r.get("warnings", [])],
        "stages": records,
        "timings": {
            "wall_seconds_this_session": wall_seconds,
            "train_seconds": round(sum(r["train"].get("seconds", 0.0) for r in records), 3),
            "eval_seconds": round(sum(r["eval_seconds"] for r in records), 3),
        },
        "versions": versions,
        **({"data": benchmark.data_report} if getattr(benchmark, "data_report", None) else {}),
    }


METRIC_KINDS = ("retrieval", "alignment", "zeroshot", "task_agnostic", "routes")  # routes: set -> route -> share
"""The order of the metric kinds of a results file that does not record its setting's (``setting.metric_kinds``)."""


STREAM_DEFINITION = (
    "a stream (data.stream=online; SIT, Wang et al. 2024): every point scores the model on what the stream has "
    "shown so far (a classification stream: the test images of the classes seen so far, among those classes; a "
    "caption stream: the mean R@1 of the tasks seen so far). A_auc: the mean of the points every eval.every_samples "
    "samples; A_avg: the mean of the points at the hidden tasks' ends; A_last: the last; F_last: over the units "
    "(classes, or tasks) scored above 0 at an earlier task end, the mean of their best earlier score minus their "
    "last (a unit not yet seen counts 0)."
)


def stream_results(stream: dict[str, Any], setting: Setting) -> dict[str, Any]:
    """results.json's ``stream``: its shape, its points and, once it has reached its end, A_auc, A_avg, A_last and
    F_last (``summary``), in the setting's task metric."""
    points = stream["points"]
    result: dict[str, Any] = {"definition": STREAM_DEFINITION, "metric": setting.metric.headline, **stream}
    ends = [p for p in points if p["task_end"]]
    periodic = [p["score"] for p in points if p["periodic"]]
    if ends and periodic and ends[-1]["batch"] == stream["batches"] - 1:
        units = list(dict.fromkeys(u for p in ends for u in p["per_unit"]))
        rows = [[p["per_unit"].get(u) for u in units] for p in ends]
        result["summary"] = stream_summary(periodic, [p["score"] for p in ends], rows)
    return result


def flatten_metrics(metrics: dict[str, Any], order: tuple[str, ...] | list[str] = METRIC_KINDS) -> list[tuple[str, str, str, Any]]:
    """One evaluation's scalars as (kind, set, metric, value), the kinds in ``order`` (the setting's
    ``metric_kinds``) and then every other kind in the evaluation's own order, so that a new kind of metric is
    never silently left out (metrics.csv's rows and the ``eval`` records of log.jsonl both come from here). A kind
    nested deeper than set -> metric (``seen_classes``: the number of tasks seen -> set -> metric) names its set by
    the path, ``2/aircraft``."""
    kinds = [k for k in order if k in metrics] + [k for k in metrics if k not in order]
    return [(kind, set_name, metric, value) for kind in kinds for set_name, metric, value in _scalars(metrics[kind])]


def _scalars(values: Any, path: tuple[str, ...] = ()) -> list[tuple[str, str, Any]]:
    """(set path, metric, value) of every number under ``values`` (a dict of dicts ending in numbers)."""
    if not isinstance(values, dict):
        return []
    found = []
    for key, value in values.items():
        if isinstance(value, dict):
            found += _scalars(value, (*path, str(key)))
        elif path and isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append(("/".join(path), str(key), value))
    return found


def metrics_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Long format: one row per (stage, set, kind, metric)."""
    order = results.get("setting", {}).get("metric_kinds", METRIC_KINDS)
    return [
        {"stage_index": record["index"], "stage": record["name"], "set": set_name, "kind": kind, "metric": metric, "value": value}
        for record in results["stages"]
        for kind, set_name, metric, value in flatten_metrics(record["metrics"], order)
    ]


class ResultsError(RunFailedError, RuntimeError):
    """Writing would lose results already on disk."""


def stages_on_disk(path: Path) -> int:
    """How many stage records the results.json at ``path`` holds (0 if there is none or it is unreadable)."""
    try:
        stages = json.loads(path.read_text(encoding="utf-8")).get("stages")
    except (OSError, ValueError, AttributeError):
        return 0
    return len(stages) if isinstance(stages, list) else 0


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    """results.json and metrics.csv, atomically; never over a results.json that records more stages."""
    path = run_dir / "results.json"
    written = stages_on_disk(path)
    if written > len(results["stages"]):
        raise ResultsError(f"{path}: holds {written} stage records, the new results {len(results['stages'])}; not replaced")
    atomic_write_json(path, results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["stage_index", "stage", "set", "kind", "metric", "value"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(metrics_rows(results))
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())
