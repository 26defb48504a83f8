"""ZSCL: Zero-Shot Continual Learning (Zheng, Ma, Wang, Qin, Yue, You, ICCV 2023).

Full fine-tuning on each task with three protections of the *pre-trained*
(zero-shot) knowledge, as in the authors' MTIL code (Thunderbeee/ZSCL,
``mtil/src/models/finetune.py`` with ``scripts/ZSCL.sh``):

    L = L_CLIP(task batch)
        + lambda_d * [ KL_T(P0_img->txt || P_img->txt) + KL_T(P0_txt->img || P_txt->img) ]
        + lambda_2 * sum_i (theta_i - theta_anchor_i)^2                  (lambda_d = 1, lambda_2 = 1)

    KL_T(P0 || P) = T^2 * mean over rows of KL(softmax(z0_r / T) || softmax(z_r / T))   (T = 2)

on reference data that is neither the task's nor labelled: per step a batch
of B reference images (B = 64) against the reference sentences (all of them by
default). With I0, T0 the L2-normalised embeddings of the frozen *initial*
model theta_0 and s0 its logit scale,

    z0 = s0 * I0 T0^T                      the initial model's logits   [B x S]
    z  = s0 * I  T0^T                      text_features = "initial" (the authors' code)
    z  = s0 * I  T^T                       text_features = "student"

where I (and T) are the student's embeddings. Rows of z give the
image->text distributions, rows of z^T the text->image ones.

Under torchrun every process draws the same reference batch (one shared
generator). With ``train.gather_features`` (the default) each process encodes
only its contiguous share of the B images and S sentences and the logits are
its rows against every process's columns (:func:`vlcl.losses.in_batch_distillation`),
so the mean of the processes' terms is the single-process term and the
reference forward is not repeated on every process; when B or S does not
split evenly, or without gathering, every process computes the whole term.

Weight ensemble (WE): at the start of a task theta_avg = theta_start (count 1);
after optimiser step s with s % I == 0 (I = 100, s = 0 included),

    theta_avg <- (theta_avg * n + theta) / (n + 1),  n <- n + 1

the final weights always enter the average, and at the end of the task the
model *becomes* theta_avg (it is what is evaluated, saved and trained further).

L2 anchor: the weights at the start of the task (the authors' code: a copy of
the model loaded for the task, i.e. the previous task's averaged model;
theta_0 for the first task), or theta_0 itself with ``l2_anchor="initial"``.

Reference features cache: the initial model never changes, so its embeddings
of every reference image and sentence are computed once (at the first
``begin_task``) and looked up; the initial weights themselves are kept in the
method state so that a resumed run rebuilds the same teacher.

On a stream (``data.stream=online``: no task boundaries) the stream is one
task: the distillation from theta_0 on the reference data and the L2 pull
(towards the weights at the stream's start, theta_0) work step by step as in
a task. The weight ensemble does not: its average becomes the model only at a
task's end, so every point of the stream would score weights the run never
ends with; a stream run of zscl is refused unless ``ensemble_every=0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field, model_validator

from vlcl.data.benchmark import CaptionedImages
from vlcl.data.benchmarks import world
from vlcl.losses import (
    distillation_kl,  # noqa: F401  (zscl's KL, described below; importable from here)
    in_batch_distillation,
    local_share,
    splits_evenly,
)
from vlcl.methods.base import LossOutput, Method, MethodOptions, RunContext, Stage
from vlcl.methods.parts.ensemble import InitialWeightsAndEnsemble, WeightEnsemble, parameter_copy
from vlcl.methods.registry import register_method
from vlcl.models.encode import image_embeddings, text_embeddings, tokenize
from vlcl.seeds import reference_batch_seed, reference_seed

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ZSCLOptions(MethodOptions):
    distill_weight: float = Field(1.0, ge=0)
    """lambda_d, the weight of the two distillation terms (the authors' MTIL script: 1 each)."""
    temperature: float = Field(2.0, gt=0)
    """T of the distillation (the authors' default 2)."""
    text_features: Literal["initial", "student"] = "initial"
    """Text side of the student's logits: the initial model's sentence embeddings (the authors' code;
    only the image tower is distilled) or the student's own (distils both towers)."""
    ensemble_every: int = Field(100, ge=0)
    """I: average the weights after every I-th optimiser step (step 0 included); 0 disables the ensemble."""
    ensemble_include_start: bool = True
    """Count the task's starting weights as the first member of the average (the authors' code)."""
    l2_weight: float = Field(1.0, ge=0)
    """lambda_2 of the L2 pull, a sum of squares over every parameter (the authors' MTIL script: --l2 1)."""
    l2_anchor: Literal["task_start", "initial"] = "task_start"
    """Weights the L2 term pulls towards: the task's starting weights (the authors' code) or theta_0."""
    reference: Literal["embedded", "folder"] = "embedded"
    """embedded: base-world images and their captions (the pre-training world); folder: your own data."""
    reference_images: int = Field(1000, ge=1)
    """Number of reference images (embedded), or at most this many from the folder (a seeded subset)."""
    reference_dir: str | None = None
    """reference=folder: a folder of images (searched recursively)."""
    reference_sentences: str | None = None
    """reference=folder: a text file with one reference sentence per line."""
    reference_batch_size: int = Field(64, ge=1)
    """Reference images per step (the authors' batch size 64)."""
    reference_sentences_per_step: int | None = Field(None, ge=1)
    """Sentences per step; ``None`` = every reference sentence (the authors' code)."""
    cache_batch_size: int = Field(256, ge=1)
    """Batch size of the one-off encoding of the reference data by the initial model."""

    @model_validator(mode="after")
    def _folder_options_need_a_folder(self) -> "ZSCLOptions":
        given = [k for k in ("reference_dir", "reference_sentences") if getattr(self, k) is not None]
        if self.reference == "embedded" and given:
            raise ValueError(f"{given[0]} is read only with reference=folder (reference is 'embedded')")
        return self


# ----------------------------------------------------------------------------------
# Reference data
# ----------------------------------------------------------------------------------


class ReferenceData:
    """Reference images (uint8 at the model's size, or preprocessed tensors) and sentences."""

    def __init__(self, images: np.ndarray | torch.Tensor, sentences: list[str], preprocess):
        if len(images) == 0 or not sentences:
            raise ValueError("zscl: the reference data needs at least one image and one sentence")
        self.images = images
        self.sentences = sentences
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def pixels(self, index: torch.Tensor) -> torch.Tensor:
        """Normalised pixel values [len(index), 3, H, W] of the images at ``index``."""
        if isinstance(self.images, np.ndarray):
            return self.preprocess.normalize_uint8(self.images[index.numpy()])
        return self.images[index]


def embedded_reference(n_images: int, seed: int, preprocess) -> ReferenceData:
    """``n_images`` base-world training images and their captions, from ``reference_seed(seed)`` (vlcl.seeds)."""
    split = world.generate_split(
        "base", n_images, seed=reference_seed(seed), split="train", captions_per_image=1, size=preprocess.image_size
    )
    return ReferenceData(split.images, [caps[0] for caps in split.captions], preprocess)


def reference_image_files(image_dir: str, max_images: int, seed: int, owner: str) -> list[Path]:
    """The images of ``image_dir`` (searched recursively; at most ``max_images``, a subset drawn from
    ``reference_seed(seed)`` if more); ``owner`` (the method) starts every error message."""
    folder = Path(image_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{owner}: reference image folder {str(folder)!r} (method.reference_dir) does not exist or is not a folder"
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{owner}: no images ({', '.join(IMAGE_SUFFIXES)}) in reference folder {str(folder)!r}")
    if len(files) > max_images:
        keep = torch.randperm(len(files), generator=torch.Generator().manual_seed(reference_seed(seed)))[:max_images]
        files = [files[i] for i in sorted(keep.tolist())]
    return files


def preprocessed_images(files: list[Path], preprocess) -> torch.Tensor:
    """Normalised pixel values [N, 3, H, W] of image files."""
    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(preprocess(image))
    return torch.stack(images)


def folder_reference(image_dir: str | None, sentences_file: str | None, max_images: int, seed: int, preprocess) -> ReferenceData:
    """Images of ``image_dir`` (at most ``max_images``, a seeded subset if more) and the lines of ``sentences_file``."""
    if image_dir is None or sentences_file is None:
        raise ValueError(
            "zscl: method.reference=folder needs method.reference_dir (images) and method.reference_sentences (a text file)"
        )
    text = Path(sentences_file).expanduser()
    if not text.is_file():
        raise FileNotFoundError(f"zscl: reference sentences file {str(text)!r} (method.reference_sentences) does not exist")
    files = reference_image_files(image_dir, max_images, seed, "zscl")
    sentences = [line.strip() for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not sentences:
        raise ValueError(f"zscl: reference sentences file {str(text)!r} has no non-empty line")
    return ReferenceData(preprocessed_images(files, preprocess), sentences, preprocess)


def load_reference(options: ZSCLOptions, context: RunContext) -> ReferenceData:
    if context.bundle is None:
        raise ValueError("zscl needs the run's tokenizer and preprocessing (RunContext.bundle)")
    preprocess = context.bundle.preprocess
    if options.reference == "embedded":
        return embedded_reference(options.reference_images, context.seed, preprocess)
    return folder_reference(
        options.reference_dir, options.reference_sentences, options.reference_images, context.seed, preprocess
    )


class ReferenceFeatures:
    """The initial model's L2-normalised embeddings of every reference image and sentence, computed once."""

    def __init__(self, teacher, reference: ReferenceData, bundle, batch_size: int):
        device = next(teacher.parameters()).device
        n = len(reference)
        with torch.no_grad():
            self.images = torch.cat(
                [
                    F.normalize(
                        image_embeddings(teacher, reference.pixels(torch.arange(s, min(s + batch_size, n))).to(device)), dim=-1
                    )
                    for s in range(0, n, batch_size)
                ]
            )
        self.input_ids, self.attention_mask = tokenize(bundle.tokenizer, reference.sentences, bundle.context_length)
        m = len(reference.sentences)
        with torch.no_grad():
            self.texts = torch.cat(
                [self.sentence_embeddings(teacher, torch.arange(s, min(s + batch_size, m))) for s in range(0, m, batch_size)]
            )

    def sentence_embeddings(self, model, index: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of the sentences at ``index`` under ``model`` (with gradients if enabled)."""
        ids, mask = self.input_ids[index], self.attention_mask[index]
        width = int(mask.sum(dim=1).max())  # trim the padding the selection shares
        device = next(model.parameters()).device
        return F.normalize(text_embeddings(model, ids[:, :width].to(device), mask[:, :width].to(device)), dim=-1)


# ----------------------------------------------------------------------------------
# Losses and weight helpers
# ----------------------------------------------------------------------------------


# distillation_kl (imported from vlcl.losses, ``reduction="batchmean"``) is
# T^2 * mean over rows of KL(softmax(teacher / T) || softmax(student / T)), the teacher a constant.
# The authors' ``distillation`` is the soft cross-entropy T^2 * CE(student / T, softmax(teacher / T)),
# which differs from this by the teacher's entropy: the same gradients, but this one is 0 when the
# student equals the teacher.


@register_method
class ZSCL(InitialWeightsAndEnsemble, Method):
    name = "zscl"
    description = "ZSCL: distillation from the initial model on reference data + weight ensemble + L2 pull"
    Options = ZSCLOptions
    tuning_grid = {"distill_weight": (1.0, 5.0)}  # lambda_d (authors' MTIL script 1, their CIL code 5)
    needs_task_boundaries = False  # on a stream without the weight ensemble (module docstring)

    def setup(self, model, context: RunContext) -> None:
        if context.streaming and self.options.ensemble_every:
            raise ValueError(
                f"on a stream (data.stream=online) the weight ensemble (ensemble_every={self.options.ensemble_every}) "
                "would become the model only after the stream's last point; set method.ensemble_every=0"
            )
        super().setup(model, context)
        self.reference = load_reference(self.options, context)  # fails early on a missing folder or file
        self.initial = parameter_copy(model)  # replaced by the checkpoint's on resume (load_state_dict)
        self.features: ReferenceFeatures | None = None
        self.ensemble: WeightEnsemble | None = None
        self._finished_count = 0  # members of the last finished task's average (kept in the state)
        self.anchor: dict[str, torch.Tensor] | None = None

    # -- the frozen initial model -----------------------------------------------------
    def build_features(self) -> None:
        teacher = self.initial_model()
        self.features = ReferenceFeatures(teacher, self.reference, self.context.bundle, self.options.cache_batch_size)
        self.distill_scale = float(teacher.logit_scale.exp().clamp(max=100.0))

    # -- lifecycle ----------------------------------------------------------------------
    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        if self.features is None:
            self.build_features()
        opts = self.options
        self.anchor = self.initial if opts.l2_anchor == "initial" else parameter_copy(self.model)
        self.ensemble = WeightEnsemble(self.model, opts.ensemble_every, opts.ensemble_include_start)
        self.generator = torch.Generator().manual_seed(reference_batch_seed(self.context.seed, stage.index))

    def end_task(self, stage: Stage) -> None:
        if self.ensemble is not None:
            self.ensemble.finish()  # the final weights join the average, which becomes the model
            self._finished_count = self.ensemble.count
        self.ensemble = None
        self.anchor = None

    # -- losses -----------------------------------------------------------------------
    def sample_reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of this step's reference images and sentences (the method's own generator)."""
        opts = self.options
        images = torch.randperm(len(self.reference), generator=self.generator)[: opts.reference_batch_size]
        n_sentences = len(self.reference.sentences)
        if opts.reference_sentences_per_step is None or opts.reference_sentences_per_step >= n_sentences:
            return images, torch.arange(n_sentences)
        return images, torch.randperm(n_sentences, generator=self.generator)[: opts.reference_sentences_per_step]

    def distillation_loss(self) -> torch.Tensor:
        """KL_T image->text + KL_T text->image between the initial model and the student on a reference batch."""
        image_index, sentence_index = self.sample_reference()
        share = splits_evenly(len(image_index), self.context.gather) and splits_evenly(len(sentence_index), self.context.gather)
        image_index, sentence_index = local_share(image_index, share), local_share(sentence_index, share)
        device = next(self.model.parameters()).device
        feats = self.features
        old_images, old_texts = feats.images[image_index], feats.texts[sentence_index]
        images = F.normalize(image_embeddings(self.model, self.reference.pixels(image_index).to(device)), dim=-1)
        texts = feats.sentence_embeddings(self.model, sentence_index) if self.options.text_features == "student" else old_texts
        scale, temperature = self.distill_scale, self.options.temperature
        i2t, t2i = in_batch_distillation(images, texts, scale, old_images, old_texts, scale, temperature, gather=share)
        return i2t + t2i

    def l2_penalty(self) -> torch.Tensor:
        """sum_i (theta_i - anchor_i)^2 over every parameter (the authors' sum-reduced MSE)."""
        terms = [((param - self.anchor[name]) ** 2).sum() for name, param in self.model.named_parameters() if param.requires_grad]
        return torch.stack(terms).sum()

    def training_loss(self, batch: dict[str, torch.Tensor], step: int) -> LossOutput:
        opts = self.options
        images, texts = self.encode(batch)
        name, contrastive = self.task_loss(images, texts, batch)
        loss = contrastive
        logs = {name: float(contrastive.detach())}
        if opts.distill_weight > 0:
            distill = self.distillation_loss()
            loss = loss + opts.distill_weight * distill
            logs["distill"] = float(distill.detach())
        if opts.l2_weight > 0:
            l2 = self.l2_penalty()
            loss = loss + opts.l2_weight * l2
            logs["l2"] = float(l2.detach())
        return LossOutput(loss, logs)

    # -- weight ensemble ------------------------------------------------------------------
    def after_optimizer_step(self, step: int) -> None:
        self.ensemble.after_step(step)

    # -- state ------------------------------------------------------------------------
    def step_state_dict(self) -> dict[str, Any]:
        """Mid-task: the running weight average and the reference generator."""
        return {"ensemble": self.ensemble.state_dict(), "generator": self.generator.get_state()}

    def load_step_state_dict(self, state: dict[str, Any]) -> None:
        self.ensemble.load_state_dict(state["ensemble"])
        self.generator.set_state(state["generator"])

    def state_dict(self) -> dict[str, Any]:
        return {"initial": dict(self.initial), "ensemble_count": self.ensemble_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "initial" not in state:
            raise ValueError(f"zscl: the checkpoint's method state has no initial weights (keys {sorted(state)})")
        initial = state["initial"]
        expected = {name for name, _ in self.model.named_parameters()}
        if set(initial) != expected:
            missing, extra = sorted(expected - set(initial)), sorted(set(initial) - expected)
            raise ValueError(
                f"zscl: initial weights in the checkpoint do not match the model (missing {missing[:3]}, unexpected {extra[:3]})"
            )
        params = dict(self.model.named_parameters())
        self.initial = {name: tensor.to(device=params[name].device, dtype=params[name].dtype) for name, tensor in initial.items()}
        self._finished_count = int(state.get("ensemble_count", 0))
        self.features = None  # rebuilt from the restored initial weights at the next begin_task
