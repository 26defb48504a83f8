"""Training losses, pure functions over tensors.

``logit_scale`` is always the multiplier applied to cosine similarities (the
exponentiated temperature parameter, about 100 for pre-trained CLIP), as in
open_clip's ClipLoss - never its logarithm.

``gather=True`` (used under torchrun) compares this process's queries with the
keys of every process, gathered with gradients (open_clip's
``--gather-with-grad --local-loss``): global-batch negatives at the memory
cost of one local x global similarity matrix. Outside a distributed run it is
a no-op.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Concatenate ``features`` from every process along dim 0, keeping the autograd graph."""
    rank, world = _world()
    if world == 1:
        return features
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(features))


def symmetric_infonce(queries: torch.Tensor, keys: torch.Tensor, logit_scale: torch.Tensor | float, *, gather: bool = False) -> torch.Tensor:
    """1/2 [CE(s Q K^T, diag) + CE(s K Q^T, diag)] over L2-normalised rows; positives are row i <-> row i."""
    queries = F.normalize(queries, dim=-1)
    keys = F.normalize(keys, dim=-1)
    offset = 0
    all_queries, all_keys = queries, keys
    if gather:
        rank, world = _world()
        if world > 1:
            all_queries, all_keys = gather_with_grad(queries), gather_with_grad(keys)
            offset = rank * len(queries)
    targets = torch.arange(len(queries), device=queries.device) + offset
    forward = F.cross_entropy(logit_scale * queries @ all_keys.t(), targets)
    backward = F.cross_entropy(logit_scale * keys @ all_queries.t(), targets)
    return (forward + backward) / 2


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float, *, gather: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP (Radford et al. 2021): image i matches text i.

    L = 1/2 [ CE(s * I T^T, diag) + CE(s * T I^T, diag) ], I and T the
    L2-normalised features, s = ``logit_scale``.
    """
    return symmetric_infonce(image_features, text_features, logit_scale, gather=gather)


def class_prompt_loss(
    image_features: torch.Tensor,
    class_features: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy over a classification task's class prompts, as ZSCL and MoE-Adapters train MTIL tasks:

        L = CE_eps( s * I W^T, y ),   CE_eps the cross-entropy against (1 - eps) onehot(y) + eps / C

    I the L2-normalised image features [B, d], W the L2-normalised class-prompt
    embeddings [C, d] (computed with gradients: the text tower learns too), y the
    labels, s = ``logit_scale``, eps = ``label_smoothing`` (0.2 in ZSCL and
    MoE-Adapters). Two images of one class are never each other's negatives, as
    they are under :func:`clip_loss`. No gathering under torchrun: every process
    holds every class.
    """
    logits = logit_scale * F.normalize(image_features, dim=-1) @ F.normalize(class_features, dim=-1).t()
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def ckc_loss(
    projected_image: torch.Tensor,
    projected_text: torch.Tensor,
    old_image: torch.Tensor,
    old_text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    gather: bool = False,
) -> torch.Tensor:
    """Contrastive Knowledge Consolidation, C-CLIP (Liu et al., ICLR 2025) Eq. 5.

    With h = [h(f_t(v)); h(g_t(c))] the 2N projected new features and
    z = [f_{t-1}(v); g_{t-1}(c)] the 2N old features, both stacked along the
    batch axis and L2-normalised:

        L_CKC = -1/(2N) sum_i [ log softmax_j(s h_i . z_j)_i + log softmax_j(s z_i . h_j)_i ] / 2

    i.e. the symmetric InfoNCE between the two 2N sets, averaged over the two
    directions; every other entry - the other modality included - is a
    negative. The old features are constants (no gradient flows into them).
    """
    projected = torch.cat([projected_image, projected_text])
    old = torch.cat([old_image, old_text]).detach()
    return symmetric_infonce(projected, old, logit_scale, gather=gather)


def distillation_kl(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    temperature: float,
    *,
    reduction: Literal["batchmean", "sum", "rows"] = "batchmean",
) -> torch.Tensor:
    """Softened KL of knowledge distillation (Hinton et al. 2015), row-wise over the last axis:

        KL_T(r) = T^2 * sum_c p_T(r)_c (log p_T(r)_c - log p_S(r)_c),
        p_T(r) = softmax(teacher_logits[r] / T),   p_S(r) = softmax(student_logits[r] / T)

    i.e. T^2 * KL(softmax(teacher / T) || softmax(student / T)) per row; the T^2
    factor keeps the gradient's scale independent of T. ``reduction``:
    ``"batchmean"`` the mean over the rows (sum over every entry / number of rows,
    ``F.kl_div``'s batchmean), ``"sum"`` the sum over the rows, ``"rows"`` one value
    per row (shape ``teacher_logits.shape[:-1]``). The teacher is a constant
    (detached: no gradient flows into it); 0 when the student equals the teacher.

    Used by lwf (``softened_kl``), zscl and mulki (``prototype_kl``, per row). The
    order of operations (log_softmax of both, then ``F.kl_div`` with a log target,
    then the reduction, then * T^2) is the one those methods always had: changing it
    changes the floating-point results of their runs.
    """
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    student = F.log_softmax(student_logits / temperature, dim=-1)
    if reduction == "rows":
        kl = F.kl_div(student, teacher, reduction="none", log_target=True).sum(dim=-1)
    elif reduction in ("batchmean", "sum"):
        kl = F.kl_div(student, teacher, reduction=reduction, log_target=True)
    else:
        raise ValueError(f"distillation_kl: reduction must be 'batchmean', 'sum' or 'rows', not {reduction!r}")
    return kl * temperature**2
