"""Summaries of a continual-learning accuracy matrix and of zero-shot retention.

A[t][i] is the score on task i evaluated after training on task t (row t =
evaluation after task t, column i = task i), a square T x T matrix. Indices
are 0-based below.

* ``last`` = mean_i A[T-1][i], the final model on every task (ZSCL, Zheng et
  al. 2023, "Last").
* ``avg`` = mean_i mean_t A[t][i], each task averaged over all stages (ZSCL's
  "Avg").
* ``transfer`` = mean_{i=1..T-1} mean_{j<i} A[j][i], zero-shot performance on
  tasks not yet learned (ZSCL's "Transfer", the upper triangle); None for T=1.
* ``bwt`` = mean_{i<T-1} (A[T-1][i] - A[i][i]), backward transfer (Lopez-Paz &
  Ranzato 2017; Mammoth's ``backward_transfer``); None for T=1.
* ``forgetting`` = mean_{i<T-1} (max_{t in [i, T-1]} A[t][i] - A[T-1][i]),
  Mammoth's ``forgetting`` (utils/metrics.py): the best score a task ever had
  since it was learned minus its final score. The max runs over the final row
  too, as in Mammoth, so each term is >= 0 (a task that ends at its best
  counts as 0, not as negative forgetting); None for T=1.
* ``plasticity`` = mean_i A[i][i], the score right after learning each task.

Performance drop (PD, C-CLIP): PD = pretrained - final, on a set no stage
trains on (e.g. zero-shot ImageNet); positive means capability was lost.

Every function refuses NaN and inf with a ValueError: a NaN would propagate
into every mean (or, through ``max``, be silently skipped or chosen).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean
from typing import Any


def _square(matrix: Any) -> list[list[float]]:
    """Rows of floats from a list of rows, a tensor or an array; must be square T x T, T >= 1."""
    rows = matrix.tolist() if hasattr(matrix, "tolist") else matrix
    try:
        rows = [list(row) for row in rows]
    except TypeError:  # a scalar or a flat list of numbers: not a matrix
        raise ValueError(f"expected a square T x T matrix (a list of rows), got {matrix!r}") from None
    if not rows or any(len(row) != len(rows) for row in rows):
        shape = f"{len(rows)} rows of lengths {[len(row) for row in rows]}"
        raise ValueError(f"expected a square T x T matrix (row t = after task t, column i = task i), got {shape}")
    values = [[float(value) for value in row] for row in rows]
    bad = [(t, i) for t, row in enumerate(values) for i, v in enumerate(row) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"the matrix holds NaN or inf at (row, column) {bad[0]}: a score must be a finite number")
    return values


def continual_summary(matrix: Sequence[Sequence[float]] | Any) -> dict[str, float | None]:
    """last, avg, transfer, bwt, forgetting, plasticity; see the module docstring."""
    a = _square(matrix)
    T = len(a)
    final = a[-1]
    learned = range(T - 1)  # tasks that had later stages to be forgotten in
    return {
        "last": fmean(final),
        "avg": fmean(fmean(a[t][i] for t in range(T)) for i in range(T)),
        "transfer": fmean(fmean(a[j][i] for j in range(i)) for i in range(1, T)) if T > 1 else None,
        "bwt": fmean(final[i] - a[i][i] for i in learned) if T > 1 else None,
        "forgetting": fmean(max(a[t][i] for t in range(i, T)) - final[i] for i in learned) if T > 1 else None,
        "plasticity": fmean(a[i][i] for i in range(T)),
    }


def performance_drop(pretrained: float, final: float) -> float:
    """PD of the C-CLIP paper: pretrained score minus final score (positive = lost)."""
    if not (math.isfinite(float(pretrained)) and math.isfinite(float(final))):
        raise ValueError(f"PD needs finite scores, got pretrained {pretrained} and final {final}")
    return float(pretrained) - float(final)


def zeroshot_retention_summary(pretrained: float, per_stage: Sequence[float]) -> dict[str, float]:
    """Score before training, after the last stage, PD, and the min / mean over stages."""
    scores = [float(s) for s in per_stage]
    if not all(math.isfinite(v) for v in [float(pretrained), *scores]):
        raise ValueError(f"zero-shot scores must be finite numbers, got pretrained {pretrained} and stages {scores}")
    if not scores:
        raise ValueError("per_stage is empty: need the score after at least one stage")
    return {
        "pretrained": float(pretrained),
        "final": scores[-1],
        "pd": performance_drop(pretrained, scores[-1]),
        "min": min(scores),
        "mean": fmean(scores),
    }
