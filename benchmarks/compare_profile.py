"""Where the time of a whole ``vlcl compare`` goes: wall time, compute by part, idle workers, per method.

Usage:
    python benchmarks/compare_profile.py runs/cmp [--log compare.out]      # a comparison made before
    python benchmarks/compare_profile.py runs/cmp -- --methods ALL --tune --seeds 0,1,2 --jobs 2
                                                   # run `vlcl compare -o runs/cmp ARGS` first, then read it

The whole comparison of every method, as benchmarks/RESULTS.md measures it, is ``--methods`` with every
name of ``vlcl methods`` (``ALL`` stands for them).

Reads the comparison directory: ``timeline.jsonl`` (when each run started and ended, written by ``vlcl
compare``) and every run's results.json (its training, evaluation and pre-trained-row seconds). A
comparison made before ``timeline.jsonl`` existed is read from the command's printed output instead
(``--log``: the "(N s in)" and "N s into the comparison" lines, each run's start taken as its end minus
its wall time; that wall time leaves out the run's preparation - building its data, loading the model -
which then counts as idle).

Prints:
- the wall time and the worker-seconds it offered (jobs x wall), how many of them ran a run, and how many
  were idle (at the end, when fewer runs than workers were left, and elsewhere);
- process-seconds of tuning and final runs, split into training (the optimiser steps), evaluation (the
  pre-trained row apart) and the rest: the methods' work between tasks (teacher caches, Fisher
  information, projection bases, merging), checkpoints and results, and, read from a timeline, each run's
  preparation (building its data, loading the model); each as a share of the whole;
- pre-trained rows read from the comparison's shared store (vlcl.engine.shared_eval), and what
  evaluating them would have cost at the mean of those that were evaluated;
- optimiser steps and samples of the tuning and final runs, and the training seconds per step;
- per method: tuning and final process-seconds, and the mean final run.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def run_parts(results: dict) -> dict[str, Any]:
    """A run's process-seconds: wall, training, evaluation, of it the pre-trained row, and whether that was read."""
    timings = results["timings"]
    first = results["stages"][0] if results["stages"] and results["stages"][0]["name"] == "pretrained" else {}
    return {
        "wall": timings["wall_seconds_this_session"],
        "train": timings["train_seconds"],
        "eval": timings["eval_seconds"],
        "pretrained": first.get("eval_seconds", 0.0),
        "shared": 1.0 if first.get("shared") else 0.0,
        "method": results["config"]["method"]["name"],
        "steps": sum(stage["train"].get("steps", 0) for stage in results["stages"]),
        "samples": sum(stage["train"].get("samples", 0) for stage in results["stages"]),
    }


def find_runs(root: Path) -> dict[str, dict[str, float]]:
    """Every finished run under the comparison directory by its name there (``tuning/m/point``, ``m/seed-0``)."""
    runs = {}
    for path in sorted(root.rglob("results.json")):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ProfileInputError(f"{path}: not a readable results file ({exc.__class__.__name__})") from None
        if results.get("summary", {}).get("complete"):
            runs[str(path.parent.relative_to(root))] = run_parts(results)
    return runs


class ProfileInputError(Exception):
    """A comparison directory this script cannot read: one line naming the file (and the line), exit 2."""


TIMELINE_FIELDS = {"session": ("started", "jobs"), "run": ("run", "started", "ended"), "end": ("ended",)}


def timeline_records(path: Path) -> list[dict]:
    """The records of ``timeline.jsonl``, each checked; a torn last line (a writer killed mid-line) is skipped
    with a note, anything else unreadable is a ProfileInputError naming the line."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ProfileInputError(f"{path}: cannot read it ({exc.strerror})") from None
    records = []
    for number, raw in enumerate(lines, 1):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            if number == len(lines) and not raw.endswith(b"}"):
                print(f"note: {path}:{number}: skipped a torn last line (the comparison was killed while writing it)",
                      file=sys.stderr)
                continue
            what = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "is not valid JSON"
            raise ProfileInputError(f"{path}:{number}: {what}") from None
        fields = TIMELINE_FIELDS.get(record.get("event")) if isinstance(record, dict) else None
        if fields is None or any(field not in record for field in fields):
            expected = ", ".join(f"{event!r} with {', '.join(f)}" for event, f in TIMELINE_FIELDS.items())
            raise ProfileInputError(f"{path}:{number}: not a timeline record (expected an object: event {expected})")
        if record["event"] != "session" and not any(r["event"] == "session" for r in records):
            raise ProfileInputError(f"{path}:{number}: a {record['event']!r} record before any 'session' record")
        records.append(record)
    return records


def timeline_intervals(root: Path) -> tuple[list[tuple[float, float]], list[tuple[str, float, float]], int]:
    """(sessions as (start, end), runs as (name, start, end), jobs) from ``timeline.jsonl``; a session without
    its end line (killed) ends with its last run. A torn last line is skipped."""
    sessions, runs, jobs = [], [], 1
    for record in timeline_records(root / "timeline.jsonl"):
        if record["event"] == "session":
            sessions.append([record["started"], record["started"]])
            jobs = max(jobs, record["jobs"])
        elif record["event"] == "run" and record["started"] is not None:
            runs.append((record["run"], record["started"], record["ended"]))
            sessions[-1][1] = max(sessions[-1][1], record["ended"])
        elif record["event"] == "end":
            sessions[-1][1] = record["ended"]
    return [tuple(s) for s in sessions], runs, jobs


LOG_LINE = re.compile(
    r"""^(\S+):\s
    (?:
        validation\s+\S+\s+\S+\s+\((\d+)\s+s\s+in\)                          # "NAME: validation last 41.20 (35 s in)"
      | done\s+\(run\s+wall\s+time\s+\d+\s+s;\s+(\d+)\s+s\s+into             # "NAME: done (run wall time 20 s; 95 s into"
    )""",
    re.VERBOSE,
)
"""A grid point's or a final run's printed end: group 1 the run's name, then the seconds into the comparison when
it ended: group 2 for a grid point of the tuning, group 3 for a final run."""


def log_intervals(log: Path, runs: dict[str, dict[str, float]], jobs: int):
    """The same from a comparison's printed output: one session from 0 to the last run's end."""
    intervals = []
    try:
        printed = log.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ProfileInputError(f"{log}: cannot read it ({exc.strerror})") from None
    text = re.sub(r"\n(?!\S+: )", " ", printed)  # the console wraps long lines: join them again
    for line in text.splitlines():
        found = LOG_LINE.match(line)
        if found and found[1] in runs:
            name, ended = found[1], float(found[2] or found[3])
            intervals.append((name, ended - runs[name]["wall"], ended))
    end = max(e for _, _, e in intervals)
    return [(0.0, end)], intervals, jobs


def idle_seconds(sessions, intervals, jobs: int) -> tuple[float, float]:
    """Worker-seconds without a run: in all, and at the end of each session (after its last run started, when
    no run was waiting any more)."""
    idle = tail = 0.0
    for start, end in sessions:
        inside = [(max(s, start), min(e, end)) for _, s, e in intervals if e > start and s < end]
        events = sorted({start, end, *[t for pair in inside for t in pair]})
        last_start = max((s for s, _ in inside), default=start)
        for a, b in zip(events, events[1:]):
            running = sum(1 for s, e in inside if s <= a and e >= b)
            free = max(0, jobs - running) * (b - a)
            idle += free
            tail += free if a >= last_start else 0.0
    return idle, tail


def simulate(runs: dict[str, dict[str, float]], order: list[str], methods: list[str], jobs: int, queue: bool) -> float:
    """The wall time of these runs, at their measured process-seconds, on ``jobs`` workers that never wait
    between runs. ``queue``: as ``vlcl compare`` schedules now - grid points first, in ``order``; a method's
    final runs once its last grid point ends, the method with the longest mean grid point first. Otherwise as
    it did before: every grid point, then (after the last) every final run, seed by seed, method by method."""
    grid = defaultdict(list)
    finals = defaultdict(list)
    for name in order:
        if name.startswith("tuning/"):
            grid[name.split("/")[1]].append(name)
        else:
            finals[name.split("/")[0]].append(name)
    waiting = {m: len(points) for m, points in grid.items()}
    mean_point = {m: statistics.mean(runs[n]["wall"] for n in points) for m, points in grid.items()}
    ready = [(math.inf, n) for n in order if n.startswith("tuning/")]
    if queue:
        ready += [(0.0, n) for m in methods if m not in grid for n in finals[m]]
    else:  # seed-major, after every grid point
        seed_of = lambda name: int(name.split("/seed-")[1]) if "/seed-" in name else 0  # noqa: E731
        later = sorted(((-1.0, n) for m in methods for n in finals[m]), key=lambda item: seed_of(item[1]))
    now, running = 0.0, []
    while ready or running or (not queue and later):
        if not queue and not ready and not running:
            ready, later = later, []
        while ready and len(running) < jobs:
            best = max(range(len(ready)), key=lambda i: (ready[i][0], -i))
            heapq.heappush(running, (now + runs[ready[best][1]]["wall"], ready.pop(best)[1]))
        now, name = heapq.heappop(running)
        if queue and name.startswith("tuning/"):
            method = name.split("/")[1]
            waiting[method] -= 1
            if not waiting[method]:
                ready += [(mean_point[method], n) for n in finals[method]]
    return now


def method_of(name: str) -> str:
    return name.split("/")[1] if name.startswith("tuning/") else name.split("/")[0]


def print_sharing_estimate(runs: dict[str, dict[str, float]]) -> None:
    """For a comparison made before its runs shared the pre-trained row: the seconds its runs spent on that row,
    and what one evaluation per phase (the proxy's validation data, the test data) for every method that does
    not change the evaluation would have left (assuming, as holds for the shipped methods, that no method
    changes the evaluation model before its first task)."""
    from vlcl.engine.shared_eval import changes_evaluation
    from vlcl.methods import create_method

    saved = 0.0
    for phase in (True, False):
        rows = [r["pretrained"] for n, r in runs.items() if n.startswith("tuning/") == phase
                and not changes_evaluation(create_method(r["method"], {}))]
        saved += sum(rows) - (max(rows) if rows else 0.0)
    total = sum(r["wall"] for r in runs.values())
    print(f"\npre-trained rows: {sum(r['pretrained'] for r in runs.values()):,.0f} s in all; evaluated once per phase and "
          f"shared, they would have saved about {saved:,.0f} s ({saved / total:.1%})")


def run_compare(out: Path, compare_args: list[str]) -> None:
    """``vlcl compare -o out compare_args`` (``ALL`` after ``--methods``: every registered method)."""
    from vlcl.methods import list_methods

    compare_args = [",".join(list_methods()) if a == "ALL" else a for a in compare_args]
    command = [sys.executable, "-m", "vlcl", "compare", "-o", str(out), *compare_args]
    print("$ " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    print()


def main() -> None:
    try:
        profile()
    except ProfileInputError as exc:
        print(f"compare_profile: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def profile() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--log", type=Path, help="the command's printed output, for a comparison without timeline.jsonl")
    parser.add_argument("--jobs", type=int, default=2, help="with --log: the comparison's --jobs")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    if argv[split + 1 :]:  # after --: run vlcl compare with these arguments first
        run_compare(args.compare_dir, argv[split + 1 :])
    runs = find_runs(args.compare_dir)
    if args.log:
        sessions, intervals, jobs = log_intervals(args.log, runs, args.jobs)
    else:
        sessions, intervals, jobs = timeline_intervals(args.compare_dir)
        spans = defaultdict(float)
        for name, started, ended in intervals:
            spans[name] += ended - started
        for name, run in runs.items():  # a run's whole process time, its preparation (data, model) included
            run["wall"] = max(run["wall"], spans.get(name, 0.0))
    wall = sum(end - start for start, end in sessions)
    idle, tail = idle_seconds(sessions, intervals, jobs)
    offered = jobs * wall

    print(f"{args.compare_dir}: {len(runs)} finished runs, {len(sessions)} session(s), --jobs {jobs}")
    print(f"wall time {wall:,.0f} s ({wall / 3600:.2f} h); worker-seconds offered {offered:,.0f}")
    print(f"  running a run {offered - idle:,.0f} ({(offered - idle) / offered:.1%}); idle {idle:,.0f} ({idle / offered:.1%}), "
          f"of which {tail:,.0f} at the end")

    parts = defaultdict(float)
    per_method = defaultdict(lambda: defaultdict(float))
    evaluated_rows = []
    for name, run in runs.items():
        phase = "tuning" if name.startswith("tuning/") else "final"
        method = method_of(name)
        parts[f"{phase} training"] += run["train"]
        parts[f"{phase} evaluation, pre-trained row"] += run["pretrained"]
        parts[f"{phase} evaluation, after tasks"] += run["eval"] - run["pretrained"]
        parts[f"{phase} between tasks, preparation"] += run["wall"] - run["train"] - run["eval"]
        per_method[method][phase] += run["wall"]
        per_method[method]["finals"] += phase == "final"
        per_method[method]["shared"] += run["shared"]
        if not run["shared"]:
            evaluated_rows.append(run["pretrained"])
    total = sum(parts.values())
    for phase in ("tuning", "final"):
        chosen = [run for name, run in runs.items() if name.startswith("tuning/") == (phase == "tuning")]
        steps, samples = sum(r["steps"] for r in chosen), sum(r["samples"] for r in chosen)
        seconds = parts[f"{phase} training"]
        if steps:
            print(f"{phase} runs: {len(chosen)}, {steps:,.0f} optimiser steps ({samples:,.0f} samples), {seconds / steps * 1000:.0f} ms a step")
    print(f"\nprocess-seconds of the runs: {total:,.0f}")
    for part in sorted(parts, key=lambda p: (not p.startswith("tuning"), p)):
        print(f"  {part:40s} {parts[part]:10,.0f} {parts[part] / total:7.1%}")
    shared = sum(r["shared"] for r in runs.values())
    if not shared:  # made before the rows were shared: what sharing would have saved
        print_sharing_estimate(runs)
    elif evaluated_rows:
        saved = shared * statistics.mean(evaluated_rows)
        print(f"\npre-trained rows: {len(evaluated_rows)} evaluated (mean {statistics.mean(evaluated_rows):.1f} s), {shared:.0f} read "
              f"from the shared store, saving about {saved:,.0f} s ({saved / (total + saved):.1%})")

    order = [name for name, _, _ in sorted(intervals, key=lambda i: i[1]) if name in runs]
    tuning_file = args.compare_dir / "tuning.json"
    methods = list(json.loads(tuning_file.read_text())["methods"]) if tuning_file.is_file() else list(dict.fromkeys(
        n.split("/")[1] if n.startswith("tuning/") else n.split("/")[0] for n in order))
    if len(order) == len(runs):
        before, now = (simulate(runs, order, methods, jobs, queue) for queue in (False, True))
        print(f"\nthe same runs, simulated on {jobs} workers at their process-seconds: {before:,.0f} s in the order of the "
              f"old two-phase schedule, {now:,.0f} s in vlcl compare's queue ({before / now:.3f}x)")

    print(f"\n{'method':16s} {'tuning s':>10s} {'final s':>10s} {'per final run':>14s} {'rows read':>9s}")
    for method, seconds in sorted(per_method.items(), key=lambda item: -(item[1]["tuning"] + item[1]["final"])):
        mean = seconds["final"] / seconds["finals"] if seconds["finals"] else 0.0
        print(f"{method:16s} {seconds['tuning']:10,.0f} {seconds['final']:10,.0f} {mean:14,.0f} {seconds['shared']:9.0f}")


if __name__ == "__main__":
    main()
