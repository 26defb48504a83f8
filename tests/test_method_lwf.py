"""LwF: the distillation term on the in-batch similarity distributions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlcl.methods.lwf  # noqa: F401  (registers 'lwf')
from conftest import tiny_data
from vlcl.methods import RunContext, Stage, create_method
from vlcl.methods.lwf import softened_kl
from vlcl.models import load_clip
from vlcl.settings import make_batch

STAGE = Stage(0, "t0", (0,))


def setup_method(tiny_clip_dir, **options):
    bundle = load_clip(str(tiny_clip_dir))
    method = create_method("lwf", options)
    method.setup(bundle.model, RunContext(["t0"], seed=0, bundle=bundle))
    return method, bundle


def test_defaults():
    method = create_method("lwf")
    assert (method.options.weight, method.options.temperature) == (1.0, 2.0)
    assert method.state_dict() == {}


@pytest.mark.parametrize("cache", [True, False])
def test_distillation_is_zero_for_equal_models_and_positive_after_a_change(tiny_clip_dir, cache):
    method, bundle = setup_method(tiny_clip_dir, cache_teacher=cache)
    data = tiny_data()
    method.begin_task(STAGE, data)
    method.train()
    batch = make_batch(bundle, data, torch.arange(8), torch.arange(8))
    start = method.training_loss(batch, 0)
    assert abs(start.logs["distill"]) < 1e-6
    assert start.loss.item() == pytest.approx(start.logs["clip"], abs=1e-6)
    with torch.no_grad():
        method.model.visual_projection.weight.add_(0.2 * torch.randn_like(method.model.visual_projection.weight))
    changed = method.training_loss(batch, 1)
    assert changed.logs["distill"] > 1e-4
    assert changed.loss.item() == pytest.approx(changed.logs["clip"] + changed.logs["distill"], rel=1e-5)
    changed.loss.backward()
    assert method.model.visual_projection.weight.grad.abs().sum() > 0


def test_softened_kl_is_the_scaled_kl_of_row_softmaxes():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(4, 4, generator=g) * 5, torch.randn(4, 4, generator=g) * 5
    T = 2.0
    p, q = F.softmax(teacher / T, dim=1), F.softmax(student / T, dim=1)
    expected = T**2 * (p * (p.log() - q.log())).sum(dim=1).mean()
    assert softened_kl(teacher, student, T).item() == pytest.approx(expected.item(), rel=1e-5)
    assert softened_kl(teacher, teacher, T).item() == pytest.approx(0.0, abs=1e-6)


def losses_of(tiny_clip_dir, cache):
    from rich.console import Console

    from vlcl.config import TrainConfig
    from vlcl.engine.train import train_on

    method, bundle = setup_method(tiny_clip_dir, cache_teacher=cache)
    data = tiny_data()
    method.begin_task(STAGE, data)
    stats = train_on(method, bundle, data, "t0", TrainConfig(epochs=2, batch_size=8, lr=1e-3), seed=5, console=Console(quiet=True))
    method.end_task(STAGE)
    return stats["losses"]


def test_cached_and_uncached_teacher_train_alike(tiny_clip_dir):
    cached, uncached = losses_of(tiny_clip_dir, True), losses_of(tiny_clip_dir, False)
    assert len(cached) == 4
    assert cached == pytest.approx(uncached, abs=1e-5)
