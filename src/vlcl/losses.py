"""Training losses, pure functions over tensors.

``logit_scale`` is always the multiplier applied to cosine similarities (the
exponentiated temperature parameter, about 100 for pre-trained CLIP), as in
open_clip's ClipLoss - never its logarithm.

``gather=True`` (used under torchrun) compares this process's queries with the
keys of every process, gathered with gradients (open_clip's
``--gather-with-grad --local-loss``): global-batch negatives at the memory
cost of one local x global similarity matrix. Outside a distributed run it is
a no-op. The distillation terms defined over the batch (lwf, zscl, mulki,
modx: :func:`cross_similarities`, :func:`in_batch_distillation`,
:func:`match_log_probabilities`) and C-CLIP's projector batch norm
(:func:`batch_moments`) follow the same rule: this process's rows against
every process's columns, so that the mean over processes of the local losses
is the single-process loss of the global batch and the averaged gradient its
gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F


@dataclass
class LossOutput:
    """A training step's loss (what the engine calls backward on) and the terms to log, by name."""

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


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


def gathers(gather: bool) -> bool:
    """True when ``gather`` asks for the global batch and there is more than one process."""
    return gather and _world()[1] > 1


def world_size(gather: bool) -> int:
    """The number of processes whose rows the gathered batch holds (1 without gathering)."""
    return _world()[1] if gathers(gather) else 1


def row_offset(count: int, gather: bool) -> int:
    """Index of this process's first row in the gathered batch (every process holds ``count`` rows)."""
    return _world()[0] * count if gathers(gather) else 0


def local_share(rows: torch.Tensor, gather: bool) -> torch.Tensor:
    """This process's contiguous part of ``rows``, a batch every process holds whole (e.g. drawn from one
    shared generator); all of ``rows`` without gathering or when they do not split evenly."""
    rank, world = _world()
    if not gathers(gather) or len(rows) % world:
        return rows
    share = len(rows) // world
    return rows[rank * share : (rank + 1) * share]


def splits_evenly(count: int, gather: bool) -> bool:
    """Whether :func:`local_share` splits ``count`` rows over the processes (False on one process)."""
    return gathers(gather) and count % _world()[1] == 0


def cross_similarities(
    rows_a: torch.Tensor, rows_b: torch.Tensor, scale: torch.Tensor | float = 1.0, *, gather: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The in-batch similarity matrices of this process's rows in both directions, [n, n_global] each:

        S_ab = s * A B_all^T,   S_ba = s * B A_all^T

    A, B [n, d] the local rows (L2-normalised by the caller), X_all the rows of
    every process (gathered with gradients) under ``gather``, X itself
    otherwise; then S_ba is exactly S_ab^T. Row i's match is column
    ``row_offset(n) + i`` (see :func:`local_diagonal`).
    """
    if not gathers(gather):
        logits = scale * rows_a @ rows_b.t()
        return logits, logits.t()
    return scale * rows_a @ gather_with_grad(rows_b).t(), scale * rows_b @ gather_with_grad(rows_a).t()


def local_diagonal(matrix: torch.Tensor, gather: bool) -> torch.Tensor:
    """Entries (i, row_offset + i) of a local-rows x global-columns matrix: each row's own match."""
    if not gathers(gather):
        return matrix.diagonal()
    rows = torch.arange(len(matrix), device=matrix.device)
    return matrix[rows, rows + row_offset(len(matrix), gather)]


def match_log_probabilities(
    queries: torch.Tensor, keys: torch.Tensor, scale: torch.Tensor | float, *, gather: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per local row i, log softmax_j(s q_i . k_j)_i and log softmax_j(s k_i . q_j)_i [n] each, j over the
    batch (the global batch under ``gather``); q, k L2-normalised by the caller."""
    if not gathers(gather):
        logits = scale * queries @ keys.t()
        return F.log_softmax(logits, dim=1).diagonal(), F.log_softmax(logits, dim=0).diagonal()
    forward, backward = cross_similarities(queries, keys, scale, gather=True)
    return local_diagonal(F.log_softmax(forward, dim=1), True), local_diagonal(F.log_softmax(backward, dim=1), True)


def symmetric_infonce(queries: torch.Tensor, keys: torch.Tensor, logit_scale: torch.Tensor | float, *, gather: bool = False) -> torch.Tensor:
    """1/2 [CE(s Q K^T, diag) + CE(s K Q^T, diag)] over L2-normalised rows; positives are row i <-> row i."""
    queries = F.normalize(queries, dim=-1)
    keys = F.normalize(keys, dim=-1)
    all_queries, all_keys = queries, keys
    if gathers(gather):
        all_queries, all_keys = gather_with_grad(queries), gather_with_grad(keys)
    targets = torch.arange(len(queries), device=queries.device) + row_offset(len(queries), gather)
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


def in_batch_distillation(
    student_a: torch.Tensor,
    student_b: torch.Tensor,
    student_scale: torch.Tensor | float,
    teacher_a: torch.Tensor,
    teacher_b: torch.Tensor,
    teacher_scale: torch.Tensor | float,
    temperature: float,
    *,
    gather: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two softened KLs between teacher and student in-batch similarity distributions (lwf, zscl):

        KL_ab = distillation_kl(t * A0 B0_all^T, s * A B_all^T, T),   KL_ba = the same with A and B swapped

    A, B the student's and A0, B0 the teacher's L2-normalised rows (the caller
    normalises), s and t their scales, each KL a mean over this process's rows.
    Under ``gather`` the columns are every process's rows (see
    :func:`cross_similarities`; the teacher's are constants), so the mean over
    processes of each KL is the single-process KL of the global batch.
    """
    student_ab, student_ba = cross_similarities(student_a, student_b, student_scale, gather=gather)
    teacher_ab, teacher_ba = cross_similarities(teacher_a.detach(), teacher_b.detach(), teacher_scale, gather=gather)
    return distillation_kl(teacher_ab, student_ab, temperature), distillation_kl(teacher_ba, student_ba, temperature)


def batch_moments(features: torch.Tensor, *, gather: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-column mean and biased variance of ``features`` [n, c] over the batch, and the number of rows:

        mu = 1/M sum_i x_i,   var = 1/M sum_i (x_i - mu)^2

    M the rows of every process under ``gather`` (sums all-reduced with
    gradients, two passes as BatchNorm computes them), of this process
    otherwise: the statistics a batch norm of the global batch normalises with.
    """
    if not gathers(gather):
        return features.mean(dim=0), features.var(dim=0, unbiased=False), len(features)
    from torch.distributed.nn.functional import all_reduce

    sums = all_reduce(torch.cat([features.sum(dim=0), features.new_tensor([len(features)])]))
    total, count = sums[:-1], int(sums[-1].item())  # the row count rides along: shares may differ
    mean = total / count
    variance = all_reduce((features - mean).pow(2).sum(dim=0)) / count
    return mean, variance, count
