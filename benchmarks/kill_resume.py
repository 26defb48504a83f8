"""Kill a run with SIGKILL after a given task, resume it, compare with an uninterrupted run.

Usage:
    python benchmarks/kill_resume.py [--after-stage 1] [--workdir runs/kill-resume] [KEY=VALUE ...]

Runs the job twice from scratch (so it takes two runs' time): once
uninterrupted, once killed as soon as the checkpoint of stage
``--after-stage`` (0-based: 1 = after the 2nd task) is complete, then resumed
with ``vlcl run --resume``. Prints whether every metric in results.json
(matrices, summary, per-stage metrics and losses) is identical.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def metrics_of(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    return {
        "matrices": results["matrices"],
        "summary": results["summary"],
        "stages": [(s["name"], s["metrics"], s["train"].get("final_loss")) for s in results["stages"]],
    }


def vlcl(*args: str) -> list[str]:
    return [sys.executable, "-m", "vlcl", "run", *args]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--after-stage", type=int, default=1)
    parser.add_argument("--workdir", default="runs/kill-resume")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    reference, killed = work / "uninterrupted", work / "killed"

    started = time.perf_counter()
    subprocess.run(vlcl(*args.overrides, "-o", str(reference)), check=True, stdout=subprocess.DEVNULL)
    print(f"uninterrupted run: {time.perf_counter() - started:.0f} s")

    process = subprocess.Popen(vlcl(*args.overrides, "-o", str(killed)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest.json"
    while process.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["stage"] >= args.after_stage:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    stage = json.loads(latest.read_text())["stage"]
    print(f"killed with SIGKILL (exit {process.returncode}) with the checkpoint of stage {stage} complete")
    subprocess.run(vlcl("--resume", str(killed)), check=True, stdout=subprocess.DEVNULL)
    same = metrics_of(killed) == metrics_of(reference)
    print(f"resumed run's results.json metrics identical to the uninterrupted run: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
