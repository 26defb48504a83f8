"""One ``vlcl compare`` command: :func:`compare`, and :class:`Comparison`, whose state (the grids being scored, each
method's final runs, the results and the failures so far) is what the queue's callbacks read and change."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from vlcl.app.compare.leaderboard import comparison_report, leaderboard_files
from vlcl.app.compare.plan import CompareError, MethodSpec, grid_points, method_grid, point_name, proxy_overrides, yaml_value
from vlcl.app.compare.tuning import MethodTuning, Tuning, tuning_files, tuning_score
from vlcl.app.compare.workqueue import SHARED_EVAL_DIR, TIMELINE, Timeline, Work, run_queue, worker_threads
from vlcl.config import RunConfig, load_config
from vlcl.engine.rundir import FINGERPRINT_FILE, hold


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
        comparison = Comparison(config_path, overrides, specs, out_dir, command, console, jobs, seeds, tuning)
        held.enter_context(hold(out_dir))  # before anything is written; each run holds its own directory too
        return comparison.run()


class Comparison:
    """A comparison planned and checked (every method, every grid point: before any run) and then run.

    The queue (:func:`~vlcl.app.compare.workqueue.run_queue`) tells :meth:`done` each run that ends; a grid point is
    scored (:meth:`tuned`: once its method's grid is done, the method's final runs are ready) and a final run is
    recorded (:meth:`finished`: the leaderboard is rewritten). Their state lives here: ``tunings`` (each method's
    grid and its points' scores), ``finals`` (each method's final runs, made once its values are known),
    ``results`` (the finished final runs, by (method label, seed index)) and ``failures`` (one line each)."""

    def __init__(self, config_path: str | None, overrides: list[str], specs: list[MethodSpec], out_dir: Path, command: str,
                 console: Console, jobs: int, seeds: list[int] | None, tuning: Tuning | None):
        from vlcl.methods import create_method

        if jobs < 1:
            raise CompareError(f"--jobs {jobs}: expected a positive number of methods to run at a time")
        if tuning is not None:
            tuning.check()
        self.config_path, self.overrides, self.specs, self.out_dir = config_path, overrides, specs, out_dir
        self.command, self.console, self.jobs, self.seeds, self.tuning = command, console, jobs, seeds, tuning
        self.seeded = seeds is not None and len(seeds) > 1
        self.seed_overrides = [[f"seed={s}"] for s in seeds] if seeds else [[]]
        self.tune_seed = seeds[0] if seeds else None
        for spec in specs:  # validate every method before running any
            config = self._config(spec, self.seed_overrides[0])
            create_method(config.method.name, config.method.typed_options())
        self.tunings: list[MethodTuning] = self._plan_tuning(tuning) if tuning is not None else []
        """1. tuning: every grid point of every method that trains, on its proxy."""
        self.tuning_of = {p["run"]: t for t in self.tunings for p in t.points}
        self.points = {p["run"]: p for t in self.tunings for p in t.points}
        self.finals: dict[str, list[Work]] = {}
        """Each method's final runs (chosen values, test data, every seed), made once its values are known."""
        self.results: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}
        self.failures: list[str] = []
        self.timeline: Timeline | None = None
        self.started = time.perf_counter()

    def _config(self, spec: MethodSpec, *extra: list[str]) -> RunConfig:
        """The config of one of ``spec``'s runs: the command's overrides, the method, its bracketed overrides, then ``extra``."""
        return load_config(self.config_path, self.overrides + [f"method.name={spec.name}"] + spec.overrides + [o for e in extra for o in e])

    def _plan_tuning(self, tuning: Tuning) -> list[MethodTuning]:
        from vlcl.methods import create_method, method_class

        tunings = []
        for spec in self.specs:
            cls = method_class(spec.name)
            if not cls.trains:
                tunings.append(MethodTuning(spec, {}, [], note="not tuned: the method does not train"))
                continue
            proxy = proxy_overrides(self._config(spec, self.seed_overrides[0]), tuning)
            grid = method_grid(cls.tuning_grid, tuning.lrs if cls.optimises else (), spec.overrides)
            if not grid:  # a closed-form method (RAIL) has no learning rate: nothing to tune unless it has a grid
                tunings.append(MethodTuning(spec, {}, [], note="not tuned: no optimiser, and no options of its own to tune"))
                continue
            points = []
            for values in grid_points(grid):
                config = self._config(spec, self.seed_overrides[0], proxy, [f"{k}={yaml_value(v)}" for k, v in values.items()])
                create_method(config.method.name, config.method.typed_options())  # a bad grid value fails here, before any run
                run = f"tuning/{spec.label}/{point_name(values)}"
                points.append({"values": values, "run": run, "score": None, "objective": None, "status": "pending", "config": config})
            tunings.append(MethodTuning(spec, grid, points))
        return tunings

    def run(self) -> list[dict[str, Any]]:
        """Every run, through one queue; the caller holds ``out_dir``. Raises :class:`CompareError` naming the
        failures once every other run is done (the leaderboard has those)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        self.timeline = Timeline(self.out_dir / TIMELINE)
        threads = worker_threads(self.jobs) if self.jobs > 1 else torch.get_num_threads()
        self.timeline.write(event="session", started=time.time(), jobs=self.jobs, threads=threads)
        if self.tunings:
            self._write_tuning()
        ready = [Work(p["run"], p["config"], self.out_dir / p["run"], p["run"], "tuning", math.inf) for t in self.tunings for p in t.points]
        for spec in self.specs:  # methods that are not tuned: their final runs are ready now
            method_tuning = next((t for t in self.tunings if t.spec.label == spec.label), None)
            if method_tuning is None or not method_tuning.points:
                ready += self.final_runs(spec, {}, 0.0)
        final_count = len(self.specs) * len(self.seed_overrides)
        self.console.print(f"{len(self.tuning_of)} tuning runs, then {final_count} final runs" if self.tuning_of else f"{final_count} runs")
        run_queue(self.jobs, ready, self.console, self.done, self.timeline, self.out_dir / SHARED_EVAL_DIR)
        self.timeline.write(event="end", ended=time.time(), failures=len(self.failures))
        comparison_report(self.out_dir, self.specs, self.results, self.console)
        if self.failures:
            failed_tuning = sum(1 for t in self.tunings if t.points and t.spec.label not in self.finals)
            if self.seeded:
                total, unit = sum(len(w) for w in self.finals.values()) + failed_tuning, "runs"
            else:
                total, unit = len(self.specs), "methods"
            raise CompareError(f"{len(self.failures)} of {total} {unit} failed (the others are in the leaderboard): " + "; ".join(self.failures))
        order = {spec.label: i for i, spec in enumerate(self.specs)}
        return [self.results[key][1] for key in sorted(self.results, key=lambda key: (key[1], order[key[0]]))]

    def _elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _write_tuning(self) -> None:
        tuning_files(self.out_dir, self.tunings, self.tuning, self.command, self.tune_seed)

    def final_runs(self, spec: MethodSpec, values: dict[str, Any], estimate: float) -> list[Work]:
        """``spec``'s final runs; ``estimate`` (its tuning runs' mean seconds) orders them: longest first, so that
        no long run is left alone at the end."""
        tuned_values = [f"{k}={yaml_value(v)}" for k, v in values.items()]
        self.finals[spec.label] = []
        for seed_index, seed_override in enumerate(self.seed_overrides):
            config = self._config(spec, tuned_values, seed_override)
            where = f"{spec.label}/seed-{self.seeds[seed_index]}" if self.seeded else spec.label
            self.finals[spec.label].append(Work((spec.label, seed_index), config, self.out_dir / where, where, "final", estimate))
        return self.finals[spec.label]

    def done(self, item: Work, outcome: Callable[[], dict[str, Any]]) -> list[Work]:
        """The queue's callback (:data:`~vlcl.app.compare.workqueue.Done`): a grid point or a final run ended."""
        return (self.tuned if item.phase == "tuning" else self.finished)(item, outcome)

    def tuned(self, item: Work, outcome: Callable[[], dict[str, Any]]) -> list[Work]:
        """Score one grid point; when it is its method's last, the method's final runs are ready."""
        point, method_tuning = self.points[item.key], self.tuning_of[item.key]
        try:
            run = outcome()
            point["score"], point["objective"] = tuning_score(run, self.tuning.objective)
            point["seconds"] = run["timings"]["wall_seconds_this_session"]
            point["status"] = "done"
            # scored and complete: nothing resumes it, and a proxy's model is no result (one a grid point for a
            # ViT-B/16: 100 grid points would keep 60 GB)
            shutil.rmtree(item.run_dir / "checkpoints", ignore_errors=True)
        except Exception as exc:  # noqa: BLE001 - one point's failure must not stop the others
            point["status"] = f"failed: {type(exc).__name__}: {exc}"
            self.console.print(f"[red]{item.name}[/]: failed: {exc}")
        else:
            self.console.print(f"[bold]{item.name}[/]: validation {point['objective']} {point['score']:.2f} ({self._elapsed():.0f} s in)")
        self._write_tuning()
        if any(p["status"] == "pending" for p in method_tuning.points):
            return []
        if not any(p["status"] == "pending" for t in self.tunings for p in t.points):
            self.console.print(f"tuning done ({self._elapsed():.0f} s): {self.out_dir / 'tuning.md'}")
        values = method_tuning.chosen()
        if values is None:
            self.failures.append(f"{method_tuning.spec.label}: tuning: every grid point failed ({method_tuning.points[0]['status']})")
            return []
        seconds = [p["seconds"] for p in method_tuning.points if "seconds" in p]
        return self.final_runs(method_tuning.spec, values, sum(seconds) / len(seconds))

    def finished(self, item: Work, outcome: Callable[[], dict[str, Any]]) -> list[Work]:
        """Record one final run's results and rewrite the leaderboard."""
        try:
            self.results[item.key] = (item.name, outcome())
        except Exception as exc:  # noqa: BLE001 - one method's failure must not stop the others
            self.failures.append(f"{item.name}: {type(exc).__name__}: {exc}")
            self.console.print(f"[red]{item.name}[/]: failed: {exc}")
            return []
        wall = self.results[item.key][1]["timings"]["wall_seconds_this_session"]
        self.console.print(f"[bold]{item.name}[/]: done (run wall time {wall:.0f} s; {self._elapsed():.0f} s into the comparison)")
        board = []
        for spec in self.specs:
            done_runs = [self.results[(spec.label, i)] for i in range(len(self.seed_overrides)) if (spec.label, i) in self.results]
            if done_runs:
                board.append((spec, done_runs))
        chosen = {t.spec.label: t.chosen() for t in self.tunings} if self.tuning is not None else None
        leaderboard_files(self.out_dir, board, self.command, self.seeded, chosen)
        return []
