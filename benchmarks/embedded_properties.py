"""Check the properties the embedded benchmark must have to tell methods apart.

Usage:
    python benchmarks/embedded_properties.py [RUN_DIR]

RUN_DIR is a finished `vlcl run` of `finetune` with the default settings
(default: runs/embedded-finetune, which `make run` writes). The pre-trained
row of that run is the shipped model's zero-shot evaluation. Prints each
property with the measured numbers and PASS/FAIL; exits 1 if any fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vlcl.data.benchmarks.embedded import TEST_IMAGES

ZEROSHOT_MIN_TOP1 = 70.0
LEARNABLE_GAP = 20.0
FORGETTING_MIN = 10.0
ABOVE_CHANCE_FACTOR = 10  # "clearly above chance": at least 10x the R@1 of random embeddings


def main(run_dir: Path) -> int:
    results = json.loads((run_dir / "results.json").read_text())
    if results["method"] != "finetune":
        raise SystemExit(f"{run_dir}: expected a finetune run, got {results['method']}")
    tasks = results["tasks"]
    A = results["matrices"]["mean_R@1"]
    before = results["pretrained"]["R@1_row"]["mean_R@1"]
    zs = results["summary"]["zeroshot_top1"]
    heldout = results["summary"]["heldout_mean_R@1"]
    checks: list[tuple[str, bool, str]] = []
    # Random embeddings: t2i R@1 = 1/N for N test images; i2t R@1 = about 5/(5N) = 1/N with 5 captions each.
    test_images = results["config"]["data"]["test_images"] or TEST_IMAGES
    chance = 100.0 / test_images
    above = ABOVE_CHANCE_FACTOR * chance

    for name, values in zs.items():
        checks.append((f"shipped model zero-shot top-1 on {name} >= {ZEROSHOT_MIN_TOP1}", values["pretrained"] >= ZEROSHOT_MIN_TOP1, f"{values['pretrained']:.1f}"))
    for i, task in enumerate(tasks):
        gap = A[i][i] - before[i]
        checks.append((f"{task}: R@1 before training >= {LEARNABLE_GAP} below after", gap >= LEARNABLE_GAP, f"{before[i]:.1f} -> {A[i][i]:.1f} (+{gap:.1f})"))
    drop = A[0][0] - A[-1][0]
    checks.append((f"finetune forgets task 1 ({tasks[0]}) by >= {FORGETTING_MIN}", drop >= FORGETTING_MIN, f"{A[0][0]:.1f} -> {A[-1][0]:.1f} (-{drop:.1f})"))
    mean_pd = results["summary"]["zeroshot_mean_pd"]
    checks.append((f"finetune loses >= {FORGETTING_MIN} zero-shot top-1 (mean PD)", mean_pd >= FORGETTING_MIN, f"{mean_pd:.1f}"))
    for i, task in enumerate(tasks[:-1]):
        checks.append((f"{task}: final R@1 >= {ABOVE_CHANCE_FACTOR}x chance ({above:.1f})", A[-1][i] >= above, f"{A[-1][i]:.1f} (peak {max(r[i] for r in A):.1f})"))
    base = heldout["base"]
    checks.append((f"base world: final R@1 >= {ABOVE_CHANCE_FACTOR}x chance ({above:.1f})", base["final"] >= above, f"{base['pretrained']:.1f} -> {base['final']:.1f}"))

    width = max(len(c[0]) for c in checks)
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label:<{width}}  {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/embedded-finetune")))
