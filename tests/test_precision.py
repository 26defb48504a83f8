"""Precision, gradient checkpointing and gradient accumulation on a tiny model."""

from __future__ import annotations

import json

import pytest

from test_run import quick_args
from vlcl.app.cli import main


def losses(run_dir):
    stages = json.loads((run_dir / "results.json").read_text())["stages"]
    return [loss for s in stages[1:] for loss in s["train"]["losses"]]


def run(tmp_path, world_clip_dir, name, *extra):
    run_dir = tmp_path / name
    assert main(["run", *quick_args(world_clip_dir, "train.max_steps_per_task=4", *extra), "-o", str(run_dir)]) == 0
    return run_dir


@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_gradient_checkpointing_gives_the_same_losses(tmp_path, world_clip_dir, method):
    plain = losses(
        run(tmp_path, world_clip_dir, "plain", f"method.name={method}", "method.lora_dropout=0" if method == "lora" else "seed=0")
    )
    ckpt = losses(
        run(
            tmp_path,
            world_clip_dir,
            "ckpt",
            f"method.name={method}",
            "train.gradient_checkpointing=true",
            "method.lora_dropout=0" if method == "lora" else "seed=0",
        )
    )
    assert ckpt == pytest.approx(plain, abs=1e-5)


def test_bf16_autocast_trains_close_to_fp32(tmp_path, world_clip_dir):
    fp32 = losses(run(tmp_path, world_clip_dir, "fp32"))
    bf16 = losses(run(tmp_path, world_clip_dir, "bf16", "train.precision=bf16"))
    assert bf16 != fp32  # autocast really ran in bf16
    assert bf16 == pytest.approx(fp32, rel=0.05)


def test_fp16_needs_cuda(tmp_path, world_clip_dir, capsys):
    assert main(["run", *quick_args(world_clip_dir, "train.precision=fp16", "device=cpu"), "-o", str(tmp_path / "r")]) == 2
    assert "fp16 needs CUDA" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_accumulation_takes_one_step_per_group_of_micro_batches(tmp_path, world_clip_dir):
    frozen = "train.lr=1e-20"  # weights do not move: losses of successive plain steps are losses at the same weights
    one = json.loads((run(tmp_path, world_clip_dir, "a1", "train.batch_size=8", frozen) / "results.json").read_text())
    two = json.loads(
        (
            run(
                tmp_path,
                world_clip_dir,
                "a2",
                "train.batch_size=8",
                "train.accumulate_steps=2",
                "train.max_steps_per_task=2",
                frozen,
            )
            / "results.json"
        ).read_text()
    )
    assert two["stages"][1]["train"]["steps"] == 2 and two["stages"][1]["train"]["samples"] == 32
    assert one["stages"][1]["train"]["samples"] == 32
    # the same rows in the same order: the first accumulated loss is the mean of the first two plain ones
    first_two = one["stages"][1]["train"]["losses"][:2]
    assert two["stages"][1]["train"]["losses"][0] == pytest.approx(sum(first_two) / 2, abs=1e-5)


def test_gradient_checkpointing_switches_the_encoders(world_clip_dir):
    from vlcl.engine.train import enable_gradient_checkpointing
    from vlcl.models import load_clip

    model = load_clip(str(world_clip_dir)).model
    enable_gradient_checkpointing(model)
    flags = {name: m.gradient_checkpointing for name, m in model.named_modules() if hasattr(m, "gradient_checkpointing")}
    assert flags and all(flags.values()), flags
