"""The online metrics of stream mode, as the official code computes them (Debatrix/LifeLong-CLIP,
``methods/_trainer.py``; Wang et al. 2024, "CLIP model is an Efficient Online Lifelong Learner").

Along the stream the model is evaluated every ``eval_period`` training samples on the test samples of the
classes seen so far (the periodic accuracies), and again at the end of every hidden task (the task-end
accuracies, with one accuracy per class).

* ``A_auc`` = mean of the periodic accuracies: the area under the accuracy-over-samples curve divided by
  its length, since the evaluations are equally spaced in samples (Koh et al. 2022).
* ``A_avg`` = mean of the task-end accuracies; ``A_last`` = the last of them.
* ``F_last`` = over the classes whose best accuracy at the task ends before the last is > 0, the mean of
  (that best - the class's accuracy at the last task end). A class not yet seen at a task end is ``None``
  there and counts as 0, as the official per-class accuracy is 0 for a class with no test samples yet (its
  test set holds the seen classes only); such a class enters F_last only once it was seen and scored > 0
  before the last task. ``None`` with a single task end (no earlier end: the official code fails) or when
  no class qualifies (the official mean of nothing is NaN).

Values come back in the units given (percent in, percent out). NaN and inf are refused with a ValueError,
as in :mod:`vlcl.metrics.continual`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean


def _finite(values: Sequence[float], name: str) -> list[float]:
    """``values`` as a non-empty list of finite floats, or a one-line ValueError naming ``name``."""
    floats = [float(v) for v in values]
    if not floats:
        raise ValueError(f"{name} is empty: need at least one accuracy")
    bad = [i for i, v in enumerate(floats) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name} holds NaN or inf at position {bad[0]}: an accuracy must be a finite number")
    return floats


def _class_rows(rows: Sequence[Sequence[float | None]], task_ends: int) -> list[list[float]]:
    """The per-class accuracies at each task end, unseen (``None``) as 0; one row per task end, equal lengths."""
    if not rows:
        raise ValueError("class_accuracy_at_task_ends is empty: need the per-class accuracies of at least one task end")
    if len(rows) != task_ends:
        raise ValueError(f"class_accuracy_at_task_ends has {len(rows)} rows, expected one per task end ({task_ends})")
    if len({len(row) for row in rows}) != 1 or not rows[0]:
        raise ValueError(f"class_accuracy_at_task_ends rows must be non-empty and of one length, got {[len(r) for r in rows]}")
    return [_finite([0.0 if v is None else v for v in row], f"class_accuracy_at_task_ends[{t}]") for t, row in enumerate(rows)]


def area_under_accuracy(accuracies: Sequence[float]) -> float:
    """A_auc: the mean of the accuracies measured every eval period along the stream, each on the seen classes."""
    return fmean(_finite(accuracies, "accuracies"))


def last_forgetting(class_accuracy_at_task_ends: Sequence[Sequence[float | None]]) -> float | None:
    """F_last of the official code (see the module docstring); ``None`` for one task end or no class to count."""
    rows = _class_rows(class_accuracy_at_task_ends, len(class_accuracy_at_task_ends))
    if len(rows) < 2:
        return None
    *earlier, final = rows
    best = [max(column) for column in zip(*earlier)]
    drops = [top - last for top, last in zip(best, final) if top > 0]
    return fmean(drops) if drops else None


def stream_summary(
    periodic: Sequence[float],
    at_task_ends: Sequence[float],
    class_accuracy_at_task_ends: Sequence[Sequence[float | None]],
) -> dict[str, float | None]:
    """A_auc, A_avg, A_last and F_last of a stream run (see the module docstring), in the units given."""
    ends = _finite(at_task_ends, "at_task_ends")
    _class_rows(class_accuracy_at_task_ends, len(ends))
    return {
        "A_auc": fmean(_finite(periodic, "periodic")),  # area_under_accuracy, the error naming this argument
        "A_avg": fmean(ends),
        "A_last": ends[-1],
        "F_last": last_forgetting(class_accuracy_at_task_ends),
    }
