"""Every registered method's tiny run on `embedded`, `embedded_cls` and the feature-mode benchmark (`features`,
for methods that train feature maps), reduced to the numbers of its results.json: the snapshot that shows a
refactoring changed no behaviour.

    python benchmarks/results_snapshot.py -o before.json          # at the commit before the change
    python benchmarks/results_snapshot.py -o after.json           # after it
    python benchmarks/results_snapshot.py --compare before.json after.json

`--compare` prints every number that differs (bit for bit: floats are compared as written by json, which
round-trips float64 exactly) and exits 1 if any does, 0 when all are identical. Kept: every stage's metrics,
per-class scores and training losses, the matrices, the summary, the task-agnostic scores and the warnings;
left out: timings, versions, paths and the config (they differ between checkouts, not between behaviours).
Runs use the shipped embedded model, one thread, and take a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

TINY = ["data.train_scale=0.04", "data.test_images=24", "data.zeroshot_per_class=4", "train.epochs=1",
        "train.batch_size=16", "train.lr=0.001", "threads=1", "data.workers=0"]
TASKS = {"embedded": "data.tasks=[sketch,counting]", "embedded_cls": "data.tasks=[sketch,new_shapes]"}
KEPT = ("matrices", "summary", "task_agnostic", "warnings", "pretrained")


def feature_pairs(directory: Path) -> list[dict[str, Any]]:
    """Two modality-pair tasks of low-rank random features (fixed seeds), as .npz files."""
    import numpy as np

    pairs = []
    for t, (name, modalities) in enumerate((("text_image", ("text", "image")), ("text_audio", ("text", "audio")))):
        entry: dict[str, Any] = {"name": name, "modalities": list(modalities)}
        rng = np.random.default_rng(10 * t)
        bases = {m: np.linalg.qr(rng.standard_normal((16, 5)))[0] for m in modalities}
        for split, seed in (("train", 10 * t + 1), ("test", 10 * t + 2)):
            z = np.random.default_rng(seed).standard_normal((96, 5)) * 2
            path = directory / f"{name}_{split}.npz"
            np.savez(path, **{m: (z @ bases[m].T).astype(np.float32) for m in modalities})
            entry[split] = str(path)
        pairs.append(entry)
    return pairs


def runs() -> list[tuple[str, str]]:
    """(method, benchmark) of every registered method on every benchmark it supports."""
    from vlcl.methods import list_methods, method_class

    chosen = []
    for name in sorted(list_methods()):
        cls = method_class(name)
        if "captions" in cls.settings:
            chosen.append((name, "embedded"))
        if "classification" in cls.settings:
            chosen.append((name, "embedded_cls"))
        if "modality_pairs" in cls.settings:
            chosen.append((name, "features"))
    return chosen


def numbers(results: dict[str, Any]) -> dict[str, Any]:
    kept = {key: results[key] for key in KEPT if key in results}
    kept["stages"] = [
        {"name": s["name"], "metrics": s["metrics"], "per_class": s.get("per_class"),
         "final_loss": s["train"].get("final_loss"), "steps": s["train"].get("steps")}
        for s in results["stages"]
    ]
    return kept


def snapshot(out: Path) -> int:
    from vlcl.app.cli import main

    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        features = feature_pairs(root)
        for method, benchmark in runs():
            run_dir = root / f"{method}-{benchmark}"
            if benchmark == "features":
                config = root / "features.yaml"
                config.write_text(json.dumps({"data": {"benchmark": "features", "features": features}}))
                argv = ["run", str(config), f"method.name={method}", "train.epochs=1", "train.batch_size=32", "threads=1"]
            else:
                argv = ["run", f"method.name={method}", f"data.benchmark={benchmark}", TASKS[benchmark], *TINY]
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # the runs' tables
                code = main([*argv, "-o", str(run_dir)])
            key = f"{method}/{benchmark}"
            print(f"{key}: exit {code}", file=sys.stderr)
            found[key] = numbers(json.loads((run_dir / "results.json").read_text())) if code == 0 else {"exit": code}
    out.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    print(f"{len(found)} runs -> {out}")
    return 0


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b)) for d in differences(a.get(key), b.get(key), f"{path}/{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} -> {b!r}"]


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    found = differences(a, b)
    for line in found[:200]:
        print(line)
    print(f"{len(a)} runs before, {len(b)} after; {len(found)} numbers differ" + ("" if found else ": identical"))
    return 1 if found else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", type=Path, help="write the snapshot here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if not args.o:
        parser.error("give -o SNAPSHOT.json or --compare BEFORE AFTER")
    sys.exit(snapshot(args.o))
