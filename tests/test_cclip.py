"""C-CLIP and the LoRA baseline: integration, trainable parameters, CKC, the teacher cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from peft.helpers import rescale_adapter_scale
from rich.console import Console

from conftest import CAPTIONS, tiny_data
from vlcl.config import TrainConfig
from vlcl.engine.train import train_on
from vlcl.losses import ckc_loss, clip_loss
from vlcl.methods import RunContext, Stage, create_method
from vlcl.models import encode_images, encode_texts, load_clip
from vlcl.settings import make_batch
from vlcl.models.lora import lora_parameters

STAGE = Stage(0, "t0", (0,))


def setup_method(name, tiny_clip_dir, **options):
    bundle = load_clip(str(tiny_clip_dir))
    method = create_method(name, options)
    method.setup(bundle.model, RunContext(["t0"], seed=0, bundle=bundle))
    return method, bundle


def embeddings(model, bundle, data):
    pixels = bundle.preprocess.normalize_uint8(data.images)
    return encode_images(model, pixels), encode_texts(model, bundle.tokenizer, CAPTIONS)


def test_integration_is_exact(tiny_clip_dir):
    method, bundle = setup_method("lora", tiny_clip_dir, integration=0.5)
    data = tiny_data(32)
    method.begin_task(STAGE, data)
    torch.manual_seed(1)
    with torch.no_grad():  # a non-zero adapter, as after training
        for _, param in lora_parameters(method.model):
            param.normal_(0, 0.2)
    with rescale_adapter_scale(method.peft, 0.5):
        expected = embeddings(method.model, bundle, data)
    method.end_task(STAGE)
    merged = embeddings(method.model, bundle, data)
    assert not any("lora" in n for n, _ in method.model.named_parameters())
    for a, b in zip(expected, merged):
        assert (a - b).abs().max().item() <= 1e-5
    plain = load_clip(str(tiny_clip_dir)).model
    assert set(method.model.state_dict()) == set(plain.state_dict())  # a plain CLIPModel again


@pytest.mark.parametrize("extras", [False, True])
def test_only_lora_projector_and_chosen_extras_get_gradients(tiny_clip_dir, extras):
    method, bundle = setup_method("cclip", tiny_clip_dir, train_extras=extras)
    data = tiny_data(32)
    method.begin_task(STAGE, data)
    method.train()
    batch = make_batch(bundle, data, torch.arange(8), torch.zeros(8, dtype=torch.long))
    method.training_loss(batch, 0).loss.backward()
    with_grad = {n for n, p in method.model.named_parameters() if p.grad is not None}
    lora = {n for n, _ in lora_parameters(method.model)}
    assert lora and lora <= with_grad
    # B starts at zero, so at the first step only B (and, through it, nothing of A yet) moves.
    assert all(p.grad.abs().sum() > 0 for n, p in lora_parameters(method.model) if "lora_B" in n)
    others = with_grad - lora
    if extras:
        assert {"logit_scale", "text_projection.weight", "visual_projection.weight"} <= others
        assert not any("patch_embedding" in n or "base_layer" in n for n in others)
    else:
        assert others == set()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.projector.parameters())


def losses_of(tiny_clip_dir, cache):
    method, bundle = setup_method("cclip", tiny_clip_dir, cache_teacher=cache)
    data = tiny_data(32)
    torch.manual_seed(0)
    method.begin_task(STAGE, data)
    stats = train_on(method, bundle, data, "t0", TrainConfig(epochs=3, batch_size=8, lr=1e-3), seed=5, console=Console(quiet=True))
    return stats["losses"]


def test_cached_and_uncached_teacher_give_the_same_losses(tiny_clip_dir):
    cached, uncached = losses_of(tiny_clip_dir, True), losses_of(tiny_clip_dir, False)
    assert len(cached) == 12
    assert cached == pytest.approx(uncached, abs=1e-5)
    assert cached[0] != cached[-1]


def direct_eq5(h_img, h_txt, z_img, z_txt, scale):
    """Eq. 5 written out with loops: -1/(2N) sum_i [log p(z_i | h_i) + log p(h_i | z_i)], averaged."""
    h = [F.normalize(v, dim=0) for v in torch.cat([h_img, h_txt])]
    z = [F.normalize(v, dim=0) for v in torch.cat([z_img, z_txt])]
    n2 = len(h)
    total = 0.0
    for i in range(n2):
        row = [scale * float(h[i] @ z[j]) for j in range(n2)]
        col = [scale * float(z[i] @ h[j]) for j in range(n2)]
        total += (row[i] - math.log(sum(math.exp(v) for v in row))) + (col[i] - math.log(sum(math.exp(v) for v in col)))
    return -total / (2 * n2)


def test_ckc_loss_matches_eq5():
    g = torch.Generator().manual_seed(0)
    h_img, h_txt, z_img, z_txt = (torch.randn(5, 7, generator=g) for _ in range(4))
    for scale in (1.0, 14.3):
        assert ckc_loss(h_img, h_txt, z_img, z_txt, scale).item() == pytest.approx(direct_eq5(h_img, h_txt, z_img, z_txt, scale), rel=1e-5)


def test_ckc_gradients_reach_the_projector_not_the_teacher():
    g = torch.Generator().manual_seed(0)
    projector = torch.nn.Linear(6, 6)
    new_img, new_txt = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    old_img, old_txt = torch.randn(4, 6, generator=g, requires_grad=True), torch.randn(4, 6, generator=g)
    ckc_loss(projector(new_img), projector(new_txt), old_img, old_txt, 10.0).backward()
    assert projector.weight.grad is not None and projector.weight.grad.abs().sum() > 0
    assert old_img.grad is None


def test_clip_loss_is_symmetric_infonce():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    logits = 20.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    expected = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.t(), torch.arange(6))) / 2
    assert clip_loss(img, txt, 20.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cclip_checkpoint_is_a_plain_clip(tmp_path, tiny_clip_dir):
    from transformers import CLIPModel

    method, bundle = setup_method("cclip", tiny_clip_dir)
    data = tiny_data(32)
    method.begin_task(STAGE, data)
    train_on(method, bundle, data, "t0", TrainConfig(epochs=1, batch_size=8, lr=1e-3), seed=0, console=Console(quiet=True))
    method.end_task(STAGE)
    method.evaluation_model().save_pretrained(tmp_path)
    reloaded = CLIPModel.from_pretrained(tmp_path)
    assert set(reloaded.state_dict()) == set(method.model.state_dict())
    assert method.state_dict() == {}
