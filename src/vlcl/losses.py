"""Training losses, pure functions over tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP (Radford et al. 2021), positives on the diagonal.

    L = 1/2 [ CE(s * I T^T, diag) + CE(s * T I^T, diag) ] with I, T the
    L2-normalised features and ``logit_scale`` = s the multiplier of cosine
    similarities (exp of the learnable temperature, about 100 for pre-trained
    CLIP; not its logarithm), as in open_clip's ClipLoss.
    """
    images = F.normalize(image_features, dim=-1)
    texts = F.normalize(text_features, dim=-1)
    logits = logit_scale * images @ texts.t()
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
