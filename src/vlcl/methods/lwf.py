"""LwF: Learning without Forgetting (Li & Hoiem, ECCV 2016), for CLIP as in ZSCL's comparisons.

While training task t, the model at the start of the task, theta_{t-1} (the
pre-trained model for task 1), is kept frozen as a teacher. On every batch of
N current pairs both models give image->text and text->image similarity
distributions over the batch, and the student is pulled towards the teacher's:

    L = L_CLIP + w * [ KL(p_T^{i2t} || p_S^{i2t}) + KL(p_T^{t2i} || p_S^{t2i}) ] / 2 * T^2

    p^{i2t}_i = softmax_j( s * cos(f(v_i), g(c_j)) / T ),   p^{t2i}_i = softmax_j( s * cos(g(c_i), f(v_j)) / T )

each KL averaged over the N rows of the batch, s the logit scale of the
model concerned (the teacher's is frozen), T the temperature (T = 2) and the
T^2 factor the usual one of Hinton et al. 2015 that keeps the gradient scale
independent of T; w = 1. The distillation term is exactly zero at the start
of a task, when student and teacher coincide.

On a classification task (MTIL) the task loss is the cross-entropy over the
class prompts and LwF distils the class logits, as LwF does and as ZSCL's
LwF baseline on MTIL: the image -> class distribution only,

    L = CE_eps + w * KL(p_T^{i2c} || p_S^{i2c}) * T^2,   p^{i2c}_i = softmax_c( s * cos(f(v_i), g(class_c)) / T )

Under torchrun with ``train.gather_features`` (the default) the similarity
distributions of a process's N_local rows range over the global batch: its
images against every process's captions and its captions against every
process's images, student and teacher alike (:func:`vlcl.losses.in_batch_distillation`),
so the mean of the processes' losses is the single-process loss of the global
batch. The class-logit distillation is per sample (every process holds every
class) and gathers nothing.

Teacher cache (as in ``cclip``): the teacher is frozen and the data has no
random augmentation, so its embeddings of every (image, caption) pair of the
task are computed once at begin_task and looked up per step - the same
numbers as a teacher forward per step; ``cache_teacher=false`` keeps the
frozen copy and runs it on every batch instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from vlcl.data.benchmark import CaptionedImages
from vlcl.losses import distillation_kl, in_batch_distillation
from vlcl.methods.base import LossOutput, Method, MethodOptions, Stage
from vlcl.methods.registry import register_method
from vlcl.methods.parts.teacher import FrozenTeacher
from vlcl.settings import CaptionBatch


class LwFOptions(MethodOptions):
    weight: float = Field(1.0, ge=0)
    """w in L = L_CLIP + w * (KL_i2t + KL_t2i) / 2."""
    temperature: float = Field(2.0, gt=0)
    """T: both distributions are softmax(logits / T); the KL is multiplied by T^2."""
    cache_teacher: bool = True
    """Compute the old model's features once per task instead of a teacher forward per step."""
    cache_batch_size: int = Field(256, ge=1)


softened_kl = distillation_kl
"""T^2 * mean over rows of KL(softmax(teacher / T) || softmax(student / T)); no gradient to the teacher.

lwf's name for :func:`vlcl.losses.distillation_kl` (reduction ``"batchmean"``), arguments (teacher, student, T)."""


def similarity_distillation(
    student_images: torch.Tensor,
    student_texts: torch.Tensor,
    student_scale: torch.Tensor | float,
    teacher_images: torch.Tensor,
    teacher_texts: torch.Tensor,
    teacher_scale: torch.Tensor | float,
    temperature: float,
    *,
    both_directions: bool = True,
    gather: bool = False,
) -> torch.Tensor:
    """[KL_i2t + KL_t2i] / 2 between the batch similarity distributions of teacher and student (see module
    docstring); ``both_directions=False``: KL_i2t alone (class logits, whose columns are classes, never
    gathered). ``gather``: this process's rows against the global batch's columns."""
    s_img, s_txt = F.normalize(student_images, dim=-1), F.normalize(student_texts, dim=-1)
    t_img, t_txt = F.normalize(teacher_images, dim=-1), F.normalize(teacher_texts, dim=-1)
    if not both_directions:
        return softened_kl(teacher_scale * t_img @ t_txt.t(), student_scale * s_img @ s_txt.t(), temperature)
    i2t, t2i = in_batch_distillation(s_img, s_txt, student_scale, t_img, t_txt, teacher_scale, temperature, gather=gather)
    return (i2t + t2i) / 2


@register_method
class LwF(Method):
    name = "lwf"
    description = "Learning without Forgetting: CLIP loss + KL to the previous model's in-batch similarity distributions"
    Options = LwFOptions
    tuning_grid = {"weight": (1.0, 2.0)}  # w of the distillation (2 = ZSCL's LwF weighting)

    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        self.teacher = FrozenTeacher(self.model, data, self.context.bundle, cache=self.options.cache_teacher, batch_size=self.options.cache_batch_size)

    def training_loss(self, batch: CaptionBatch, step: int) -> LossOutput:
        images, texts = self.encode(batch)
        scale = self.logit_scale()
        name, contrastive = self.task_loss(images, texts, batch)
        old_images, old_texts = self.teacher.features(batch)
        distill = similarity_distillation(
            images,
            texts,
            scale,
            old_images,
            old_texts,
            self.teacher.logit_scale,
            self.options.temperature,
            both_directions=batch.one_text_per_image,
            gather=self.context.gather,
        )
        loss = contrastive + self.options.weight * distill
        return LossOutput(loss, {name: float(contrastive.detach()), "distill": float(distill.detach())})

    def end_task(self, stage: Stage) -> None:
        self.teacher = None
