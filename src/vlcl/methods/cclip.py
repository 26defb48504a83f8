"""C-CLIP: LoRA integration + Contrastive Knowledge Consolidation (Liu, Zhu, Wei, Tian, ICLR 2025).

Task t trains fresh LoRA adapters on both towers of the integrated model
theta_{t-1} with

    L = L_CLIP + lambda * L_CKC                                        (lambda = 1)

    L_CKC = symmetric InfoNCE between h = [h_psi(f_t(v)); h_psi(g_t(c))] and
            z = [f_{t-1}(v); g_{t-1}(c)], the 2N stacked, L2-normalised
            projected-new and old features                             (Eq. 5)

where h_psi is a projector trained from scratch for the task (Linear d->4d,
BatchNorm, ReLU, Linear 4d->d) and f_{t-1}, g_{t-1} are the frozen towers of
theta_{t-1} (the pre-trained model for task 1). CKC pulls the new space
towards a *projection* of the old one instead of onto it, leaving room to
learn. At the end of the task the adapter is integrated,

    theta_t = theta_{t-1} + alpha * Delta_LoRA                          (alpha = 0.5)

and the projector is discarded. Temperature of CKC: the model's current
logit scale (the authors' code), or a fixed tau with ``ckc_temperature``.

Teacher cache: the old model is frozen and the embedded data has no random
augmentation, so f_{t-1}(v) and g_{t-1}(c) are computed once per task for
every (image, caption) pair at begin_task and looked up per step - the same
numbers as a teacher forward per step at a fraction of the cost; memory
(1 + captions per image) x N x d floats.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from vlcl.data.benchmark import CaptionedImages
from vlcl.losses import batch_moments, ckc_loss, gathers
from vlcl.methods.base import LossOutput, ParameterGroup, Stage
from vlcl.methods.lora import LoRA, LoRAOptions
from vlcl.methods.registry import register_method
from vlcl.methods.parts.teacher import FrozenTeacher
from vlcl.settings import CaptionBatch


class CCLIPOptions(LoRAOptions):
    ckc_weight: float = Field(1.0, ge=0)
    """lambda in L = L_CLIP + lambda * L_CKC."""
    ckc_temperature: float | None = Field(None, gt=0)
    """Fixed tau of CKC (logits = cos / tau); ``None`` uses the model's current logit scale."""
    projector_hidden: int | None = Field(None, ge=1)
    """Hidden width of the projector; ``None`` = 4 x the embedding width (the authors' 512 -> 2048)."""
    cache_teacher: bool = True
    """Compute the old model's features once per task instead of a teacher forward per step."""
    cache_batch_size: int = Field(256, ge=1)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that, in training under torchrun with ``gather``, normalises with the global batch's statistics:

        y = (x - mu) / sqrt(var + eps) * gamma + beta,   mu, var over the rows of every process

    (:func:`vlcl.losses.batch_moments`: sums all-reduced with gradients, so the
    averaged gradient is the single-process one). The running statistics are
    updated as BatchNorm1d updates them (momentum, or a cumulative mean when
    momentum is None; the unbiased global variance). On one process, in
    evaluation or without ``gather`` it is BatchNorm1d itself (torch's
    SyncBatchNorm needs CUDA; this runs on gloo too). Same parameters and
    buffers, so the same state_dict keys.
    """

    def __init__(self, num_features: int, *, gather: bool = False, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.gather = gather

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not (self.training and gathers(self.gather)):
            return super().forward(features)
        mean, variance, count = batch_moments(features, gather=True)
        if self.track_running_stats:
            self.update_running_statistics(mean.detach(), variance.detach(), count)
        normalised = (features - mean) * torch.rsqrt(variance + self.eps)
        return normalised * self.weight + self.bias if self.affine else normalised

    @torch.no_grad()
    def update_running_statistics(self, mean: torch.Tensor, variance: torch.Tensor, count: int) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = variance * count / max(count - 1, 1)
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(unbiased, factor)


def make_projector(dim: int, hidden: int, *, gather: bool = False) -> nn.Sequential:
    """h_psi: Linear d->hidden, batch norm (over the global batch under torchrun with ``gather``), ReLU, Linear."""
    return nn.Sequential(
        nn.Linear(dim, hidden), GlobalBatchNorm1d(hidden, gather=gather), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
    )


@register_method
class CCLIP(LoRA):
    name = "cclip"
    description = "C-CLIP: LoRA integration + contrastive knowledge consolidation with a per-task projector"
    Options = CCLIPOptions
    tuning_grid = {"ckc_weight": (1.0, 4.0)}  # lambda of CKC (the paper's 1; docs/results/embedded_cclip.md: 4)
    needs_task_boundaries = True  # CKC's teacher is the previous task's model and its projector is per task

    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        self.teacher = FrozenTeacher(self.model, data, self.context.bundle, cache=self.options.cache_teacher, batch_size=self.options.cache_batch_size)
        super().begin_task(stage, data)
        dim = self.model.config.projection_dim
        hidden = self.options.projector_hidden or 4 * dim
        self.projector = make_projector(dim, hidden, gather=self.context.gather).to(self.model.logit_scale.device)

    def train(self) -> None:
        super().train()
        self.projector.train()

    def eval(self) -> None:
        super().eval()
        if getattr(self, "projector", None) is not None:
            self.projector.eval()

    def parameter_groups(self) -> list[ParameterGroup]:
        # The projector learns at the base learning rate, with weight decay on its matrices.
        return super().parameter_groups() + [
            ParameterGroup([p for p in self.projector.parameters() if p.ndim >= 2], "vision", True),
            ParameterGroup([p for p in self.projector.parameters() if p.ndim < 2], "vision", False),
        ]

    def training_modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, "projector": self.projector}

    def ckc_scale(self) -> torch.Tensor | float:
        tau = self.options.ckc_temperature
        return 1.0 / tau if tau is not None else self.logit_scale()

    def training_loss(self, batch: CaptionBatch, step: int) -> LossOutput:
        images, texts = self.encode(batch)
        name, contrastive = self.task_loss(images, texts, batch)
        old_images, old_texts = self.teacher.features(batch)
        texts, old_texts = self.paired_texts(texts, batch), self.paired_texts(old_texts, batch)
        consolidation = ckc_loss(
            self.projector(images), self.projector(texts), old_images, old_texts, self.ckc_scale(), gather=self.context.gather
        )
        loss = contrastive + self.options.ckc_weight * consolidation
        return LossOutput(loss, {name: float(contrastive.detach()), "ckc": float(consolidation.detach())})

    def end_task(self, stage: Stage) -> None:
        super().end_task(stage)
        self.projector = None
        self.teacher = None
