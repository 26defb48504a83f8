"""WiSE-FT: weight-space ensembling after each task (Wortsman et al., CVPR 2022).

Each task is learned by full fine-tuning with the CLIP loss, starting from the
current model; at the end of the task the fine-tuned weights are interpolated
with a reference:

    theta_t = (1 - a) * theta_ref + a * theta_ft                       (a = 0.5)

with theta_ref the model at the start of the task, theta_{t-1}
(``reference: previous``, the default), or the pre-trained model theta_0
(``reference: initial``, the paper's single-task form applied after every
task); ZSCL's baseline used ``reference: previous`` with a = 0.8. Every
floating-point tensor of the model (parameters and float buffers) is
interpolated; a = 0 returns the reference exactly, a = 1 the fine-tuned model
(plain fine-tuning). With ``reference: initial`` theta_0 is
part of the method's state, so that a resumed run interpolates towards the
same weights.

On a stream (``data.stream=online``) there is one task, the stream: theta_ref
is the model before it (theta_0 under either reference), training goes on
from theta_ft, and what is evaluated at every point of the stream is the
interpolation (1 - a) * theta_ref + a * theta_ft of the weights so far - the
WiSE-FT model of the stream up to that point, as the paper evaluates it; at
the stream's end the model becomes that interpolation.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field
from transformers import CLIPModel

from vlcl.data.benchmark import CaptionedImages
from vlcl.methods.base import Method, MethodOptions, RunContext, Stage
from vlcl.methods.registry import register_method


class WiSEFTOptions(MethodOptions):
    coefficient: float = Field(0.5, ge=0, le=1)
    """a in theta = (1 - a) * theta_ref + a * theta_ft; 1 = plain fine-tuning."""
    reference: Literal["previous", "initial"] = "previous"
    """theta_ref: the model at the start of the task, or the pre-trained model."""


def floating_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every floating-point tensor of the model's state dict."""
    return {name: t.detach().clone() for name, t in model.state_dict().items() if t.is_floating_point()}


@torch.no_grad()
def interpolate_into(model: torch.nn.Module, reference: dict[str, torch.Tensor], coefficient: float) -> None:
    """model <- (1 - a) * reference + a * model, in place; exact at a = 0 and a = 1 (torch.lerp)."""
    current = model.state_dict()
    for name, ref in reference.items():
        target = current[name]
        target.copy_(torch.lerp(ref.to(device=target.device, dtype=target.dtype), target, coefficient))


@register_method
class WiSEFT(Method):
    name = "wise_ft"
    description = "WiSE-FT: fine-tune each task, then interpolate the weights with the previous (or pre-trained) model"
    Options = WiSEFTOptions
    tuning_grid = {"coefficient": (0.5, 0.8)}  # a, the fine-tuned model's weight (0.8 = ZSCL's WiSE-FT baseline)
    needs_task_boundaries = False  # on a stream: the interpolation is what each point evaluates (module docstring)

    def setup(self, model: CLIPModel, context: RunContext) -> None:
        super().setup(model, context)
        # On resume the model is the checkpoint; load_state_dict then restores the true theta_0.
        self.initial = floating_state(model) if self.options.reference == "initial" else None
        self.reference_state: dict[str, torch.Tensor] | None = None

    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        self.reference_state = self.initial if self.options.reference == "initial" else floating_state(self.model)

    def end_task(self, stage: Stage) -> None:
        interpolate_into(self.model, self.reference_state, self.options.coefficient)
        self.reference_state = None

    def evaluation_model(self) -> CLIPModel:
        """Inside a stream, a copy of the model interpolated with theta_ref (the trained weights go on unchanged);
        otherwise the model, interpolated at each task's end."""
        if not (self.context.streaming and self.reference_state is not None):
            return self.model
        interpolated = copy.deepcopy(self.model)
        interpolate_into(interpolated, self.reference_state, self.options.coefficient)
        return interpolated

    def state_dict(self) -> dict[str, Any]:
        return {"initial": dict(self.initial)} if self.initial is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.options.reference == "previous":
            super().load_state_dict(state)  # nothing is kept: the reference is the checkpoint model itself
            return
        if "initial" not in state:
            raise ValueError("method 'wise_ft' with reference=initial needs 'initial' in its state (the pre-trained weights)")
        initial = state["initial"]
        if set(initial) != set(self.initial):
            missing, extra = sorted(set(self.initial) - set(initial)), sorted(set(initial) - set(self.initial))
            raise ValueError(f"wise_ft initial weights do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
        self.initial = {name: tensor.to(self.initial[name].device) for name, tensor in initial.items()}
