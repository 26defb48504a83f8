"""The queue of a comparison's runs and its workers: one run (kept, resumed or started), the queue that runs them
one after the other or ``jobs`` at a time in worker processes, and ``timeline.jsonl``."""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from vlcl.app.compare.plan import CompareError
from vlcl.config import RunConfig, config_to_dict, dump_config, load_config
from vlcl.engine.loop import create_runner
from vlcl.engine.rundir import hold
from vlcl.fileio import atomic_write_text, read_json_file


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


def run_queue(jobs: int, ready: list[Work], console: Console, done: Done, timeline: Timeline, shared_eval: Path | None) -> None:
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
