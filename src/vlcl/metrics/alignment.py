"""Alignment diagnostics of an image-text embedding space.

With image features I and text features T L2-normalised, and caption j
describing image ``text_to_image[j]``:

* ``matched_cosine`` = mean_j <I_{text_to_image[j]}, T_j>, the mean cosine
  between each caption and its own image;
* ``modality_gap`` = || mean_i I_i - mean_j T_j ||_2, the distance between the
  centroids of the two modalities on the unit sphere, following Liang et al.
  2022, "Mind the Gap: Understanding the Modality Gap in Multi-modal
  Contrastive Representation Learning". Every image and every caption counts
  in its centroid, captioned or not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vlcl.metrics.retrieval import _check_pairs


def alignment_diagnostics(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor | Sequence[int]
) -> dict[str, float]:
    """``matched_cosine`` and ``modality_gap`` (plain floats, not percentages)."""
    images, texts, index = _check_pairs(image_features, text_features, text_to_image)
    images, texts = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    matched = (images[index] * texts).sum(dim=-1)
    gap = images.mean(dim=0) - texts.mean(dim=0)
    return {"matched_cosine": matched.mean().item(), "modality_gap": gap.norm().item()}
