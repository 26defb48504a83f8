"""EWC: the quadratic penalty, the Fisher estimate and its accumulation, the state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlcl.methods.ewc  # noqa: F401  (registers 'ewc')
from conftest import tiny_data
from vlcl.engine.checkpoint import read_stage_checkpoint, write_stage_checkpoint
from vlcl.methods import RunContext, Stage, create_method
from vlcl.models import load_clip
from vlcl.settings import make_batch
from vlcl.models.loading import ClipBundle

STAGES = [Stage(0, "t0", (0,)), Stage(1, "t1", (1,))]
FAST = {"fisher_batches": 2, "fisher_batch_size": 8}


def setup_method(path, **options):
    bundle = load_clip(str(path))
    method = create_method("ewc", {**FAST, **options})
    method.setup(bundle.model, RunContext(["t0", "t1"], seed=0, bundle=bundle))
    return method, bundle


def after_first_task(path, **options):
    method, bundle = setup_method(path, **options)
    method.begin_task(STAGES[0], tiny_data())
    method.end_task(STAGES[0])
    return method, bundle


def test_defaults():
    opts = create_method("ewc").options
    assert (opts.penalty, opts.fisher_batches, opts.fisher_batch_size, opts.decay) == (1e4, 20, 64, 1.0)


def test_fisher_is_non_negative_and_covers_the_trainable_parameters(tiny_clip_dir):
    method, _ = after_first_task(tiny_clip_dir)
    assert set(method.fisher) == {n for n, p in method.model.named_parameters() if p.requires_grad}
    assert all((f >= 0).all() for f in method.fisher.values())
    assert sum(float(f.sum()) for f in method.fisher.values()) > 0
    assert method.model.visual_projection.weight.grad is None  # the estimate leaves no gradients behind


def test_penalty_is_zero_at_the_anchor_and_matches_a_hand_computation(tiny_clip_dir):
    method, _ = after_first_task(tiny_clip_dir, penalty=250.0)
    assert method.ewc_penalty().item() == 0.0
    delta = torch.randn(method.model.visual_projection.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.01
    with torch.no_grad():
        method.model.visual_projection.weight.add_(delta)
        method.model.logit_scale.add_(0.1)
    fisher = method.fisher
    expected = 250.0 / 2 * (float((fisher["visual_projection.weight"].double() * delta.double() ** 2).sum()) + float(fisher["logit_scale"]) * 0.1**2)
    assert method.ewc_penalty().item() == pytest.approx(expected, rel=1e-4)


def test_training_loss_adds_the_penalty_after_the_first_task(tiny_clip_dir):
    method, bundle = setup_method(tiny_clip_dir)
    data = tiny_data()
    batch = make_batch(bundle, data, torch.arange(8), torch.zeros(8, dtype=torch.long))
    method.begin_task(STAGES[0], data)
    first = method.training_loss(batch, 0)
    assert first.logs["ewc"] == 0.0
    method.end_task(STAGES[0])
    method.begin_task(STAGES[1], data)
    with torch.no_grad():
        method.model.text_projection.weight.mul_(1.1)
    out = method.training_loss(batch, 0)
    assert out.logs["ewc"] > 0
    assert out.loss.item() == pytest.approx(out.logs["clip"] + out.logs["ewc"], rel=1e-5)


@pytest.mark.parametrize("decay", [1.0, 0.0])
def test_fisher_accumulates_over_tasks(tiny_clip_dir, decay):
    method, _ = after_first_task(tiny_clip_dir, decay=decay)
    first = {n: f.clone() for n, f in method.fisher.items()}
    data = tiny_data(seed=1)
    method.begin_task(STAGES[1], data)
    new = method.estimate_fisher(data, STAGES[1])
    method.end_task(STAGES[1])
    assert method.tasks == 2
    for name, f in method.fisher.items():
        torch.testing.assert_close(f, decay * first[name] + new[name])


def test_state_round_trips_through_a_checkpoint(tmp_path, tiny_clip_dir):
    method, bundle = after_first_task(tiny_clip_dir)
    path = write_stage_checkpoint(
        tmp_path, 0, ClipBundle(method.evaluation_model(), bundle.tokenizer, bundle.preprocess, bundle.source), method.state_dict(), {"next_stage": 1, "stages": []}
    )
    state, _ = read_stage_checkpoint(path)
    resumed, _ = setup_method(path / "model")
    resumed.load_state_dict(state)
    assert resumed.tasks == 1
    for name in method.fisher:
        assert torch.equal(resumed.fisher[name], method.fisher[name])
        assert torch.equal(resumed.anchor[name], method.anchor[name])
    assert resumed.ewc_penalty().item() == 0.0  # the checkpoint model is theta*
    with pytest.raises(ValueError):
        resumed.load_state_dict({"fisher": {"nope": torch.zeros(1)}, "anchor": {"nope": torch.zeros(1)}})


def test_trains_under_the_engine(tiny_clip_dir):
    from rich.console import Console

    from vlcl.config import TrainConfig
    from vlcl.engine.train import train_on

    method, bundle = after_first_task(tiny_clip_dir)
    data = tiny_data(seed=1)
    method.begin_task(STAGES[1], data)
    stats = train_on(method, bundle, data, "t1", TrainConfig(epochs=1, batch_size=8, lr=1e-3), seed=0, console=Console(quiet=True))
    assert stats["steps"] == 2 and all(np.isfinite(stats["losses"]))
    assert method.ewc_penalty().item() > 0  # the parameters left theta*
