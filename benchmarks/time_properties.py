"""Check the properties the embedded time-continual benchmark (``embedded_time``) must have.

Usage:
    python benchmarks/time_properties.py [RUN_DIR] [--seed N] [--test-images N]

Always: the shipped model (``model.path=embedded``), frozen, scored on every time step's test set (mean R@1
of both directions, as TiC-CLIP scores retrieval), and its drop along time from the first step. Offline,
about a minute on 2 cores.

With RUN_DIR, a finished ``vlcl run data.benchmark=embedded_time method.name=finetune`` run: every step is
learnable after the first (its diagonal clearly above the frozen model; the first step is the
pre-training world, already solved) and sequential training forgets old steps (the
first step's score after the last step below its peak). Prints PASS/FAIL per property; exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vlcl.config import EvalConfig
from vlcl.data.benchmarks.embedded_time import build_embedded_time
from vlcl.engine.evaluate import Evaluator
from vlcl.models import load_clip

FIRST_STEP_MIN = 40.0  # the first step stays solvable by the frozen model (mean R@1)
LAST_STEP_DROP_MIN = 20.0  # the frozen model falls behind on the last step by at least this much
LEARNABLE_GAP = 10.0  # every step's diagonal at least this far above the frozen model
FORGETTING_MIN = 5.0  # the first step's score after the last step at least this far below its peak


def frozen_scores(seed: int, test_images: int | None) -> tuple[list[str], list[float]]:
    torch.set_num_threads(2)
    bundle = load_clip("embedded")
    bench = build_embedded_time(seed=seed, train_scale=0.001, test_images=test_images, zeroshot_per_class=1)
    evaluator = Evaluator(bench, bundle.tokenizer, bundle.preprocess, bundle.model.config.text_config.max_position_embeddings, EvalConfig())
    bundle.model.eval()
    with torch.no_grad():
        scores = [evaluator.retrieval(bundle.model, task.test)["retrieval"]["mean_R@1"] for task in bench.tasks]
    return bench.task_names, scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-images", type=int, default=None)
    args = parser.parse_args(argv)
    checks: list[tuple[str, bool, str]] = []

    steps, frozen = frozen_scores(args.seed, args.test_images)
    print("frozen shipped model, mean R@1 per step (drop from the first step):")
    for step, score in zip(steps, frozen):
        print(f"  {step}: {score:5.1f}  ({score - frozen[0]:+5.1f})")
    checks.append((f"frozen model solves the first step ({steps[0]}) >= {FIRST_STEP_MIN}", frozen[0] >= FIRST_STEP_MIN, f"{frozen[0]:.1f}"))
    drop = frozen[0] - frozen[-1]
    checks.append((f"frozen model falls behind on the last step by >= {LAST_STEP_DROP_MIN}", drop >= LAST_STEP_DROP_MIN, f"{frozen[0]:.1f} -> {frozen[-1]:.1f} (-{drop:.1f})"))
    checks.append(("frozen score falls along time (each later half below the earlier)", sum(frozen[3:]) < sum(frozen[:3]), f"{sum(frozen[:3]) / 3:.1f} vs {sum(frozen[3:]) / 3:.1f}"))

    if args.run_dir is not None:
        results = json.loads((args.run_dir / "results.json").read_text())
        if results["method"] != "finetune" or results["benchmark"] != "embedded_time":
            raise SystemExit(f"{args.run_dir}: expected a finetune run on embedded_time, got {results['method']} on {results['benchmark']}")
        tasks = results["tasks"]
        A = results["matrices"]["mean_R@1"]
        before = results["pretrained"]["R@1_row"]["mean_R@1"]
        print("finetune matrix, mean R@1 (row: after training step, column: eval step):")
        print("          " + " ".join(f"{t:>6}" for t in tasks))
        for t, row in zip(tasks, A):
            print(f"  {t:>6}  " + " ".join(f"{v:6.1f}" for v in row))
        # the first step is the pre-training world: already solved frozen (checked above), nothing to learn
        for i, task in enumerate(tasks[1:], start=1):
            gap = A[i][i] - before[i]
            checks.append((f"{task} learnable: diagonal >= {LEARNABLE_GAP} above frozen", gap >= LEARNABLE_GAP, f"{before[i]:.1f} -> {A[i][i]:.1f} (+{gap:.1f})"))
        peak = max(row[0] for row in A)
        forgot = peak - A[-1][0]
        checks.append((f"sequential training forgets {tasks[0]} by >= {FORGETTING_MIN}", forgot >= FORGETTING_MIN, f"peak {peak:.1f} -> {A[-1][0]:.1f} (-{forgot:.1f})"))
        backward = [A[-1][j] - A[j][j] for j in range(len(tasks) - 1)]
        print(f"  backward transfer after the last step (final - diagonal): {', '.join(f'{b:+.1f}' for b in backward)}")

    width = max(len(c[0]) for c in checks)
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label:<{width}}  {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
