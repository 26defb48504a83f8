"""RAIL: a closed-form regression on frozen CLIP image features, fused with zero-shot CLIP (Xu et al., NeurIPS 2024).

"Advancing Cross-domain Discriminability in Continual Learning of Vision-Language Models"; official code
linghan1997/Regression-based-Analytic-Incremental-Learning at eaac644e1acc2d10e2a6863e7ba19cbf422b6461.
CLIP is never updated (no optimiser, no gradient step: ``optimises = False``). At every task the frozen model's
unit-norm image embeddings of the training images update, in closed form, a ridge regression onto one-hot labels
over the union of the classes seen so far:

* ``form=primal``: phi(x) = ReLU(A x), A a fixed random [H, d] matrix, then W = (Phi^T Phi + gamma I)^{-1} Phi^T Y
  kept recursively (:class:`vlcl.methods.rail.analytic.RecursiveRidge`, batch after batch);
* ``form=dual``: Gaussian kernel ridge regression alpha = (K + lambda I)^{-1} Y on every training feature so far,
  re-solved after each task as the official code does (:func:`vlcl.methods.rail.analytic.kernel_ridge_solution`).

Either way the regression after any task equals the joint solution on all data seen. At evaluation
(:meth:`RAIL.classification_logits`), p = softmax(100 cos) over the given classes; an image whose zero-shot argmax
is a class the regression has learned gets (1 - beta) p + beta f(x) (f zero for classes it never saw), every other
image keeps p. docs/methods/rail.md has the formulas, the defaults and every deviation from the official code.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from vlcl.data.benchmark import CaptionedImages
from vlcl.methods.base import Method, MethodOptions, RunContext, Stage
from vlcl.methods.registry import register_method
from vlcl.methods.rail.analytic import (
    DEFAULT_FUSION_WEIGHT,
    DEFAULT_KERNEL_GAMMA,
    DEFAULT_KERNEL_LAMBDA,
    DEFAULT_RIDGE_GAMMA,
    ZERO_SHOT_LOGIT_SCALE,
    RandomExpansion,
    RecursiveRidge,
    fuse_with_zero_shot,
    kernel_ridge_solution,
    one_hot_targets,
    rbf_kernel,
)
from vlcl.models.encode import encode_images

ENCODE_BATCH = 256
"""Images per forward pass when encoding a task's training images (the features do not depend on it)."""
KERNEL_CHUNK = 1024
"""Test images per kernel block k(x, X_mem) at evaluation (memory chunk x N)."""


class RAILOptions(MethodOptions):
    form: Literal["primal", "dual"] = "dual"
    """``dual``: Gaussian kernel ridge regression on every stored feature (Dual-RAIL, the paper's stronger form);
    ``primal``: ridge regression on a random ReLU expansion, kept recursively (Primal-RAIL)."""
    hidden_dim: int = Field(15000, ge=1)
    """Primal: width H of the random expansion (official 15000)."""
    feature_expansion: bool = True
    """Primal: use the random ReLU expansion (official ``feature_expansion: 1``); false regresses on the d-dim
    features themselves."""
    ridge_gamma: float = Field(DEFAULT_RIDGE_GAMMA, gt=0)
    """Primal: ridge regularisation gamma (official ``regularization: 0.1``)."""
    update_rows: int = Field(128, ge=1)
    """Primal: training rows per recursive update (official: the train loader's batch of 128); the solution does
    not depend on it beyond rounding, the time does (each update touches the H x H matrix)."""
    kernel_lambda: float = Field(DEFAULT_KERNEL_LAMBDA, gt=0)
    """Dual: ridge regularisation lambda (official ``lamda=0.001``, hard-coded)."""
    kernel_gamma: float = Field(DEFAULT_KERNEL_GAMMA, gt=0)
    """Dual: Gaussian kernel width g in exp(-g ||x - z||^2) (official ``gamma: 0.1``)."""
    fusion_weight: float = Field(DEFAULT_FUSION_WEIGHT, ge=0, le=1)
    """beta, the regression's share in the fusion with the zero-shot probabilities (official 0.8)."""


@register_method
class RAIL(Method):
    name = "rail"
    description = "frozen CLIP + closed-form ridge (primal) / kernel ridge (dual) regression per task, fused with zero-shot"
    Options = RAILOptions
    optimises = False
    settings = ("classification",)

    def setup(self, model, context: RunContext) -> None:
        super().setup(model, context)
        model.requires_grad_(False)  # frozen: nothing here ever takes a gradient
        self.class_keys: list[tuple[str, ...]] = []
        self._columns: dict[tuple[str, ...], int] = {}
        dim = int(model.config.projection_dim)
        opts = self.options
        self.expansion: RandomExpansion | None = None
        self.ridge: RecursiveRidge | None = None
        if opts.form == "primal":
            if opts.feature_expansion:
                self.expansion = RandomExpansion(dim, opts.hidden_dim, seed=context.seed, dtype=torch.float64)
            self.ridge = RecursiveRidge(self.expansion.hidden_dim if self.expansion else dim, opts.ridge_gamma)
        else:
            self.memory = torch.zeros(0, dim, dtype=torch.float32)  # every training feature so far (the dual's data)
            self.labels = torch.zeros(0, dtype=torch.long)
            self.alpha = torch.zeros(0, 0, dtype=torch.float64)

    # -- learning ------------------------------------------------------------------------
    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        if data is None or not isinstance(data, CaptionedImages) or not data.classification:
            raise ValueError(f"rail learns classification tasks: stage '{stage.name}' has no class labels")
        columns = torch.tensor([self._column(tuple(prompts)) for prompts in data.class_prompts], dtype=torch.long)
        features = self.encode_images(data.images)
        self.learn(features, columns[data.labels])

    def _column(self, key: tuple[str, ...]) -> int:
        """The regression column of a class (its prompts): a class seen before keeps its column, a new one is appended."""
        if key not in self._columns:
            self._columns[key] = len(self.class_keys)
            self.class_keys.append(key)
        return self._columns[key]

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        """Unit-norm float32 [N, d] embeddings of uint8 [N, H, W, 3] images by the frozen model, with the
        evaluation preprocessing (as the evaluator encodes test images)."""
        preprocess = self.context.bundle.preprocess
        was_training = self.model.training
        self.model.eval()
        chunks = [torch.zeros(0, int(self.model.config.projection_dim))]
        for start in range(0, len(images), ENCODE_BATCH):
            pixels = preprocess.normalize_uint8(images[start : start + ENCODE_BATCH])
            chunks.append(encode_images(self.model, pixels, ENCODE_BATCH))
        self.model.train(was_training)
        return torch.cat(chunks)

    def learn(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Update the regression with unit-norm [N, d] features and labels in the union's columns (0..C-1)."""
        classes = len(self.class_keys)
        if self.ridge is not None:
            expanded = self._expand(features)
            rows = self.options.update_rows
            for start in range(0, len(expanded), rows):
                self.ridge.update(expanded[start : start + rows], labels[start : start + rows], num_classes=classes)
        else:
            self.memory = torch.cat([self.memory, features.float()])
            self.labels = torch.cat([self.labels, labels.long()])
            targets = one_hot_targets(self.labels, classes)
            self.alpha = kernel_ridge_solution(self.memory, targets, self.options.kernel_lambda, self.options.kernel_gamma)

    def _expand(self, features: torch.Tensor) -> torch.Tensor:
        x = features.double()
        return self.expansion(x) if self.expansion is not None else x

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def regression_logits(self, features: torch.Tensor) -> torch.Tensor:
        """f(x), the regression's raw [N, C] scores over the learned classes (columns in ``class_keys`` order),
        float64, for unit-norm features."""
        if self.ridge is not None:
            return self.ridge.logits(self._expand(features))
        x = features.double()
        memory = self.memory.double()
        rows = [
            rbf_kernel(x[i : i + KERNEL_CHUNK], memory, self.options.kernel_gamma) @ self.alpha
            for i in range(0, len(x), KERNEL_CHUNK)
        ]
        return torch.cat(rows) if rows else x.new_zeros(0, self.alpha.shape[1])

    def learned_column(self, key: tuple[str, ...]) -> int | None:
        """The regression column of an evaluated class, or None. A class is its prompts; under
        ``train.class_prompts=first`` the training data carries only the first template's prompt, so a class whose
        full prompts are not known is looked up by its first prompt."""
        found = self._columns.get(key)
        return found if found is not None else self._columns.get(key[:1])

    @torch.no_grad()
    def classification_logits(
        self, image_features: torch.Tensor, classifier: torch.Tensor, class_keys: list[tuple[str, ...]]
    ) -> torch.Tensor:
        """RAIL's fusion over the given classes: softmax(100 cos) for an image whose zero-shot argmax is a class the
        regression has not learned, (1 - beta) p + beta f(x) (zeros for classes it never saw) otherwise."""
        unit = F.normalize(image_features.double(), dim=-1)
        zero_shot = ZERO_SHOT_LOGIT_SCALE * (unit @ classifier.double().to(unit.device).mT)  # float64 throughout
        pairs = [(c, j) for c, key in enumerate(class_keys) if (j := self.learned_column(tuple(key))) is not None]
        if not pairs:
            return torch.softmax(zero_shot, dim=1)
        given, learned = (torch.tensor(side, dtype=torch.long) for side in zip(*pairs))
        adapter = self.regression_logits(unit.cpu())[:, learned].to(zero_shot.device)
        return fuse_with_zero_shot(zero_shot, adapter, given.to(zero_shot.device), self.options.fusion_weight)

    def evaluation_beyond_model(self) -> str:
        # the head scores classes, not image-text pairs: it has no place in a CLIPModel
        return (
            "scores classes with a ridge regression head over the frozen CLIP's image features, fused with zero-shot; "
            "the head is in the method state, model/ is the frozen CLIP without it"
        )

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"form": self.options.form, "class_keys": [list(k) for k in self.class_keys]}
        if self.ridge is not None:
            state["ridge"] = dict(self.ridge.state_dict())
            if self.expansion is not None:
                state["expansion"] = dict(self.expansion.state_dict())
        else:
            state["dual"] = {"features": self.memory, "labels": self.labels, "alpha": self.alpha}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("form") != self.options.form:
            raise ValueError(f"the checkpoint holds a {state.get('form')} RAIL, the options ask for form={self.options.form}")
        keys = [tuple(k) for k in state["class_keys"]]
        if self.ridge is not None:
            self.ridge = RecursiveRidge.from_state_dict(state["ridge"])
            if ("expansion" in state) != (self.expansion is not None):
                raise ValueError("the checkpoint's random expansion does not match method.feature_expansion")
            if self.expansion is not None:
                self.expansion = RandomExpansion.from_state_dict(state["expansion"])
            if self.ridge.num_classes != len(keys):
                raise ValueError(f"{self.ridge.num_classes} regression columns but {len(keys)} class keys")
        else:
            dual = state["dual"]
            memory, labels, alpha = dual["features"], dual["labels"], dual["alpha"]
            if len(memory) != len(labels) or len(alpha) != len(memory) or (len(alpha) and alpha.shape[1] != len(keys)):
                raise ValueError(
                    f"inconsistent dual state: {len(memory)} features, {len(labels)} labels, alpha {tuple(alpha.shape)}, {len(keys)} classes"
                )
            self.memory, self.labels, self.alpha = memory.clone().float(), labels.clone().long(), alpha.clone().double()
        self.class_keys = keys
        self._columns = {key: j for j, key in enumerate(keys)}
