"""Modality pairs over pre-extracted features (CMCL's setting; the ``features`` benchmark).

Each task is a modality pair (A, B) whose rows are positive pairs; the model is one linear map per modality
(model kind ``feature_maps``), trained with CMCL's one-directional loss (A->B over the raw products of the mapped
features). A stage scores every pair's test set by recall in both directions (A->B reported as ``i2t``, B->A
as ``t2i``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlcl.losses import LossOutput
from vlcl.models.maps import pair_loss
from vlcl.settings.base import Batch, Setting, register_setting
from vlcl.settings.captions import RECALL


@dataclass
class PairBatch(Batch):
    """Rows of a modality pair: ``a`` of modality ``modalities[0]``, ``b`` of ``modalities[1]``."""

    modalities: tuple[str, str]
    a: torch.Tensor
    b: torch.Tensor

    def __len__(self) -> int:
        return len(self.a)

    def default_loss(self, method) -> LossOutput:
        """CMCL's loss over the mapped features (``pair``)."""
        loss = pair_loss(method.model, self.modalities, self.a, self.b)
        return LossOutput(loss, {"pair": float(loss.detach())})


@register_setting
class ModalityPairs(Setting):
    name = "modality_pairs"
    description = "CMCL's modality pairs: pre-extracted features, one linear map per modality, recall both ways"
    model_kind = "feature_maps"
    metric = RECALL
    metric_kinds = ("retrieval",)
    task_words = "modality pairs of pre-extracted features, a feature_maps model"

    def batch(self, bundle: Any, data: Any, idx: torch.Tensor, picks: torch.Tensor) -> PairBatch:
        a, b = data.modalities
        return PairBatch(sample_index=idx.clone(), modalities=(a, b), a=data.arrays[a][idx], b=data.arrays[b][idx])
