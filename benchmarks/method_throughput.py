"""Training throughput of every registered method on the embedded benchmark, as a ratio to finetune.

    python benchmarks/method_throughput.py                 # every method that trains with an optimiser
    python benchmarks/method_throughput.py --steps 60 lwf zscl

Each method runs ``vlcl run`` on two tasks (sketch, then counting) for ``--steps`` optimiser steps per task at the
default batch (64), with the evaluation shrunk to a few images (it is not what is timed). The number is the second
task's training seconds from results.json (``stages[2].train.seconds``: the optimiser loop, after ``begin_task``),
where every method does its full work - LwF's and Mod-X's teacher, ZSCL's reference data, EWC's penalty, CMCL's
projection, replay's buffer, MoE-Adapters' second router. One-off work around the loop (``begin_task``: a teacher
cache, a Fisher pass; ``end_task``) is not in the number. Same process settings for every method (the machine's
threads), one run each, printed side by side with the ratio to finetune.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SHRUNK = ["data.tasks=[sketch,counting]", "data.test_images=20", "data.zeroshot_per_class=2", "train.epochs=1"]


def trainers() -> list[str]:
    from vlcl.methods import list_methods, method_class

    return [m for m in list_methods() if method_class(m).trains and method_class(m).optimises and m != "joint"]


def measure(method: str, steps: int, root: Path) -> dict:
    run_dir = root / method
    command = [sys.executable, "-m", "vlcl", "run", *SHRUNK, f"method.name={method}", f"train.max_steps_per_task={steps}", "-o", str(run_dir)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    results = json.loads((run_dir / "results.json").read_text())
    stage = results["stages"][2]
    return {"steps": stage["train"]["steps"], "seconds": stage["train"]["seconds"], "samples": stage["train"]["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("methods", nargs="*", help="default: every method that trains with an optimiser")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    methods = args.methods or trainers()
    if "finetune" not in methods:
        methods = ["finetune", *methods]
    with tempfile.TemporaryDirectory() as root:
        rows = {m: measure(m, args.steps, Path(root)) for m in methods}
    base = rows["finetune"]["seconds"] / rows["finetune"]["steps"]
    print(f"{'method':14s} {'steps':>5s} {'s/step':>7s} {'samples/s':>9s} {'time/finetune':>13s}")
    for method, row in rows.items():
        per_step = row["seconds"] / row["steps"]
        print(f"{method:14s} {row['steps']:5d} {per_step:7.3f} {row['samples'] / row['seconds']:9.0f} {per_step / base:13.2f}")


if __name__ == "__main__":
    main()
