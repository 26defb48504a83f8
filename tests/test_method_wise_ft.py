"""WiSE-FT: exact endpoints of the interpolation, both references, resume of theta_0."""

from __future__ import annotations

import pytest
import torch

import vlcl.methods.wise_ft  # noqa: F401  (registers 'wise_ft')
from vlcl.engine.checkpoint import read_stage_checkpoint, write_stage_checkpoint
from vlcl.methods import RunContext, Stage, create_method
from vlcl.models import load_clip
from vlcl.models.loading import ClipBundle

STAGES = [Stage(0, "t0", (0,)), Stage(1, "t1", (1,))]


def setup_method(path, **options):
    bundle = load_clip(str(path))
    method = create_method("wise_ft", options)
    method.setup(bundle.model, RunContext(["t0", "t1"], seed=0, bundle=bundle))
    return method, bundle


def weights(model):
    return {n: t.detach().clone() for n, t in model.state_dict().items() if t.is_floating_point()}


def fake_finetune(method, seed):
    """Stand-in for training: move every floating-point tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in method.model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=g))


def run_task(method, stage, seed):
    method.begin_task(stage, None)
    fake_finetune(method, seed)
    tuned = weights(method.model)
    method.end_task(stage)
    return tuned


def assert_equal(a, b):
    assert set(a) == set(b)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_defaults():
    method = create_method("wise_ft")
    assert (method.options.coefficient, method.options.reference) == (0.5, "previous")


@pytest.mark.parametrize("reference", ["previous", "initial"])
def test_endpoints_are_exact(tiny_clip_dir, reference):
    zero, _ = setup_method(tiny_clip_dir, coefficient=0.0, reference=reference)
    before = weights(zero.model)
    run_task(zero, STAGES[0], seed=1)
    assert_equal(weights(zero.model), before)
    one, _ = setup_method(tiny_clip_dir, coefficient=1.0, reference=reference)
    tuned = run_task(one, STAGES[0], seed=1)
    assert_equal(weights(one.model), tuned)
    half, _ = setup_method(tiny_clip_dir, coefficient=0.25, reference=reference)
    tuned = run_task(half, STAGES[0], seed=1)
    for name, value in weights(half.model).items():
        torch.testing.assert_close(value, 0.75 * before[name] + 0.25 * tuned[name])


@pytest.mark.parametrize("reference", ["previous", "initial"])
def test_reference_of_the_second_task(tiny_clip_dir, reference):
    method, _ = setup_method(tiny_clip_dir, coefficient=0.0, reference=reference)
    initial = weights(method.model)
    method.options.coefficient = 1.0
    after_first = run_task(method, STAGES[0], seed=1)
    method.options.coefficient = 0.0
    run_task(method, STAGES[1], seed=2)
    assert_equal(weights(method.model), initial if reference == "initial" else after_first)


def test_resume_keeps_the_initial_weights(tmp_path, tiny_clip_dir):
    method, bundle = setup_method(tiny_clip_dir, reference="initial")
    initial = weights(method.model)
    run_task(method, STAGES[0], seed=1)
    path = write_stage_checkpoint(
        tmp_path, 0, ClipBundle(method.evaluation_model(), bundle.tokenizer, bundle.preprocess, bundle.source), method.state_dict(), {"next_stage": 1, "stages": []}
    )
    state, _ = read_stage_checkpoint(path)
    resumed, _ = setup_method(path / "model", reference="initial")
    resumed.load_state_dict(state)
    assert_equal(resumed.initial, initial)
    run_task(method, STAGES[1], seed=2)
    run_task(resumed, STAGES[1], seed=2)
    assert_equal(weights(resumed.model), weights(method.model))


def test_state(tiny_clip_dir):
    previous, _ = setup_method(tiny_clip_dir)
    assert previous.state_dict() == {}
    previous.load_state_dict({})
    initial, _ = setup_method(tiny_clip_dir, reference="initial")
    assert "visual_projection.weight" in initial.state_dict()["initial"]  # parameter names as they are
    with pytest.raises(ValueError):
        initial.load_state_dict({})
