"""torchrun with 2 CPU processes (gloo, one thread each) against one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_run import quick_args
from vlcl.app.cli import main

# Losses and recalls agree up to float32 summation order: all-reduced gradients and
# gathered features are summed in a different order than one process sums them.
LOSS_TOLERANCE = 1e-4
RECALL_TOLERANCE = 1e-6  # recall values are counts over 24 images: equal unless a rank flips


def results_of(run_dir):
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.report  # the launched run writes report.html; so must the single-process one it is compared with
@pytest.mark.parametrize("gather", ["true"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, world_clip_dir, gather):
    args = quick_args(world_clip_dir, f"train.gather_features={gather}")
    single = tmp_path / "single"
    assert main(["run", *args, "-o", str(single)]) == 0
    double = tmp_path / "double"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "vlcl",
            "run",
            *args,
            "-o",
            str(double),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    one, two = results_of(single), results_of(double)
    for a, b in zip(one["stages"], two["stages"]):
        assert a["train"].get("steps") == b["train"].get("steps")
        for x, y in zip(a["train"].get("losses", []), b["train"].get("losses", [])):
            assert abs(x - y) <= LOSS_TOLERANCE
        for kind in ("retrieval", "zeroshot"):
            for set_name, values in a["metrics"][kind].items():
                for key, value in values.items():
                    assert abs(value - b["metrics"][kind][set_name][key]) <= RECALL_TOLERANCE, (a["name"], set_name, key)
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())  # one writer, same files


@pytest.mark.slow
def test_local_losses_differ_from_the_global_batch(tmp_path, world_clip_dir):
    """train.gather_features=false: each process contrasts only its own rows (the C-CLIP authors' setting)."""
    args = quick_args(world_clip_dir, "train.gather_features=false", "train.max_steps_per_task=2")
    single, double = tmp_path / "single", tmp_path / "double"
    assert main(["run", *args, "-o", str(single)]) == 0
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29518",
            "-m",
            "vlcl",
            "run",
            *args,
            "-o",
            str(double),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    first_single = results_of(single)["stages"][1]["train"]["losses"][0]
    first_double = results_of(double)["stages"][1]["train"]["losses"][0]
    assert first_double < first_single - 1e-3  # half the negatives: an easier contrastive task
