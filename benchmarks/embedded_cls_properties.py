"""Check the properties the embedded classification benchmark must have to tell methods apart.

Usage:
    python benchmarks/embedded_cls_properties.py [RUN_DIR]

RUN_DIR is a finished `vlcl run data.benchmark=embedded_cls` of `finetune` with
the default train settings (default: runs/embedded_cls-finetune). The
pre-trained row of that run is the shipped model's zero-shot evaluation. Scores
are top-1 in each task's own label space; chance is 100 / classes. Prints each
property with the measured numbers and PASS/FAIL; exits 1 if any fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vlcl.data.benchmarks import world
from vlcl.data.benchmarks.embedded_cls import RETRIEVAL_TEST_IMAGES

ZEROSHOT_MIN_TOP1 = 70.0  # the shipped model's top-1 on every held-out zero-shot set: something to lose
LEARNABLE_GAP = 20.0  # top-1 right after training on a task minus its top-1 before any training
FORGETTING_MIN = 10.0  # finetune's drop on task 1 and its mean zero-shot PD
ABOVE_CHANCE = 10.0  # "not totally forgotten": final top-1 at least this many points above chance
ABOVE_CHANCE_FACTOR = 10  # held-out retrieval: final R@1 at least 10x that of random embeddings


def _chance(classes: int) -> float:
    return 100.0 / classes


def main(run_dir: Path) -> int:
    results = json.loads((run_dir / "results.json").read_text())
    if results["method"] != "finetune" or results["benchmark"] != "embedded_cls":
        raise SystemExit(f"{run_dir}: expected a finetune run of embedded_cls, got {results['method']} on {results['benchmark']}")
    if not results["summary"].get("complete"):
        raise SystemExit(f"{run_dir}: the run is not finished")
    tasks = results["tasks"]
    A = results["matrices"]["top1"]
    before = results["pretrained"]["top1_row"]["top1"]
    zs = results["summary"]["zeroshot_top1"]
    heldout = results["summary"]["heldout_mean_R@1"]
    task_chance = [_chance(len(world.CLASS_TASKS[t].classes)) for t in tasks]
    checks: list[tuple[str, bool, str]] = []

    for name, values in zs.items():
        checks.append((f"shipped model zero-shot top-1 on {name} >= {ZEROSHOT_MIN_TOP1}", values["pretrained"] >= ZEROSHOT_MIN_TOP1, f"{values['pretrained']:.1f}"))
    for i, task in enumerate(tasks):
        gap = A[i][i] - before[i]
        checks.append((f"{task}: top-1 before training >= {LEARNABLE_GAP} below after", gap >= LEARNABLE_GAP, f"{before[i]:.1f} -> {A[i][i]:.1f} (+{gap:.1f}; chance {task_chance[i]:.1f})"))
    drop = A[0][0] - A[-1][0]
    checks.append((f"finetune forgets task 1 ({tasks[0]}) by >= {FORGETTING_MIN}", drop >= FORGETTING_MIN, f"{A[0][0]:.1f} -> {A[-1][0]:.1f} (-{drop:.1f})"))
    mean_pd = results["summary"]["zeroshot_mean_pd"]
    checks.append((f"finetune loses >= {FORGETTING_MIN} zero-shot top-1 (mean PD)", mean_pd >= FORGETTING_MIN, f"{mean_pd:.1f}"))
    for i, task in enumerate(tasks[:-1]):
        floor = task_chance[i] + ABOVE_CHANCE
        checks.append((f"{task}: final top-1 >= chance + {ABOVE_CHANCE:g} ({floor:.1f})", A[-1][i] >= floor, f"{A[-1][i]:.1f} (peak {max(r[i] for r in A):.1f})"))
    for name, values in zs.items():
        floor = _chance(len(world.ZEROSHOT_SPECS[name.removeprefix("zs_")].classes)) + ABOVE_CHANCE
        checks.append((f"{name}: final top-1 >= chance + {ABOVE_CHANCE:g} ({floor:.1f})", values["final"] >= floor, f"{values['pretrained']:.1f} -> {values['final']:.1f}"))
    test_images = results["config"]["data"]["test_images"] or RETRIEVAL_TEST_IMAGES
    above = ABOVE_CHANCE_FACTOR * 100.0 / test_images
    base = heldout["base"]
    checks.append((f"base world: final R@1 >= {ABOVE_CHANCE_FACTOR}x chance ({above:.1f})", base["final"] >= above, f"{base['pretrained']:.1f} -> {base['final']:.1f}"))

    width = max(len(c[0]) for c in checks)
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label:<{width}}  {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/embedded_cls-finetune")))
