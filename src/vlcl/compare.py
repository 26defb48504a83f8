"""``vlcl compare``: several methods on the same benchmark and seed(s), tuned alike if asked.

Each method gets its own run directory under the comparison directory and is
resumable on its own: a finished run is kept, an interrupted one resumes after
its last complete task, a missing one starts. The leaderboard (Markdown and
CSV) is rewritten after every method, so it always reflects what has finished.

Methods run one after the other, or ``jobs`` at a time in worker processes
that share the CPU threads between them (``--jobs 2`` on 2 cores: one thread
each). Small models use threads poorly, so on 2 cores the eleven-method
embedded comparison ran 1.43x sooner with ``--jobs 2``; very short runs can
be slower (benchmarks/RESULTS.md). A method that fails does not stop the
others: the failures are listed at the end and the command exits non-zero.
Tuning and final runs share one queue (:func:`_run_queue`); the runs share
one evaluation of the pre-trained row (``.shared/``, vlcl.engine.shared_eval);
``timeline.jsonl`` records every run's start and end
(benchmarks/compare_profile.py).

Methods are given as ``name`` or ``name[key=value;key=value]`` with overrides
that apply to that method only, e.g. ``finetune,cclip[train.lr=5e-4]``.

``tuning`` (``--tune``, docs/tuning.md): before the final runs, every method
that trains runs a grid - the shared learning rates x the method's own
``Method.tuning_grid`` (keys its brackets set stay fixed) - on a cheaper proxy
(the first tasks, less data) evaluated on a validation split carved from the
training data (``data.validation_fraction``), never on test data; each
method's final runs use its best point (:func:`select_point`). Grid runs live
in ``tuning/<method>/<point>/``, are resumable like the final runs, run
``jobs`` at a time, and every score is in ``tuning.json`` and ``tuning.md``.
``seeds`` (``--seeds 0,1,2``): every method runs at each seed (``seed=S``,
into ``<method>/seed-S/``) and the leaderboard gives each column's mean and
sample standard deviation, marking the rows within the seeds' spread of the
column's best (:func:`vlcl.report.tables.spread_marks`); one seed keeps one
directory per method and one row per run.
"""

from __future__ import annotations

import csv
import ctypes
import functools
import io
import itertools
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from vlcl.config import RunConfig, config_to_dict, dump_config, load_config
from vlcl.errors import BadInputError
from vlcl.fileio import atomic_write_text, read_json_file
from vlcl.engine.loop import create_runner
from vlcl.engine.rundir import FINGERPRINT_FILE, hold
from vlcl.report.tables import comparison_rows, format_mean_std, markdown_table, mean_std, seeded_comparison


class CompareError(BadInputError, ValueError):
    pass


@dataclass
class MethodSpec:
    name: str
    overrides: list[str] = field(default_factory=list)
    label: str = ""


def _split_top_level(text: str, separator: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise CompareError(f"--methods '{text}': unbalanced brackets")
    return parts + [current]


def parse_methods(text: str) -> list[MethodSpec]:
    specs = []
    for item in (p.strip() for p in _split_top_level(text, ",")):
        if not item:
            raise CompareError(f"--methods '{text}': empty method name")
        name, _, rest = item.partition("[")
        overrides = [o.strip() for o in rest[:-1].split(";") if o.strip()] if rest else []
        if rest and not rest.endswith("]"):
            raise CompareError(f"--methods: '{item}' should look like name[key=value;key=value]")
        if "method.name" in _override_keys(overrides):  # the run would be stored under the other method's name
            raise CompareError(f"--methods: '{item}' sets method.name inside its brackets; name the method itself instead")
        specs.append(MethodSpec(name.strip(), overrides))
    counts: dict[str, int] = {}
    for spec in specs:  # directory names: the method name, numbered when a method appears twice
        counts[spec.name] = counts.get(spec.name, 0) + 1
        spec.label = spec.name if counts[spec.name] == 1 else f"{spec.name}-{counts[spec.name]}"
    return specs


def _finished(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    results = read_json_file(path, "results file", CompareError)
    if not isinstance(results, dict):
        raise CompareError(f"{path}: expected a JSON object with a vlcl run's results")
    return results if results.get("summary", {}).get("complete") else None


def _same_config(run_dir: Path, config: RunConfig) -> None:
    saved = load_config(run_dir / "config.yaml")
    a, b = config_to_dict(saved), config_to_dict(config)
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differing:
        raise CompareError(f"{run_dir}: exists with a different config ({', '.join(differing)}); remove it or use another directory")


def run_method(
    config: RunConfig, run_dir: Path, console: Console, name: str | None = None, shared_eval: Path | None = None
) -> dict[str, Any]:
    """One run of the comparison: kept when it finished earlier, resumed when it stopped, else started;
    ``shared_eval`` holds the pre-trained rows its runs share (vlcl.engine.shared_eval)."""
    with hold(run_dir):
        return _run_method_held(config, run_dir, console, name or run_dir.name, shared_eval)


def _run_method_held(config: RunConfig, run_dir: Path, console: Console, name: str, shared_eval: Path | None) -> dict[str, Any]:
    resuming = run_dir.exists() and (run_dir / "config.yaml").is_file()
    if resuming:
        _same_config(run_dir, config)
        finished = _finished(run_dir)
        if finished is not None:
            console.print(f"[bold]{name}[/]: finished earlier, kept")
            return finished
    runner = create_runner(config, run_dir, console, shared_eval).prepare(resume=resuming)  # every check before the directory is made
    if resuming:
        console.print(f"[bold]{name}[/]: resuming")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
        console.print(f"[bold]{name}[/]: running")
    return runner.run()


# -- tuning ----------------------------------------------------------------------------------------------

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


def yaml_value(value: Any) -> str:
    """``value`` written so that the config's YAML parsing reads it back as the same value (``3e-05`` would be a
    string to YAML 1.1: floats get a mantissa with a point, ``3.0e-05``)."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return json.dumps(value)


def _short(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def point_name(values: dict[str, Any]) -> str:
    """A grid point's directory name: ``lr=0.0003_weight=2``."""
    return "_".join(f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in values.items()) or "default"


def _override_keys(overrides: list[str]) -> set[str]:
    return {o.split("=", 1)[0].strip() for o in overrides}


def method_grid(method_grid_spec: dict[str, tuple[Any, ...]], lrs: tuple[float, ...], fixed: list[str]) -> dict[str, list[Any]]:
    """Config key -> values: ``train.lr`` over ``lrs`` (none: a method without an optimiser), then the method's own
    grid (``method.<key>``); a key that the method's bracketed overrides set (``lwf[method.weight=2]``) is fixed
    there, not tuned."""
    grid: dict[str, list[Any]] = {"train.lr": [float(lr) for lr in lrs]} if lrs else {}
    for key, values in method_grid_spec.items():
        grid[key if "." in key else f"method.{key}"] = list(values)
    given = _override_keys(fixed)
    return {key: values for key, values in grid.items() if key not in given}


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, the first key varying slowest (``train.lr`` first, in the order given)."""
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]


def tuning_score(results: dict[str, Any], objective: str = "last") -> tuple[float, str]:
    """(score, what it is): the validation Last or Avg (``objective``) of the task metric; Last for a run whose
    stages are not one per task (joint: Avg is not defined)."""
    summary = results["summary"]
    section = summary.get("classification" if results.get("task_metric") == "top1" else "retrieval", {})
    values = section.get(results.get("task_metric", "mean_R@1"), {})
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


def task_order(config: RunConfig) -> list[str]:
    """The run's tasks in order: ``data.tasks``, else the benchmark's own sequence."""
    if config.data.tasks:
        return list(config.data.tasks)
    if config.data.benchmark == "embedded":
        from vlcl.data.benchmarks.embedded import DEFAULT_SEQUENCE

        return list(DEFAULT_SEQUENCE)
    if config.data.benchmark == "features":
        return [f.name for f in config.data.features or []]
    from vlcl.data.benchmarks.data_root import validate_data_config

    selection = validate_data_config(config.data)
    if selection is not None:  # read from a data root: the catalogue (or the folders) give the order
        return list(selection.tasks)
    return list(_built_task_names(config.data.model_dump_json()))


@functools.lru_cache(maxsize=8)
def _built_task_names(data_json: str) -> tuple[str, ...]:
    """Another benchmark (``embedded_cls``, a plugin's): built once at 32 px to read its task names."""
    from vlcl.config import DataConfig
    from vlcl.data.registry import build_benchmark

    return tuple(build_benchmark(DataConfig.model_validate_json(data_json), image_size=32).task_names)


def proxy_overrides(config: RunConfig, tuning: Tuning) -> list[str]:
    """What turns a method's config into its tuning proxy: the validation split, the first tasks, less data, epochs."""
    overrides = [f"data.validation_fraction={yaml_value(float(tuning.validation_fraction))}"]
    if tuning.tasks is not None:
        order = task_order(config)
        if tuning.tasks < len(order) and config.data.benchmark == "features":  # its tasks are the data.features list
            first = [f.model_dump(mode="json") for f in (config.data.features or [])[: tuning.tasks]]
            overrides.append(f"data.features={json.dumps(first)}")
        elif tuning.tasks < len(order):
            overrides.append(f"data.tasks={json.dumps(order[: tuning.tasks])}")
    if tuning.scale != 1:
        overrides.append(f"data.train_scale={yaml_value(float(config.data.train_scale * tuning.scale))}")
    if tuning.epochs is not None:
        overrides.append(f"train.epochs={tuning.epochs}")
    return overrides


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
            rows.append([_short(p["values"][k]) for k in keys] + [score, p.get("objective") or "-", status, f"[results]({p['run']}/results.json)"])
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


# -- leaderboard -----------------------------------------------------------------------------------------


def _tuned_text(values: dict[str, Any] | None) -> str:
    return "" if not values else ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in values.items())


TUNED_NOTE = "Tuned values: [tuning.md](tuning.md) (chosen on a validation split of the training data)."
SPREAD_NOTE = (
    "Cells: mean +- sample standard deviation (divisor n - 1) over the seeds. **Bold**: the column's best mean "
    "(highest; lowest for forgetting and zero-shot PD). `~`: within the seeds' spread of the best, "
    "|mean - best mean| <= std + best std (docs/tuning.md); a row with one finished seed has no spread (std 0)."
)


def leaderboard_files(
    out_dir: Path,
    runs: list[tuple[MethodSpec, list[tuple[str, dict[str, Any]]]]],
    command: str,
    seeded: bool = False,
    tuned: dict[str, dict[str, Any] | None] | None = None,
) -> None:
    """``leaderboard.md`` and ``leaderboard.csv``. ``runs``: per method, its (run directory relative to
    ``out_dir``, results) at each finished seed. One seed (``seeded`` false): one row per run, as before;
    several: mean +- sample std per column, the best and the rows within the seeds' spread of it marked.
    ``tuned``: the values chosen per method (a ``tuned on validation`` column), None without tuning."""
    tuned_md = ["tuned on validation"] if tuned is not None else []
    tuned_csv = ["tuned"] if tuned is not None else []

    def tuned_cell(spec: MethodSpec) -> list[str]:
        return [_tuned_text(tuned.get(spec.label))] if tuned is not None else []

    md_rows, csv_rows = [], []
    if not seeded:
        header, rows = comparison_rows([finished[0][1] for _, finished in runs])
        md_header = header + ["train s"] + tuned_md + ["files"]
        csv_header = ["run"] + header[1:] + ["train_seconds", "results"] + tuned_csv
        for (spec, finished), row in zip(runs, rows):
            where, results = finished[0]
            seconds = results["timings"]["train_seconds"]
            links = f"[results]({where}/results.json), [metrics]({where}/metrics.csv)"
            md_rows.append(row + [f"{seconds:.0f}"] + tuned_cell(spec) + [links])
            csv_rows.append([spec.label] + row[1:] + [seconds, f"{where}/results.json"] + tuned_cell(spec))
        notes = [TUNED_NOTE] if tuned is not None else []
    else:
        names, rows = seeded_comparison([[results for _, results in finished] for _, finished in runs])
        md_header = ["method", "seeds"] + names + ["train s"] + tuned_md + ["files"]
        csv_header = (
            ["run", "seeds"] + [f"{n} {part}" for n in names for part in ("mean", "std", "mark")]
            + ["train_seconds mean", "train_seconds std", "results"] + tuned_csv
        )
        for (spec, finished), row in zip(runs, rows):
            seconds = mean_std([results["timings"]["train_seconds"] for _, results in finished])
            links = ", ".join(f"[{Path(where).name}]({where}/results.json)" for where, _ in finished)
            md_rows.append(
                [row["label"], str(row["seeds"])] + [format_mean_std(*cell) for cell in row["cells"]]
                + [format_mean_std(*seconds)] + tuned_cell(spec) + [links]
            )
            numbers = [x for cell in row["cells"] for x in cell] + list(seconds)
            csv_rows.append(
                [spec.label, row["seeds"]] + ["" if v is None else v for v in numbers]
                + [" ".join(f"{where}/results.json" for where, _ in finished)] + tuned_cell(spec)
            )
        notes = [SPREAD_NOTE] + ([TUNED_NOTE] if tuned is not None else [])
    text = f"# Leaderboard\n\nMade with:\n\n```bash\n{command}\n```\n\n{markdown_table(md_header, md_rows)}\n"
    atomic_write_text(out_dir / "leaderboard.md", text + "".join(f"\n{note}\n" for note in notes))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_header)
    writer.writerows(csv_rows)
    atomic_write_text(out_dir / "leaderboard.csv", buffer.getvalue())


# -- running ---------------------------------------------------------------------------------------------


SHARED_EVAL_DIR = ".shared"
"""The comparison's pre-trained rows, shared by its runs (vlcl.engine.shared_eval)."""

TIMELINE = "timeline.jsonl"
"""When each run of the comparison started and finished (benchmarks/compare_profile.py reads it)."""


class Timeline:
    """``<out_dir>/timeline.jsonl``: one JSON object per line, appended - a ``session`` line when a comparison
    command starts (jobs, threads per run), then one ``run`` line per run as it ends (phase, status, start and
    end in seconds since the epoch), and an ``end`` line when the command ends."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, **record: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")


def _attempt(run: Callable[[], dict[str, Any]]) -> tuple[float, float, dict[str, Any] | None, BaseException | None]:
    """(start, end, results, error) of one run; an Exception is returned, not raised (it is one run's failure)."""
    started = time.time()
    try:
        results, error = run(), None
    except Exception as exc:  # noqa: BLE001 - the caller records and reports it
        results, error = None, exc
    return started, time.time(), results, error


def _exit_with_parent(parent: int) -> None:
    """A worker's initializer: the worker ends when the comparison that started it dies, even by SIGKILL (it
    would go on training and writing into a comparison nobody runs). Linux: the kernel kills it
    (PR_SET_PDEATHSIG); everywhere, a thread that watches the parent's pid once a second."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the thread below is enough
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="vlcl-parent-watch", daemon=True).start()


PR_SET_PDEATHSIG = 1
"""prctl(2): the signal a process gets when its parent dies."""


def _run_in_worker(config: RunConfig, run_dir: Path, threads: int, name: str, shared_eval: Path | None):
    """One run in a worker process: its own thread count, its console in ``<run_dir>/compare.log``."""
    torch.set_num_threads(config.threads or threads)
    with hold(run_dir), open(_made(run_dir) / "compare.log", "a", encoding="utf-8") as log:  # held before its first write
        console = Console(file=log, width=120, force_terminal=False)
        return _attempt(lambda: run_method(config, run_dir, console, name, shared_eval))


def _made(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def worker_threads(jobs: int) -> int:
    """Threads per worker: the process's torch threads shared out (at least one each)."""
    return max(1, torch.get_num_threads() // jobs)


@dataclass
class Work:
    """One run: its key (what ``done`` is told), config, directory, display name, phase (``tuning`` or
    ``final``) and priority (higher starts first among the runs ready at once)."""

    key: Any
    config: RunConfig
    run_dir: Path
    name: str
    phase: str = "final"
    priority: float = 0.0


Done = Callable[[Work, Callable[[], dict[str, Any]]], list[Work]]
"""Told each finished run and a callable that returns its results or raises its failure; returns the runs that
its end made ready (a method's final runs, once its tuning is done)."""


def _run_queue(jobs: int, ready: list[Work], console: Console, done: Done, timeline: Timeline, shared_eval: Path | None) -> None:
    """Run ``ready`` and whatever ``done`` adds: one after the other in this process, or ``jobs`` at a time in
    worker processes. A free worker takes the ready run of highest priority (then the earliest ready), so a
    method's final runs start while other methods still tune, with no idle worker at a phase boundary."""
    ready = list(ready)

    def take() -> Work:
        best = max(range(len(ready)), key=lambda i: (ready[i].priority, -i))
        return ready.pop(best)

    def finish(item: Work, attempt: tuple[float | None, float, dict[str, Any] | None, BaseException | None]) -> None:
        started, ended, results, error = attempt
        timeline.write(event="run", run=item.name, phase=item.phase, status="failed" if error else "done", started=started, ended=ended)

        def outcome() -> dict[str, Any]:
            if error is not None:
                raise error
            return results  # type: ignore[return-value]

        ready.extend(done(item, outcome))

    if jobs == 1:
        while ready:
            item = take()
            finish(item, _attempt(lambda: run_method(item.config, item.run_dir, console, item.name, shared_eval)))
        return
    threads = worker_threads(jobs)
    console.print(f"{jobs} runs at a time, {threads} thread(s) each; logs: <run>/compare.log")
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited torch thread pools
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        running: dict[Any, Work] = {}
        while ready or running:
            while ready and len(running) < jobs:  # never more submitted than workers: priorities hold
                item = take()
                running[pool.submit(_run_in_worker, item.config, item.run_dir, threads, item.name, shared_eval)] = item
                going = ", ".join(w.name for w in running.values())
                console.print(f"[bold]{item.name}[/]: started (running: {going}; progress: {item.run_dir / 'compare.log'})", soft_wrap=True)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                item = running.pop(future)
                try:
                    attempt = future.result()
                except Exception as exc:  # noqa: BLE001 - the worker itself failed (e.g. killed): one run's failure
                    attempt = (None, time.time(), None, exc)
                finish(item, attempt)


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2] (distinct integers)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CompareError(f"--seeds '{text}': expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CompareError(f"--seeds '{text}': expected distinct comma-separated integers, e.g. 0,1,2")
    return seeds


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CompareError(f"{flag} '{text}': expected comma-separated numbers, e.g. 3e-5,1e-4,3e-4,1e-3") from None


def _report(out_dir: Path, specs: list[MethodSpec], results: dict[tuple[str, int], tuple[str, dict[str, Any]]], console: Console) -> None:
    """``<out_dir>/report.html`` of the finished runs (docs/report.md), method by method, seed by seed; a failure
    to write it is one warning line (the runs and the leaderboard are already written)."""
    from vlcl.report.html import REPORT_NAME, auto_report, run_groups

    if not results:
        return
    order = {spec.label: i for i, spec in enumerate(specs)}
    finished = [results[key] for key in sorted(results, key=lambda key: (order[key[0]], key[1]))]
    groups = run_groups([(where, out_dir / where, run) for where, run in finished], lambda where: f"{out_dir}/{where.split('/')[0]}")
    say = lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    if auto_report(out_dir / REPORT_NAME, groups, say, inputs=[str(out_dir)], across=True):
        console.print(f"report: {out_dir / REPORT_NAME}", markup=False, highlight=False, soft_wrap=True)


def check_not_a_run(out_dir: Path) -> None:
    """``-o`` of a comparison must not be a ``vlcl run`` directory: its report would be replaced, its plots deleted."""
    run_files = ("results.json", "log.jsonl", FINGERPRINT_FILE, "checkpoints")
    if (out_dir / "config.yaml").is_file() and any((out_dir / f).exists() for f in run_files) and not (out_dir / TIMELINE).exists():
        raise CompareError(f"{out_dir}: is the directory of a vlcl run, not a comparison directory; choose another -o")


def compare(
    config_path: str | None,
    overrides: list[str],
    specs: list[MethodSpec],
    out_dir: Path,
    command: str,
    console: Console,
    jobs: int = 1,
    seeds: list[int] | None = None,
    tuning: Tuning | None = None,
) -> list[dict[str, Any]]:
    """Run ``specs`` (after tuning them, with ``tuning``) at each of ``seeds`` (None: the config's seed) into
    ``out_dir``; returns the results of the final runs, method by method, seed by seed. ``out_dir`` is held
    (vlcl.engine.rundir.hold) from before its first write to the end."""
    check_not_a_run(out_dir)  # before anything, so that the refusal is the first line
    with ExitStack() as held:
        return _compare(config_path, overrides, specs, out_dir, command, console, jobs, seeds, tuning, held)


def _compare(
    config_path: str | None,
    overrides: list[str],
    specs: list[MethodSpec],
    out_dir: Path,
    command: str,
    console: Console,
    jobs: int,
    seeds: list[int] | None,
    tuning: Tuning | None,
    held: ExitStack,
) -> list[dict[str, Any]]:
    from vlcl.methods import create_method, method_class

    if jobs < 1:
        raise CompareError(f"--jobs {jobs}: expected a positive number of methods to run at a time")
    if tuning is not None:
        tuning.check()
    seeded = seeds is not None and len(seeds) > 1
    seed_overrides = [[f"seed={s}"] for s in seeds] if seeds else [[]]
    for spec in specs:  # validate every method before running any
        config = load_config(config_path, overrides + [f"method.name={spec.name}"] + spec.overrides + seed_overrides[0])
        create_method(config.method.name, config.method.options())

    # 1. tuning: every grid point of every method that trains, on its proxy
    tunings: list[MethodTuning] = []
    tune_seed = seeds[0] if seeds else None
    if tuning is not None:
        for spec in specs:
            cls = method_class(spec.name)
            if not cls.trains:
                tunings.append(MethodTuning(spec, {}, [], note="not tuned: the method does not train"))
                continue
            base = overrides + [f"method.name={spec.name}"] + spec.overrides + seed_overrides[0]
            proxy = proxy_overrides(load_config(config_path, base), tuning)
            grid = method_grid(cls.tuning_grid, tuning.lrs if cls.optimises else (), spec.overrides)
            if not grid:  # a closed-form method (RAIL) has no learning rate: nothing to tune unless it has a grid
                tunings.append(MethodTuning(spec, {}, [], note="not tuned: no optimiser, and no options of its own to tune"))
                continue
            points = []
            for values in grid_points(grid):
                config = load_config(config_path, base + proxy + [f"{k}={yaml_value(v)}" for k, v in values.items()])
                create_method(config.method.name, config.method.options())  # a bad grid value fails here, before any run
                run = f"tuning/{spec.label}/{point_name(values)}"
                points.append({"values": values, "run": run, "score": None, "objective": None, "status": "pending", "config": config})
            tunings.append(MethodTuning(spec, grid, points))
    held.enter_context(hold(out_dir))  # before anything is written; each run holds its own directory too
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    started = time.perf_counter()
    timeline = Timeline(out_dir / TIMELINE)
    timeline.write(event="session", started=time.time(), jobs=jobs, threads=worker_threads(jobs) if jobs > 1 else torch.get_num_threads())
    tuning_of = {p["run"]: t for t in tunings for p in t.points}
    points = {p["run"]: p for t in tunings for p in t.points}
    finals: dict[str, list[Work]] = {}
    """Each method's final runs (chosen values, test data, every seed), made once its values are known."""
    results: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}

    def final_runs(spec: MethodSpec, values: dict[str, Any], estimate: float) -> list[Work]:
        """``spec``'s final runs; ``estimate`` (its tuning runs' mean seconds) orders them: longest first, so that
        no long run is left alone at the end."""
        tuned_values = [f"{k}={yaml_value(v)}" for k, v in values.items()]
        finals[spec.label] = []
        for seed_index, seed_override in enumerate(seed_overrides):
            config = load_config(config_path, overrides + [f"method.name={spec.name}"] + spec.overrides + tuned_values + seed_override)
            where = f"{spec.label}/seed-{seeds[seed_index]}" if seeded else spec.label
            finals[spec.label].append(Work((spec.label, seed_index), config, out_dir / where, where, "final", estimate))
        return finals[spec.label]

    def tuned(item: Work, outcome: Callable[[], dict[str, Any]]) -> list[Work]:
        """Score one grid point; when it is its method's last, the method's final runs are ready."""
        point, method_tuning = points[item.key], tuning_of[item.key]
        try:
            run = outcome()
            point["score"], point["objective"] = tuning_score(run, tuning.objective)
            point["seconds"] = run["timings"]["wall_seconds_this_session"]
            point["status"] = "done"
            # scored and complete: nothing resumes it, and a proxy's model is no result (one a grid point for a
            # ViT-B/16: 100 grid points would keep 60 GB)
            shutil.rmtree(item.run_dir / "checkpoints", ignore_errors=True)
        except Exception as exc:  # noqa: BLE001 - one point's failure must not stop the others
            point["status"] = f"failed: {type(exc).__name__}: {exc}"
            console.print(f"[red]{item.name}[/]: failed: {exc}")
        else:
            console.print(f"[bold]{item.name}[/]: validation {point['objective']} {point['score']:.2f} ({time.perf_counter() - started:.0f} s in)")
        tuning_files(out_dir, tunings, tuning, command, tune_seed)
        if any(p["status"] == "pending" for p in method_tuning.points):
            return []
        if not any(p["status"] == "pending" for t in tunings for p in t.points):
            console.print(f"tuning done ({time.perf_counter() - started:.0f} s): {out_dir / 'tuning.md'}")
        values = method_tuning.chosen()
        if values is None:
            failures.append(f"{method_tuning.spec.label}: tuning: every grid point failed ({method_tuning.points[0]['status']})")
            return []
        seconds = [p["seconds"] for p in method_tuning.points if "seconds" in p]
        return final_runs(method_tuning.spec, values, sum(seconds) / len(seconds))

    def finished(item: Work, outcome: Callable[[], dict[str, Any]]) -> list[Work]:
        """Record one final run's results and rewrite the leaderboard."""
        try:
            results[item.key] = (item.name, outcome())
        except Exception as exc:  # noqa: BLE001 - one method's failure must not stop the others
            failures.append(f"{item.name}: {type(exc).__name__}: {exc}")
            console.print(f"[red]{item.name}[/]: failed: {exc}")
            return []
        wall = results[item.key][1]["timings"]["wall_seconds_this_session"]
        console.print(f"[bold]{item.name}[/]: done (run wall time {wall:.0f} s; {time.perf_counter() - started:.0f} s into the comparison)")
        board = []
        for spec in specs:
            done_runs = [results[(spec.label, i)] for i in range(len(seed_overrides)) if (spec.label, i) in results]
            if done_runs:
                board.append((spec, done_runs))
        chosen = {t.spec.label: t.chosen() for t in tunings} if tuning is not None else None
        leaderboard_files(out_dir, board, command, seeded, chosen)
        return []

    if tunings:
        tuning_files(out_dir, tunings, tuning, command, tune_seed)
    ready = [Work(p["run"], p["config"], out_dir / p["run"], p["run"], "tuning", math.inf) for t in tunings for p in t.points]
    for spec in specs:  # methods that are not tuned: their final runs are ready now
        method_tuning = next((t for t in tunings if t.spec.label == spec.label), None)
        if method_tuning is None or not method_tuning.points:
            ready += final_runs(spec, {}, 0.0)
    final_count = len(specs) * len(seed_overrides)
    console.print(f"{len(tuning_of)} tuning runs, then {final_count} final runs" if tuning_of else f"{final_count} runs")
    _run_queue(jobs, ready, console, lambda item, outcome: (tuned if item.phase == "tuning" else finished)(item, outcome),
               timeline, out_dir / SHARED_EVAL_DIR)
    timeline.write(event="end", ended=time.time(), failures=len(failures))
    _report(out_dir, specs, results, console)
    if failures:
        failed_tuning = sum(1 for t in tunings if t.points and t.spec.label not in finals)
        total, unit = (sum(len(w) for w in finals.values()) + failed_tuning, "runs") if seeded else (len(specs), "methods")
        raise CompareError(f"{len(failures)} of {total} {unit} failed (the others are in the leaderboard): " + "; ".join(failures))
    order = {spec.label: i for i, spec in enumerate(specs)}
    return [results[key][1] for key in sorted(results, key=lambda key: (key[1], order[key[0]]))]
