"""LoRA on both towers of a Hugging Face CLIPModel through PEFT, and its integration.

Integration (C-CLIP): theta_t = theta_{t-1} + alpha * Delta_LoRA. PEFT's
``rescale_adapter_scale`` multiplies every LoRA layer's scaling by alpha and
``merge_and_unload`` folds the scaled update into the base weights, returning
the plain CLIPModel (same module objects, base state-dict keys).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.helpers import rescale_adapter_scale
from transformers import CLIPModel

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
# What the C-CLIP authors also trained fully (METHODS.md section 1); the patch embedding stays frozen.
EXTRA_PARAMETER_KEYS = ("token_embedding", "position_embedding", "class_embedding", "layer_norm", "layrnorm", "layernorm", "visual_projection", "text_projection", "logit_scale")


def add_lora(model: CLIPModel, *, rank: int, alpha: float, dropout: float, target_modules: Sequence[str]) -> PeftModel:
    """Wrap ``model`` (in place) with fresh LoRA adapters on both towers; everything else is frozen."""
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), bias="none")
    was_training = model.training
    try:
        with warnings.catch_warnings():  # peft reads an attribute transformers 5 deprecates; not actionable here
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise ValueError(f"method.target_modules {list(target_modules)}: {exc}") from None
    # New modules are created in training mode; keep the model's mode (LoRA dropout must be off in eval).
    peft_model.train(was_training)
    return peft_model


def extra_parameters(model: CLIPModel) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """Embeddings, layer norms, the final projections and the temperature (not the patch embedding, not LoRA)."""
    for name, param in model.named_parameters():
        if "lora_" in name or "patch_embedding" in name:
            continue
        if any(key in name for key in EXTRA_PARAMETER_KEYS):
            yield name, param


def lora_parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter]]:
    return ((n, p) for n, p in model.named_parameters() if "lora_" in n)


def integrate_lora(peft_model: PeftModel, coefficient: float) -> CLIPModel:
    """Fold ``coefficient`` x the adapter into the base weights and return the plain CLIPModel."""
    with rescale_adapter_scale(peft_model, coefficient):
        merged = peft_model.merge_and_unload()
    return merged
