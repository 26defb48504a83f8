"""The version of results.json, shared by what writes it (vlcl.engine.results) and what reads it (vlcl.report):
the standard library only, so that a report reads runs without torch.

Format 1: the results.json of vlcl before the format was recorded (no ``format`` key), read as it is.
Format 2: adds ``format`` itself, per-class scores in the stage records (``stages[i].per_class``) and ``warnings``.
Format 3: adds ``setting`` (vlcl.settings: its name, description, model kind, task metric and metric kinds), which
the report reads instead of telling settings apart; for formats 1 and 2 :func:`task_metric_of` gives the metric
their ``task_metric`` names.
"""

from __future__ import annotations

from typing import Any

RESULTS_FORMAT = 3
"""The format this vlcl writes; it reads every format from 1 up to it."""


def results_format(results: dict[str, Any], where: str) -> int:
    """The format of parsed ``results`` (1 when it records none); a format this vlcl cannot read is a ValueError
    naming ``where`` and the format."""
    found = results.get("format", 1)
    if isinstance(found, bool) or not isinstance(found, int):
        raise ValueError(f"{where}: 'format' is {found!r}, expected a whole number (the results file's format)")
    if not 1 <= found <= RESULTS_FORMAT:
        newer = " (written by a newer vlcl: upgrade to read it)" if found > RESULTS_FORMAT else ""
        raise ValueError(f"{where}: results format {found}, this vlcl reads formats 1 to {RESULTS_FORMAT}{newer}")
    return found


RECALL_METRIC: dict[str, Any] = {
    "kind": "retrieval", "keys": ["mean_R@1", "i2t_R@1", "t2i_R@1"], "headline": "mean_R@1", "section": "retrieval",
    "pretrained_row": "R@1_row", "name": "mean R@1", "label": "R@1 (mean of image->text and text->image, %)",
    "axis": "mean R@1 (%)", "title": "mean R@1 (%, image->text and text->image)", "summary_label": "retrieval R@1",
}
"""The task metric of the image-caption setting (and of modality pairs): recall@1 both ways and their mean."""
TOP1_METRIC: dict[str, Any] = {
    "kind": "zeroshot", "keys": ["top1"], "headline": "top1", "section": "classification", "pretrained_row": "top1_row",
    "name": "top-1", "label": "top-1 accuracy in each task's label space, %", "axis": "top-1 (%)",
    "title": "top-1 accuracy (%, each task in its own label space)", "summary_label": "accuracy top1",
}
"""The task metric of the classification setting (MTIL): top-1 in each task's own label space."""


TASK_AGNOSTIC_ROWS = [["task_agnostic", "task-agnostic top1"], ["seen_classes", "seen-classes top1"]]
"""The classification setting's summary rows beside its task metric: (summary key, row label)."""


def setting_of_results(results: dict[str, Any]) -> dict[str, Any]:
    """What the report needs of a run's setting: ``metric`` (where and how its tasks are scored) and
    ``summary_rows`` ((summary key, label) of the summary entries it adds). Format 3 records it (``setting``);
    for formats 1 and 2 it is the one their ``task_metric`` names."""
    setting = results.get("setting")
    if isinstance(setting, dict) and isinstance(setting.get("metric"), dict):
        return {"summary_rows": [], **setting}
    if results.get("task_metric") == "top1":
        return {"metric": TOP1_METRIC, "summary_rows": TASK_AGNOSTIC_ROWS}
    return {"metric": RECALL_METRIC, "summary_rows": []}


def task_metric_of(results: dict[str, Any]) -> dict[str, Any]:
    """The task metric of a run (:func:`setting_of_results`)."""
    return setting_of_results(results)["metric"]
