"""ZSCL: weight ensemble, distillation from the initial model, L2 pull, reference data, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

import vlcl.methods.zscl  # noqa: F401  (registers the method)
from conftest import tiny_data
from vlcl.config import TrainConfig
from vlcl.engine.checkpoint import merge_state, split_state
from vlcl.engine.train import train_on
from vlcl.methods import RunContext, Stage, create_method
from vlcl.methods.zscl import distillation_kl
from vlcl.models import load_clip

STAGE = Stage(0, "t0", (0,))
SMALL = {"reference_images": 12, "reference_batch_size": 6}


def setup_zscl(tiny_clip_dir, **options):
    bundle = load_clip(str(tiny_clip_dir))
    method = create_method("zscl", {**SMALL, **options})
    method.setup(bundle.model, RunContext(["t0"], seed=0, bundle=bundle))
    return method, bundle


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def set_params(model, values):
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(values[n])


def random_snapshot(model, seed):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}


@pytest.mark.parametrize("include_start", [False, True])
def test_weight_ensemble_is_the_running_mean_of_its_snapshots(tiny_clip_dir, include_start):
    method, _ = setup_zscl(tiny_clip_dir, ensemble_every=1, ensemble_include_start=include_start)
    start = params(method.model)
    method.begin_task(STAGE, tiny_data())
    snapshots = [random_snapshot(method.model, s) for s in range(3)]
    for step, snap in enumerate(snapshots):
        set_params(method.model, snap)  # the weights after optimiser step `step`
        method.after_optimizer_step(step)
    method.end_task(STAGE)
    members = ([start] if include_start else []) + snapshots
    assert method.ensemble_count == len(members)
    for name, param in method.model.named_parameters():
        expected = torch.stack([m[name] for m in members]).mean(0)
        assert torch.allclose(param, expected, atol=1e-5), name


def test_ensemble_every_k_steps_and_the_final_weights(tiny_clip_dir):
    method, _ = setup_zscl(tiny_clip_dir, ensemble_every=2)
    start = params(method.model)
    method.begin_task(STAGE, tiny_data())
    snapshots = [random_snapshot(method.model, s) for s in range(4)]
    for step, snap in enumerate(snapshots):
        set_params(method.model, snap)
        method.after_optimizer_step(step)
    method.end_task(STAGE)
    members = [start, snapshots[0], snapshots[2], snapshots[3]]  # steps 0 and 2, then the final weights
    name = "visual_projection.weight"
    assert torch.allclose(method.model.get_parameter(name), torch.stack([m[name] for m in members]).mean(0), atol=1e-5)


@pytest.mark.parametrize("text_features", ["initial", "student"])
def test_distillation_is_zero_at_the_initial_model_and_positive_after_a_change(tiny_clip_dir, text_features):
    method, _ = setup_zscl(tiny_clip_dir, text_features=text_features, reference_sentences_per_step=5)
    method.begin_task(STAGE, tiny_data())
    assert method.distillation_loss().item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        method.model.visual_projection.weight.add_(0.5 * torch.randn_like(method.model.visual_projection.weight))
    assert method.distillation_loss().item() > 1e-4


def test_distillation_kl_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    p, q = torch.softmax(t / 2, -1), torch.softmax(s / 2, -1)
    expected = 4 * (p * (p.log() - q.log())).sum(-1).mean()
    assert distillation_kl(t, s, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)
    # same gradient as the authors' soft cross-entropy T^2 * CE(s / T, softmax(t / T))
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    distillation_kl(t, s1, 2.0).backward()
    (4 * torch.nn.functional.cross_entropy(s2 / 2, p)).backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-6)


def test_distillation_gradients_do_not_reach_the_text_tower_with_initial_text_features(tiny_clip_dir):
    method, _ = setup_zscl(tiny_clip_dir, text_features="initial")
    method.begin_task(STAGE, tiny_data())
    method.distillation_loss()  # at the initial weights the KL is 0: perturb to get a gradient
    with torch.no_grad():
        method.model.visual_projection.weight.mul_(1.5).add_(0.3)
    method.distillation_loss().backward()
    assert method.model.visual_projection.weight.grad.abs().sum() > 0
    assert method.model.text_projection.weight.grad is None


@pytest.mark.parametrize("anchor", ["task_start", "initial"])
def test_l2_pull_is_zero_at_the_anchor_and_the_sum_of_squares_after_a_change(tiny_clip_dir, anchor):
    method, _ = setup_zscl(tiny_clip_dir, l2_anchor=anchor)
    method.begin_task(STAGE, tiny_data())
    assert method.l2_penalty().item() == 0.0
    delta = 0.01 * torch.randn_like(method.model.text_projection.weight)
    with torch.no_grad():
        method.model.text_projection.weight.add_(delta)
    assert method.l2_penalty().item() == pytest.approx((delta**2).sum().item(), rel=1e-4)


def test_l2_anchor_is_the_task_start_or_the_initial_weights(tiny_clip_dir):
    for anchor, expect_zero in (("task_start", True), ("initial", False)):
        method, _ = setup_zscl(tiny_clip_dir, l2_anchor=anchor)
        with torch.no_grad():  # as if a previous task had moved the model
            method.model.visual_projection.weight.add_(0.1)
        method.begin_task(Stage(1, "t1", (1,)), tiny_data())
        assert (method.l2_penalty().item() == 0.0) is expect_zero


def test_state_dict_round_trips_through_a_checkpoint_and_restores_the_teacher(tiny_clip_dir):
    first, _ = setup_zscl(tiny_clip_dir, ensemble_every=1)
    first.begin_task(STAGE, tiny_data())
    set_params(first.model, random_snapshot(first.model, 7))
    first.after_optimizer_step(0)
    first.end_task(STAGE)
    tensors, values = split_state(first.state_dict())  # what write_stage_checkpoint stores
    state = merge_state(tensors, values)

    resumed, _ = setup_zscl(tiny_clip_dir, ensemble_every=1)
    set_params(resumed.model, params(first.model))  # the engine reloads the checkpoint's (trained) model
    resumed.load_state_dict(state)
    assert resumed.ensemble_count == first.ensemble_count == 2
    assert set(resumed.initial) == set(first.initial)
    assert all(torch.equal(resumed.initial[n], first.initial[n]) for n in first.initial)
    resumed.begin_task(Stage(1, "t1", (1,)), tiny_data())
    first.begin_task(Stage(1, "t1", (1,)), tiny_data())
    assert torch.allclose(resumed.features.images, first.features.images, atol=1e-6)  # teacher = initial model
    assert torch.allclose(resumed.features.texts, first.features.texts, atol=1e-6)
    assert resumed.distillation_loss().item() == pytest.approx(first.distillation_loss().item(), rel=1e-5)


def test_load_state_dict_rejects_a_state_without_initial_weights(tiny_clip_dir):
    method, _ = setup_zscl(tiny_clip_dir)
    with pytest.raises(ValueError, match="initial weights"):
        method.load_state_dict({})


def test_embedded_reference_is_deterministic_and_sized(tiny_clip_dir):
    a, _ = setup_zscl(tiny_clip_dir)
    b, _ = setup_zscl(tiny_clip_dir)
    assert a.reference.images.shape == (12, 16, 16, 3)
    assert len(a.reference.sentences) == 12
    assert np.array_equal(a.reference.images, b.reference.images) and a.reference.sentences == b.reference.sentences


def test_folder_reference_with_a_missing_path_names_the_path(tiny_clip_dir, tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("a red circle\n\na blue square\n")
    missing_dir = tmp_path / "no_such_images"
    with pytest.raises(FileNotFoundError, match="no_such_images"):
        setup_zscl(tiny_clip_dir, reference="folder", reference_dir=str(missing_dir), reference_sentences=str(sentences))
    images = tmp_path / "images"
    images.mkdir()
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        setup_zscl(tiny_clip_dir, reference="folder", reference_dir=str(images), reference_sentences=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="reference_dir"):
        setup_zscl(tiny_clip_dir, reference="folder")


def test_folder_reference_loads_images_and_sentences(tiny_clip_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / f"{i}.png")
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("a red circle\n\na blue square\n")
    method, _ = setup_zscl(tiny_clip_dir, reference="folder", reference_dir=str(images), reference_sentences=str(sentences))
    assert tuple(method.reference.images.shape) == (3, 3, 16, 16)
    assert method.reference.sentences == ["a red circle", "a blue square"]
    method.begin_task(STAGE, tiny_data())
    assert method.distillation_loss().item() == pytest.approx(0.0, abs=1e-6)


def test_training_runs_in_the_engine_and_ends_on_the_averaged_weights(tiny_clip_dir):
    method, bundle = setup_zscl(tiny_clip_dir, ensemble_every=1)
    data = tiny_data()
    method.begin_task(STAGE, data)
    stats = train_on(method, bundle, data, "t0", TrainConfig(epochs=1, batch_size=8, lr=1e-3), seed=0, console=Console(quiet=True))
    assert stats["steps"] == 2 and all(np.isfinite(stats["losses"]))
    last = params(method.model)
    average = {n: t.clone() for n, t in method.average.items()}
    method.end_task(STAGE)
    assert method.ensemble_count == 3  # start + after step 0 + after step 1
    assert all(torch.equal(p, average[n]) for n, p in method.model.named_parameters())
    assert any(not torch.equal(p, last[n]) for n, p in method.model.named_parameters())
