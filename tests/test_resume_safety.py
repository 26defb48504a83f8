"""Resume never restarts silently and never shrinks results; a run whose data moved resumes from the new place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from test_run import metrics_of, quick_args
from vlcl.app.cli import main
from vlcl.engine.results import ResultsError, write_results

FAST = ["train.epochs=1", "train.batch_size=4", "train.lr=0.001", "threads=1", "data.workers=0"]


def killed_after_first_task(args: list[str], run_dir: Path) -> None:
    """SIGKILL once the second task has trained, before its evaluation: stage_00 is the newest checkpoint."""
    process = subprocess.run(
        [sys.executable, "-m", "vlcl", "run", *args, "-o", str(run_dir)],
        env={**os.environ, "VLCL_FAULT": "evaluation:2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == -9, process.stderr[-2000:]
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["path"] == "stage_00"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, world_clip_dir):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert main(["run", *quick_args(world_clip_dir), "-o", str(run_dir)]) == 0
    return metrics_of(run_dir)


@pytest.mark.slow
def test_lost_pointer_resumes_from_the_newest_complete_checkpoint(tmp_path, world_clip_dir, reference, capsys):
    run_dir = tmp_path / "run"
    killed_after_first_task(quick_args(world_clip_dir), run_dir)
    (run_dir / "checkpoints" / "latest.json").unlink()
    assert main(["run", "--resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "latest.json is missing" in err and "stage_00" in err and "resuming" in err
    assert metrics_of(run_dir) == reference


def test_resume_before_any_checkpoint_says_it_starts_from_the_beginning(tmp_path, world_clip_dir, reference, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args = quick_args(world_clip_dir)
    assert main(["run", *args, "method.name=zeroshot", "-o", str(tmp_path / "unused")]) == 0  # warm imports
    from vlcl.config import dump_config, load_config

    (run_dir / "config.yaml").write_text(dump_config(load_config(None, args)))
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert "no checkpoint yet" in capsys.readouterr().err
    assert metrics_of(run_dir) == reference


def test_results_are_never_replaced_by_less_complete_ones(tmp_path):
    write_results(tmp_path, {"stages": [_stage(-1), _stage(0), _stage(1)]})
    before = (tmp_path / "results.json").read_bytes()
    with pytest.raises(ResultsError, match="holds 3 stage records, the new results 2"):
        write_results(tmp_path, {"stages": [_stage(-1), _stage(0)]})
    assert (tmp_path / "results.json").read_bytes() == before


def _stage(index: int) -> dict:
    return {"index": index, "metrics": {"retrieval": {}, "alignment": {}, "zeroshot": {}}}


@pytest.mark.slow
def test_moved_data_root_resumes_when_the_data_is_the_same(tmp_path, world_clip_dir):
    from realdata import pairs, write_images, write_jsonl

    root = tmp_path / "disk-a"
    items = pairs(10)
    for name, offset in (("photos", 0), ("drawings", 20)):
        write_images(root / name / "images", items, offset=offset)
        write_jsonl(root / name / "train.jsonl", items[:8], prefix="images/")
        write_jsonl(root / name / "test.jsonl", items[8:], prefix="images/")
    args = [f"model.path={world_clip_dir}", "data.benchmark=folders", f"data.root={root}", "data.tasks=[photos,drawings]", *FAST]
    run_dir = tmp_path / "run"
    killed_after_first_task(args, run_dir)
    moved = root.rename(tmp_path / "disk-b")
    assert main(["run", "--resume", str(run_dir)]) == 2  # the old root is gone: named in the error
    assert main(["run", "--resume", str(run_dir), "--data-root", str(moved)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["summary"]["complete"] and results["config"]["data"]["root"] == str(moved)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["root"] == str(moved)


def test_setup_on_resume_gets_the_checkpoint_and_a_way_to_the_pretrained_model(tmp_path, world_clip_dir):
    from vlcl.config import load_config
    from vlcl.engine.loop import ContinualRunner

    run_dir = tmp_path / "run"
    args = quick_args(world_clip_dir)
    assert main(["run", *args, "-o", str(run_dir)]) == 0
    fresh = ContinualRunner(load_config(None, args), tmp_path / "unused").prepare()
    assert fresh.state[0].context.resuming is False and fresh.state[0].context.checkpoint is None
    resumed = ContinualRunner(load_config(run_dir / "config.yaml"), run_dir).prepare(resume=True)
    method = resumed.state[0]
    assert method.context.resuming is True and method.context.checkpoint == run_dir / "checkpoints" / "stage_01"
    pretrained = dict(method.context.load_pretrained().named_parameters())
    trained = dict(method.model.named_parameters())
    original = dict(fresh.state[0].model.named_parameters())
    assert all(torch.equal(pretrained[n], original[n]) for n in original)  # the model the run started from
    assert any(not torch.equal(pretrained[n], trained[n]) for n in trained)  # not the checkpoint's weights
