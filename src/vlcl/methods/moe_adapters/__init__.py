"""MoE-Adapters: a mixture of adapter experts per block, and DDAS to pick a task's router at test time.

Yu, Zhuge, Zhang, Hu, Wang, Lu, He, "Boosting Continual Learning of
Vision-Language Models via Mixture-of-Experts Adapters", CVPR 2024; the
authors' code JiazuoYu/MoE-Adapters4CL at 4572d97 (facts: docs/methods/moe_adapters.md).

The CLIP model is frozen. Every block of both towers gets E adapter experts
beside its MLP and one noisy top-k router per task (vlcl.methods.moe_adapters.moe):

    h' = h + MLP(LN2(h)) + sum_{e in top_k(z)} softmax(z_top_k)_e * E_e(h),   z = h_0 W_t (+ noise in training)

Task t trains its router W_t, V_t and the experts not yet frozen, with the
task's loss (CLIP loss or cross-entropy over class prompts); at its end the
``freeze_top`` experts its training used most in every layer are frozen for
good. DDAS (vlcl.methods.moe_adapters.ddas): an autoencoder per task on the frozen model's
image embeddings of the task's training images, one on reference images;
a test set goes to the router of the autoencoder that reconstructs it best,
or to the frozen CLIP when that is the reference autoencoder or the error is
above the autoencoder's threshold.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from transformers import CLIPModel

from vlcl.data.benchmark import CaptionedImages
from vlcl.losses import world_size
from vlcl.methods.base import Method, MethodOptions, ParameterGroup, RunContext, Stage
from vlcl.methods.registry import register_method
from vlcl.methods.zscl import embedded_reference, preprocessed_images, reference_image_files
from vlcl.methods.moe_adapters.ddas import FROZEN_MODEL, TaskAutoencoder, fit_autoencoder, reconstruction_errors, select_routes
from vlcl.models.encode import image_embeddings
from vlcl.methods.moe_adapters.moe import MoEAdapters, add_moe_adapters
from vlcl.seeds import ddas_seed

FROZEN_LABEL = "frozen"


class MoEAdaptersOptions(MethodOptions):
    num_experts: int = Field(22, ge=1)
    """E, experts per block and tower (the authors' scripts: 22)."""
    top_k: int = Field(2, ge=1)
    """Experts per sample (the authors' --topk 2)."""
    bottleneck: int = Field(64, ge=1)
    """Width of each expert (hard-coded 64 in the authors' adapter)."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout inside each expert."""
    scale: float = Field(0.1, gt=0)
    """Multiplier of each expert's output (adapter_scalar)."""
    freeze_top: int = Field(2, ge=0)
    """Experts frozen per layer and tower after each task: the most used by its training (0: none)."""
    ddas: bool = True
    """Route each evaluated set with DDAS; false: every set through the newest task's router."""
    ddas_decision: Literal["mean", "vote"] = "mean"
    """mean: one decision per set on its mean errors (the authors decide per batch on the batch-mean); vote: each
    image decides, the set takes the most frequent route."""
    ddas_threshold: float | None = Field(None, gt=0)
    """One fixed threshold for every autoencoder (the authors' 0.0655 belongs to AlexNet features); null: each task
    autoencoder's own, calibrated on held-out training images (``ddas_threshold_scale``)."""
    ddas_threshold_scale: float = Field(1.25, gt=0)
    """Calibrated threshold of a task autoencoder = this x its mean error on the task's held-out training images."""
    ddas_calibration_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of a task's training images held out of its autoencoder's fit to calibrate the threshold (0: the fit
    images themselves)."""
    ddas_code: int = Field(100, ge=1)
    """Code width of each autoencoder (the authors' 100)."""
    ddas_lr: float = Field(0.01, gt=0)
    """Adam learning rate, x0.1 every ``ddas_decay_every`` epochs (the authors' exp_lr_scheduler)."""
    ddas_weight_decay: float = Field(1e-4, ge=0)
    """Adam's L2 weight decay (the authors' 1e-4)."""
    ddas_decay_every: int = Field(10, ge=1)
    """Epochs between the x0.1 learning-rate steps."""
    ddas_batch_size: int = Field(64, ge=1)
    """Autoencoder batch size (the authors' 64)."""
    ddas_iterations: int = Field(301, ge=1)
    """Optimisation steps of a task's autoencoder (the authors' 300 + 1)."""
    ddas_reference_iterations: int = Field(1001, ge=1)
    """Optimisation steps of the reference autoencoder (the authors' 1000 + 1)."""
    reference: Literal["embedded", "folder"] = "embedded"
    """Images of the reference autoencoder: base-world images (as zscl), or a folder of your own."""
    reference_images: int = Field(1000, ge=1)
    """Number of reference images (embedded), or at most this many from the folder (a seeded subset)."""
    reference_dir: str | None = None
    """reference=folder: a folder of images (searched recursively)."""
    feature_batch_size: int = Field(256, ge=1)
    """Batch size of the frozen model's embeddings for DDAS."""

    @model_validator(mode="after")
    def _consistent(self) -> "MoEAdaptersOptions":
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k={self.top_k} must not exceed num_experts={self.num_experts}")
        if self.freeze_top > self.num_experts:
            raise ValueError(f"freeze_top={self.freeze_top} must not exceed num_experts={self.num_experts}")
        if self.reference == "embedded" and self.reference_dir is not None:
            raise ValueError("reference_dir is read only with reference=folder (reference is 'embedded')")
        return self


def folder_reference_pixels(image_dir: str | None, max_images: int, seed: int, preprocess) -> torch.Tensor:
    """Normalised pixels of the images of ``image_dir`` (at most ``max_images``, a seeded subset if more)."""
    if image_dir is None:
        raise ValueError("moe_adapters: method.reference=folder needs method.reference_dir (a folder of images)")
    return preprocessed_images(reference_image_files(image_dir, max_images, seed, "moe_adapters"), preprocess)


@register_method
class MoEAdaptersMethod(Method):
    name = "moe_adapters"
    description = "MoE-Adapters: mixture of adapter experts per block on a frozen CLIP, per-task routers, DDAS task selection"
    Options = MoEAdaptersOptions

    # -- set-up ----------------------------------------------------------------------
    def setup(self, model: CLIPModel, context: RunContext) -> None:
        super().setup(model, context)
        opts = self.options
        if opts.reference == "folder":  # a missing folder is refused before the run writes anything
            folder_reference_pixels(opts.reference_dir, 1, context.seed, self._preprocess())
        model.requires_grad_(False)
        self.task_names = [stage.name for stage in self.stages(context.task_names)]
        self.adapters: MoEAdapters = add_moe_adapters(
            model, len(self.task_names), opts.num_experts, opts.top_k, opts.bottleneck, opts.dropout, opts.scale
        )
        self.reference_autoencoder: TaskAutoencoder | None = None
        self.autoencoders: dict[int, TaskAutoencoder] = {}
        self.thresholds: dict[int, float] = {}
        self.trained: list[int] = []
        self._data: CaptionedImages | None = None

    def _preprocess(self):
        if self.context.bundle is None:
            raise ValueError("moe_adapters needs the run's preprocessing (RunContext.bundle)")
        return self.context.bundle.preprocess

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- training --------------------------------------------------------------------
    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        self.adapters.start_task(stage.index)
        self._data = data

    def parameter_groups(self) -> list[ParameterGroup]:
        """The current task's routers and the unfrozen experts, by tower; matrices weight-decayed, biases not."""
        groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
        for name, param in self.adapters.named_trainable_parameters(self.adapters.active_task):
            groups.setdefault((name.split(".")[0], param.ndim >= 2), []).append(param)
        return [ParameterGroup(params, tower, decay) for (tower, decay), params in sorted(groups.items())]

    def training_modules(self) -> dict[str, torch.nn.Module]:
        return {"adapters": self.adapters}  # the CLIP model is frozen

    def end_task(self, stage: Stage) -> None:
        opts = self.options
        sum_usage_over_processes(self.adapters)
        if opts.freeze_top:
            self.adapters.freeze_most_used(opts.freeze_top)
        else:
            self.adapters.reset_usage()
        if opts.ddas:
            if self.reference_autoencoder is None:
                self.reference_autoencoder = self._fit_reference()
            if self._data is not None:
                self.autoencoders[stage.index], self.thresholds[stage.index] = self._fit_task(stage.index, self._data)
        if stage.index not in self.trained:
            self.trained.append(stage.index)
        self._data = None

    # -- DDAS ------------------------------------------------------------------------
    @torch.no_grad()
    def frozen_features(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Un-normalised image embeddings of the frozen CLIP (every router off), float32 on the model's device;
        ``pixels``: uint8 [N, H, W, 3] images or normalised [N, 3, H, W] pixel values."""
        preprocess, batch = self._preprocess(), self.options.feature_batch_size
        device, was_training = self._device(), self.model.training
        self.model.eval()
        chunks = []
        try:
            with self.adapters.routing(None):
                for start in range(0, len(pixels), batch):
                    part = pixels[start : start + batch]
                    if isinstance(part, np.ndarray):
                        part = preprocess.normalize_uint8(part)
                    chunks.append(image_embeddings(self.model, part.to(device)).float())
        finally:
            self.model.train(was_training)
        return torch.cat(chunks)

    def _fit(self, features: torch.Tensor, iterations: int, generator: torch.Generator) -> TaskAutoencoder:
        opts = self.options
        return fit_autoencoder(
            features, lr=opts.ddas_lr, batch_size=opts.ddas_batch_size, generator=generator, weight_decay=opts.ddas_weight_decay,
            decay_every=opts.ddas_decay_every, code_dims=opts.ddas_code, iterations=iterations,
        )

    def _fit_reference(self) -> TaskAutoencoder:
        opts, preprocess, seed = self.options, self._preprocess(), self.context.seed
        if opts.reference == "embedded":
            pixels = embedded_reference(opts.reference_images, seed, preprocess).images
        else:
            pixels = folder_reference_pixels(opts.reference_dir, opts.reference_images, seed, preprocess)
        generator = torch.Generator().manual_seed(ddas_seed(seed, -1))
        return self._fit(self.frozen_features(pixels), opts.ddas_reference_iterations, generator)

    def _fit_task(self, index: int, data: CaptionedImages) -> tuple[TaskAutoencoder, float]:
        """The task's autoencoder and its threshold: ``ddas_threshold`` if set, else ``ddas_threshold_scale`` x
        its mean error on the held-out share of the task's images (the fit images if that share is empty)."""
        opts = self.options
        generator = torch.Generator().manual_seed(ddas_seed(self.context.seed, index))
        features = self.frozen_features(data.images)
        held = int(len(features) * opts.ddas_calibration_fraction)
        order = torch.randperm(len(features), generator=generator).to(features.device)
        fit, calibration = (features[order[held:]], features[order[:held]]) if held else (features, features)
        autoencoder = self._fit(fit, opts.ddas_iterations, generator)
        if opts.ddas_threshold is not None:
            return autoencoder, float(opts.ddas_threshold)
        own = reconstruction_errors([autoencoder], calibration)[:, 0]
        return autoencoder, float(opts.ddas_threshold_scale * own.mean())

    def route_of(self, images: np.ndarray | torch.Tensor) -> tuple[int | None, dict[str, float]]:
        """The task index whose router evaluates ``images`` (None: the frozen CLIP) and the shares of the images
        per route (one route with share 1 under ``ddas_decision=mean``)."""
        if not self.trained:
            return None, {FROZEN_LABEL: 1.0}
        if not self.options.ddas:
            newest = self.trained[-1]
            return newest, {self.task_names[newest]: 1.0}
        tasks = sorted(self.autoencoders)
        if self.reference_autoencoder is None or not tasks:
            return None, {FROZEN_LABEL: 1.0}
        errors = reconstruction_errors([self.reference_autoencoder, *(self.autoencoders[t] for t in tasks)], self.frozen_features(images))
        thresholds = torch.tensor([float("inf"), *(self.thresholds[t] for t in tasks)])
        per_sample = self.options.ddas_decision == "vote"
        chosen = select_routes(errors.cpu(), thresholds, reference_index=0, per_batch=not per_sample)
        labels = [FROZEN_LABEL if c == FROZEN_MODEL else self.task_names[tasks[c]] for c in chosen.tolist()]
        counts = {label: labels.count(label) for label in dict.fromkeys(labels)}
        shares = {label: count / len(labels) for label, count in counts.items()}
        # the most frequent route; ties to the frozen model, then to the earlier task
        order = [FROZEN_LABEL, *(self.task_names[t] for t in tasks)]
        winner = min(counts, key=lambda label: (-counts[label], order.index(label)))
        return (None if winner == FROZEN_LABEL else self.task_names.index(winner)), shares

    @contextmanager
    def evaluation_route(self, set_name: str, images: np.ndarray) -> Iterator[dict[str, float]]:
        task, shares = self.route_of(images)
        with self.adapters.routing(task):
            yield shares

    def evaluation_beyond_model(self) -> str:
        # the experts' mixture depends on each token and DDAS on each set's images: no single CLIPModel equals it
        return (
            "runs every set through MoE adapters under one task's router or the frozen CLIP, picked per set by DDAS "
            "autoencoders; adapters, routers and autoencoders are in the method state, model/ is the frozen CLIP they sit on"
        )

    # -- state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "adapters": self.adapters.state_dict(),
            "reference_autoencoder": self.reference_autoencoder.state_dict() if self.reference_autoencoder is not None else None,
            "autoencoders": {str(t): ae.state_dict() for t, ae in sorted(self.autoencoders.items())},
            "thresholds": {str(t): v for t, v in sorted(self.thresholds.items())},
            "trained": list(self.trained),
        }

    def _autoencoder(self, state: dict[str, torch.Tensor]) -> TaskAutoencoder:
        features, code = state["encoder.0.weight"].shape[1], state["encoder.0.weight"].shape[0]
        autoencoder = TaskAutoencoder(features, code).to(self._device())
        autoencoder.load_state_dict(state)
        return autoencoder.eval()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"adapters", "autoencoders", "thresholds", "trained"} - set(state)
        if missing:
            raise ValueError(f"moe_adapters: the checkpoint's method state lacks {sorted(missing)}")
        self.adapters.load_state_dict(state["adapters"])
        reference = state.get("reference_autoencoder")
        self.reference_autoencoder = self._autoencoder(reference) if reference else None
        self.autoencoders = {int(t): self._autoencoder(sd) for t, sd in state["autoencoders"].items()}
        self.thresholds = {int(t): float(v) for t, v in state["thresholds"].items()}
        self.trained = [int(t) for t in state["trained"]]
        self.adapters.set_active_task(self.trained[-1] if self.trained else None)


def sum_usage_over_processes(adapters: MoEAdapters) -> None:
    """Under torchrun, every layer's expert usage becomes the sum over the processes, so that every process
    freezes the same experts (each counted only its own shard of the data); a no-op in one process."""
    if world_size(gather=True) > 1:
        for _, _, layer in adapters.layers():
            torch.distributed.all_reduce(layer.usage, op=torch.distributed.ReduceOp.SUM)

