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
AUTHORS_TARGET_MODULES = ("out_proj", "fc1", "fc2")
"""C-CLIP's authors' LoRA targets: every nn.Linear inside OpenAI CLIP's two transformers (attn.out_proj, mlp.c_fc,
mlp.c_proj; the fused q/k/v in_proj is a parameter, not a Linear), named as in Hugging Face's CLIP."""


class LaneDropout(torch.nn.Dropout):
    """Inverted dropout whose CPU mask comes from the four 16-bit lanes of 64-bit random words.

    ``torch.nn.Dropout`` on the CPU draws one Bernoulli sample per element from
    a serial generator (about 12 ns each here); on the embedded benchmark's
    small model PEFT's LoRA dropout then took 40% of a training step. Here one
    64-bit word of the same torch generator (uniform over the whole int64 range)
    gives four 16-bit uniforms, read as signed numbers s in [-32768, 32768).
    An element is kept when s >= round(p * 65536) - 32768, so
    P(keep) = 1 - round(p * 65536) / 65536: p is honoured to 1/65536, and kept
    elements are scaled by 1 / P(keep), so the expectation is exact. The stream
    is torch's, so seeds and checkpointed RNG states reproduce runs. CUDA
    tensors use the ordinary fused dropout. Measured 1.5-4x faster than
    ``nn.Dropout`` on a 4160 x 512 activation (benchmarks/lora_dropout.py).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        dropped = round(self.p * 65536)
        count = x.numel()
        words = torch.empty(-(-count // 4), dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        lanes = words.view(torch.int16)[:count].view(x.shape)
        keep = lanes >= dropped - 32768
        return x.mul(keep).mul_(65536 / (65536 - dropped))


def lora_dropout_slots(model: torch.nn.Module) -> Iterator[tuple[torch.nn.ModuleDict, str]]:
    """(PEFT's ``lora_dropout`` ModuleDict, adapter name) for every LoRA layer of ``model``."""
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, torch.nn.ModuleDict):
            yield from ((dropouts, key) for key in list(dropouts.keys()))


def use_lane_dropout(model: torch.nn.Module) -> None:
    """Swap PEFT's LoRA dropout modules for :class:`LaneDropout` (same p, same mode)."""
    for dropouts, key in lora_dropout_slots(model):
        dropout = dropouts[key]
        if type(dropout) is torch.nn.Dropout:
            dropouts[key] = LaneDropout(dropout.p).train(dropout.training)


def check_target_modules(model: torch.nn.Module, target_modules: Sequence[str]) -> None:
    """Every target names at least one Linear of the model, matched as PEFT does (the full name or its last parts)."""
    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    missing = [t for t in target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ValueError(f"method.target_modules: no Linear layer named {missing[0]!r} in the model; its Linear layers: {', '.join(leaves)}")


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
    use_lane_dropout(peft_model)
    # New modules are created in training mode; keep the model's mode (LoRA dropout must be off in eval).
    peft_model.train(was_training)
    return peft_model


def extra_parameters(model: CLIPModel) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """What C-CLIP's authors trained besides LoRA: every parameter outside the two transformer stacks - token,
    position and class embeddings, the pre, post and final layer norms, both projections, the temperature - except
    the patch embedding. The blocks' own weights and layer norms stay frozen: PEFT wrapped only the two
    transformers in the authors' code and froze everything in them but LoRA."""
    for name, param in model.named_parameters():
        if "lora_" in name or "patch_embedding" in name or ".encoder.layers." in name:
            continue
        yield name, param


def lora_parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter]]:
    return ((n, p) for n, p in model.named_parameters() if "lora_" in n)


def integrate_lora(peft_model: PeftModel, coefficient: float) -> CLIPModel:
    """Fold ``coefficient`` x the adapter into the base weights and return the plain CLIPModel."""
    with rescale_adapter_scale(peft_model, coefficient):
        merged = peft_model.merge_and_unload()
    return merged
