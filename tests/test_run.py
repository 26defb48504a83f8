"""End-to-end: `vlcl run` on a tiny random CLIP over two embedded tasks, resume after SIGKILL, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlcl.app.cli import main

TASKS = "data.tasks=[sketch,counting]"


def quick_args(model_dir: Path, *extra: str) -> list[str]:
    return [
        f"model.path={model_dir}", TASKS, "data.train_scale=0.04", "data.test_images=24", "data.zeroshot_per_class=4",
        "train.epochs=2", "train.batch_size=16", "train.lr=0.001", "threads=1", *extra,
    ]


def metrics_of(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    return {"matrices": results["matrices"], "summary": results["summary"], "stages": [(s["name"], s["metrics"], s["train"].get("final_loss")) for s in results["stages"]]}


def test_finetune_run_writes_everything(tmp_path, world_clip_dir, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir), "-o", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == ["sketch", "counting"]
    assert [s["name"] for s in results["stages"]] == ["pretrained", "sketch", "counting"]
    assert len(results["matrices"]["mean_R@1"]) == 2 and len(results["matrices"]["mean_R@1"][0]) == 2
    assert set(results["summary"]["retrieval"]["mean_R@1"]) >= {"last", "avg", "transfer", "bwt", "forgetting"}
    assert set(results["summary"]["zeroshot_top1"]) == {"zs_shape", "zs_colour", "zs_shape_colour"}
    assert {"i2t_R@10", "t2i_R@5"} <= set(results["stages"][1]["metrics"]["retrieval"]["grainy"])
    assert {"matched_cosine", "modality_gap"} <= set(results["stages"][1]["metrics"]["alignment"]["sketch"])
    assert results["stages"][1]["train"]["steps"] > 0
    assert (run_dir / "metrics.csv").read_text().startswith("stage_index,stage,set,kind,metric,value")
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "stage_01" / "model" / "model.safetensors").is_file()
    assert "R@1" in capsys.readouterr().out


def test_zeroshot_rows_are_the_pretrained_row(tmp_path, world_clip_dir):
    run_dir = tmp_path / "zs"
    assert main(["run", *quick_args(world_clip_dir, "method.name=zeroshot"), "-o", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    row = results["pretrained"]["R@1_row"]["mean_R@1"]
    assert results["matrices"]["mean_R@1"] == [row, row]
    assert results["summary"]["zeroshot_mean_pd"] == 0


def test_joint_is_one_stage(tmp_path, world_clip_dir):
    run_dir = tmp_path / "joint"
    assert main(["run", *quick_args(world_clip_dir, "method.name=joint"), "-o", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["stage_names"] == ["joint"]
    assert results["stages"][1]["trained_on"] == ["sketch", "counting"]
    assert set(results["summary"]["retrieval"]["mean_R@1"]) == {"last"}


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, world_clip_dir):
    reference = tmp_path / "reference"
    assert main(["run", *quick_args(world_clip_dir), "-o", str(reference)]) == 0

    killed = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "vlcl", "run", *quick_args(world_clip_dir), "-o", str(killed)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest.json"
    deadline = time.time() + 600  # generous: a loaded machine is slow, and the kill only waits for the file
    while not latest.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads(latest.read_text())["stage"] == 0, "the run should have been killed after its first task"

    assert main(["run", "--resume", str(killed)]) == 0
    assert metrics_of(killed) == metrics_of(reference)


def test_resume_refuses_changed_config(tmp_path, world_clip_dir, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir, "train.max_steps_per_task=2"), "-o", str(run_dir)]) == 0
    assert main(["run", "--resume", str(run_dir), "train.epochs=3"]) == 2
    assert "train.epochs" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "missing.yaml"], "missing.yaml: config file not found"),
        (["run", "method.name=finetuned"], "unknown method 'finetuned' (did you mean 'finetune'?)"),
        (["run", "data.benchmark=imagenet"], "unknown benchmark 'imagenet'"),
        (["run", "method.name=finetune", "method.alpha=1"], "unknown option 'method.alpha' for method 'finetune'"),
        (["run", "train.batch_size=one"], "invalid value for 'train.batch_size'"),
        (["run", "data.tasks=[sketch,nope]", "model.path=/does/not/exist"], "model directory not found"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, argv, expected, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("results.json"))


def test_existing_run_dir_is_protected(tmp_path, world_clip_dir, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir, "train.max_steps_per_task=1"), "-o", str(run_dir)]) == 0
    before = (run_dir / "results.json").read_bytes()
    assert main(["run", *quick_args(world_clip_dir), "-o", str(run_dir)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run_dir / "results.json").read_bytes() == before


def test_unwritable_output_dir(tmp_path, world_clip_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", *quick_args(world_clip_dir), "-o", str(blocker / "run")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_list_commands(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert {"finetune", "joint", "zeroshot"} <= {line.split()[0] for line in out.splitlines()}
    assert main(["benchmarks"]) == 0
    assert capsys.readouterr().out.startswith("embedded")


def test_options_and_overrides_in_any_order(tmp_path, world_clip_dir, capsys):
    run_dir = tmp_path / "run"
    args = quick_args(world_clip_dir, "method.name=zeroshot")
    assert main(["run", "-o", str(run_dir), *args[:3], "--overwrite", *args[3:]]) == 0
    config = tmp_path / "c.yaml"
    config.write_text("seed: 3\n")
    assert main(["run", "--overwrite", "-o", str(run_dir), *args, str(config)]) == 0
    assert "seed: 3" in (run_dir / "config.yaml").read_text()
    assert main(["run", "--data-root", str(tmp_path / "nowhere"), "data.benchmark=folders", "train.epochs=2"]) == 2
    assert "nowhere: data root not found" in capsys.readouterr().err
