"""AdamW with separate vision/text learning rates, warm-up then cosine decay."""

from __future__ import annotations

import math

import torch

from vlcl.config import TrainConfig
from vlcl.methods.base import ParameterGroup


def build_optimizer(groups: list[ParameterGroup], train: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the method's groups: a group of the text tower learns at ``train.text_lr`` (or ``train.lr`` times
    ``train.text_lr_scale``), every other group at ``train.lr``. Both are the stage's one number: the engine
    resolves per-task lists or mappings with ``TrainConfig.lr_for`` and ``text_lr_for`` first."""
    if not isinstance(train.lr, (int, float)) or not isinstance(train.text_lr, (int, float, type(None))):
        raise ValueError("build_optimizer needs one learning rate per tower; resolve per-task rates with TrainConfig.lr_for")
    text_lr = train.text_lr if train.text_lr is not None else train.lr * train.text_lr_scale
    param_groups = [
        {
            "params": g.params,
            "lr": text_lr if g.tower == "text" else train.lr,
            "weight_decay": train.weight_decay if g.weight_decay else 0.0,
        }
        for g in groups
        if g.params
    ]
    if not param_groups:
        raise ValueError("the method exposes no trainable parameters")
    return torch.optim.AdamW(param_groups, betas=tuple(train.betas), eps=train.eps)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, train: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(round(train.warmup_fraction * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps, warmup, train.min_lr_ratio))
