import pytest
import torch

from vlcl.config import TrainConfig
from vlcl.engine.optim import build_optimizer, warmup_cosine
from vlcl.methods import split_parameters


def test_warmup_then_cosine():
    values = [warmup_cosine(s, 100, 10, 0.0) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert warmup_cosine(99, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 89 / 90)).item()))


def test_vision_and_text_learning_rates(tiny_clip_dir):
    from vlcl.models import load_clip

    model = load_clip(str(tiny_clip_dir)).model
    optimizer = build_optimizer(split_parameters(model), TrainConfig(lr=1e-4, text_lr=1e-3, weight_decay=0.2))
    by_id = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert by_id[id(model.text_projection.weight)]["lr"] == 1e-3
    assert by_id[id(model.visual_projection.weight)]["lr"] == 1e-4
    assert by_id[id(model.visual_projection.weight)]["weight_decay"] == 0.2
    assert by_id[id(model.logit_scale)]["weight_decay"] == 0.0
    assert by_id[id(model.text_model.embeddings.token_embedding.weight)]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
