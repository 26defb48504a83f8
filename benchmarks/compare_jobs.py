"""``vlcl compare`` one method at a time (all threads) against ``--jobs N`` (threads shared out).

Usage:
    python benchmarks/compare_jobs.py [--methods finetune,lwf] [--jobs 2] [--epochs 1] [--tasks sketch,new_shapes]

Both comparisons run the same methods on the same short embedded schedule, in
fresh temporary directories, through the command line; the wall time of each
whole command is printed with the ratio. The leaderboards of the two are then
printed, so that the numbers can be seen to agree (they may differ in the last
digits: a different thread count changes the order of floating-point sums).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_compare(out: Path, methods: str, jobs: int, epochs: int, tasks: str) -> float:
    command = [
        sys.executable, "-m", "vlcl", "compare", f"train.epochs={epochs}", f"data.tasks=[{tasks}]",
        "--methods", methods, "--jobs", str(jobs), "-o", str(out),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="finetune,lwf")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--tasks", default="sketch,new_shapes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        serial = timed_compare(Path(tmp) / "serial", args.methods, 1, args.epochs, args.tasks)
        parallel = timed_compare(Path(tmp) / "parallel", args.methods, args.jobs, args.epochs, args.tasks)
        print(f"methods {args.methods}, {args.epochs} epoch(s) on {args.tasks}")
        print(f"{'one at a time':>16s} {'--jobs ' + str(args.jobs):>10s} {'ratio':>6s}")
        print(f"{serial:15.1f}s {parallel:9.1f}s {serial / parallel:6.2f}x")
        for name in ("serial", "parallel"):
            print(f"\n{name}:\n" + (Path(tmp) / name / "leaderboard.md").read_text().split("\n\n", 2)[2])


if __name__ == "__main__":
    main()
