"""Analytic (closed-form, recursive) classifiers on frozen CLIP features: the math of RAIL.

RAIL (Xu et al., NeurIPS 2024, "Advancing Cross-domain Discriminability in
Continual Learning of Vision-Language Models"; official code
linghan1997/Regression-based-Analytic-Incremental-Learning) keeps CLIP frozen
and learns, domain after domain, a ridge regression from image features to
one-hot labels over the union of the classes seen so far. Its solution after
any number of domains equals the joint solution on all data ("absolute
memorization"), because the recursion below is exact. At test time the
regression is fused with CLIP's zero-shot prediction.

Primal form (``primal_RAIL.py``): x -> phi(x) = ReLU(A x), A a fixed random
[H, d] matrix without bias (H = 15000 by default), then ridge regression

    W = (Phi^T Phi + gamma I)^{-1} Phi^T Y                  (:func:`ridge_solution`)

kept recursively (:class:`RecursiveRidge`, analytic learning as in ACIL) with
R = (Phi^T Phi + gamma I)^{-1}. For a new batch X_k with targets Y_k (one-hot
over the classes seen so far; W first gets zero columns for new classes):

    R_k = R_{k-1} - R_{k-1} X_k^T (I + X_k R_{k-1} X_k^T)^{-1} X_k R_{k-1}
    W_k = W_{k-1} + R_k X_k^T (Y_k - X_k W_{k-1})

Dual form (``dual_RAIL.py``): kernel ridge regression with the Gaussian kernel
k(x, z) = exp(-g ||x - z||^2) on the unit-norm CLIP features, no expansion:

    alpha = (K + lambda I)^{-1} Y,   f(x) = k(x, X_mem) alpha   (:func:`kernel_ridge_solution`)

It must keep every training feature X_mem (the official code stores them all
and re-solves from scratch after each domain); :class:`KernelRidge` updates
(K + lambda I)^{-1} and alpha recursively by the block (Schur complement)
inverse instead, which gives the same alpha.

Why old samples get zeros in the new classes' columns: Y is one-hot over the
union of classes, so an old sample's target for a class that did not exist
yet is 0 - padding W (primal) or alpha (dual) with zero columns is exactly
what the joint solution on the padded targets gives.

Fusion (:func:`fuse_with_zero_shot`): p = softmax(100 cos(image, class texts))
over the classes of every domain (seen and unseen); a test image whose
zero-shot argmax is one of the regression's classes counts as belonging to a
learned domain and gets (1 - beta) p + beta [f(x), 0] (beta = 0.8, f(x) the
raw regression output, zeros for classes the regression has not seen); every
other image keeps p.

Everything here is tensors: each class's ``state_dict`` holds tensors only
(safetensors can save it) and ``load_state_dict`` restores it exactly.
"""

from __future__ import annotations

import math

import torch

DEFAULT_HIDDEN_DIM = 15000
"""Width H of the primal form's random expansion (``configs/analytic_clip.yaml``: ``hidden_dim``)."""
DEFAULT_RIDGE_GAMMA = 0.1
"""Primal ridge regularisation gamma (``configs/analytic_clip.yaml``: ``regularization``)."""
DEFAULT_KERNEL_LAMBDA = 1e-3
"""Dual ridge regularisation lambda (hard-coded ``lamda=0.001`` in ``dual_RAIL.py``)."""
DEFAULT_KERNEL_GAMMA = 0.1
"""Gaussian kernel width g in exp(-g ||x - z||^2) (``configs/analytic_clip.yaml``: ``gamma``)."""
DEFAULT_FUSION_WEIGHT = 0.8
"""beta, the regression's share in the fusion (``configs/analytic_clip.yaml``: ``fusion_weight``)."""
ZERO_SHOT_LOGIT_SCALE = 100.0
"""The official code's zero-shot logits are 100 * cosine before the softmax of the fusion."""


def _matrix(name: str, value: torch.Tensor) -> None:
    if not isinstance(value, torch.Tensor) or value.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor, got {getattr(value, 'shape', type(value))}")


def _finite(name: str, value: torch.Tensor) -> None:
    # One NaN feature would silently poison R (or the kernel inverse) for every later task.
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf")


def _labels(labels: torch.Tensor, rows: int, num_classes: int | None) -> tuple[torch.Tensor, int]:
    """Validated long labels [rows] and the label-space size (the largest label + 1 when not given)."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or len(labels) != rows:
        raise ValueError(f"expected {rows} integer labels, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    labels = labels.long()
    top = int(labels.max()) + 1 if rows else 0
    if num_classes is None:
        num_classes = top
    if rows and (int(labels.min()) < 0 or top > num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {top - 1}]")
    return labels, num_classes


def one_hot_targets(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[N] integer labels -> [N, num_classes] one-hot regression targets (RAIL's Y, over the union of seen classes)."""
    labels, num_classes = _labels(labels, len(torch.as_tensor(labels)), num_classes)
    targets = torch.zeros(len(labels), num_classes, dtype=dtype, device=labels.device)
    targets[torch.arange(len(labels), device=labels.device), labels] = 1
    return targets


def _pad_columns(matrix: torch.Tensor, columns: int) -> torch.Tensor:
    """``matrix`` with zero columns appended up to ``columns`` (new classes: zero weight, see the module doc)."""
    if columns < matrix.shape[1]:
        raise ValueError(f"the label space cannot shrink: {matrix.shape[1]} classes known, {columns} given")
    if columns == matrix.shape[1]:
        return matrix
    return torch.cat([matrix, matrix.new_zeros(matrix.shape[0], columns - matrix.shape[1])], dim=1)


def _symmetric(matrix: torch.Tensor) -> torch.Tensor:
    # R and (K + lambda I)^{-1} are symmetric; rounding makes them drift apart over many updates.
    return (matrix + matrix.mT) / 2


def ridge_solution(features: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Closed-form ridge regression W = (X^T X + gamma I)^{-1} X^T Y, [F, C], computed in float64.

    The joint solution the recursive update must reproduce (RAIL's Theorem of absolute memorization).
    """
    _matrix("features", features)
    _matrix("targets", targets)
    if len(features) != len(targets):
        raise ValueError(f"{len(features)} feature rows but {len(targets)} target rows")
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    x, y = features.double(), targets.double()
    gram = x.mT @ x + gamma * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, x.mT @ y)


def rbf_kernel(a: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
    """Gaussian kernel matrix k(a_i, b_j) = exp(-gamma ||a_i - b_j||^2), [len(a), len(b)], in a's dtype.

    Squared distances as ||a||^2 + ||b||^2 - 2 a.b, clamped at 0 (rounding can make them slightly negative);
    the official ``utils.kernel`` forms the differences explicitly, which is the same value.
    """
    _matrix("a", a)
    _matrix("b", b)
    b = b.to(a.dtype)
    squared = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.mT
    return torch.exp(-gamma * squared.clamp_min(0))


def kernel_ridge_solution(features: torch.Tensor, targets: torch.Tensor, lam: float, gamma: float) -> torch.Tensor:
    """Closed-form kernel ridge regression alpha = (K + lam I)^{-1} Y with K = rbf_kernel(X, X, gamma), [N, C], float64.

    What ``utils.kernel_ridge_regression.train`` computes on all stored features after every domain.
    """
    _matrix("features", features)
    _matrix("targets", targets)
    if len(features) != len(targets):
        raise ValueError(f"{len(features)} feature rows but {len(targets)} target rows")
    if lam <= 0:
        raise ValueError(f"lambda must be positive, got {lam}")
    x = features.double()
    gram = rbf_kernel(x, x, gamma) + lam * torch.eye(len(x), dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, targets.double())


class RandomExpansion:
    """The primal form's fixed random layer phi(x) = ReLU(x A^T), A [H, d], no bias ("randomly-initialised hidden layer").

    A is drawn like ``nn.Linear``'s default weight (the official layer is ``nn.Linear(512, H, bias=False)``
    under ``torch.manual_seed(42)``): uniform in [-1/sqrt(d), 1/sqrt(d)], here from a seeded CPU
    ``torch.Generator`` so that the draw does not depend on what else consumed the global RNG. The official
    numbers cannot be matched bit for bit anyway (their draw follows CLIP's own initialisation). A is never
    trained; it is part of the state because every regression weight refers to it.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = DEFAULT_HIDDEN_DIM,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if in_dim < 1 or hidden_dim < 1:
            raise ValueError(f"dimensions must be positive, got in_dim={in_dim}, hidden_dim={hidden_dim}")
        generator = torch.Generator().manual_seed(seed)
        bound = 1 / math.sqrt(in_dim)
        weight = torch.rand(hidden_dim, in_dim, generator=generator, dtype=torch.float64) * (2 * bound) - bound
        self.weight = weight.to(dtype=dtype, device=device)

    @property
    def in_dim(self) -> int:
        return self.weight.shape[1]

    @property
    def hidden_dim(self) -> int:
        return self.weight.shape[0]

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """[N, d] features (unit-norm CLIP image features in RAIL) -> [N, H] expanded features, in A's dtype."""
        _matrix("features", features)
        if features.shape[1] != self.in_dim:
            raise ValueError(f"expected {self.in_dim}-dim features, got {features.shape[1]}")
        return torch.relu(features.to(self.weight) @ self.weight.mT)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        weight = state["weight"]
        _matrix("weight", weight)
        self.weight = weight.clone()

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> RandomExpansion:
        expansion = cls(state["weight"].shape[1], state["weight"].shape[0], dtype=state["weight"].dtype)
        expansion.load_state_dict(state)
        return expansion


class RecursiveRidge:
    """Primal RAIL / ACIL: ridge regression on [N, F] features kept exact batch after batch.

    State: R = (X^T X + gamma I)^{-1} [F, F] and W [F, C] over every batch seen, C growing with the label
    space. Starting from R_0 = I / gamma and W_0 = 0 (no data), each :meth:`update` applies the Woodbury step
    of the module doc, so W always equals :func:`ridge_solution` on all data so far. The official code
    instead inverts X^T X + gamma I directly on the first domain and recurses per batch of 128 afterwards;
    the result is the same. Memory: R is F^2 numbers (15000^2 float64 = 1.8 GB; pass float32 to halve it).
    """

    def __init__(
        self,
        feature_dim: int,
        gamma: float = DEFAULT_RIDGE_GAMMA,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be positive, got {feature_dim}")
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.gamma = float(gamma)
        self.R = torch.eye(feature_dim, dtype=dtype, device=device) / self.gamma
        self.W = torch.zeros(feature_dim, 0, dtype=dtype, device=device)

    @property
    def feature_dim(self) -> int:
        return self.R.shape[0]

    @property
    def num_classes(self) -> int:
        return self.W.shape[1]

    def update(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> None:
        """Learn a batch with integer labels; ``num_classes`` (default: as many as needed, never fewer than known)
        is the size of the label space so far - labels of a new domain come after the old ones."""
        labels, wanted = _labels(labels, len(features), num_classes)
        self.update_targets(features, one_hot_targets(labels, max(wanted, self.num_classes), self.W.dtype))

    def update_targets(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Learn a batch with dense [N, C'] targets, C' >= the known classes (W gains zero columns up to C')."""
        _matrix("features", features)
        _matrix("targets", targets)
        if features.shape[1] != self.feature_dim or len(features) != len(targets):
            raise ValueError(
                f"expected [N, {self.feature_dim}] features and N target rows, got {tuple(features.shape)} and {tuple(targets.shape)}"
            )
        _finite("features", features)
        _finite("targets", targets)
        self.W = _pad_columns(self.W, targets.shape[1])
        if not len(features):
            return
        x = features.to(self.R)
        y = targets.to(self.R)
        rx = self.R @ x.mT  # [F, N]
        # I + X R X^T is symmetric positive definite: solve it rather than invert it (the official code uses pinverse).
        inner = torch.eye(len(x), dtype=x.dtype, device=x.device) + x @ rx
        self.R = _symmetric(self.R - rx @ torch.linalg.solve(inner, rx.mT))
        self.W = self.W + self.R @ x.mT @ (y - x @ self.W)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Regression outputs X W, [N, C], in the state's dtype (raw scores near one-hot, not probabilities)."""
        _matrix("features", features)
        return features.to(self.W) @ self.W

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"R": self.R, "W": self.W, "gamma": torch.tensor(self.gamma, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        R, W = state["R"], state["W"]
        _matrix("R", R)
        _matrix("W", W)
        if R.shape[0] != R.shape[1] or W.shape[0] != R.shape[0]:
            raise ValueError(f"inconsistent state: R {tuple(R.shape)}, W {tuple(W.shape)}")
        self.R, self.W = R.clone(), W.clone().to(R)
        self.gamma = float(state["gamma"])

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> RecursiveRidge:
        ridge = cls(state["R"].shape[0], float(state["gamma"]), dtype=state["R"].dtype, device=state["R"].device)
        ridge.load_state_dict(state)
        return ridge


class KernelRidge:
    """Dual RAIL: Gaussian-kernel ridge regression whose state grows with every training sample.

    State: the stored features X_mem [N, d] (the official code keeps them all: the dual form is a feature
    memory), their labels [N], P = (K + lambda I)^{-1} [N, N] and alpha = P Y [N, C]. A new batch X2 (m rows,
    targets Y2) with B = k(X_mem, X2), D = k(X2, X2) + lambda I and the Schur complement S = D - B^T P B:

        E = S^{-1} (Y2 - B^T alpha)                (residual of the old model on the new batch)
        alpha <- [alpha - P B E ; E]
        P <- [[P + P B S^{-1} B^T P, -P B S^{-1}], [-S^{-1} B^T P, S^{-1}]]

    which equals :func:`kernel_ridge_solution` on all data; the official code re-solves from scratch
    (O(N^3) per domain), here one update costs O(N^2 m + m^3). Memory is N^2 (X-TAIL's 10 domains at
    16 shots: N = 17,600, P = 2.5 GB in float64).
    """

    def __init__(
        self,
        lam: float = DEFAULT_KERNEL_LAMBDA,
        gamma: float = DEFAULT_KERNEL_GAMMA,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        if lam <= 0 or gamma <= 0:
            raise ValueError(f"lambda and gamma must be positive, got {lam}, {gamma}")
        self.lam, self.gamma = float(lam), float(gamma)
        self.features = torch.zeros(0, 0, dtype=dtype, device=device)
        self.labels = torch.zeros(0, dtype=torch.long, device=device)
        self.inverse = torch.zeros(0, 0, dtype=dtype, device=device)
        self.alpha = torch.zeros(0, 0, dtype=dtype, device=device)

    @property
    def num_samples(self) -> int:
        return len(self.features)

    @property
    def num_classes(self) -> int:
        return self.alpha.shape[1]

    def update(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> None:
        """Add a batch with integer labels to the memory and re-fit exactly (see :meth:`RecursiveRidge.update`)."""
        labels, wanted = _labels(labels, len(features), num_classes)
        self._update(features, one_hot_targets(labels, max(wanted, self.num_classes), self.alpha.dtype), labels)

    def update_targets(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch with dense [m, C'] targets (stored labels are -1 for such rows: they have no class)."""
        _matrix("targets", targets)
        self._update(features, targets, torch.full((len(targets),), -1, dtype=torch.long, device=self.labels.device))

    def _update(self, features: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> None:
        _matrix("features", features)
        _matrix("targets", targets)
        if len(features) != len(targets):
            raise ValueError(f"{len(features)} feature rows but {len(targets)} target rows")
        if self.num_samples and features.shape[1] != self.features.shape[1]:
            raise ValueError(f"expected {self.features.shape[1]}-dim features, got {features.shape[1]}")
        _finite("features", features)
        _finite("targets", targets)
        alpha = _pad_columns(self.alpha, targets.shape[1])
        if not len(features):
            self.alpha = alpha
            return
        x2 = features.to(self.inverse)
        y2 = targets.to(self.inverse)
        d = rbf_kernel(x2, x2, self.gamma) + self.lam * torch.eye(len(x2), dtype=x2.dtype, device=x2.device)
        if not self.num_samples:
            s_inv = _symmetric(torch.linalg.inv(d))
            self.inverse, self.alpha = s_inv, s_inv @ y2
        else:
            b = rbf_kernel(self.features, x2, self.gamma)  # [N, m]
            pb = self.inverse @ b  # [N, m]
            s_inv = _symmetric(torch.linalg.inv(d - b.mT @ pb))
            e = s_inv @ (y2 - b.mT @ alpha)
            corner = -pb @ s_inv  # [N, m], the off-diagonal block -P B S^{-1}
            self.inverse = _symmetric(
                torch.cat(
                    [
                        torch.cat([self.inverse - corner @ pb.mT, corner], dim=1),
                        torch.cat([corner.mT, s_inv], dim=1),
                    ]
                )
            )
            self.alpha = torch.cat([alpha - pb @ e, e])
        self.features = torch.cat([self.features.reshape(-1, x2.shape[1]), x2])
        self.labels = torch.cat([self.labels, labels.to(self.labels.device)])

    def logits(self, features: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
        """k(x, X_mem) alpha, [n, C], in the state's dtype; kernel rows in chunks to bound memory at chunk x N."""
        _matrix("features", features)
        x = features.to(self.alpha)
        if not self.num_samples:
            return x.new_zeros(len(x), self.num_classes)
        rows = [rbf_kernel(x[i : i + chunk_size], self.features, self.gamma) @ self.alpha for i in range(0, len(x), chunk_size)]
        return torch.cat(rows) if rows else x.new_zeros(0, self.num_classes)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "features": self.features,
            "labels": self.labels,
            "inverse": self.inverse,
            "alpha": self.alpha,
            "lam": torch.tensor(self.lam, dtype=torch.float64),
            "gamma": torch.tensor(self.gamma, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        features, inverse, alpha, labels = state["features"], state["inverse"], state["alpha"], state["labels"]
        n = len(features)
        if inverse.shape != (n, n) or len(alpha) != n or len(labels) != n:
            raise ValueError(
                f"inconsistent state: {n} features, inverse {tuple(inverse.shape)}, alpha {tuple(alpha.shape)}, {len(labels)} labels"
            )
        self.features, self.labels = features.clone(), labels.clone().long()
        self.inverse, self.alpha = inverse.clone(), alpha.clone()
        self.lam, self.gamma = float(state["lam"]), float(state["gamma"])

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> KernelRidge:
        ridge = cls(float(state["lam"]), float(state["gamma"]), dtype=state["inverse"].dtype)
        ridge.load_state_dict(state)
        return ridge


def _adapter_classes(
    adapter_classes: torch.Tensor | None, regression_classes: int, union_classes: int, device: torch.device
) -> torch.Tensor:
    if adapter_classes is None:
        # Official layout: classes are numbered domain after domain, so the learned ones are a prefix.
        adapter_classes = torch.arange(regression_classes, device=device)
    adapter_classes = torch.as_tensor(adapter_classes, device=device).long()
    if adapter_classes.ndim != 1 or len(adapter_classes) != regression_classes:
        raise ValueError(f"expected {regression_classes} adapter class indices, got shape {tuple(adapter_classes.shape)}")
    if len(adapter_classes) and (int(adapter_classes.min()) < 0 or int(adapter_classes.max()) >= union_classes):
        raise ValueError(f"adapter class indices must lie in [0, {union_classes})")
    if len(adapter_classes.unique()) != len(adapter_classes):
        raise ValueError("adapter class indices must be distinct")
    return adapter_classes


def learned_domain_mask(
    zero_shot_logits: torch.Tensor, adapter_classes: torch.Tensor | None = None, regression_classes: int | None = None
) -> torch.Tensor:
    """[B] bool: the zero-shot argmax is one of the regression's classes (RAIL's test-time domain selector).

    ``adapter_classes`` [C] maps regression column j to its union class index (default: the first
    ``regression_classes`` union classes, the official layout); no domain identity is used, only the
    zero-shot prediction over the union of every domain's classes.
    """
    _matrix("zero_shot_logits", zero_shot_logits)
    if adapter_classes is None and regression_classes is None:
        raise ValueError("give adapter_classes or regression_classes")
    count = len(adapter_classes) if adapter_classes is not None else int(regression_classes)
    classes = _adapter_classes(adapter_classes, count, zero_shot_logits.shape[1], zero_shot_logits.device)
    learned = torch.zeros(zero_shot_logits.shape[1], dtype=torch.bool, device=zero_shot_logits.device)
    learned[classes] = True
    return learned[zero_shot_logits.argmax(dim=1)]


def fuse_with_zero_shot(
    zero_shot_logits: torch.Tensor,
    adapter_logits: torch.Tensor,
    adapter_classes: torch.Tensor | None = None,
    weight: float = DEFAULT_FUSION_WEIGHT,
) -> torch.Tensor:
    """RAIL's training-free fusion, [B, U] scores over the union label space (argmax = prediction):

        p = softmax(zero_shot_logits)                                   (every domain's classes, U of them)
        out_b = (1 - beta) p_b + beta pad(f_b)   if argmax p_b is a class the regression knows
        out_b = p_b                              otherwise (unseen domain: CLIP's zero-shot answer, untouched)

    ``zero_shot_logits`` [B, U] are CLIP's scaled logits (100 * cosine in the official code; the scale
    matters, the softmax is taken here). ``adapter_logits`` [B, C] are the raw regression outputs f(x) for
    the same images (not a softmax, as in the official code), placed at union columns ``adapter_classes``
    (default 0..C-1) with 0 at every other column. beta = ``weight``. Computed in the wider of the two dtypes.
    """
    _matrix("zero_shot_logits", zero_shot_logits)
    _matrix("adapter_logits", adapter_logits)
    if len(zero_shot_logits) != len(adapter_logits):
        raise ValueError(f"{len(zero_shot_logits)} zero-shot rows but {len(adapter_logits)} adapter rows")
    if not 0 <= weight <= 1:
        raise ValueError(f"the fusion weight must lie in [0, 1], got {weight}")
    dtype = torch.promote_types(zero_shot_logits.dtype, adapter_logits.dtype)
    classes = _adapter_classes(adapter_classes, adapter_logits.shape[1], zero_shot_logits.shape[1], zero_shot_logits.device)
    probs = torch.softmax(zero_shot_logits.to(dtype), dim=1)
    placed = probs.new_zeros(probs.shape)
    placed[:, classes] = adapter_logits.to(dtype)
    mask = learned_domain_mask(zero_shot_logits, classes)
    return torch.where(mask[:, None], (1 - weight) * probs + weight * placed, probs)
