"""Mod-X: Maintain off-diagonal information-matriX (Ni, Wei, Tang, Zhuang, Tian, ICML 2023).

Full fine-tuning on each task; the old model theta_{t-1} (frozen at the start
of the task; the pre-trained model for task 1) is kept, and on the *current*
batch of N pairs its whole contrastive matrix - diagonal and off-diagonal
entries - is distilled into the new model's:

    L = L_CLIP + alpha * L_SA                                              (alpha = 20)

    L_SA = 1/2 [ sum_{i in K_it} KL(softmax(M0_i) || softmax(M_i))
               + sum_{i in K_ti} KL(softmax(M0^T_i) || softmax(M^T_i)) ]   ("Spatial Alignment")

    M  = I  T^T  / tau,   M0 = I0 T0^T / tau                               (tau = 1: raw cosines)

with I, T the new and I0, T0 the old model's L2-normalised embeddings of the
batch. Selection rule ("cognition align" in the authors' code): row i of the
old matrix takes part only if the old model ranks the true partner first,

    K_it = { i : argmax_j M0_ij = i },   K_ti = { i : argmax_j M0_ji = i };

the authors replace every other row of the old matrix with the new model's
row, which makes that row's KL (and its gradient) exactly zero, i.e. the old
model's wrong beliefs are not distilled. Rows are summed, not averaged (the
authors' ``reduction='sum'``), so the term grows with the batch size.

Under torchrun with ``train.gather_features`` (the default) a process's rows
range over the global batch - its images against every process's captions and
its captions against every process's images, old and new matrices alike - the
selection rule compares row i with column (its global index), and with
``reduction="sum"`` the local sum is multiplied by the number of processes:
the mean of the processes' terms is then the single-process term of the
global batch (a sum over all 2N_global rows).

Teacher cache: as in C-CLIP, the old model's embeddings of every (image,
caption) pair of the task are computed once at ``begin_task`` and looked up.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from vlcl.data.benchmark import CaptionedImages
from vlcl.losses import cross_similarities, row_offset, world_size
from vlcl.methods.base import LossOutput, Method, MethodOptions, Stage
from vlcl.methods.registry import register_method
from vlcl.methods.parts.teacher import FrozenTeacher
from vlcl.settings import CaptionBatch


class ModXOptions(MethodOptions):
    alignment_weight: float = Field(20.0, ge=0)
    """alpha in L = L_CLIP + alpha * L_SA (the authors' released script: --alpha 20)."""
    alignment_temperature: float = Field(1.0, gt=0)
    """tau: the matrices are cosine / tau; 1 = raw cosine similarities, as in the authors' code."""
    reduction: Literal["sum", "mean"] = "sum"
    """sum: KL summed over the rows (the authors' code); mean: divided by the batch size N."""
    select: bool = True
    """Apply the selection rule (drop rows the old model gets wrong); False aligns every row."""
    cache_teacher: bool = True
    """Compute the old model's features once per task instead of a forward pass per step."""
    cache_batch_size: int = Field(256, ge=1)


def selected_row_kl(
    old: torch.Tensor, new: torch.Tensor, *, select: bool = True, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row KL(softmax(old_i) || softmax(new_i)) and the mask of rows kept by the selection rule.

    A row is kept when the old matrix's largest entry is on the diagonal (ties: the first maximum); row
    i's diagonal entry is column ``offset + i`` (a process's rows against the gathered batch's columns).
    ``old`` is a constant.

    Mathematically ``vlcl.losses.distillation_kl(old, new, 1.0, reduction="rows")``, but kept apart on
    purpose: (1) the teacher's probabilities here are ``softmax(old)``, there ``exp(log_softmax(old))``,
    which differ in the last bits (measured: about half of the entries of a float32 matrix), so the
    shared form would change every Mod-X run's numbers; (2) Mod-X's tau divides the matrices before
    the selection rule and the KL is not multiplied by tau^2 (the authors' code), unlike the T^2 of the
    distillation methods; (3) the reduction (kept rows summed, optionally / N) is Mod-X's own.
    """
    old = old.detach()
    kl = (F.softmax(old, dim=-1) * (F.log_softmax(old, dim=-1) - F.log_softmax(new, dim=-1))).sum(dim=-1)
    if select:
        keep = old.argmax(dim=-1) == torch.arange(len(old), device=old.device) + offset
    else:
        keep = torch.ones(len(old), dtype=torch.bool, device=old.device)
    return kl, keep


def spatial_alignment_loss(
    new_image: torch.Tensor,
    new_text: torch.Tensor,
    old_image: torch.Tensor,
    old_text: torch.Tensor,
    temperature: float = 1.0,
    *,
    reduction: str = "sum",
    select: bool = True,
    gather: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mod-X's Spatial Alignment term and the fraction of this process's rows the selection rule kept.

    Both directions (image->text rows of I T^T, text->image rows of its transpose) are averaged;
    within a direction the kept rows' KLs are summed (``reduction="sum"``) or summed and divided by N.
    ``gather``: this process's rows against the global batch's columns; a sum is then scaled by the
    number of processes W, a mean divides by the local N, so that the mean over processes is the
    single-process term of the global batch.
    """
    new_image, new_text = F.normalize(new_image, dim=-1), F.normalize(new_text, dim=-1)
    old_image, old_text = F.normalize(old_image.detach(), dim=-1), F.normalize(old_text.detach(), dim=-1)
    new_it, new_ti = cross_similarities(new_image, new_text, gather=gather)
    old_it, old_ti = cross_similarities(old_image, old_text, gather=gather)
    n, offset = len(new_image), row_offset(len(new_image), gather)
    total, kept = new_it.new_zeros(()), 0
    for old_m, new_m in ((old_it / temperature, new_it / temperature), (old_ti / temperature, new_ti / temperature)):
        kl, keep = selected_row_kl(old_m, new_m, select=select, offset=offset)
        total = total + (kl * keep).sum()
        kept += int(keep.sum())
    loss = total / 2 * world_size(gather) if reduction == "sum" else total / (2 * n)
    return loss, torch.tensor(kept / (2 * n))


@register_method
class ModX(Method):
    name = "modx"
    description = "Mod-X: CLIP loss + selective KL alignment of the old model's full contrastive matrix"
    Options = ModXOptions
    tuning_grid = {"alignment_weight": (20.0, 80.0)}  # alpha (authors' 20 over 280-pair batches; ~80 at 64)

    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        self.teacher = FrozenTeacher(self.model, data, self.context.bundle, cache=self.options.cache_teacher, batch_size=self.options.cache_batch_size)

    def training_loss(self, batch: CaptionBatch, step: int) -> LossOutput:
        opts = self.options
        images, texts = self.encode(batch)
        name, contrastive = self.task_loss(images, texts, batch)
        old_images, old_texts = self.teacher.features(batch)
        alignment, kept = spatial_alignment_loss(
            images,
            self.paired_texts(texts, batch),
            old_images,
            self.paired_texts(old_texts, batch),
            opts.alignment_temperature,
            reduction=opts.reduction,
            select=opts.select,
            gather=self.context.gather,
        )
        loss = contrastive + opts.alignment_weight * alignment
        return LossOutput(loss, {name: float(contrastive.detach()), "align": float(alignment.detach()), "kept": float(kept)})

    def end_task(self, stage: Stage) -> None:
        self.teacher = None
