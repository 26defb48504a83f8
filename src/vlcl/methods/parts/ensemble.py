"""A running average of a model's weights within a task: ZSCL's weight ensemble, MulKI's intra-task connection.

    theta_avg <- (theta_avg * n + theta) / (n + 1),   n <- n + 1

after every ``every``-th optimiser step (step 0 included) and after the last
step of the task; with ``include_start`` the task's starting weights are the
first member (n = 1 at the start). ``finish`` loads the average into the model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def parameter_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


class WeightEnsemble:
    def __init__(self, model: torch.nn.Module, every: int, include_start: bool):
        self.model, self.every = model, every
        self.average: dict[str, torch.Tensor] | None = parameter_copy(model) if every and include_start else None
        self.count = 1 if self.average is not None else 0
        self.last_step: int | None = None
        self.last_update_step: int | None = None

    def update(self) -> None:
        """One more member: the model's current weights."""
        n = self.count
        with torch.no_grad():
            if self.average is None:
                self.average = parameter_copy(self.model)
            else:
                for name, param in self.model.named_parameters():
                    self.average[name].mul_(n / (n + 1)).add_(param.detach(), alpha=1.0 / (n + 1))
        self.count = n + 1

    def after_step(self, step: int) -> None:
        self.last_step = step
        if self.every and step % self.every == 0:
            self.update()
            self.last_update_step = step

    def finish(self) -> bool:
        """End of the task: the final weights join the average, which replaces the model's weights. False if inactive."""
        if not self.every or self.last_step is None:
            return False
        if self.last_update_step != self.last_step:
            self.update()
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(self.average[name])
        return True

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"count": self.count, "last_step": self.last_step, "last_update_step": self.last_update_step}
        if self.average is not None:
            state["average"] = dict(self.average)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.last_step, self.last_update_step = state["last_step"], state["last_update_step"]
        if "average" in state:
            params = dict(self.model.named_parameters())
            self.average = {name: t.to(params[name].device, params[name].dtype) for name, t in state["average"].items()}


class InitialWeightsAndEnsemble:
    """What ZSCL and MulKI share: the pre-trained weights (``self.initial``) as a frozen teacher, and the running
    weight average of the current task (``self.ensemble``; ``self._finished_count`` between tasks)."""

    model: torch.nn.Module
    initial: dict[str, torch.Tensor]
    ensemble: WeightEnsemble | None
    _finished_count: int

    @property
    def ensemble_count(self) -> int:
        return self.ensemble.count if self.ensemble is not None else self._finished_count

    @property
    def average(self) -> dict[str, torch.Tensor] | None:
        return self.ensemble.average if self.ensemble is not None else None

    def initial_model(self) -> torch.nn.Module:
        """A frozen copy of the model with the initial weights."""
        teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
        with torch.no_grad():
            for name, param in teacher.named_parameters():
                param.copy_(self.initial[name])
        return teacher
