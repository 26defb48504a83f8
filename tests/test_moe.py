"""MoE-Adapters' model layer: experts, task routers, noisy top-k gating, hooks into a CLIPModel, expert freezing."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from vlcl.models.encode import image_embeddings, text_embeddings
from vlcl.methods.moe_adapters.moe import AdapterExpert, MoEAdapterLayer, MoEAdapters, add_moe_adapters, moe_parameter_count

BOS, EOS = 30, 31


def tiny_clip(seed: int = 0) -> CLIPModel:
    """Two blocks per tower, towers of different widths (vision 24, text 16)."""
    torch.manual_seed(seed)
    text = dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=8, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=0)
    vision = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=8)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=12)).eval()


def inputs(n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n, 3, 16, 16, generator=g)
    ids = torch.randint(1, BOS, (n, 6), generator=g)
    ids[:, 0], ids[:, -1] = BOS, EOS
    return pixels, ids, torch.ones_like(ids)


def embed(model: CLIPModel, pixels, ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return image_embeddings(model, pixels), text_embeddings(model, ids, mask)


def randomise(adapters: MoEAdapters, seed: int = 0, std: float = 0.5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapters.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * std)


def test_routing_off_or_fresh_experts_leave_the_frozen_model_exactly() -> None:
    model = tiny_clip()
    frozen = copy.deepcopy(model)
    batch = inputs()
    expected = embed(frozen, *batch)
    adapters = add_moe_adapters(model, num_tasks=3, num_experts=4, top_k=2)
    assert adapters.active_task is None
    for got, want in zip(embed(model, *batch), expected, strict=True):
        assert torch.equal(got, want)
    adapters.set_active_task(1)  # the experts' up projections are still zero: they add exactly nothing
    for got, want in zip(embed(model, *batch), expected, strict=True):
        assert torch.equal(got, want)
    randomise(adapters)
    adapters.set_active_task(None)
    for got, want in zip(embed(model, *batch), expected, strict=True):
        assert torch.equal(got, want)


def test_an_active_task_with_trained_experts_changes_both_towers_until_removed() -> None:
    model = tiny_clip()
    batch = inputs()
    frozen_image, frozen_text = embed(model, *batch)
    adapters = add_moe_adapters(model, num_tasks=2, num_experts=4, top_k=2)
    randomise(adapters)
    adapters.set_active_task(0)
    image, text = embed(model, *batch)
    assert not torch.allclose(image, frozen_image) and not torch.allclose(text, frozen_text)
    with adapters.routing(None):
        assert torch.equal(embed(model, *batch)[0], frozen_image)
    assert adapters.active_task == 0
    adapters.remove()
    assert torch.equal(embed(model, *batch)[0], frozen_image)


def test_a_block_takes_one_mixture_only() -> None:
    model = tiny_clip()
    adapters = add_moe_adapters(model, num_tasks=1, num_experts=2, top_k=1)
    with pytest.raises(ValueError, match="already has MoE adapters"):
        add_moe_adapters(model, num_tasks=1, num_experts=2, top_k=1)
    adapters.remove()
    add_moe_adapters(model, num_tasks=1, num_experts=2, top_k=1)


def test_top_k_routing_mixes_k_experts_per_sample_from_token_0() -> None:
    torch.manual_seed(0)
    layer = MoEAdapterLayer(8, num_tasks=2, num_experts=5, top_k=2, dropout=0.0).eval()
    layer.active_task = 1
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_()
    hidden = torch.randn(6, 3, 8)
    weights, chosen = layer.route(hidden[:, 0])
    assert chosen.shape == (6, 2) and all(len(set(row.tolist())) == 2 for row in chosen)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(6))
    logits = hidden[:, 0] @ layer.routers[1].gate
    assert torch.equal(chosen, logits.topk(2, dim=1).indices)
    expected = torch.stack([sum(w * layer.experts[e](h) for w, e in zip(ws, es.tolist(), strict=True))
                            for h, ws, es in zip(hidden, weights, chosen, strict=True)])
    with torch.no_grad():
        torch.testing.assert_close(layer(hidden), expected)
    # every token of a sample follows its token 0: changing the other tokens does not change the experts
    other = hidden.clone()
    other[:, 1:] = torch.randn(6, 2, 8)
    assert torch.equal(layer.route(other[:, 0])[1], chosen)


def test_gating_noise_and_usage_counts_only_in_training() -> None:
    torch.manual_seed(0)
    layer = MoEAdapterLayer(8, num_tasks=1, num_experts=6, top_k=2, dropout=0.0)
    layer.active_task = 0
    hidden = torch.randn(64, 2, 8)
    layer.eval()
    first, second = layer.route(hidden[:, 0])[1], layer.route(hidden[:, 0])[1]
    assert torch.equal(first, second)  # zero router, no noise: the same experts every time
    with torch.no_grad():
        layer(hidden)
    assert int(layer.usage.sum()) == 0
    layer.train()
    noisy = [layer.route(hidden[:, 0])[1] for _ in range(2)]
    assert not torch.equal(noisy[0], noisy[1])  # softplus(0) + 0.01 = 0.70 noise picks experts at random
    with torch.no_grad():
        layer(hidden)
    assert int(layer.usage.sum()) == 64 * 2


def test_adapters_follow_the_models_train_and_eval_mode() -> None:
    model = tiny_clip()
    adapters = add_moe_adapters(model, num_tasks=1, num_experts=4, top_k=2)
    randomise(adapters, std=0.3)
    adapters.set_active_task(0)
    batch = inputs(8)
    assert torch.equal(embed(model, *batch)[0], embed(model, *batch)[0])
    assert not adapters.vision[0].training
    model.train()
    assert not torch.equal(embed(model, *batch)[0], embed(model, *batch)[0])
    assert adapters.vision[0].training and adapters.text[1].training


def test_text_routing_reads_the_start_token_so_it_is_the_same_for_every_caption() -> None:
    model = tiny_clip()
    adapters = add_moe_adapters(model, num_tasks=1, num_experts=6, top_k=2)
    randomise(adapters)
    adapters.set_active_task(0)
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"vision": [], "text": []}
    for tower, _, layer in adapters.layers():
        def recording(first, original=layer.route, tower=tower):
            weights, chosen = original(first)
            seen[tower].append((first, chosen))
            return weights, chosen
        layer.route = recording
    pixels, ids, mask = inputs(6)
    embed(model, pixels, ids, mask)
    # Causal attention: token 0 (the start token) never sees the caption; equal up to rounding of batched matmuls.
    for first, chosen in seen["text"]:
        torch.testing.assert_close(first, first[:1].expand_as(first))
        assert torch.equal(chosen, chosen[:1].expand_as(chosen))
    first, _ = seen["vision"][0]  # the CLS token after attention does see the image
    assert not torch.allclose(first, first[:1].expand_as(first))


def test_frozen_experts_stay_bit_identical_while_the_next_task_trains() -> None:
    model = tiny_clip()
    for param in model.parameters():
        param.requires_grad_(False)
    adapters = add_moe_adapters(model, num_tasks=2, num_experts=5, top_k=2)
    model.train()
    pixels, ids, mask = inputs(8)

    def loss() -> torch.Tensor:
        image, text = image_embeddings(model, pixels), text_embeddings(model, ids, mask)
        return (image.pow(2).sum() + text.pow(2).sum()) * 0.01

    adapters.start_task(0)
    optimizer = torch.optim.AdamW(adapters.trainable_parameters(0), lr=0.05, weight_decay=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    loss().backward()  # gradients left on every expert when the task ends
    usage = {(tower, i): layer.usage.clone() for tower, i, layer in adapters.layers()}
    added = adapters.freeze_most_used(2)
    for tower, i, layer in adapters.layers():
        assert sorted(added[tower][i]) == sorted(usage[(tower, i)].argsort(descending=True, stable=True)[:2].tolist())
        assert int(layer.usage.sum()) == 0
    frozen = adapters.frozen_experts()
    assert all(len(experts) == 2 for tower in frozen.values() for experts in tower)
    before = copy.deepcopy(adapters.state_dict())

    adapters.start_task(1)  # the same optimiser, its Adam state included, plus task 1's routers
    optimizer.add_param_group({"params": [p for n, p in adapters.named_trainable_parameters(1) if ".routers." in n]})
    for _ in range(4):
        optimizer.zero_grad(set_to_none=False)  # zeros, not None, on whatever still requires grad
        loss().backward()
        optimizer.step()
    after = adapters.state_dict()
    moved = set()
    for tower, i, layer in adapters.layers():
        for e in range(layer.num_experts):
            prefix = f"{tower}.{i}.experts.{e}."
            same = all(torch.equal(after[k], before[k]) for k in after if k.startswith(prefix))
            if e in frozen[tower][i]:
                assert same, f"frozen expert {prefix} moved"
            elif not same:
                moved.add(prefix)
        assert torch.equal(after[f"{tower}.{i}.routers.0.gate"], before[f"{tower}.{i}.routers.0.gate"])
    assert moved
    names = [n for n, p in adapters.named_trainable_parameters(1)]
    assert names == [n for n, p in adapters.named_parameters() if p.requires_grad]
    assert not any(".routers.0." in n for n in names)
    assert not any(f"{t}.{i}.experts.{e}." in n for t in frozen for i, es in enumerate(frozen[t]) for e in es for n in names)


def test_state_dict_round_trip_restores_routers_experts_frozen_sets_and_usage() -> None:
    model = tiny_clip()
    adapters = add_moe_adapters(model, num_tasks=3, num_experts=4, top_k=2)
    randomise(adapters, seed=3)
    adapters.set_active_task(2)
    model.train()
    embed(model, *inputs())
    adapters.vision[1].freeze([0, 3])
    adapters.text[0].freeze([2])
    buffer = io.BytesIO()
    torch.save(adapters.state_dict(), buffer)
    model.eval()
    expected = embed(model, *inputs())

    other = tiny_clip()
    restored = add_moe_adapters(other, num_tasks=3, num_experts=4, top_k=2)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    for key, value in adapters.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert restored.frozen_experts() == {"vision": [[], [0, 3]], "text": [[2], []]}
    assert int(restored.vision[0].usage.sum()) > 0
    assert not restored.vision[1].experts[3].up_proj.weight.requires_grad
    assert restored.vision[1].experts[1].up_proj.weight.requires_grad
    restored.set_active_task(2)
    for got, want in zip(embed(other, *inputs()), expected, strict=True):
        assert torch.equal(got, want)


def test_expert_init_and_parameter_count() -> None:
    expert = AdapterExpert(16, bottleneck=4)
    assert torch.count_nonzero(expert.down_proj.weight) > 0
    assert all(torch.count_nonzero(t) == 0 for t in (expert.up_proj.weight, expert.up_proj.bias, expert.down_proj.bias))
    assert expert.scale == 0.1 and expert.dropout.p == 0.1
    adapters = add_moe_adapters(tiny_clip(), num_tasks=3, num_experts=4, top_k=2, bottleneck=5)
    count = moe_parameter_count(24, 2, 16, 2, num_tasks=3, num_experts=4, bottleneck=5)
    assert count.total == sum(p.numel() for p in adapters.parameters())
    assert count.per_task == sum(p.numel() for p in adapters.trainable_parameters(0))
    official = moe_parameter_count(768, 12, 512, 12, num_tasks=11)  # ViT-B/16, the authors' 22 experts and 11 routers
    assert (official.experts, official.routers, official.total, official.per_task) == (43_625_472, 7_434_240, 51_059_712, 44_301_312)
