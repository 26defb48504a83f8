"""MulKI: Multi-Stage Knowledge Integration (arXiv 2411.06764), a documented reconstruction.

No public code exists and only the abstract is known: four stages after
Knowledge Integration Theory (Eliciting Ideas, Adding New Ideas,
Distinguishing Ideas, Making Connections), two teachers, the current task's
data only. Every formula below is vlcl's reading of a one-line description;
docs/methods/mulki.md lists which choices are vlcl's own.

Teachers. k = 0 is the frozen initial (pre-trained) model theta_0, k = 1 the
frozen model at the start of task t, theta_{t-1} (theta_0 for task 1). Their
embeddings of every (image, caption) pair of the task are cached at
begin_task (``FrozenTeacher``), so a step costs one student forward, as in
LwF. u_k(i), v_k(i) are teacher k's L2-normalised image / text embeddings of
pair i, u(i), v(i) the student's, s_k teacher k's logit scale.

Prototypes (built at begin_task from the task's data). The task's pairs are
clustered by spherical k-means on x_i = [u_1(i); vbar_1(i)] / sqrt(2)
(theta_{t-1}'s image embedding and mean caption embedding), K = 32 clusters,
initialised with a random subset of K pairs drawn from a generator seeded by
(run seed, stage index), 10 Lloyd iterations, empty clusters dropped. Each
teacher then has paired prototypes on the same clusters, in its own space:

    P^I_k[c] = normalise( mean_{i in c} u_k(i) ),   P^T_k[c] = normalise( mean_{i in c} vbar_k(i) )

1. Eliciting ideas - cross-modal alignment through the prototypes: an image
   is distributed over the *text* prototypes, a caption over the image ones,
   and the student's distributions follow the teacher's:

    d^align_k(i) = T^2/2 [ KL( q(u_k(i), P^T_k) || q(u(i), P^T_k) ) + KL( q(v_k(i), P^I_k) || q(v(i), P^I_k) ) ]
    q(x, P)      = softmax_c( s_k * <x, P[c]> / T )                                       (T = 2)

2. Adding new ideas - fine-grained relations to the prototypes, intra- and
   inter-modality: the relation vector r(x, P) = (<x, P[c]>)_c (K cosines) of
   the student matches the teacher's value for value (the KL above only sees
   the softmax, which ignores a shift of every logit and the far prototypes):

    d^rel_k(i) = 1/2 [ intra_k(i) + inter_k(i) ]
    intra_k(i) = 1/2 [ m(u, u_k, P^I_k) + m(v, v_k, P^T_k) ]     inter_k(i) = 1/2 [ m(u, u_k, P^T_k) + m(v, v_k, P^I_k) ]
    m(x, y, P) = 1/K sum_c ( <x(i), P[c]> - <y(i), P[c]> )^2

3. Distinguishing ideas - a per-sample weight of each teacher, from how well
   that teacher matches pair i within the batch (the mean of its two
   log-probabilities of the correct match):

    a_k(i) = 1/2 [ log softmax_j( s_k <u_k(i), v_k(j)> )_i + log softmax_j( s_k <v_k(i), u_k(j)> )_i ]
    w_k(i) = softmax_k( a_k(i) / tau_w )                                            (tau_w = 1: w_k proportional to the geometric mean
                                                                                     of the two match probabilities)
    L = L_CLIP + 1/N sum_i sum_k w_k(i) [ lambda_a d^align_k(i) + lambda_r d^rel_k(i) ]     (lambda_a = 10, lambda_r = 100)

   The weights are constants (the teachers are frozen). Every term is exactly
   zero when the student equals both teachers. The weights are the only
   in-batch quantity: under torchrun with ``train.gather_features`` (the
   default) a_k(i) ranges j over the global batch (the teachers' features of
   every process gathered, no gradient), so the mean of the processes' losses
   is the single-process loss; d^align and d^rel are per sample against
   prototypes every process builds alike, and gather nothing.

4. Making connections - intra-task: a running average of the weights during
   the task, as ZSCL's weight ensemble: theta_avg = theta_start, then after
   every I-th optimiser step (step 0 included; I = 10) and after the last one

    theta_avg <- (theta_avg * n + theta) / (n + 1),   n <- n + 1

   and the model becomes theta_avg at end_task. Inter-task: then
   theta_t <- (1 - beta) theta_t + beta theta_{t-1} (beta = 0 by default, see
   docs/methods/mulki.md).

State: the initial weights (the initial teacher after a resume); the rest is
rebuilt at begin_task from the model, the task data and the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from vlcl.data.benchmark import CaptionedImages
from vlcl.losses import distillation_kl, match_log_probabilities
from vlcl.methods.base import LossOutput, Method, MethodOptions, RunContext, Stage
from vlcl.methods.parts.ensemble import InitialWeightsAndEnsemble, WeightEnsemble, parameter_copy
from vlcl.methods.registry import register_method
from vlcl.methods.parts.teacher import FrozenTeacher
from vlcl.seeds import prototype_seed
from vlcl.settings import CaptionBatch

TEACHER_NAMES = ("initial", "previous")


class MulKIOptions(MethodOptions):
    prototypes: int = Field(32, ge=1)
    """K, the number of k-means clusters per task (fewer if the task has fewer pairs or a cluster ends empty)."""
    kmeans_iterations: int = Field(10, ge=0)
    """Lloyd iterations of the spherical k-means; 0 keeps the seeded random subset of pairs as prototypes."""
    align_weight: float = Field(10.0, ge=0)
    """lambda_a, weight of the cross-modal prototype alignment (stage 1, eliciting ideas); 10 puts the term on the
    scale of lambda_r * relation on the embedded benchmark (docs/methods/mulki.md)."""
    align_temperature: float = Field(2.0, gt=0)
    """T of the alignment: distributions softmax(s_k cos / T), the KL multiplied by T^2 (as lwf)."""
    relation_weight: float = Field(100.0, ge=0)
    """lambda_r, weight of the relation distillation (stage 2, adding new ideas), a mean squared cosine gap."""
    teachers: Literal["both", "initial", "previous"] = "both"
    """Teachers distilled from (stage 3): both with per-sample weights, or one of them with weight 1 (ablations)."""
    teacher_temperature: float = Field(1.0, gt=0)
    """tau_w in w_k(i) = softmax_k(a_k(i) / tau_w); large values give uniform weights."""
    ensemble_every: int = Field(10, ge=0)
    """I: average the weights after every I-th optimiser step (step 0 included) and the last; 0 disables it (stage 4)."""
    ensemble_include_start: bool = True
    """Count the task's starting weights theta_{t-1} as the first member of the average."""
    inter_task_weight: float = Field(0.0, ge=0, le=1)
    """beta in theta_t <- (1 - beta) theta_t + beta theta_{t-1} at the end of each task (stage 4, inter-task)."""
    cache_batch_size: int = Field(256, ge=1)
    """Batch size of the one-off encoding of the task's pairs by the teachers."""


# ----------------------------------------------------------------------------------
# Prototypes
# ----------------------------------------------------------------------------------


@dataclass
class Prototypes:
    """Paired, L2-normalised image and text prototypes [K, d] (row c of both = cluster c)."""

    images: torch.Tensor
    texts: torch.Tensor


def spherical_kmeans(points: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Cluster index [N] of each L2-normalised row of ``points``: k-means on cosines, seeded random-subset init.

    Assignments go to the nearest centroid by cosine (ties to the lowest index);
    a centroid is the normalised mean of its members and an empty cluster keeps
    its previous centroid.
    """
    k = min(k, len(points))
    centroids = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    for _ in range(iterations):  # none: every point goes to its nearest point of the random subset
        assignment = (points @ centroids.t()).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=k)
        filled = counts > 0
        centroids[filled] = F.normalize(sums[filled], dim=-1)
    return (points @ centroids.t()).argmax(dim=1)


def cluster_means(assignment: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean [K', d] of the normalised ``features`` of each non-empty cluster, in cluster order."""
    features = F.normalize(features, dim=-1)
    k = int(assignment.max()) + 1
    sums = torch.zeros(k, features.shape[1], dtype=features.dtype, device=features.device).index_add_(0, assignment, features)
    counts = torch.bincount(assignment, minlength=k)
    return F.normalize(sums[counts > 0], dim=-1)


def caption_means(teacher: FrozenTeacher) -> torch.Tensor:
    """Mean of the normalised embeddings of each image's captions [N, d] (from the teacher's cache)."""
    cache = teacher.cache
    texts = F.normalize(cache.texts, dim=-1).reshape(len(cache.images), cache.captions_per_image, -1)
    return texts.mean(dim=1)


def pair_points(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Unit-norm points [u; vbar] / sqrt(2) that the pairs are clustered on."""
    return torch.cat([F.normalize(images, dim=-1), F.normalize(texts, dim=-1)], dim=1) / math.sqrt(2.0)


def build_prototypes(assignment: torch.Tensor, teacher: FrozenTeacher) -> Prototypes:
    """Teacher's image and text prototypes on the clusters of ``assignment`` (same cluster order)."""
    return Prototypes(cluster_means(assignment, teacher.cache.images), cluster_means(assignment, caption_means(teacher)))


# ----------------------------------------------------------------------------------
# Per-sample distillation terms and teacher weights
# ----------------------------------------------------------------------------------


def prototype_kl(
    student: torch.Tensor, teacher: torch.Tensor, prototypes: torch.Tensor, scale: float, temperature: float
) -> torch.Tensor:
    """T^2 KL( softmax(s <y, P> / T) || softmax(s <x, P> / T) ) per row [N]; x student, y teacher (normalised).

    :func:`vlcl.losses.distillation_kl` per row over the logits s <., P>."""
    return distillation_kl(scale * teacher.detach() @ prototypes.t(), scale * student @ prototypes.t(), temperature, reduction="rows")


def relation_mse(student: torch.Tensor, teacher: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """1/K sum_c (<x, P[c]> - <y, P[c]>)^2 per row [N]: the squared gap of the relation vectors (normalised inputs)."""
    return ((student - teacher.detach()) @ prototypes.t()).pow(2).mean(dim=-1)


def alignment_terms(images, texts, t_images, t_texts, protos: Prototypes, scale: float, temperature: float) -> torch.Tensor:
    """d^align_k per sample: image over the text prototypes and text over the image prototypes, averaged."""
    i2t = prototype_kl(images, t_images, protos.texts, scale, temperature)
    t2i = prototype_kl(texts, t_texts, protos.images, scale, temperature)
    return (i2t + t2i) / 2


def relation_terms(images, texts, t_images, t_texts, protos: Prototypes) -> tuple[torch.Tensor, torch.Tensor]:
    """(intra_k, inter_k) per sample: relation gaps to the same modality's and to the other modality's prototypes."""
    intra = (relation_mse(images, t_images, protos.images) + relation_mse(texts, t_texts, protos.texts)) / 2
    inter = (relation_mse(images, t_images, protos.texts) + relation_mse(texts, t_texts, protos.images)) / 2
    return intra, inter


def match_agreement(images: torch.Tensor, texts: torch.Tensor, scale: float, *, gather: bool = False) -> torch.Tensor:
    """a(i): mean of the image->text and text->image log-probabilities of the correct in-batch match [N]
    (j over the global batch under ``gather``)."""
    image_to_text, text_to_image = match_log_probabilities(
        F.normalize(images, dim=-1), F.normalize(texts, dim=-1), scale, gather=gather
    )
    return (image_to_text + text_to_image) / 2


def teacher_weights(agreements: torch.Tensor, temperature: float) -> torch.Tensor:
    """w [n_teachers, N]: a distribution over the teachers for each sample, softmax_k(a_k(i) / tau_w)."""
    return F.softmax(agreements.detach() / temperature, dim=0)


# ----------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------


def same_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(param, weights[name]) for name, param in model.named_parameters())


@register_method
class MulKI(InitialWeightsAndEnsemble, Method):
    name = "mulki"
    description = "MulKI (reconstruction): prototype alignment + relation distillation from two adaptively weighted teachers + weight averaging"
    Options = MulKIOptions
    tuning_grid = {"align_weight": (10.0, 1.0)}  # lambda_a (docs/methods/mulki.md measured 10 and 1)

    def setup(self, model, context: RunContext) -> None:
        super().setup(model, context)
        self.initial = parameter_copy(model)  # replaced by the checkpoint's on resume (load_state_dict)
        self.teachers: dict[str, FrozenTeacher] = {}
        self.prototypes: dict[str, Prototypes] = {}
        self.start: dict[str, torch.Tensor] | None = None
        self.ensemble: WeightEnsemble | None = None
        self._finished_count = 0

    # -- teachers and prototypes -----------------------------------------------------------
    def build_teachers(self, stage: Stage, data: CaptionedImages) -> None:
        opts, bundle = self.options, self.context.bundle
        wanted = TEACHER_NAMES if opts.teachers == "both" else (opts.teachers,)
        at_initial = same_weights(self.model, self.initial)
        previous = None
        if "previous" in wanted or at_initial:
            previous = FrozenTeacher(self.model, data, bundle, cache=True, batch_size=opts.cache_batch_size)
        self.teachers = {}
        if "initial" in wanted:
            if at_initial:
                self.teachers["initial"] = previous  # task 1 (or an untrained model): one model, one cache
            else:
                self.teachers["initial"] = FrozenTeacher(
                    self.initial_model(), data, bundle, cache=True, batch_size=opts.cache_batch_size
                )
        if "previous" in wanted:
            self.teachers["previous"] = previous
        # clusters on theta_{t-1}'s features (the model being trained, as the task starts)
        source = previous if previous is not None else self.teachers["initial"]
        generator = torch.Generator().manual_seed(prototype_seed(self.context.seed, stage.index))
        points = pair_points(source.cache.images, caption_means(source))
        assignment = spherical_kmeans(points, opts.prototypes, opts.kmeans_iterations, generator)
        self.prototypes = {name: build_prototypes(assignment, teacher) for name, teacher in self.teachers.items()}

    # -- lifecycle ----------------------------------------------------------------------
    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        if data is None:
            raise ValueError("mulki trains on the task's data (begin_task got none)")
        opts = self.options
        self.build_teachers(stage, data)
        self.start = parameter_copy(self.model) if opts.inter_task_weight > 0 else None
        self.ensemble = WeightEnsemble(self.model, opts.ensemble_every, opts.ensemble_include_start)

    def end_task(self, stage: Stage) -> None:
        opts = self.options
        if self.ensemble is not None:
            self.ensemble.finish()  # the final weights join the average, which becomes the model
            self._finished_count = self.ensemble.count
        if self.start is not None:
            beta = opts.inter_task_weight
            with torch.no_grad():
                for name, param in self.model.named_parameters():
                    param.mul_(1 - beta).add_(self.start[name], alpha=beta)
        self.teachers, self.prototypes = {}, {}
        self.start = self.ensemble = None

    # -- losses -------------------------------------------------------------------------
    def distillation(self, images: torch.Tensor, texts: torch.Tensor, batch: CaptionBatch) -> dict[str, torch.Tensor]:
        """Per-teacher terms, the teacher weights and their weighted means over the batch (student embeddings un-normalised)."""
        opts = self.options
        u, v = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
        align, intra, inter, agreement = [], [], [], []
        for name, teacher in self.teachers.items():
            t_images, t_texts = teacher.features(batch)
            t_texts = self.paired_texts(t_texts, batch)
            tu, tv = F.normalize(t_images, dim=-1), F.normalize(t_texts, dim=-1)
            protos = self.prototypes[name]
            align.append(alignment_terms(u, v, tu, tv, protos, teacher.logit_scale, opts.align_temperature))
            a, b = relation_terms(u, v, tu, tv, protos)
            intra.append(a)
            inter.append(b)
            agreement.append(match_agreement(tu, tv, teacher.logit_scale, gather=self.context.gather))
        weights = teacher_weights(torch.stack(agreement), opts.teacher_temperature)
        out = {
            name: (weights * torch.stack(terms)).sum(dim=0).mean()
            for name, terms in (("align", align), ("intra", intra), ("inter", inter))
        }
        out["relation"] = (out["intra"] + out["inter"]) / 2
        out["weights"] = weights
        return out

    def training_loss(self, batch: CaptionBatch, step: int) -> LossOutput:
        opts = self.options
        images, texts = self.encode(batch)
        name, contrastive = self.task_loss(images, texts, batch)
        terms = self.distillation(images, self.paired_texts(texts, batch), batch)
        loss = contrastive + opts.align_weight * terms["align"] + opts.relation_weight * terms["relation"]
        logs = {name: float(terms[name].detach()) for name in ("align", "relation", "intra", "inter")}
        logs = {name: float(contrastive.detach()), **logs}
        for name, w in zip(self.teachers, terms["weights"]):
            logs[f"w_{name}"] = float(w.mean())
        return LossOutput(loss, logs)

    # -- weight ensemble ------------------------------------------------------------------
    def after_optimizer_step(self, step: int) -> None:
        self.ensemble.after_step(step)

    # -- state ------------------------------------------------------------------------
    def step_state_dict(self) -> dict[str, Any]:
        """Mid-task (step checkpoints): the running weight average."""
        return {"ensemble": self.ensemble.state_dict()}

    def load_step_state_dict(self, state: dict[str, Any]) -> None:
        self.ensemble.load_state_dict(state["ensemble"])

    def state_dict(self) -> dict[str, Any]:
        return {"initial": dict(self.initial)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "initial" not in state:
            raise ValueError(f"mulki: the checkpoint's method state has no initial weights (keys {sorted(state)})")
        initial = state["initial"]
        params = dict(self.model.named_parameters())
        if set(initial) != set(params):
            missing, extra = sorted(set(params) - set(initial)), sorted(set(initial) - set(params))
            raise ValueError(
                f"mulki: initial weights in the checkpoint do not match the model (missing {missing[:3]}, unexpected {extra[:3]})"
            )
        self.initial = {name: tensor.to(device=params[name].device, dtype=params[name].dtype) for name, tensor in initial.items()}
