"""MulKI (reconstruction): prototypes, the four stages' terms, teacher weights, weight averaging, state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

import vlcl.methods.mulki  # noqa: F401  (registers the method)
from conftest import tiny_data
from vlcl.config import TrainConfig
from vlcl.engine.checkpoint import merge_state, split_state
from vlcl.engine.train import train_on
from vlcl.methods import RunContext, Stage, create_method
from vlcl.methods.mulki import (
    Prototypes,
    alignment_terms,
    match_agreement,
    pair_points,
    prototype_kl,
    relation_mse,
    relation_terms,
    spherical_kmeans,
    teacher_weights,
)
from vlcl.models import load_clip
from vlcl.settings import make_batch

STAGES = [Stage(0, "t0", (0,)), Stage(1, "t1", (1,))]
SMALL = {"prototypes": 4}


def setup_mulki(tiny_clip_dir, seed=0, **options):
    bundle = load_clip(str(tiny_clip_dir))
    method = create_method("mulki", {**SMALL, **options})
    method.setup(bundle.model, RunContext(["t0", "t1"], seed=seed, bundle=bundle))
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


def perturb(model, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (model.visual_projection.weight, model.text_projection.weight):
            p.add_(scale * torch.randn(p.shape, generator=g))


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def batch_of(bundle, data, n=8):
    return make_batch(bundle, data, torch.arange(n), torch.arange(n))


# -- pure functions ------------------------------------------------------------------------


def test_defaults():
    opts = create_method("mulki").options
    assert (opts.prototypes, opts.align_weight, opts.align_temperature, opts.relation_weight) == (32, 10.0, 2.0, 100.0)
    assert (opts.teachers, opts.teacher_temperature, opts.ensemble_every, opts.inter_task_weight) == ("both", 1.0, 10, 0.0)


def test_teacher_weights_are_per_sample_distributions_that_favour_the_agreeing_teacher():
    images = unit(6, 8, 0)
    good = match_agreement(images, images + 0.05 * unit(6, 8, 1), 20.0)  # captions next to their images
    bad = match_agreement(images, unit(6, 8, 2), 20.0)  # unrelated captions
    assert (good > bad).all() and (good <= 0).all()
    w = teacher_weights(torch.stack([good, bad]), 1.0)
    assert w.shape == (2, 6) and (w >= 0).all()
    assert torch.allclose(w.sum(0), torch.ones(6))
    assert (w[0] > 0.5).all()
    swapped = teacher_weights(torch.stack([bad, good]), 1.0)  # the weight follows the teacher, not its position
    assert torch.allclose(swapped, w.flip(0))
    # tau_w = 1: proportional to the geometric mean of the two match probabilities
    assert torch.allclose(w[0] / w[1], (good - bad).exp(), rtol=1e-4)
    assert torch.allclose(teacher_weights(torch.stack([good, bad]), 1e6), torch.full((2, 6), 0.5), atol=1e-4)


def test_match_agreement_is_the_mean_log_probability_of_the_correct_match():
    images, texts = unit(5, 8, 3), unit(5, 8, 4)
    logits = 10.0 * images @ texts.t()
    expected = (logits.log_softmax(1).diagonal() + logits.t().log_softmax(1).diagonal()) / 2
    assert torch.allclose(match_agreement(3 * images, texts, 10.0), expected, atol=1e-6)  # scale-invariant inputs


def test_prototype_kl_and_relation_mse_match_their_formulas():
    student, teacher, protos = unit(4, 8, 5), unit(4, 8, 6), unit(3, 8, 7)
    s, T = 10.0, 2.0
    p, q = F.softmax(s * teacher @ protos.t() / T, -1), F.softmax(s * student @ protos.t() / T, -1)
    expected = T**2 * (p * (p.log() - q.log())).sum(-1)
    assert torch.allclose(prototype_kl(student, teacher, protos, s, T), expected, atol=1e-5)
    gaps = student @ protos.t() - teacher @ protos.t()
    assert torch.allclose(relation_mse(student, teacher, protos), (gaps**2).mean(-1), atol=1e-6)


def test_stage_terms_are_zero_for_equal_features_and_positive_otherwise():
    images, texts = unit(6, 8, 8), unit(6, 8, 9)
    protos = Prototypes(unit(4, 8, 10), unit(4, 8, 11))
    assert alignment_terms(images, texts, images, texts, protos, 20.0, 2.0).abs().max() < 1e-6
    assert all(t.abs().max() == 0 for t in relation_terms(images, texts, images, texts, protos))
    moved = F.normalize(images + 0.5 * unit(6, 8, 12), dim=-1)
    assert (alignment_terms(moved, texts, images, texts, protos, 20.0, 2.0) > 0).all()
    intra, inter = relation_terms(moved, texts, images, texts, protos)
    assert (intra > 0).all() and (inter > 0).all()


def test_spherical_kmeans_finds_separated_clusters_and_is_deterministic_for_a_seed():
    centres = torch.eye(6)[:3] * 5
    points = F.normalize(centres.repeat_interleave(10, 0) + 0.3 * unit(30, 6, 13), dim=-1)
    runs = [spherical_kmeans(points, 3, 10, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1])
    for assignment in runs:  # each true group is one cluster, and the three are distinct
        groups = assignment.reshape(3, 10)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 3
    assert spherical_kmeans(points, 50, 3, torch.Generator().manual_seed(0)).max() < 30  # K capped at N


def test_pair_points_are_unit_norm():
    assert torch.allclose(pair_points(3 * unit(5, 8, 14), unit(5, 8, 15)).norm(dim=1), torch.ones(5), atol=1e-6)


# -- the method on the tiny CLIP -------------------------------------------------------------


def test_prototypes_are_deterministic_for_a_seed_and_stage_and_normalised(tiny_clip_dir):
    data = tiny_data()
    a, _ = setup_mulki(tiny_clip_dir, kmeans_iterations=0)
    b, _ = setup_mulki(tiny_clip_dir, kmeans_iterations=0)
    c, _ = setup_mulki(tiny_clip_dir, seed=1, kmeans_iterations=0)
    for m in (a, b, c):
        m.begin_task(STAGES[0], data)
    pa, pb, pc = a.prototypes["initial"], b.prototypes["initial"], c.prototypes["initial"]
    assert pa.images.shape[1] == pa.texts.shape[1] and 1 <= len(pa.images) == len(pa.texts) <= 4
    assert torch.allclose(pa.images.norm(dim=1), torch.ones(len(pa.images)), atol=1e-5)
    assert torch.equal(pa.images, pb.images) and torch.equal(pa.texts, pb.texts)
    assert pa.images.shape != pc.images.shape or not torch.equal(pa.images, pc.images)  # another seed, other picks
    assert a.teachers["initial"] is a.teachers["previous"]  # task 1: both teachers are the pre-trained model


def test_distillation_is_zero_when_the_student_equals_both_teachers(tiny_clip_dir):
    method, bundle = setup_mulki(tiny_clip_dir)
    data = tiny_data()
    method.begin_task(STAGES[0], data)
    method.train()
    batch = batch_of(bundle, data)
    start = method.training_loss(batch, 0)
    assert abs(start.logs["align"]) < 1e-6 and start.logs["relation"] < 1e-10
    assert start.loss.item() == pytest.approx(start.logs["clip"], abs=1e-5)
    assert start.logs["w_initial"] == pytest.approx(0.5) and start.logs["w_previous"] == pytest.approx(0.5)
    perturb(method.model)
    changed = method.training_loss(batch, 1)
    assert changed.logs["align"] > 1e-4 and changed.logs["intra"] > 0 and changed.logs["inter"] > 0
    expected = changed.logs["clip"] + 10.0 * changed.logs["align"] + 100.0 * changed.logs["relation"]
    assert changed.loss.item() == pytest.approx(expected, rel=1e-5)
    changed.loss.backward()
    assert method.model.visual_projection.weight.grad.abs().sum() > 0
    assert method.model.text_projection.weight.grad.abs().sum() > 0


def test_two_teachers_are_weighted_per_sample(tiny_clip_dir):
    method, bundle = setup_mulki(tiny_clip_dir, kmeans_iterations=2)
    perturb(method.model, seed=1)  # as if task 1 had been trained: theta_1 != theta_0
    data = tiny_data()
    method.begin_task(STAGES[1], data)
    assert method.teachers["initial"] is not method.teachers["previous"]
    perturb(method.model, scale=0.2, seed=2)  # the student moves away from both
    batch = batch_of(bundle, data)
    images, texts = method.encode(batch)
    out = method.distillation(images, texts, batch)
    u, v = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    aligns, agreements = [], []
    for name in ("initial", "previous"):
        teacher, protos = method.teachers[name], method.prototypes[name]
        tu, tv = (F.normalize(x, dim=-1) for x in teacher.features(batch))
        aligns.append(alignment_terms(u, v, tu, tv, protos, teacher.logit_scale, 2.0))
        agreements.append(match_agreement(tu, tv, teacher.logit_scale))
    w = out["weights"]
    assert torch.allclose(w, F.softmax(torch.stack(agreements), dim=0))
    assert not torch.allclose(w[0], w[1])  # the teachers disagree on these pairs
    assert out["align"].item() == pytest.approx((w * torch.stack(aligns)).sum(0).mean().item(), rel=1e-5)
    single, _ = setup_mulki(tiny_clip_dir, teachers="previous")
    perturb(single.model, seed=1)
    single.begin_task(STAGES[1], data)
    assert list(single.teachers) == ["previous"]
    assert single.training_loss(batch, 0).logs["align"] < 1e-6  # the student is the previous model


def test_weight_average_and_inter_task_interpolation(tiny_clip_dir):
    method, _ = setup_mulki(tiny_clip_dir, ensemble_every=2, inter_task_weight=0.25)
    start = params(method.model)
    method.begin_task(STAGES[0], tiny_data())
    snapshots = [random_snapshot(method.model, s) for s in range(4)]
    for step, snap in enumerate(snapshots):
        set_params(method.model, snap)
        method.after_optimizer_step(step)
    method.end_task(STAGES[0])
    members = [start, snapshots[0], snapshots[2], snapshots[3]]  # start, steps 0 and 2, then the final weights
    for name, param in method.model.named_parameters():
        average = torch.stack([m[name] for m in members]).mean(0)
        assert torch.allclose(param, 0.75 * average + 0.25 * start[name], atol=1e-5), name
    plain, _ = setup_mulki(tiny_clip_dir, ensemble_every=0)
    plain.begin_task(STAGES[0], tiny_data())
    set_params(plain.model, snapshots[3])
    plain.after_optimizer_step(0)
    plain.end_task(STAGES[0])
    assert all(torch.equal(p, snapshots[3][n]) for n, p in plain.model.named_parameters())  # both connections off


def run_stage(method, bundle, stage, data):
    method.begin_task(stage, data)
    stats = train_on(
        method,
        bundle,
        data,
        stage.name,
        TrainConfig(epochs=1, batch_size=8, lr=1e-3),
        seed=stage.index,
        console=Console(quiet=True),
    )
    method.end_task(stage)
    return stats


def test_two_task_run_and_the_state_round_trip(tiny_clip_dir):
    first, bundle = setup_mulki(tiny_clip_dir, ensemble_every=1)
    initial = params(first.model)
    tasks = [tiny_data(seed=0), tiny_data(seed=1)]
    stats = run_stage(first, bundle, STAGES[0], tasks[0])
    assert stats["steps"] == 2 and all(np.isfinite(stats["losses"]))
    assert first.ensemble_count == 3 and first.teachers == {}
    assert any(not torch.equal(p, initial[n]) for n, p in first.model.named_parameters())

    state = first.state_dict()
    assert set(state["initial"]) == {name for name, _ in first.model.named_parameters()}  # parameter names as they are
    tensors, values = split_state(state)  # what write_stage_checkpoint stores
    resumed, _ = setup_mulki(tiny_clip_dir, ensemble_every=1)
    set_params(resumed.model, params(first.model))  # the engine reloads the checkpoint's (trained) model
    resumed.load_state_dict(merge_state(tensors, values))
    assert all(torch.equal(resumed.initial[n], initial[n]) for n in initial)

    batch = batch_of(bundle, tasks[1])
    losses = []
    for method in (first, resumed):
        method.begin_task(STAGES[1], tasks[1])
        method.train()
        losses.append(method.training_loss(batch, 0))
    assert torch.equal(first.prototypes["initial"].images, resumed.prototypes["initial"].images)
    assert torch.equal(first.teachers["initial"].cache.texts, resumed.teachers["initial"].cache.texts)
    assert losses[0].logs == losses[1].logs
    assert losses[0].logs["align"] > 0 and not math.isclose(losses[0].logs["w_initial"], 0.5)
    for method in (first, resumed):
        method.end_task(STAGES[1])
    stats = run_stage(first, bundle, STAGES[1], tasks[1])
    assert all(np.isfinite(stats["losses"]))


def test_load_state_dict_rejects_a_state_without_initial_weights(tiny_clip_dir):
    method, _ = setup_mulki(tiny_clip_dir)
    with pytest.raises(ValueError, match="initial weights"):
        method.load_state_dict({})
