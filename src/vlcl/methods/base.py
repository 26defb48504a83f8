"""The ``Method`` contract: the only thing a continual-learning method implements.

The engine owns the loop (data, optimiser, schedule, evaluation, checkpoints)
and calls the hooks below; a method owns the model it trains and whatever it
keeps between tasks (an old model, a projector, Fisher information...). Every
hook has a working default, so a method overrides only what its paper changes:
fine-tuning overrides nothing. One file per method; ``@register_method`` plus
being a module of ``vlcl.methods`` (or an entry point of the ``vlcl.methods``
group in another package) is all it takes to be found. docs/extending.md walks
through writing one.

Calls of a fresh run::

    setup(model, context)                 # model: the pre-trained CLIPModel; context.resuming is False
    state_dict()                          # once, checked: it must survive the checkpoint format
    for stage in stages(task_names):
        begin_task(stage, data)           # data: the stage's training pairs (None when trains is False)
        step_state_dict()                 # once, checked as above
        train()                           # this and the steps below: only when optimises is True
        for every optimisation step:
            loss = training_loss(batch, step)          # the engine calls backward
            before_optimizer_step(step)                # gradients are clipped; change them here
            (optimiser.step)
            after_optimizer_step(step)
            [every train.checkpoint_every_steps: training_modules(), step_state_dict() saved]
        end_task(stage)
        evaluation_model()                # evaluated, and saved as a plain Hugging Face CLIP
        state_dict()                      # saved with it: the stage checkpoint

Calls of a stream (``data.stream=online``; only for a method with ``needs_task_boundaries = False``)::

    begin_task(Stage(0, "stream", every task), stream)     # once; the stream's samples in stream order
    for every incoming batch:
        train.online_iters times: training_loss(batch, step), the optimiser hooks
        observe_batch(stream, indices)                      # the batch's positions in the stream
        [every eval.every_samples samples: evaluation_model() scored on what the stream has shown so far]
    end_task(stage)                                         # once; then the stage's evaluation and checkpoint

Calls of a resumed run (``vlcl run --resume``)::

    setup(model, context)                 # model: the CHECKPOINT's weights (evaluation_model() of the last
                                          #   complete stage), not the pre-trained ones; context.resuming is
                                          #   True, context.checkpoint is that stage checkpoint's directory,
                                          #   context.load_pretrained() gives the pre-trained model if needed
    load_state_dict(state)                # what state_dict() returned at that checkpoint
    then the remaining stages as above; when the run stopped inside a stage, after that stage's
    begin_task: training_modules() are loaded and load_step_state_dict(step_state) is called.

What goes into state: everything besides the evaluation model that later
stages need and that setup() cannot rebuild from the checkpoint's weights -
the pre-trained weights when the method pulls towards them (ZSCL, WiSE-FT,
MulKI, EWC's anchors), counters, buffers, covariances. Inside a stage,
``step_state_dict`` adds what changes step by step besides the trained
modules (a running weight average, a generator). A state is a dict whose keys
are any strings (dotted parameter names are fine) and whose values are
tensors, dicts of the same kind, or JSON values (None, bool, int, finite
float, str, list); tuples, numpy arrays and tensors inside lists are refused
before training, naming the key. The contract test (tests/test_contract.py)
runs every registered method through a SIGKILL inside task 2 and a resume,
and requires results equal to the uninterrupted run: a method that forgets
state fails it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from transformers import CLIPModel

from vlcl.data.benchmark import CaptionedImages
from vlcl.models.encode import image_embeddings
from vlcl.models.loading import ClipBundle
from vlcl.losses import LossOutput
from vlcl.settings import Batch, CaptionBatch


EVALUATION_HOOKS = ("evaluation_route", "classification_logits")
"""The hooks by which a method's evaluation can be more than its :meth:`Method.evaluation_model`."""


def overridden_evaluation_hooks(cls: type) -> list[str]:
    """The :data:`EVALUATION_HOOKS` that a method class overrides."""
    return [hook for hook in EVALUATION_HOOKS if getattr(cls, hook) is not getattr(Method, hook)]


class MethodOptions(BaseModel):
    """Options of a method, given as ``method.<key>=value``; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Stage:
    """One step of the continual sequence: what to train on, and a display name."""

    index: int
    name: str
    task_indices: tuple[int, ...]


@dataclass
class RunContext:
    """What a method may need to know about the run it is part of."""

    task_names: list[str]
    seed: int
    bundle: ClipBundle | None = None  # tokenizer and preprocessing, to encode data a method keeps
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    gather: bool = False
    """Under torchrun, batch-coupled terms use the global batch: contrastive losses, in-batch distillation and
    C-CLIP's projector batch norm gather features across processes (the engine sets it from
    ``train.gather_features``)."""
    resuming: bool = False
    """True when ``setup`` receives a checkpoint's weights (``vlcl run --resume``), False on a fresh run."""
    checkpoint: Path | None = None
    """The stage checkpoint directory the run resumes from (its ``model/`` is the model ``setup`` gets)."""
    pretrained_path: str = ""
    """``model.path`` of the run: the pre-trained model, on a fresh run and on resume."""
    local_files_only: bool = True
    """``model.local_files_only`` of the run (a hub id is read from the local cache unless this is False)."""
    label_smoothing: float = 0.0
    """``train.label_smoothing``: the smoothing of the cross-entropy of classification tasks."""
    streaming: bool = False
    """True on a stream run (``data.stream=online``): one ``begin_task`` with the whole stream, the samples shown
    batch by batch through :meth:`Method.observe_batch`, and in-stream checkpoints that save only the step state
    (``training_modules``, ``step_state_dict``): what a method gathers along the stream belongs there."""

    def load_pretrained(self) -> CLIPModel:
        """The pre-trained CLIPModel of the run (a fresh copy, on the CPU), whatever ``setup`` was given."""
        from vlcl.models.loading import load_clip

        return load_clip(self.pretrained_path or "embedded", local_files_only=self.local_files_only).model


@dataclass
class ParameterGroup:
    """Parameters that share a learning rate; ``tower`` picks ``train.lr`` or ``train.text_lr``."""

    params: list[torch.nn.Parameter]
    tower: str  # "vision" or "text"
    weight_decay: bool = True


def split_parameters(model: torch.nn.Module) -> list[ParameterGroup]:
    """Trainable parameters by tower, with gains, biases, embeddings' scale and logit_scale free of decay.

    Follows open_clip: parameters with fewer than 2 dimensions (biases, norms,
    the temperature) and embedding tables are not weight-decayed.
    """
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        tower = "text" if ("text_model" in name or "text_projection" in name) else "vision"
        decay = param.ndim >= 2 and "embedding" not in name
        groups.setdefault((tower, decay), []).append(param)
    return [ParameterGroup(params, tower, decay) for (tower, decay), params in sorted(groups.items())]


class Method:
    """Base class: full training of every parameter with the CLIP loss (that is, fine-tuning)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    trains: ClassVar[bool] = True
    """False for methods that never update weights (zero-shot); the engine skips their training."""
    optimises: ClassVar[bool] = True
    """False for a method that learns from each stage's training data without gradient steps (RAIL's closed-form
    regression on frozen features): the engine calls ``begin_task(stage, data)`` with the data and ``end_task``,
    then evaluates and checkpoints the stage, but builds no optimiser and takes no step (``training_loss`` and the
    optimiser hooks are never called; there are no in-task checkpoints: an interrupted stage is redone whole on
    ``--resume``). Read only when ``trains`` is True."""
    settings: ClassVar[tuple[str, ...]] = ("captions", "classification")
    """The settings it supports (vlcl.settings): ``captions`` (image-caption pairs, scored by retrieval),
    ``classification`` (labels and class prompts, scored by top-1), ``modality_pairs`` (one linear map per
    modality over pre-extracted features), or a setting registered outside vlcl. A run on any other setting is
    refused before anything is written (RAIL's regression needs classes). The default ``training_loss`` is the
    setting's (its batch's ``default_loss``)."""
    needs_task_boundaries: ClassVar[bool] = True
    """False for a method that works on a stream without task boundaries (``data.stream=online``,
    docs/streams.md). On a stream the engine calls ``begin_task`` once, before the stream, with the stage
    ``stream`` and the whole stream's data in stream order; then only the step hooks and :meth:`observe_batch`;
    then ``end_task`` once, after the last sample. The hidden tasks of the stream are never named to the method.
    True (the default): the method does something at each task's start or end that a stream cannot give it
    (a Fisher matrix, a teacher per task, an adapter per task), and a stream run is refused before anything is
    written."""
    docs_page: ClassVar[Path | None] = None
    """Its documentation page; None = docs/methods/<name>.md of the vlcl repository. A method in another
    package points at its own page (the contract test reads the options table there)."""
    tuning_grid: ClassVar[dict[str, tuple[Any, ...]]] = {}
    """The method's own key options and the values ``vlcl compare --tune`` tries for each, crossed with the shared
    learning-rate grid (docs/tuning.md): at most 2-3 values per key, the default first, chosen from what the
    method's paper or its authors' code tuned or used. Keys are option names (``method.<key>``; a dotted key such
    as ``train.text_lr`` is a config key). Empty: only the learning rate is tuned."""

    def __init__(self, options: MethodOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.model: CLIPModel | None = None
        self.context: RunContext | None = None

    # -- lifecycle -----------------------------------------------------------------
    def setup(self, model: CLIPModel, context: RunContext) -> None:
        self.model = model
        self.context = context

    def stages(self, task_names: list[str]) -> list[Stage]:
        """One stage per task, in order. Joint training overrides this."""
        return [Stage(i, name, (i,)) for i, name in enumerate(task_names)]

    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        """Called before the first step of a stage with its training data (``None`` if the method does not train)."""

    def end_task(self, stage: Stage) -> None:
        """Called after the last step of a stage, before evaluation and the checkpoint."""

    def train(self) -> None:
        """Put every module the method trains in training mode (the engine calls it before a stage's steps)."""
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    # -- optimisation ----------------------------------------------------------------
    def parameter_groups(self) -> list[ParameterGroup]:
        return split_parameters(self.model)

    def encode(self, batch: CaptionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised (image, text) embeddings of a batch under the trained model: one text per image for a
        caption batch, one per class (its templates' mean) for a classification batch."""
        return image_embeddings(self.model, batch.pixel_values), batch.text_side(self.model)

    def logit_scale(self) -> torch.Tensor:
        """The multiplier of cosine similarities (exp of the learnable temperature), capped at 100 as in CLIP."""
        return self.model.logit_scale.exp().clamp(max=100.0)

    def task_loss(self, images: torch.Tensor, texts: torch.Tensor, batch: CaptionBatch) -> tuple[str, torch.Tensor]:
        """The loss of the task the batch comes from, and its log name, as its setting defines it (the batch's
        ``task_loss``): the CLIP loss (``clip``) of a caption batch, cross-entropy over the class prompts (``ce``,
        label smoothing ``train.label_smoothing``) of a classification batch. ``images``, ``texts``:
        :meth:`encode`'s output."""
        return batch.task_loss(images, texts, self.logit_scale(), self.context)

    @staticmethod
    def paired_texts(texts: torch.Tensor, batch: CaptionBatch) -> torch.Tensor:
        """One text per image: the caption's embedding, or for a classification batch its class's. For terms
        defined on image-text pairs (C-CLIP's CKC, Mod-X's and MulKI's in-batch terms)."""
        return batch.paired_texts(texts)

    def training_loss(self, batch: Batch, step: int) -> LossOutput:
        """The setting's default loss (:meth:`vlcl.settings.Batch.default_loss`): :meth:`task_loss` of
        :meth:`encode` for a CLIP batch, CMCL's one-directional loss for a modality pair."""
        return batch.default_loss(self)

    def observe_batch(self, data: CaptionedImages, indices: torch.Tensor) -> None:
        """On a stream only: called once per incoming batch, after its ``train.online_iters`` optimiser steps, with
        the positions of its samples in ``data`` (the stream ``begin_task`` received). A replay memory takes its
        samples here (reservoir sampling); a method that keeps nothing ignores it."""

    def before_optimizer_step(self, step: int) -> None:
        """Gradient hook: gradients are populated and clipped; change them here (e.g. projection)."""

    def after_optimizer_step(self, step: int) -> None:
        """Called after each optimiser step (e.g. for weight averaging)."""

    # -- in-stage state, for step checkpoints --------------------------------------------
    def training_modules(self) -> dict[str, torch.nn.Module]:
        """Modules whose tensors change during a stage; step checkpoints save and restore their state dicts."""
        return {"model": self.model}

    def step_state_dict(self) -> dict[str, Any]:
        """In-stage state besides ``training_modules`` (a running weight average, a generator...)."""
        return {}

    def load_step_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"method '{self.name}' keeps no in-stage state but the checkpoint has keys {sorted(state)}")

    # -- evaluation and state ----------------------------------------------------------
    def evaluation_model(self) -> CLIPModel:
        """The plain CLIPModel to evaluate and to save as this stage's checkpoint. Parts that fold exactly into
        CLIP weights are folded in here, so that the saved model scores what the evaluation scored (LoRA merges its
        adapters at each task's end; WiSE-FT interpolates the weights in place)."""
        return self.model

    def evaluation_beyond_model(self) -> str | None:
        """What this method's evaluation uses besides :meth:`evaluation_model`, as a clause that follows "its
        evaluation" (e.g. "adds a regression head over the image features"), or None when that model saved as a
        plain CLIPModel alone scores what the evaluation scored. When it is not None, the stage checkpoint's
        ``model/`` says in its own files (README.md, ``vlcl_not_the_evaluated_model`` in config.json) that it is not
        the evaluated model, ``vlcl export`` refuses the run with this reason, pointing to ``vlcl.load_run``, and
        ``vlcl.load_run`` rebuilds the method from the checkpoint. Asked of the method built with the run's options
        (an option may decide it: sit's ``tuning=adapter``), before ``setup``. The default names the evaluation
        hooks the class overrides (``evaluation_route``, ``classification_logits``); a method that overrides one,
        or whose evaluation model holds parts that a plain CLIPModel cannot (sit's adapters), says here in its own
        words what it adds."""
        hooks = overridden_evaluation_hooks(type(self))
        return f"also calls the method's {' and '.join(hooks)}" if hooks else None

    def evaluation_route(self, set_name: str, images: np.ndarray) -> AbstractContextManager[dict[str, float] | None]:
        """Entered around the evaluation of each set, with its uint8 [N, H, W, 3] images. A method that decides
        what evaluates a set from its images (MoE-Adapters' DDAS: a task's router, or the frozen model) sets that
        up here and yields the share of the set's images sent to each route, e.g. ``{"frozen": 1.0}``, which
        results.json keeps under ``routes``; the default routes nothing and yields None."""
        return nullcontext(None)

    def classification_logits(
        self, image_features: torch.Tensor, classifier: torch.Tensor, class_keys: list[tuple[str, ...]]
    ) -> torch.Tensor | None:
        """[N, C] scores of a classification set's images (``image_features``, un-normalised, from
        :meth:`evaluation_model`) over its classes: ``classifier`` holds their unit-norm prompt embeddings and
        ``class_keys[c]`` class c's prompts (what identifies a class across sets). None (the default): cosine
        similarity to ``classifier``. A method with its own head (RAIL's regression fused with zero-shot) returns
        its scores; task-agnostic sets call it with the union of the tasks' classes."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the evaluation model needed to resume: tensors and JSON values."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"method '{self.name}' keeps no state but the checkpoint has keys {sorted(state)}")
