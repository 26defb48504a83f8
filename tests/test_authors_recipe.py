"""C-CLIP's authors' recipe: which parameters train besides LoRA, the text tower's learning rate, the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlcl.config import ConfigError, TrainConfig, load_config
from vlcl.engine.optim import build_optimizer
from vlcl.methods import create_method, split_parameters
from vlcl.models import load_clip
from vlcl.models.lora import AUTHORS_TARGET_MODULES, add_lora, extra_parameters

REPO = Path(__file__).resolve().parents[1]


def test_extras_are_everything_outside_the_two_transformer_stacks_but_the_patch_embedding(tiny_clip_dir):
    model = load_clip(str(tiny_clip_dir)).model
    peft = add_lora(model, rank=2, alpha=4, dropout=0.0, target_modules=AUTHORS_TARGET_MODULES)
    names = {name.replace("base_model.model.", "") for name, _ in extra_parameters(peft)}
    expected = {
        name
        for name, _ in model.named_parameters()
        if ".encoder.layers." not in name and "patch_embedding" not in name and "lora_" not in name
    }
    assert names == expected
    assert {"logit_scale", "text_projection.weight", "visual_projection.weight", "text_model.final_layer_norm.weight"} <= names
    assert {"vision_model.pre_layrnorm.weight", "vision_model.post_layernorm.weight"} <= names
    assert {"text_model.embeddings.token_embedding.weight", "vision_model.embeddings.class_embedding"} <= names
    assert not any("layer_norm1" in n or "layer_norm2" in n for n in names)  # the blocks' norms stay frozen


@pytest.mark.parametrize(
    ("train", "text_rate"),
    [
        (TrainConfig(lr=1e-4), 1e-4),
        (TrainConfig(lr=1e-4, text_lr_scale=15), 1.5e-3),
        (TrainConfig(lr=1e-4, text_lr=3e-4), 3e-4),
    ],
)
def test_text_tower_rate_is_text_lr_or_lr_times_the_scale(tiny_clip_dir, train, text_rate):
    model = load_clip(str(tiny_clip_dir)).model
    optimizer = build_optimizer(split_parameters(model), train)
    by_id = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert by_id[id(model.text_model.embeddings.token_embedding.weight)] == pytest.approx(text_rate)
    assert by_id[id(model.text_projection.weight)] == pytest.approx(text_rate)
    assert by_id[id(model.visual_projection.weight)] == pytest.approx(1e-4)


def test_text_lr_per_task_and_the_scale_follows_a_per_task_lr():
    order = ["a", "b", "c"]
    assert [TrainConfig(text_lr={"b": 2e-3, "default": 1e-3}).text_lr_for([n], order) for n in order] == [1e-3, 2e-3, 1e-3]
    assert [TrainConfig(lr=[1e-4, 2e-4, 3e-4], text_lr_scale=10).text_lr_for([n], order) for n in order] == pytest.approx([1e-3, 2e-3, 3e-3])
    with pytest.raises(ValueError, match="'train.text_lr' names 'x'"):
        TrainConfig(text_lr={"x": 1e-3}).text_lr_for(["a"], order)


def test_text_lr_and_its_scale_together_are_refused():
    with pytest.raises(ConfigError, match="train.text_lr.*train.text_lr_scale"):
        load_config(None, ["train.text_lr=1e-3", "train.text_lr_scale=10"])


def test_the_recipe_config_is_the_authors_settings():
    config = load_config(REPO / "configs" / "embedded_cclip_authors.yaml")
    assert config.train.text_lr is None and config.train.text_lr_scale == 15
    assert (config.train.warmup_fraction, config.train.min_lr_ratio, config.train.weight_decay) == (0.125, 0.01, 0.1)
    method = create_method(config.method.name, config.method.options())
    assert method.options.train_extras and method.options.integration == 0.5
    assert method.options.target_modules == ["fc1", "fc2"]
    lora = create_method("lora", config.method.options())  # the same recipe without CKC is valid as it stands
    assert lora.options.train_extras


def test_a_lora_adapter_on_multihead_attentions_out_proj_never_reaches_the_forward_pass():
    """Why the recipe's targets are fc1 and fc2: the authors' code targets every nn.Linear of OpenAI CLIP's
    transformers, but nn.MultiheadAttention reads ``out_proj.weight`` directly instead of calling the module, so
    PEFT's adapter there changes nothing and gets no gradient (mlp.c_fc and mlp.c_proj are the effective ones)."""
    import torch
    from peft import LoraConfig, get_peft_model

    class OpenAIBlock(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(8, 2)
            self.c_fc = torch.nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c_fc(self.attn(x, x, x, need_weights=False)[0])

    torch.manual_seed(0)
    block, x = OpenAIBlock(), torch.randn(4, 2, 8)
    before = block(x).detach()
    wrapped = get_peft_model(block, LoraConfig(r=2, lora_alpha=4, target_modules=["attn.out_proj", "c_fc"]))
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name and "out_proj" in name:
                param.normal_()
    wrapped(x).sum().backward()
    assert torch.equal(wrapped(x).detach(), before)
    grads = {name: param.grad for name, param in wrapped.named_parameters() if "lora_A" in name}
    assert all(g is None for name, g in grads.items() if "out_proj" in name)
