"""LaneDropout: PEFT's LoRA dropout with a cheaper CPU mask, the same distribution."""

import pytest
import torch

from vlcl.models import load_clip
from vlcl.models.lora import LaneDropout, add_lora, lora_dropout_slots


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keeps_one_minus_p_of_elements_in_every_lane_and_preserves_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(4000, 1000)
    y = LaneDropout(p).train()(x)
    kept = y > 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=2e-3)
    for lane in range(4):  # each 16-bit lane of the random words is a fair coin
        assert kept.flatten()[lane::4].float().mean().item() == pytest.approx(1 - p, abs=4e-3)
    assert y.mean().item() == pytest.approx(1.0, abs=4e-3)
    assert torch.allclose(y[kept], torch.full_like(y[kept], 65536 / (65536 - round(p * 65536))))


def test_masks_are_independent_between_neighbours_and_calls():
    torch.manual_seed(1)
    dropout = LaneDropout(0.5).train()
    a = (dropout(torch.ones(200_000)) > 0).float()
    b = (dropout(torch.ones(200_000)) > 0).float()
    assert abs(torch.corrcoef(torch.stack([a[:-1], a[1:]]))[0, 1].item()) < 0.01
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.01


def test_reproducible_from_the_torch_seed_identity_in_eval_and_gradient_is_the_mask():
    x = torch.randn(33, 7, requires_grad=True)
    dropout = LaneDropout(0.3).train()
    torch.manual_seed(5)
    first = dropout(x)
    torch.manual_seed(5)
    assert torch.equal(dropout(x), first)
    first.sum().backward()
    assert torch.equal(x.grad, (first != 0).float() * (65536 / (65536 - round(0.3 * 65536))))
    assert torch.equal(dropout.eval()(x), x)
    assert torch.equal(LaneDropout(0.0).train()(x), x)


def test_add_lora_uses_lane_dropout_everywhere(tiny_clip_dir):
    model = load_clip(str(tiny_clip_dir)).model
    peft = add_lora(model, rank=4, alpha=8, dropout=0.1, target_modules=["q_proj", "fc1"])
    lora_dropouts = [dropouts[key] for dropouts, key in lora_dropout_slots(peft)]
    layers = model.config.vision_config.num_hidden_layers + model.config.text_config.num_hidden_layers
    assert len(lora_dropouts) == 2 * layers  # q_proj and fc1 of every block of both towers
    assert all(type(d) is LaneDropout and d.p == 0.1 for d in lora_dropouts)
