"""CMCL: dual-sided null-space (DNS) projection (Liu et al., arXiv 2503.14963, NeurIPS 2025).

CMCL learns one linear map per modality, f_m(x) = W_m x, over a sequence of
modality *pairs* (A, B), with the one-directional contrastive loss

    L = CE( (W_A x_A)(W_B x_B)^T , diagonal targets )                 (temperature 1)

and keeps, for every modality m,

    Sigma_m  = running mean of x_m x_m^T over every input of m seen so far        (input side)
    Sigma'_m = running mean of (W_p x_p)(W_p x_p)^T over the partners p of m      (output side)

updated at the end of every task over that task's whole training set: when
(A, B) is learned, Sigma_A, Sigma_B get that task's inputs, Sigma'_B gets
W_A Sigma_A^{task} W_A^T and Sigma'_A gets W_B Sigma_B^{task} W_B^T. From a
covariance with eigenvalues lambda_1 >= ... >= lambda_d, a projector onto its
principal directions:

    P(Sigma) = U_k U_k^T,   U_k = the k leading eigenvectors, k chosen by a threshold rule t:
        absolute  lambda_i > t                                   (CMCL: t = 0.1 for P, 0 for P')
        relative  lambda_i > t * lambda_1                        (scale-free)
        energy    fewest k with sum_{i<=k} lambda_i >= t * sum_i lambda_i   (scale-free; GPM's rule)

From the second task on, each step of a weight matrix is projected on both sides:

    G_m <- G_m - P'_m G_m P_m                                          (weights only, not biases)

Why it protects old pairs: an old pair (x_A, x_B) has similarity
s = (W_A x_A)^T (W_B x_B). A step dW_B = -eta (G - P'_B G P_B) changes it by
-eta [(W_A x_A)^T G x_B - (P'_B W_A x_A)^T G (P_B x_B)] = 0 when x_B lies in
the span of P_B and W_A x_A in the span of P'_B - which is what the two
covariances record. The argument is first order per side: when both maps of
a pair move in one step, the product of the two updates, (dW_A x_A)^T (dW_B
x_B), is not removed (it is O(eta^2)).

vlcl's ``cmcl`` on a CLIPModel (``vlcl run method.name=cmcl``) defaults to the
setting measured to learn and protect on the embedded benchmark
(docs/results/embedded_cmcl.md):

* ``layers=all``: every Linear weight of both towers trains under the
  projection, plus the two final projections (CLIP's per-modality maps). An
  inner layer has no partner modality, so its output side is the identity
  (P' = I: G <- G - G P, the one-sided null space of Adam-NSCL), which keeps
  its outputs on old inputs, hence the old features, fixed to first order.
  ``layers=projections`` trains only the two projections (CMCL's maps on
  frozen encoders). Biases, norms, embeddings and the temperature are frozen
  in both modes.
* ``project=gradient``: CMCL's rule, the gradient is projected and AdamW does
  the rest; its per-coordinate scaling and weight decay leave the protected
  subspace a little, which over six tasks bought 4 points of Last (42.1
  against 38.2, 3 seeds) for 6 more of forgetting (9.7 against 3.5).
  ``project=update`` projects the whole parameter change of each optimiser
  step, which keeps the guarantee for any optimiser: the least forgetting.
* ``threshold=energy``: a rule that does not depend on the scale of the
  features, which differs between layers.

``cmcl_official`` (vlcl.methods.cmcl_official) is the authors' setting on a
CLIPModel: projections only, gradient projection, absolute thresholds. The
same projection trains the per-modality maps of the ``features`` benchmark
(vlcl.models.maps), CMCL's own setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from vlcl.data.benchmark import CaptionedImages
from vlcl.data.benchmarks.feature_pairs import ModalityPairs
from vlcl.methods.base import Method, MethodOptions, ParameterGroup, Stage
from vlcl.methods.registry import register_method
from vlcl.models.encode import image_embeddings, text_embeddings, tokenize
from vlcl.models.maps import ModalityMaps, augmented, joint_weight

ThresholdRule = Literal["energy", "relative", "absolute"]
Layers = Literal["projections", "all"]
Projection = Literal["gradient", "update"]

# -- the projection, pure functions ------------------------------------------------------------------


def kept_directions(eigenvalues: torch.Tensor, threshold: float | None, rule: ThresholdRule) -> int:
    """How many leading eigen-directions of a PSD covariance the projector keeps (``eigenvalues`` descending).

    absolute: lambda_i > t, on |lambda_i| (CMCL's get_projector counts singular values, which are |lambda_i|)
    relative: lambda_i > t * lambda_1
    energy:   the fewest k with sum_{i<=k} lambda_i >= t * sum_i lambda_i
    ``threshold=None`` keeps every direction above round-off, whatever the rule: the span of what was seen.
    The scale-free rules never keep a direction below round-off (d * eps * lambda_1), where the order of
    eigenvectors of equal (zero) eigenvalues is arbitrary.
    """
    if rule == "absolute" and threshold is not None:
        return int((eigenvalues.abs() > threshold).sum())
    values = eigenvalues.clamp(min=0)
    top = float(values[0]) if len(values) else 0.0
    if top <= 0:
        return 0
    rank = int((values > len(values) * torch.finfo(values.dtype).eps * top).sum())
    if threshold is None:
        return rank
    if rule == "relative":
        return min(rank, int((values > threshold * top).sum()))
    if threshold <= 0:
        return 0
    energy_before = torch.cumsum(values, 0) - values  # energy of the directions before direction i
    return min(rank, int((energy_before < threshold * values.sum()).sum()))


def covariance_projector(covariance: torch.Tensor, threshold: float | None, rule: ThresholdRule = "absolute") -> torch.Tensor:
    """P = U_k U_k^T (float64) over the leading eigenvectors of the symmetric PSD ``covariance`` that
    :func:`kept_directions` keeps (``absolute`` with threshold t: every eigenvalue above t, as CMCL)."""
    values, vectors = torch.linalg.eigh(covariance.double())
    values, vectors = values.flip(0), vectors.flip(1)  # descending
    kept = vectors[:, : kept_directions(values, threshold, rule)]
    return kept @ kept.t()


def dns_project(grad: torch.Tensor, input_projector: torch.Tensor | None, output_projector: torch.Tensor | None) -> torch.Tensor:
    """G - P' G P for a weight gradient G [d_out, d_in]; a missing projector is the zero matrix, except
    that ``output_projector=None`` with an input projector means P' = I (one-sided: G - G P)."""
    if input_projector is None:
        return grad
    if output_projector is None:
        return grad - grad @ input_projector
    return grad - output_projector @ grad @ input_projector


class RunningCovariance:
    """Running mean of x x^T (not centred, as CMCL), kept as a sum and a count."""

    def __init__(self, dim: int, device: torch.device | None = None):
        self.sum = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.count = 0

    def add_inputs(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        self.sum += x.t() @ x
        self.count += x.shape[0]

    def add_second_moment(self, second_moment_sum: torch.Tensor, count: int) -> None:
        self.sum += second_moment_sum.double()
        self.count += count

    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    def state(self) -> dict[str, Any]:
        return {"sum": self.sum.clone(), "count": self.count}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "RunningCovariance":
        cov = cls(state["sum"].shape[0], state["sum"].device)
        cov.sum = state["sum"].double().clone()
        cov.count = int(state["count"])
        return cov


class DualNullSpace:
    """Per-key input covariances, per-key output covariances and the projectors built from them.

    A key is a modality (a map with a partner: dual-sided) or a layer name (no
    partner: one-sided). ``refresh`` recomputes the projectors after an update.
    """

    def __init__(self, input_threshold: float | None = 0.1, output_threshold: float | None = 0.0, rule: ThresholdRule = "absolute"):
        self.input_threshold = input_threshold
        self.output_threshold = output_threshold
        self.rule: ThresholdRule = rule
        self.inputs: dict[str, RunningCovariance] = {}
        self.outputs: dict[str, RunningCovariance] = {}
        self.input_projectors: dict[str, torch.Tensor] = {}
        self.output_projectors: dict[str, torch.Tensor] = {}

    def add_inputs(self, key: str, x: torch.Tensor) -> None:
        self.inputs.setdefault(key, RunningCovariance(x.shape[-1], x.device)).add_inputs(x)

    def add_partner_outputs(
        self, key: str, partner_weight: torch.Tensor, partner_second_moment_sum: torch.Tensor, count: int
    ) -> None:
        """Sigma'_key += W_p (sum x_p x_p^T) W_p^T: the partner's inputs of this task, through its map."""
        w = partner_weight.detach().double()
        cov = self.outputs.setdefault(key, RunningCovariance(w.shape[0], w.device))
        cov.add_second_moment(w @ partner_second_moment_sum.double() @ w.t(), count)

    def refresh(self) -> None:
        # float64: G - P' G P cancels most of G, and float32 round-off would leak into the protected subspace
        self.input_projectors = {k: self._projector(c, self.input_threshold) for k, c in self.inputs.items()}
        self.output_projectors = {k: self._projector(c, self.output_threshold) for k, c in self.outputs.items()}

    def _projector(self, covariance: RunningCovariance, threshold: float | None) -> torch.Tensor:
        return covariance_projector(covariance.mean(), threshold, self.rule)

    def protected_counts(self) -> dict[str, tuple[int, int]]:
        """key -> (protected input directions, input width): the rank of each input projector."""
        return {k: (round(float(p.trace())), p.shape[0]) for k, p in self.input_projectors.items()}

    @property
    def active(self) -> bool:
        return bool(self.input_projectors)

    def project(self, key: str, grad: torch.Tensor, *, dual: bool) -> torch.Tensor:
        """Projected gradient of the weight behind ``key`` (unchanged before the key's first task ends)."""
        p_in = self.input_projectors.get(key)
        if p_in is None:
            return grad
        p_out = self.output_projectors.get(key) if dual else None
        if dual and p_out is None:  # a modality whose partner was never seen: P' = 0
            return grad
        p_out = None if p_out is None else p_out.to(grad.device)
        return dns_project(grad.double(), p_in.to(grad.device), p_out).to(grad.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {
            "inputs": {k: c.state() for k, c in self.inputs.items()},
            "outputs": {k: c.state() for k, c in self.outputs.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inputs = {k: RunningCovariance.from_state(s) for k, s in state.get("inputs", {}).items()}
        self.outputs = {k: RunningCovariance.from_state(s) for k, s in state.get("outputs", {}).items()}
        self.refresh()


# -- the method on a CLIPModel ---------------------------------------------------------------------

PROJECTIONS = {"image": "visual_projection", "text": "text_projection"}
PARTNER = {"image": "text", "text": "image"}


@dataclass(frozen=True)
class DNSSettings:
    """What a DNS method trains and how it projects: ``cmcl`` reads it from its options, ``cmcl_official``
    fixes all but the thresholds to the authors' code."""

    layers: Layers
    project: Projection
    rule: ThresholdRule
    input_threshold: float | None
    output_threshold: float | None
    covariance_batch_size: int


class CMCLOptions(MethodOptions):
    layers: Layers = "all"
    """Which weights train under DNS: every Linear weight of both towers and the two final projections (all), or
    the projections only (CMCL's maps on frozen encoders)."""
    project: Projection = "gradient"
    """gradient: CMCL's rule (project G before AdamW); update: project each step's whole parameter change."""
    threshold: ThresholdRule = "energy"
    """How the thresholds pick protected directions: energy (share of the eigenvalue sum), relative (fraction of
    the largest eigenvalue), absolute (eigenvalue, CMCL's rule; depends on the features' scale)."""
    input_threshold: float = Field(0.97, ge=0)
    """t of the input-side projector P, under the ``threshold`` rule."""
    output_threshold: float | None = Field(None, ge=0)
    """t of the output-side projector P' under the ``threshold`` rule; None: every direction the partner's old
    features span (what CMCL's absolute 0 keeps)."""
    covariance_batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _thresholds_fit_the_rule(self) -> "CMCLOptions":
        if self.threshold != "absolute":
            for key in ("input_threshold", "output_threshold"):
                value = getattr(self, key)
                if value is not None and value > 1:
                    raise ValueError(f"'method.{key}'={value} is a share of eigenvalues under threshold={self.threshold}: at most 1")
        return self


@register_method
class CMCL(Method):
    name = "cmcl"
    description = "CMCL's dual-sided null-space projection, on every Linear layer of both towers (learns and keeps old pairs)"
    Options = CMCLOptions
    tuning_grid = {"input_threshold": (0.97, 0.99)}  # energy kept: GPM's 0.97, and one that protects more

    settings = ("captions", "classification", "modality_pairs")

    def dns_settings(self) -> DNSSettings:
        o = self.options
        return DNSSettings(o.layers, o.project, o.threshold, o.input_threshold, o.output_threshold, o.covariance_batch_size)

    def setup(self, model, context) -> None:
        super().setup(model, context)
        self.dns = self.dns_settings()
        self.space = DualNullSpace(self.dns.input_threshold, self.dns.output_threshold, self.dns.rule)
        self.data: CaptionedImages | ModalityPairs | None = None
        self.before_step: dict[str, torch.Tensor] = {}
        self.on_maps = isinstance(model, ModalityMaps)
        if self.on_maps:  # CMCL's own setting: every map trains, a task moves its pair's two maps only
            return
        model.requires_grad_(False)
        for weight in self.protected().values():
            weight.requires_grad_(True)

    # -- which weights, under which key ----------------------------------------------------------
    def protected_modules(self) -> dict[str, torch.nn.Linear]:
        """key -> Linear module: the modalities' projections, then (layers=all) every inner Linear by name."""
        modules = {key: getattr(self.model, attr) for key, attr in PROJECTIONS.items()}
        if self.dns.layers == "all":
            for name, module in self.model.named_modules():
                if isinstance(module, torch.nn.Linear) and name not in PROJECTIONS.values():
                    modules[name] = module
        return modules

    def protected(self) -> dict[str, torch.nn.Parameter]:
        return {key: module.weight for key, module in self.protected_modules().items()}

    def parameter_groups(self) -> list[ParameterGroup]:
        if self.on_maps:
            return super().parameter_groups()  # weights decayed, biases not (CMCL's maps)
        groups: dict[str, list[torch.nn.Parameter]] = {"vision": [], "text": []}
        for key, weight in self.protected().items():
            groups["text" if key == "text" or key.startswith("text_model") else "vision"].append(weight)
        return [ParameterGroup(params, tower) for tower, params in groups.items() if params]

    # -- the projection ------------------------------------------------------------------------------
    def before_optimizer_step(self, step: int) -> None:
        if not self.space.active:
            return
        if self.on_maps:
            self._project_maps_before_step()
            return
        weights = self.protected()
        if self.dns.project == "update":
            self.before_step = {key: w.detach().clone() for key, w in weights.items()}
            return
        for key, weight in weights.items():
            if weight.grad is not None:
                weight.grad = self.space.project(key, weight.grad, dual=key in PROJECTIONS)

    def after_optimizer_step(self, step: int) -> None:
        if not self.before_step:
            return
        if self.on_maps:
            self._project_maps_update()
            return
        with torch.no_grad():
            for key, weight in self.protected().items():
                old = self.before_step[key]
                weight.copy_(old + self.space.project(key, weight - old, dual=key in PROJECTIONS))
        self.before_step = {}

    # -- the covariances, at the end of each task --------------------------------------------------------
    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        self.data = data

    def end_task(self, stage: Stage) -> None:
        if self.data is None:
            return
        if self.on_maps:
            update_maps_null_space(self.space, self.model, self.data)
            self.data = None
            return
        inputs = self.task_second_moments(self.data)
        for key, (second_moment, count) in inputs.items():
            self.space.inputs.setdefault(key, RunningCovariance(second_moment.shape[0])).add_second_moment(second_moment, count)
        weights = self.protected()
        for key, partner in PARTNER.items():
            partner_moment, partner_count = inputs[partner]
            self.space.add_partner_outputs(key, weights[partner], partner_moment, partner_count)
        self.space.refresh()
        self.data = None

    def task_second_moments(self, data: CaptionedImages) -> dict[str, tuple[torch.Tensor, int]]:
        """sum x x^T and the count of the inputs of every protected layer over the task: every image (all its
        tokens) and every caption (its tokens, not its padding, which never reaches the text feature)."""
        sums: dict[str, RunningCovariance] = {}
        bundle, size = self.context.bundle, self.dns.covariance_batch_size
        device = self.model.logit_scale.device
        tokens: dict[str, torch.Tensor | None] = {"mask": None}
        with self.recording(sums, tokens), torch.no_grad():
            for start in range(0, len(data), size):
                pixels = bundle.preprocess.normalize_uint8(data.images[start : start + size]).to(device)
                image_embeddings(self.model, pixels)
            captions = [c for caps in data.captions for c in caps]
            for start in range(0, len(captions), size):
                ids, mask = tokenize(bundle.tokenizer, captions[start : start + size], bundle.context_length)
                width = int(mask.sum(dim=1).max())
                tokens["mask"] = mask[:, :width].to(device).bool()
                text_embeddings(self.model, ids[:, :width].to(device), tokens["mask"].long())
        return {key: (cov.sum, cov.count) for key, cov in sums.items()}

    @contextmanager
    def recording(self, sums: dict[str, RunningCovariance], tokens: dict[str, torch.Tensor | None]) -> Iterator[None]:
        """Forward pre-hooks that add every protected layer's inputs to ``sums``; a token-level input [B, T, d]
        keeps only the positions of ``tokens["mask"]`` when it is set and matches [B, T]."""

        def hook_for(key: str):
            def hook(module, args):
                x, mask = args[0], tokens["mask"]
                if mask is not None and x.dim() == 3 and x.shape[:2] == mask.shape:
                    x = x[mask]
                sums.setdefault(key, RunningCovariance(x.shape[-1], x.device)).add_inputs(x)

            return hook

        was_training = self.model.training
        self.model.eval()
        handles = [module.register_forward_pre_hook(hook_for(key)) for key, module in self.protected_modules().items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self.model.train(was_training)

    # -- CMCL's own setting: [W | b] of each modality map -------------------------------------------
    def pair_maps(self) -> dict[str, torch.nn.Linear]:
        return {m: self.model.maps[m] for m in dict.fromkeys(self.data.modalities)} if self.data is not None else {}

    def _project_maps_before_step(self) -> None:
        """DNS on [W | b]: the gradient before AdamW (CMCL), or remember the weights (project=update)."""
        if self.dns.project == "update":
            self.before_step = {m: joint_weight(layer).detach().clone() for m, layer in self.pair_maps().items()}
            return
        for m, layer in self.pair_maps().items():
            grad = torch.cat([_grad(layer.weight), _grad(layer.bias)[:, None]], dim=1)
            projected = self.space.project(m, grad, dual=True)
            layer.weight.grad, layer.bias.grad = projected[:, :-1].contiguous(), projected[:, -1].contiguous()

    def _project_maps_update(self) -> None:
        """project=update: the whole step's change of [W | b] goes through the projection."""
        with torch.no_grad():
            for m, layer in self.pair_maps().items():
                new = self.before_step[m] + self.space.project(m, joint_weight(layer) - self.before_step[m], dual=True)
                layer.weight.copy_(new[:, :-1])
                layer.bias.copy_(new[:, -1])
        self.before_step = {}

    # -- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.space.state_dict() if self.space.inputs else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"inputs", "outputs"}
        if unknown:
            raise ValueError(f"method '{self.name}': unexpected state keys {sorted(unknown)}")
        self.space.load_state_dict(state)


def update_maps_null_space(space: DualNullSpace, maps: ModalityMaps, pair: ModalityPairs) -> None:
    """End of a task on a modality pair: both modalities' input covariances (of [x, 1]), and each one's
    partner-projected output covariance."""
    a, b = pair.modalities
    inputs = {m: augmented(pair.arrays[m].double()) for m in (a, b)}
    moments = {m: (x.t() @ x, len(x)) for m, x in inputs.items()}
    for m in (a, b):
        space.inputs.setdefault(m, RunningCovariance(inputs[m].shape[1])).add_second_moment(*moments[m])
    for m, partner in ((a, b), (b, a)):
        space.add_partner_outputs(m, joint_weight(maps.maps[partner]), *moments[partner])
    space.refresh()


def _grad(param: torch.nn.Parameter) -> torch.Tensor:
    return param.grad if param.grad is not None else torch.zeros_like(param)
