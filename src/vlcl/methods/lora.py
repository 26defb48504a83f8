"""Sequential LoRA with integration: C-CLIP without CKC (the paper's "LoRA only" ablation).

For each task: fresh LoRA adapters on both towers (PEFT), trained with the
CLIP loss; at the end of the task they are folded into the backbone with a
coefficient, theta_t = theta_{t-1} + alpha * Delta_LoRA, and the next task
starts a fresh adapter on the integrated model. alpha = 1 is plain sequential
LoRA fine-tuning; the default 0.5 is C-CLIP's, so that ``lora`` vs ``cclip``
isolates the effect of CKC.

On a stream (``data.stream=online``) there is one adapter for the whole
stream, each point of the stream scores it, and it is folded in whole at the
stream's end: ``integration`` must be 1 there (a run with another alpha is
refused, since the stream's points would score a model the run does not end
with).
"""

from __future__ import annotations

import torch
from pydantic import Field
from transformers import CLIPModel

from vlcl.data.benchmark import CaptionedImages
from vlcl.methods.base import (
    Method,
    MethodOptions,
    ParameterGroup,
    RunContext,
    Stage,
    split_parameters,
)
from vlcl.methods.registry import register_method
from vlcl.models.lora import (
    DEFAULT_TARGET_MODULES,
    add_lora,
    check_target_modules,
    extra_parameters,
    integrate_lora,
)


class LoRAOptions(MethodOptions):
    rank: int = Field(16, ge=1)
    lora_alpha: float = Field(32.0, gt=0)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = list(DEFAULT_TARGET_MODULES)
    integration: float = Field(0.5, ge=0, le=1)
    """alpha of theta_t = theta_{t-1} + alpha * Delta_LoRA."""
    train_extras: bool = False
    """Also train embeddings, layer norms, the final projections and the temperature, as the authors' code did."""


@register_method
class LoRA(Method):
    name = "lora"
    description = "LoRA on both towers, folded into the model with coefficient alpha after each task"
    Options = LoRAOptions
    tuning_grid = {"integration": (0.5, 0.3)}  # alpha of the integration (C-CLIP's ablation)
    needs_task_boundaries = False  # on a stream: one adapter over the whole stream, folded in whole at its end

    def setup(self, model: CLIPModel, context: RunContext) -> None:
        check_target_modules(model, self.options.target_modules)  # before the run writes anything, not at task 1
        if context.streaming and self.options.integration != 1:
            raise ValueError(
                f"on a stream (data.stream=online) the integration alpha={self.options.integration} would scale the "
                "adapter only after the stream's last point, which scored it whole; set method.integration=1"
            )
        super().setup(model, context)

    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        opts = self.options
        self.peft = add_lora(self.model, rank=opts.rank, alpha=opts.lora_alpha, dropout=opts.lora_dropout, target_modules=opts.target_modules)
        self._extras_before: dict[str, torch.Tensor] = {}
        if opts.train_extras:
            for name, param in extra_parameters(self.model):
                param.requires_grad_(True)
                self._extras_before[name] = param.detach().clone()

    def parameter_groups(self) -> list[ParameterGroup]:
        return split_parameters(self.model)

    def end_task(self, stage: Stage) -> None:
        alpha = self.options.integration
        self.model = integrate_lora(self.peft, alpha)
        del self.peft
        with torch.no_grad():  # the fully trained extras move by the same fraction alpha
            for name, param in self.model.named_parameters():
                if name in self._extras_before:
                    before = self._extras_before[name]
                    param.copy_(before + alpha * (param - before))
        for param in self.model.parameters():
            param.requires_grad_(True)
        self._extras_before = {}
