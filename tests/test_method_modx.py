"""Mod-X: the selective Spatial Alignment term next to the CLIP loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import vlcl.methods.modx  # noqa: F401  (registers the method)
from conftest import tiny_data
from vlcl.methods import RunContext, Stage, create_method
from vlcl.methods.modx import spatial_alignment_loss
from vlcl.models import load_clip
from vlcl.settings import make_batch

STAGE = Stage(0, "t0", (0,))


def setup_modx(tiny_clip_dir, **options):
    bundle = load_clip(str(tiny_clip_dir))
    method = create_method("modx", options)
    method.setup(bundle.model, RunContext(["t0"], seed=0, bundle=bundle))
    return method, bundle


def batch_of(bundle, data, n=8):
    return make_batch(bundle, data, torch.arange(n), torch.arange(n))


def kl(p_logits, q_logits):
    p, q = [math.exp(v) for v in p_logits], [math.exp(v) for v in q_logits]
    zp, zq = sum(p), sum(q)
    return sum(a / zp * math.log((a / zp) / (b / zq)) for a, b in zip(p, q))


# A hand-built 3x3 case: texts are the unit vectors, so row i of the old image->text matrix is
# old image i itself. Image 1 is closest to text 2: the old model is wrong on row 1 only.
OLD_TEXT = torch.eye(3)
OLD_IMAGE = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 1.0], [0.0, 0.0, 1.0]])


def new_features(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g)


def test_selection_rule_on_a_hand_built_3x3_case():
    new_image, new_text = new_features()
    old = F.normalize(OLD_IMAGE, dim=-1) @ OLD_TEXT.t()
    assert old.argmax(1).tolist() == [0, 2, 2] and old.t().argmax(1).tolist() == [0, 1, 2]
    new = F.normalize(new_image, dim=-1) @ F.normalize(new_text, dim=-1).t()
    rows_it = [kl(old[i].tolist(), new[i].tolist()) for i in range(3)]
    rows_ti = [kl(old.t()[i].tolist(), new.t()[i].tolist()) for i in range(3)]

    loss, kept = spatial_alignment_loss(new_image, new_text, OLD_IMAGE, OLD_TEXT)
    assert loss.item() == pytest.approx((rows_it[0] + rows_it[2] + sum(rows_ti)) / 2, rel=1e-5)  # row 1 of I->T dropped
    assert kept.item() == pytest.approx(5 / 6)
    everything, kept_all = spatial_alignment_loss(new_image, new_text, OLD_IMAGE, OLD_TEXT, select=False)
    assert everything.item() == pytest.approx((sum(rows_it) + sum(rows_ti)) / 2, rel=1e-5)
    assert kept_all.item() == 1.0
    mean, _ = spatial_alignment_loss(new_image, new_text, OLD_IMAGE, OLD_TEXT, reduction="mean")
    assert mean.item() == pytest.approx(loss.item() / 3, rel=1e-6)
    scaled, _ = spatial_alignment_loss(new_image, new_text, OLD_IMAGE, OLD_TEXT, 0.1)  # cos / tau
    assert not math.isclose(scaled.item(), loss.item())


def replaced_rows_reference(new_image, new_text, old_image, old_text):
    """The rule as the authors state it: rows the old model gets wrong are replaced by the new model's row."""
    new = F.normalize(new_image, dim=-1) @ F.normalize(new_text, dim=-1).t()
    old = F.normalize(old_image, dim=-1) @ F.normalize(old_text, dim=-1).t()
    total = 0.0
    for o, m in ((old, new), (old.t(), new.t())):
        wrong = o.argmax(1) != torch.arange(len(o))
        target = torch.where(wrong[:, None], m, o)  # the replaced rows carry the new model's graph
        total = total + F.kl_div(m.log_softmax(-1), target.softmax(-1), reduction="sum")
    return total / 2


def test_dropping_wrong_rows_equals_replacing_them_with_the_new_rows_value_and_gradient():
    new_image, new_text = new_features(3)
    a_img, a_txt = new_image.clone().requires_grad_(), new_text.clone().requires_grad_()
    b_img, b_txt = new_image.clone().requires_grad_(), new_text.clone().requires_grad_()
    ours, _ = spatial_alignment_loss(a_img, a_txt, OLD_IMAGE, OLD_TEXT)
    theirs = replaced_rows_reference(b_img, b_txt, OLD_IMAGE, OLD_TEXT)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    ours.backward()
    theirs.backward()
    assert torch.allclose(a_img.grad, b_img.grad, atol=1e-6) and torch.allclose(a_txt.grad, b_txt.grad, atol=1e-6)


def test_alignment_is_zero_when_the_student_equals_the_old_model(tiny_clip_dir):
    method, bundle = setup_modx(tiny_clip_dir)
    data = tiny_data()
    method.begin_task(STAGE, data)
    output = method.training_loss(batch_of(bundle, data), 0)
    assert output.logs["align"] == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    old_image, old_text = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    loss, _ = spatial_alignment_loss(old_image, old_text, old_image, old_text, select=False)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("cache", [True, False])
def test_gradients_flow_only_into_the_student(tiny_clip_dir, cache):
    method, bundle = setup_modx(tiny_clip_dir, cache_teacher=cache, select=False, alignment_temperature=0.05)
    data = tiny_data()
    method.begin_task(STAGE, data)
    with torch.no_grad():  # move the student away from the old model so the alignment has a gradient
        g = torch.Generator().manual_seed(0)
        method.model.visual_projection.weight.add_(torch.randn(method.model.visual_projection.weight.shape, generator=g))
    method.train()
    output = method.training_loss(batch_of(bundle, data), 0)
    assert output.logs["align"] > 0
    output.loss.backward()
    assert all(p.grad is not None for p in (method.model.visual_projection.weight, method.model.text_projection.weight))
    if cache:
        assert method.teacher.model is None
        assert not method.teacher.cache.images.requires_grad and not method.teacher.cache.texts.requires_grad
    else:
        assert all(not p.requires_grad and p.grad is None for p in method.teacher.model.parameters())


def test_cached_and_uncached_old_model_give_the_same_loss(tiny_clip_dir):
    data = tiny_data()
    losses = []
    for cache in (True, False):
        method, bundle = setup_modx(tiny_clip_dir, cache_teacher=cache)
        method.begin_task(STAGE, data)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            method.model.visual_projection.weight.add_(torch.randn(method.model.visual_projection.weight.shape, generator=g))
        losses.append(method.training_loss(batch_of(bundle, data), 0).loss.item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_the_old_model_is_released_at_the_end_of_the_task_and_no_state_is_kept(tiny_clip_dir):
    method, _ = setup_modx(tiny_clip_dir)
    method.begin_task(STAGE, tiny_data())
    method.end_task(STAGE)
    assert method.teacher is None
    assert method.state_dict() == {}
