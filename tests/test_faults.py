"""Crash safety: SIGKILL at six points (mid-task, inside checkpoint writes, before evaluation), then resume.

Every killed run is resumed with ``vlcl run --resume`` and must end with the same
metrics and losses as an uninterrupted run; at no point may a directory that the
pointer names, or any non-temporary checkpoint directory, be incomplete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_run import metrics_of, quick_args
from vlcl.app.cli import main

EVERY = "train.checkpoint_every_steps=3"


def args_for(model_dir: Path, method: str) -> list[str]:
    return quick_args(model_dir, f"method.name={method}", EVERY)


@pytest.fixture(scope="module")
def references(tmp_path_factory, world_clip_dir):
    out = {}
    for method in ("cclip", "zscl", "mulki"):
        run_dir = tmp_path_factory.mktemp("reference") / method
        assert main(["run", *args_for(world_clip_dir, method), "-o", str(run_dir)]) == 0
        out[method] = metrics_of(run_dir)
    return out


def assert_checkpoints_sound(checkpoints: Path) -> None:
    for path in checkpoints.iterdir():
        if path.is_dir() and not path.name.startswith("."):
            assert (path / "COMPLETE").is_file(), f"{path.name} is a visible checkpoint without COMPLETE"
    pointer = checkpoints / "latest.json"
    if pointer.is_file():
        content = json.loads(pointer.read_text())
        for name in filter(None, (content["path"], content.get("base"))):
            assert (checkpoints / name / "COMPLETE").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "fault"),
    [
        ("cclip", "step:4"),  # mid-task, one step after the step-3 checkpoint
        ("cclip", "step_checkpoint_write:2"),  # inside the second in-stage checkpoint write
        ("cclip", "stage_checkpoint_write:1"),  # inside the first task's checkpoint write
        ("cclip", "stage_checkpoint_pointer:1"),  # task checkpoint complete, pointer not yet moved
        ("cclip", "stage_checkpoint_prune:1"),  # task 2's checkpoint complete, task 1's half deleted (checkpoint.keep=1)
        ("cclip", "evaluation:2"),  # second task trained, not yet evaluated
        ("zscl", "step:20"),  # in the second task, with ZSCL's running weight average in flight
        ("mulki", "step:11"),  # MulKI: two teachers, prototypes and a running average in flight
    ],
)
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, world_clip_dir, references, method, fault):
    run_dir = tmp_path / "run"
    env = {**os.environ, "VLCL_FAULT": fault}
    killed = subprocess.run(
        [sys.executable, "-m", "vlcl", "run", *args_for(world_clip_dir, method), "-o", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert_checkpoints_sound(run_dir / "checkpoints")
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert_checkpoints_sound(run_dir / "checkpoints")
    assert metrics_of(run_dir) == references[method]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(("step_", "."))]  # cleaned up


@pytest.mark.slow
def test_step_checkpoint_is_safetensors_and_json_only(tmp_path, world_clip_dir):
    run_dir = tmp_path / "run"
    env = {**os.environ, "VLCL_FAULT": "step:5"}
    subprocess.run(
        [sys.executable, "-m", "vlcl", "run", *args_for(world_clip_dir, "cclip"), "-o", str(run_dir)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    steps = [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_")]
    assert [p.name for p in steps] == ["step_00_0000003"]
    assert sorted(f.name for f in steps[0].iterdir()) == ["COMPLETE", "state.json", "state.safetensors"]
    pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert pointer == {"stage": 0, "step": 3, "path": "step_00_0000003", "base": None}


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, world_clip_dir, capsys):
    run_dir = tmp_path / "run"
    args = quick_args(world_clip_dir, "train.lr=1e30", "train.warmup_fraction=0", "train.checkpoint_every_steps=1")
    assert main(["run", *args, "-o", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vlcl: error: non-finite loss") and "last complete checkpoint is kept" in err[-1]
    assert_checkpoints_sound(run_dir / "checkpoints")
    pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert pointer["stage"] == 0 and pointer["step"] >= 1
