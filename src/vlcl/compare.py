"""``vlcl compare``: several methods on the same benchmark and seed.

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

Methods are given as ``name`` or ``name[key=value;key=value]`` with overrides
that apply to that method only, e.g. ``finetune,cclip[train.lr=5e-4]``.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from vlcl.config import RunConfig, config_to_dict, dump_config, load_config
from vlcl.engine.checkpoint import atomic_write_text, read_json_file
from vlcl.engine.loop import create_runner
from vlcl.report.tables import comparison_rows, markdown_table


class CompareError(ValueError):
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


def run_method(config: RunConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    resuming = run_dir.exists() and (run_dir / "config.yaml").is_file()
    if resuming:
        _same_config(run_dir, config)
        finished = _finished(run_dir)
        if finished is not None:
            console.print(f"[bold]{run_dir.name}[/]: finished earlier, kept")
            return finished
    runner = create_runner(config, run_dir, console).prepare(resume=resuming)  # every check before the directory is made
    if resuming:
        console.print(f"[bold]{run_dir.name}[/]: resuming")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
        console.print(f"[bold]{run_dir.name}[/]: running")
    return runner.run()


def leaderboard_files(out_dir: Path, runs: list[tuple[MethodSpec, dict[str, Any]]], command: str) -> None:
    header, rows = comparison_rows([results for _, results in runs])
    links = [f"[results]({spec.label}/results.json), [metrics]({spec.label}/metrics.csv)" for spec, _ in runs]
    seconds = [f"{results['timings']['train_seconds']:.0f}" for _, results in runs]
    table = markdown_table(header + ["train s", "files"], [r + [s, link] for r, s, link in zip(rows, seconds, links)])
    text = f"# Leaderboard\n\nMade with:\n\n```bash\n{command}\n```\n\n{table}\n"
    atomic_write_text(out_dir / "leaderboard.md", text)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run"] + header[1:] + ["train_seconds", "results"])
    for (spec, results), row in zip(runs, rows):
        writer.writerow([spec.label] + row[1:] + [results["timings"]["train_seconds"], f"{spec.label}/results.json"])
    atomic_write_text(out_dir / "leaderboard.csv", buffer.getvalue())


def _run_in_worker(config: RunConfig, run_dir: Path, threads: int) -> dict[str, Any]:
    """One method in a worker process: its own thread count, its console in ``<run_dir>/compare.log``."""
    torch.set_num_threads(config.threads or threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "compare.log", "a", encoding="utf-8") as log:
        return run_method(config, run_dir, Console(file=log, width=120, force_terminal=False))


def worker_threads(jobs: int) -> int:
    """Threads per worker: the process's torch threads shared out (at least one each)."""
    return max(1, torch.get_num_threads() // jobs)


def _run_parallel(jobs: int, work: list[tuple[MethodSpec, RunConfig, Path]], console: Console, done) -> None:
    threads = worker_threads(jobs)
    console.print(f"{len(work)} methods, {jobs} at a time, {threads} thread(s) each; logs: <run>/compare.log")
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited torch thread pools
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        pending = {pool.submit(_run_in_worker, config, run_dir, threads): spec for spec, config, run_dir in work}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                done(pending.pop(future), future.result)


def compare(
    config_path: str | None,
    overrides: list[str],
    specs: list[MethodSpec],
    out_dir: Path,
    command: str,
    console: Console,
    jobs: int = 1,
) -> list[dict[str, Any]]:
    from vlcl.methods import create_method

    if jobs < 1:
        raise CompareError(f"--jobs {jobs}: expected a positive number of methods to run at a time")
    configs = []
    for spec in specs:  # validate every method before running any
        config = load_config(config_path, overrides + [f"method.name={spec.name}"] + spec.overrides)
        create_method(config.method.name, config.method.options())
        configs.append(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []

    def done(spec: MethodSpec, outcome: Callable[[], dict[str, Any]]) -> None:
        """Record one method's results (``outcome()`` runs it or returns/raises what its worker did)."""
        try:
            results[spec.label] = outcome()
        except Exception as exc:  # noqa: BLE001 - one method's failure must not stop the others
            failures.append(f"{spec.label}: {type(exc).__name__}: {exc}")
            console.print(f"[red]{spec.label}[/]: failed: {exc}")
            return
        wall = results[spec.label]["timings"]["wall_seconds_this_session"]
        console.print(f"[bold]{spec.label}[/]: done (run wall time {wall:.0f} s; {time.perf_counter() - started:.0f} s into the comparison)")
        leaderboard_files(out_dir, [(s, results[s.label]) for s in specs if s.label in results], command)

    started = time.perf_counter()
    work = [(spec, config, out_dir / spec.label) for spec, config in zip(specs, configs)]
    if jobs == 1 or len(work) == 1:
        for spec, config, run_dir in work:
            done(spec, lambda config=config, run_dir=run_dir: run_method(config, run_dir, console))
    else:
        _run_parallel(min(jobs, len(work)), work, console, done)
    if failures:
        raise CompareError(f"{len(failures)} of {len(specs)} methods failed (the others are in the leaderboard): " + "; ".join(failures))
    return [results[spec.label] for spec in specs]
