"""EWC: Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017), in its online form.

Training on task t minimises

    L = L_CLIP + lambda / 2 * sum_i F_i (theta_i - theta*_i)^2            (lambda = 1e4)

over every trainable parameter, with theta* the parameters at the end of the
previous task and F the accumulated diagonal empirical Fisher information:

    F_t   = 1/B sum_{b=1..B} (d L_CLIP(batch_b; theta*_t) / d theta)^2    (elementwise)
    F    <- gamma * F + F_t                                             (gamma = 1: a running sum)

estimated at the end of each task at theta*_t on B = ``fisher_batches``
(20) batches of ``fisher_batch_size`` (64) pairs of that task's training data
(random images, one random caption each, a generator seeded from the run seed
and the stage index). There is no penalty during the first task. The CLIP
loss of a batch does not decompose into per-sample terms, so the gradients
are those of whole batches (the usual minibatch approximation of the
empirical Fisher). A single anchor theta*_{t-1} with summed Fishers is
"online EWC" (Schwarz et al. 2018, gamma = 1), which equals the original
one-penalty-per-task form up to a constant when the anchors coincide and
keeps memory at two model-sized tensors whatever the number of tasks.

lambda = 1e4 makes the penalty of an unconstrained fine-tune of the next task
of the same order as the CLIP loss on the embedded benchmark (0.15-3.5 against
a CLIP loss of about 1 at the end of a task; 1e3 stays an order of magnitude
below): measurements in docs/methods/ewc.md.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from vlcl.data.benchmark import CaptionedImages
from vlcl.methods.base import LossOutput, Method, MethodOptions, Stage
from vlcl.methods.registry import register_method
from vlcl.seeds import fisher_seed
from vlcl.settings import CaptionBatch, make_batch


class EWCOptions(MethodOptions):
    penalty: float = Field(1e4, ge=0)
    """lambda in L = L_CLIP + lambda/2 * sum_i F_i (theta_i - theta*_i)^2 (choice: docs/methods/ewc.md)."""
    fisher_batches: int = Field(20, ge=1)
    """Batches of the task's data over which squared gradients are averaged (fewer if the task is smaller)."""
    fisher_batch_size: int = Field(64, ge=2)
    decay: float = Field(1.0, ge=0, le=1)
    """gamma in F <- gamma * F + F_t; 1 = a running sum over tasks (online EWC without forgetting of F)."""


@register_method
class EWC(Method):
    name = "ewc"
    description = "EWC: CLIP loss + lambda/2 * sum F_i (theta_i - theta*_i)^2, diagonal Fisher summed over tasks"
    Options = EWCOptions
    tuning_grid = {"penalty": (1e4, 1e3, 1e5)}  # lambda (docs/methods/ewc.md measured 1e3 and 1e4)

    def __init__(self, options: EWCOptions | None = None) -> None:
        super().__init__(options)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.tasks = 0
        self.data: CaptionedImages | None = None

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    # -- the penalty ------------------------------------------------------------------
    def quadratic(self) -> torch.Tensor:
        """sum_i F_i (theta_i - theta*_i)^2 over the parameters with a Fisher (0 before the first task ends)."""
        params = self.trainable()
        total = torch.zeros((), device=self.model.logit_scale.device)
        for name, fisher in self.fisher.items():
            total = total + (fisher * (params[name] - self.anchor[name]) ** 2).sum()
        return total

    def ewc_penalty(self) -> torch.Tensor:
        return self.options.penalty / 2 * self.quadratic()

    def training_loss(self, batch: CaptionBatch, step: int) -> LossOutput:
        images, texts = self.encode(batch)
        name, task = self.task_loss(images, texts, batch)
        if not self.fisher:
            return LossOutput(task, {name: float(task.detach()), "ewc": 0.0})
        penalty = self.ewc_penalty()
        return LossOutput(task + penalty, {name: float(task.detach()), "ewc": float(penalty.detach())})

    # -- the end of a task: Fisher and anchor ------------------------------------------------
    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        self.data = data

    def estimate_fisher(self, data: CaptionedImages, stage: Stage) -> dict[str, torch.Tensor]:
        """Mean over batches of the squared gradient of the CLIP loss, at the current parameters."""
        params = self.trainable()
        batch_size = min(self.options.fisher_batch_size, len(data))
        batches = max(1, min(self.options.fisher_batches, len(data) // batch_size))
        generator = torch.Generator().manual_seed(fisher_seed(self.context.seed, stage.index))
        order = torch.randperm(len(data), generator=generator)
        picks = torch.randint(0, 1 << 30, (len(data),), generator=generator)
        device = self.model.logit_scale.device
        fisher = {name: torch.zeros_like(p, memory_format=torch.contiguous_format) for name, p in params.items()}
        was_training = self.model.training
        self.model.eval()  # no stochastic layers: the gradients of the trained model as it is
        try:
            for b in range(batches):
                idx = order[b * batch_size : (b + 1) * batch_size]
                batch = make_batch(self.context.bundle, data, idx, picks[idx]).to(device)
                images, texts = self.encode(batch)
                _, loss = self.task_loss(images, texts, batch)
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                for name, grad in zip(params, grads):
                    if grad is not None:
                        fisher[name] += grad.detach() ** 2
        finally:
            self.model.train(was_training)
        return {name: f / batches for name, f in fisher.items()}

    def end_task(self, stage: Stage) -> None:
        if self.data is None:
            return
        new = self.estimate_fisher(self.data, stage)
        gamma = self.options.decay
        self.fisher = {name: gamma * self.fisher[name] + f if name in self.fisher else f for name, f in new.items()}
        self.anchor = {name: p.detach().clone() for name, p in self.trainable().items()}
        self.tasks += 1
        self.data = None

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if not self.fisher:
            return {"tasks": self.tasks}
        return {"tasks": self.tasks, "fisher": dict(self.fisher), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"tasks", "fisher", "anchor"}
        if unknown:
            raise ValueError(f"method 'ewc': unexpected state keys {sorted(unknown)}")
        self.tasks = int(state.get("tasks", 0))
        fisher, anchor = state.get("fisher", {}), state.get("anchor", {})
        params = self.trainable()
        if set(fisher) != set(anchor) or not set(fisher) <= set(params):
            raise ValueError("method 'ewc': Fisher and anchor do not match the model's trainable parameters")
        self.fisher = {name: t.to(params[name].device) for name, t in fisher.items()}
        self.anchor = {name: t.to(params[name].device) for name, t in anchor.items()}
