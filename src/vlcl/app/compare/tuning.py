"""Choosing from the grid (``vlcl compare --tune``, docs/tuning.md): the tuning settings, a grid point's validation
score, the selection rule, each method's grid and its points, ``tuning.json`` and ``tuning.md``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlcl.app.compare.plan import CompareError, MethodSpec, short_value
from vlcl.fileio import atomic_write_text
from vlcl.report.tables import markdown_table
from vlcl.schema import task_metric_of


LR_GRID = (3e-5, 1e-4, 3e-4, 1e-3)
"""The learning rates every method that trains is tuned over (``--tune-lrs`` replaces them)."""

OBJECTIVES = ("last", "avg")
"""What a grid point is scored by on the proxy's validation split (``--tune-objective``). ``last`` (the default):
every task after the proxy's last one, so forgetting counts; ``avg``: ZSCL's Avg over the proxy's stages, which on
a short proxy is mostly each task right after learning it (docs/tuning.md shows where that misled)."""


def objective_text(objective: str) -> str:
    name = {"last": "Last", "avg": "Avg"}[objective]
    return (
        f"validation {name} of the task metric (mean R@1 of both directions for caption tasks, top-1 for "
        "classification tasks); Last for runs with one stage (joint); the highest wins, ties (within 1e-9) go to "
        "the smaller learning rate, then to the earlier point of the grid"
    )


@dataclass
class Tuning:
    """``vlcl compare --tune``: a grid per method on a validation split of a cheaper proxy of the benchmark."""

    lrs: tuple[float, ...] = LR_GRID
    tasks: int | None = 3
    """The proxy trains the first ``tasks`` tasks of each method's sequence (None: every task)."""
    scale: float = 0.25
    """Multiplies ``data.train_scale`` in the proxy (the validation split is carved from what remains)."""
    epochs: int | None = None
    """``train.epochs`` of the proxy (None: the config's)."""
    validation_fraction: float = 0.2
    """``data.validation_fraction`` of the proxy: the share of each task's training data carved for validation."""
    objective: str = "last"
    """``last`` or ``avg`` (:data:`OBJECTIVES`)."""

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise CompareError(f"--tune-objective {self.objective}: expected one of {', '.join(OBJECTIVES)}")
        if not self.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in self.lrs):
            raise CompareError(f"--tune-lrs {','.join(map(str, self.lrs))}: expected positive learning rates")
        if self.tasks is not None and self.tasks < 1:
            raise CompareError(f"--tune-tasks {self.tasks}: expected a positive number of tasks (0 or 'all': every task)")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise CompareError(f"--tune-scale {self.scale}: expected a positive factor")
        if self.epochs is not None and self.epochs < 1:
            raise CompareError(f"--tune-epochs {self.epochs}: expected a positive number of epochs")
        if not 0 < self.validation_fraction < 1:
            raise CompareError(f"--validation-fraction {self.validation_fraction}: expected a share strictly between 0 and 1")

    def describe(self) -> dict[str, Any]:
        return {
            "first_tasks": self.tasks,
            "train_scale_factor": self.scale,
            "epochs": self.epochs,
            "validation_fraction": self.validation_fraction,
            "learning_rates": list(self.lrs),
            "objective": self.objective,
        }


def tuning_score(results: dict[str, Any], objective: str = "last") -> tuple[float, str]:
    """(score, what it is): the validation Last or Avg (``objective``) of the task metric; Last for a run whose
    stages are not one per task (joint: Avg is not defined)."""
    metric = task_metric_of(results)
    values = results["summary"].get(metric["section"], {}).get(metric["headline"], {})
    if objective == "avg" and values.get("avg") is not None:
        return float(values["avg"]), "Avg"
    if values.get("last") is not None:
        return float(values["last"]), "Last"
    raise CompareError(f"results of {results.get('method')}: no Avg or Last to select on (an unfinished run?)")


def select_point(points: list[dict[str, Any]]) -> int | None:
    """Index of the chosen point of ``points`` (dicts with ``score``, None for a failed run, and ``values``):
    the highest score; among scores within 1e-9 of it, the smallest ``train.lr``, then the earliest point."""
    scored = [(i, p) for i, p in enumerate(points) if p.get("score") is not None]
    if not scored:
        return None
    best = max(p["score"] for _, p in scored)
    tied = [(i, p) for i, p in scored if p["score"] >= best - 1e-9]
    return min(tied, key=lambda ip: (ip[1]["values"].get("train.lr", 0.0), ip[0]))[0]


@dataclass
class MethodTuning:
    """One method's grid: its points (values, run directory, score) and, once they are done, the chosen values."""

    spec: MethodSpec
    grid: dict[str, list[Any]]
    points: list[dict[str, Any]]
    note: str = ""

    def chosen(self) -> dict[str, Any] | None:
        index = select_point(self.points)
        return None if index is None else dict(self.points[index]["values"])


def tuning_files(out_dir: Path, tunings: list[MethodTuning], tuning: Tuning, command: str, seed: int | None) -> None:
    """``tuning.json`` and ``tuning.md``: every grid point's validation score and the values chosen."""
    methods: dict[str, Any] = {}
    sections = []
    for t in tunings:
        index = select_point(t.points)
        methods[t.spec.label] = {
            "method": t.spec.name,
            "fixed": t.spec.overrides,
            "grid": t.grid,
            "note": t.note,
            "points": [{k: v for k, v in p.items() if k not in ("config", "seconds")} for p in t.points],
            "chosen": None if index is None else t.points[index]["values"],
            "chosen_run": None if index is None else t.points[index]["run"],
            "chosen_score": None if index is None else t.points[index]["score"],
        }
        if t.note:
            sections.append(f"### {t.spec.label}\n\n{t.note}\n")
            continue
        keys = list(t.grid)
        rows = []
        for i, p in enumerate(t.points):
            score = "-" if p["score"] is None else f"{p['score']:.2f}"
            status = "**chosen**" if i == index else p["status"].replace("|", "\\|").replace("\n", " ")
            rows.append([short_value(p["values"][k]) for k in keys] + [score, p.get("objective") or "-", status, f"[results]({p['run']}/results.json)"])
        fixed = f" (fixed: {'; '.join(t.spec.overrides)})" if t.spec.overrides else ""
        sections.append(f"### {t.spec.label}{fixed}\n\n" + markdown_table(keys + ["validation score", "objective", "status", "files"], rows) + "\n")
    document = {
        "objective": objective_text(tuning.objective),
        "proxy": {**tuning.describe(), "seed": seed},
        "command": command,
        "methods": methods,
    }
    atomic_write_text(out_dir / "tuning.json", json.dumps(document, indent=2) + "\n")
    proxy = ", ".join([
        f"first {tuning.tasks} task(s)" if tuning.tasks else "every task",
        f"data.train_scale x {tuning.scale:g}",
        f"{tuning.epochs} epoch(s)" if tuning.epochs else "the config's epochs",
        f"{tuning.validation_fraction:g} of each task's training data carved for validation (data.seed)",
        f"run seed {seed if seed is not None else 'of the config'}",
    ])
    text = (
        f"# Tuning\n\nMade with:\n\n```bash\n{command}\n```\n\nProxy: {proxy}. No test data is read.\n\n"
        f"Objective: {objective_text(tuning.objective)}.\n\n" + "\n".join(sections)
    )
    atomic_write_text(out_dir / "tuning.md", text)
