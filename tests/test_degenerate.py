"""Runs that would learn nothing stop or warn in one line, naming the set: classes whose prompts encode
identically and one-class tasks are refused before anything is written; a loss that has not moved after half a
task is a warning in the console, log.jsonl and results.json; an entry point that names no method is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlcl.app.cli import main
from vlcl.engine.train import flat_loss, loss_check_step

FAST = ["train.epochs=2", "train.batch_size=4", "train.lr=0.001", "threads=1", "data.workers=0"]


def class_folders(root: Path, classes: list[str], per_class: int = 8) -> Path:
    """``root/digits/{train,test}/<class>/*.png``: a classification data set of random images."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 3)):
        for name in classes:
            folder = root / "digits" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def folders_run(model: Path, root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["run", f"model.path={model}", "data.benchmark=folders", f"data.root={root}", *FAST, *extra, "-o", str(run_dir)]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.strip()][-1]


UNKNOWN = ["qzxv", "wprtk", "zzgly"]  # words the tiny model's tokenizer does not know: each becomes [UNK]


def test_classes_whose_prompts_collide_are_refused_before_anything_is_written(tmp_path, world_clip_dir, capsys):
    """The digits case of the issue: with --allow-unknown-words every prompt was 'a photo of a [UNK] .'."""
    root = class_folders(tmp_path / "data", UNKNOWN)
    run_dir = tmp_path / "run"
    assert main([*folders_run(world_clip_dir, root, run_dir), "--allow-unknown-words"]) == 2
    line = error_line(capsys)
    assert line.startswith("vlcl: error: ") and "'digits'" in line and "encode to the same tokens" in line, line
    assert all(repr(name) in line for name in UNKNOWN), line
    assert not run_dir.exists()


def test_a_task_with_one_class_is_refused(tmp_path, world_clip_dir, capsys):
    root = class_folders(tmp_path / "data", ["circle"])
    run_dir = tmp_path / "run"
    assert main(folders_run(world_clip_dir, root, run_dir, "data.max_unknown_words=1")) == 2
    line = error_line(capsys)
    assert "'digits' has a single class" in line, line
    assert not run_dir.exists()


def test_a_loss_that_does_not_move_is_a_warning_everywhere(tmp_path, world_clip_dir, capsys, monkeypatch):
    """With the collision refusal bypassed, the loss is ln C at every step (the model cannot tell the classes
    apart): the run says so on the console, in log.jsonl and in results.json."""
    monkeypatch.setattr("vlcl.engine.loop.check_class_sets", lambda *args, **kwargs: None)
    root = class_folders(tmp_path / "data", UNKNOWN)
    run_dir = tmp_path / "run"
    assert main([*folders_run(world_clip_dir, root, run_dir), "--allow-unknown-words"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("vlcl: warning: ")]
    assert len(warnings) == 1 and "task 'digits': the training loss has not moved" in warnings[0], err[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert [(w["kind"], w["stage"], w["set"]) for w in results["warnings"]] == [("loss_flat", 1, "digits")]
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = [r["loss"] for r in records if r.get("event") == "step"]
    assert steps and all(abs(loss - math.log(len(UNKNOWN))) < 1e-4 for loss in steps), steps
    assert [r["kind"] for r in records if r.get("event") == "warning"] == ["loss_flat"]


def test_a_run_that_learns_has_no_warning(tmp_path, world_clip_dir, capsys):
    from test_run import quick_args

    run_dir = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir), "-o", str(run_dir)]) == 0
    assert "vlcl: warning:" not in capsys.readouterr().err
    assert json.loads((run_dir / "results.json").read_text()).get("warnings", []) == []


@pytest.mark.parametrize(("losses", "flat"), [
    ([math.log(5)] * 10, True),
    ([2.0, 2.0001, 1.9999, 2.0, 2.0, 2.0, 2.0, 2.0], True),
    ([2.3, 2.1, 2.2, 2.0, 1.9, 1.95, 1.8, 1.7], False),
    ([0.0] * 10, True),
])
def test_flat_loss_tolerance(losses, flat):
    assert (flat_loss(losses, "t", len(losses)) is not None) is flat


def test_short_tasks_are_not_judged():
    assert loss_check_step(6) is None and loss_check_step(8) == 4
    assert flat_loss([1.0] * 6, "t", 6) is None
