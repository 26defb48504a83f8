"""Optimisation of one stage: batches, AdamW, warm-up + cosine, clipping, precision, the method's hooks,
shards under torchrun and in-stage checkpoints."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console

from vlcl.config import TrainConfig
from vlcl.data.benchmark import CaptionedImages
from vlcl.engine import distributed
from vlcl.engine.checkpoint import CheckpointError, merge_state, split_state
from vlcl.engine.faults import fault_point
from vlcl.engine.logbook import StepLogger, parameter_group_names
from vlcl.engine.optim import build_optimizer, build_scheduler
from vlcl.engine.progress import RunProgress
from vlcl.errors import RunFailedError
from vlcl.methods.base import Method
from vlcl.models.loading import ClipBundle
from vlcl.settings import make_batch


class NonFiniteLossError(RunFailedError, RuntimeError):
    pass


LOSS_FLAT_SHARE = 0.5
"""The share of a task's optimiser steps after which its loss is checked for having moved."""
LOSS_FLAT_TOLERANCE = 0.01
"""The loss has not moved when every step's loss up to the check lies within this share of their mean (the spread,
largest minus smallest, at most 1% of the mean). A loss fixed by construction (classes the model cannot tell apart:
exactly ln C at every step; one caption for every image: exactly ln B) has a spread of 0. Two batches of a model
that reads its data give different losses: on the test suite's tiny runs the batch-to-batch spread alone is several
percent, so a loss that merely falls slowly, or wanders about a plateau, is not reported as flat."""
LOSS_FLAT_MIN_STEPS = 4
"""Fewer steps than this at the check (tasks of fewer than 7 steps) are too few to judge: not checked."""


def loss_check_step(total: int) -> int | None:
    """The step (1-based) after which a task of ``total`` steps checks its loss, None when it is too short."""
    step = math.ceil(total * LOSS_FLAT_SHARE)
    return step if step >= LOSS_FLAT_MIN_STEPS else None


def flat_loss(losses: list[float], label: str, total: int) -> str | None:
    """The warning of a task whose loss has not moved over its first :data:`LOSS_FLAT_SHARE` of ``total`` steps
    (``losses`` holds at least that many), None when it moved or the task is too short to judge."""
    checked = loss_check_step(total)
    if checked is None or len(losses) < checked:
        return None
    seen = losses[:checked]
    mean, spread = float(np.mean(seen)), max(seen) - min(seen)
    if spread > LOSS_FLAT_TOLERANCE * abs(mean):
        return None
    return (
        f"task '{label}': the training loss has not moved in the first {checked} of its {total} steps (every step's "
        f"loss within {spread:.2g} of {mean:.4f}, less than {LOSS_FLAT_TOLERANCE:.0%} apart); it is learning nothing - "
        "check its data and prompts, train.lr and train.epochs"
    )


def planned_steps(num_samples: int, train: TrainConfig) -> tuple[int, int]:
    """(optimiser steps per epoch, total steps); an incomplete last batch is dropped (contrastive batches stay full).
    ``train.iterations`` fixes the total, drawing as many epochs as it takes."""
    steps_per_epoch = num_samples // (train.batch_size * train.accumulate_steps)
    total = train.iterations if train.iterations else train.epochs * steps_per_epoch
    if train.max_steps_per_task:
        total = min(total, train.max_steps_per_task)
    return steps_per_epoch, total


def autocast(precision: str, device: torch.device):
    """fp32: nothing; bf16/fp16: torch.autocast on the model's device (weights and optimiser stay fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs CUDA (loss scaling); use bf16 on the CPU")


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Hugging Face's gradient checkpointing on the towers; non-reentrant so frozen inputs still work (LoRA)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 renamed it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


# -- in-stage checkpoint state: safetensors + JSON, never pickle ------------------------------------------------


def training_snapshot(
    method: Method, optimizer, scheduler, scaler, cursor: "Cursor"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    for name, module in method.training_modules().items():
        for key, value in module.state_dict().items():
            tensors[f"module/{name}/{key}"] = value.detach().cpu().clone()
    method_tensors, method_values = split_state(method.step_state_dict())
    tensors.update({f"method/{k}": v.clone() for k, v in method_tensors.items()})
    opt = optimizer.state_dict()
    for index, entries in opt["state"].items():
        for key, value in entries.items():
            tensors[f"optimizer/{index}/{key}"] = (
                value.detach().cpu().clone() if isinstance(value, torch.Tensor) else torch.tensor(value)
            )
    tensors["data/order"], tensors["data/picks"] = cursor.order, cursor.picks
    tensors["data/generator"] = cursor.generator.get_state()
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    values = {
        "step": len(cursor.losses),
        "losses": cursor.losses,
        "method": method_values,
        "optimizer_groups": opt["param_groups"],
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    return tensors, values


def restore_snapshot(
    method: Method, optimizer, scheduler, scaler, cursor: "Cursor", tensors: dict[str, torch.Tensor], values: dict[str, Any]
) -> None:
    for name, module in method.training_modules().items():
        prefix = f"module/{name}/"
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
    method_tensors = {k[len("method/") :]: v for k, v in tensors.items() if k.startswith("method/")}
    method.load_step_state_dict(merge_state(method_tensors, values["method"]))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": values["optimizer_groups"]})
    saved = values["scheduler"]
    scheduler.load_state_dict({**saved, "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    if scaler is not None and values.get("scaler"):
        scaler.load_state_dict(values["scaler"])
    cursor.order, cursor.picks = tensors["data/order"], tensors["data/picks"]
    cursor.generator.set_state(tensors["data/generator"])
    cursor.losses = list(values["losses"])
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])


@dataclass
class Cursor:
    """Where the data stream is: the current epoch's order and caption picks, their generator, the losses so far."""

    generator: torch.Generator
    order: torch.Tensor | None = None
    picks: torch.Tensor | None = None
    losses: list[float] = field(default_factory=list)


StepCheckpoint = Callable[[int, dict[str, torch.Tensor], dict[str, Any]], None]


@dataclass
class Optimisation:
    """What one optimiser step updates: the optimiser, its schedule, the fp16 loss scaler, the parameters."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    params: list[torch.nn.Parameter]


def optimizer_step(
    method: Method, micro_batch: Callable[[int], Any], opt: Optimisation, train: TrainConfig, step: int, label: str,
    device: torch.device,
) -> tuple[float, dict[str, float], list[float]]:
    """One optimiser step over ``train.accumulate_steps`` micro-batches (``micro_batch(i)`` builds the i-th, on
    ``device``): the method's loss, backward, gradients averaged over processes, clipping, the method's hooks.
    Returns (the loss averaged over processes, the method's logged terms averaged over micro-batches, every
    parameter group's learning rate during the step)."""
    opt.optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    terms: dict[str, list[float]] = {}
    for micro in range(train.accumulate_steps):
        batch = micro_batch(micro)
        with autocast(train.precision, device):
            output = method.training_loss(batch, step)
        loss = output.loss.float() / train.accumulate_steps
        (opt.scaler.scale(loss) if opt.scaler is not None else loss).backward()
        loss_sum += float(loss.detach())
        for key, term in output.logs.items():
            terms.setdefault(key, []).append(float(term))
    value = distributed.mean_over_processes(loss_sum)
    if not np.isfinite(value):
        raise NonFiniteLossError(
            f"non-finite loss ({value}) at step {step} of stage '{label}'; "
            "stopped, the last complete checkpoint is kept (try a lower train.lr)"
        )
    distributed.average_gradients(opt.params)
    if opt.scaler is not None:
        opt.scaler.unscale_(opt.optimizer)
    if train.grad_clip:
        torch.nn.utils.clip_grad_norm_(opt.params, train.grad_clip)
    method.before_optimizer_step(step)
    lrs = [group["lr"] for group in opt.optimizer.param_groups]
    if opt.scaler is not None:
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
    else:
        opt.optimizer.step()
    opt.scheduler.step()
    method.after_optimizer_step(step)
    return value, {k: sum(v) / len(v) for k, v in terms.items()}, lrs


def train_on(
    method: Method,
    bundle: ClipBundle,
    data: CaptionedImages,
    label: str,
    train: TrainConfig,
    seed: int,
    console: Console,
    *,
    checkpoint: StepCheckpoint | None = None,
    resume: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
    on_step: StepLogger | None = None,
    on_warning: Callable[[str, str, int], None] | None = None,
    progress: RunProgress | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``data`` for ``train.epochs``; returns step, time and loss statistics.

    Under torchrun every process draws the same global batch order and takes its
    own contiguous slice of each batch; gradients are averaged before clipping
    and the method's gradient hook. ``checkpoint(step, tensors, values)`` is
    called every ``train.checkpoint_every_steps`` steps (by the main process
    only); ``resume`` restores such a snapshot after ``begin_task``. ``on_step(step, steps, loss, terms, lrs)`` is
    called after every optimiser step (1-based ``step``): the loss averaged over processes, the method's
    ``LossOutput.logs`` averaged over the accumulation micro-steps (this process's), every parameter group's
    learning rate during the step by group name (:func:`vlcl.engine.logbook.parameter_group_names`).
    ``on_warning(kind, message, step)`` is called once, at the step that finds the loss flat (:func:`flat_loss`);
    the stats' ``warnings`` list it, also when that step was taken before the snapshot resumed from. ``progress``:
    the run's console progress (vlcl.engine.progress; default: this task's alone, on ``console``).
    """
    info = distributed.current()
    steps_per_epoch, total = planned_steps(len(data), train)
    if steps_per_epoch == 0:
        raise ValueError(
            f"task '{data.name}' has {len(data)} training pairs, fewer than one step "
            f"(train.batch_size={train.batch_size} x train.accumulate_steps={train.accumulate_steps})"
        )
    if train.batch_size % info.world:
        raise ValueError(f"train.batch_size={train.batch_size} must be divisible by the {info.world} processes")
    local = train.batch_size // info.world
    device = next(method.model.parameters()).device
    check_precision(train.precision, device)
    if train.gradient_checkpointing:
        enable_gradient_checkpointing(method.model)
    groups = method.parameter_groups()
    optimizer = build_optimizer(groups, train)
    group_names = parameter_group_names(groups) if on_step is not None else []
    scheduler = build_scheduler(optimizer, total, train)
    scaler = torch.amp.GradScaler("cuda") if train.precision == "fp16" else None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    cursor = Cursor(torch.Generator().manual_seed(seed))
    if resume is not None:
        try:
            restore_snapshot(method, optimizer, scheduler, scaler, cursor, *resume)
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(
                f"the in-task checkpoint named by checkpoints/latest.json does not fit this run "
                f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else 'missing entry'})"
            ) from None
    method.train()
    started = time.perf_counter()
    with (progress or RunProgress(console)).training(label, total, len(cursor.losses), steps_per_epoch) as bar:
        while len(cursor.losses) < total:
            step = len(cursor.losses)
            within = step % steps_per_epoch
            if within == 0:
                cursor.order = torch.randperm(len(data), generator=cursor.generator)
                cursor.picks = torch.randint(0, 1 << 30, (len(data),), generator=cursor.generator)

            def micro_batch(micro: int, within: int = within):
                first = (within * train.accumulate_steps + micro) * train.batch_size + info.rank * local
                idx = cursor.order[first : first + local]
                return make_batch(bundle, data, idx, cursor.picks[idx]).to(device)

            value, terms, lrs = optimizer_step(
                method, micro_batch, Optimisation(optimizer, scheduler, scaler, params), train, step, label, device,
            )
            cursor.losses.append(value)
            bar.step(value)
            if on_step is not None:
                on_step(step + 1, total, value, terms, dict(zip(group_names, lrs)))
            done = len(cursor.losses)
            if on_warning is not None and done == loss_check_step(total):
                message = flat_loss(cursor.losses, label, total)
                if message:
                    on_warning("loss_flat", message, done)
            fault_point("step")
            if (
                checkpoint is not None
                and train.checkpoint_every_steps
                and done % train.checkpoint_every_steps == 0
                and done < total
            ):
                if info.is_main:
                    checkpoint(done, *training_snapshot(method, optimizer, scheduler, scaler, cursor))
                distributed.barrier()
    method.eval()
    losses = cursor.losses
    tail = losses[-max(1, len(losses) // 10) :]
    flat = flat_loss(losses, label, total)
    return {
        "steps": len(losses),
        "samples": len(losses) * train.batch_size * train.accumulate_steps,
        "seconds": round(time.perf_counter() - started, 3),
        "first_loss": losses[0],
        "final_loss": float(np.mean(tail)),
        "losses": [round(v, 6) for v in losses],
        "warnings": [{"kind": "loss_flat", "message": flat}] if flat else [],
    }
