"""Training on a stream (``data.stream=online``): one pass, batch by batch, evaluated along the way.

Each incoming batch of the stream (:class:`vlcl.data.online.OnlineStream`) gets ``train.online_iters`` optimiser
steps and is then shown to the method (``observe_batch``); it is never seen again. The learning rate is constant
(the SIT authors' ``default`` schedule: a stream has no length to decay over); the optimiser is rebuilt when a
hidden task begins (``stream.reset_optimizer``, as the authors' trainer does), which is all the engine does at a
boundary. Every ``eval.every_samples`` samples (the first batch past each multiple, as the authors count) and at
each hidden task's end, ``evaluate(batch)`` scores the model on what the stream has shown so far; these points
are the stream's accuracy curve (A_auc) and its task ends (A_avg, A_last, F_last). In-stream checkpoints every
``train.checkpoint_every_steps`` steps hold the points so far, so a resumed stream gives the uninterrupted result.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from rich.console import Console

from vlcl.config import EvalConfig, StreamConfig, TrainConfig
from vlcl.data.online import OnlineStream
from vlcl.engine import distributed
from vlcl.engine.checkpoint import CheckpointError
from vlcl.engine.faults import fault_point
from vlcl.engine.logbook import StepLogger, parameter_group_names
from vlcl.engine.optim import build_optimizer
from vlcl.engine.progress import RunProgress
from vlcl.engine.train import (
    Cursor, Optimisation, StepCheckpoint, check_precision, enable_gradient_checkpointing, flat_loss, loss_check_step,
    optimizer_step, restore_snapshot, training_snapshot,
)
from vlcl.methods.base import Method
from vlcl.models.loading import ClipBundle
from vlcl.settings import make_batch

StreamEvaluation = Callable[[int], dict[str, Any]]
"""``evaluate(batch)``: the scores once batch ``batch`` (0-based) has been trained on (``score``, ``per_unit``)."""


def evaluation_batches(stream: OnlineStream, every_samples: int) -> dict[int, dict[str, bool]]:
    """The batches after which the stream is evaluated -> ``periodic`` (the first batch at or past a multiple of
    ``every_samples`` samples: the points of A_auc) and ``task_end`` (a hidden task's last batch: the points of
    A_avg, A_last and F_last); a batch may be both."""
    points: dict[int, dict[str, bool]] = {}
    seen, next_point = 0, every_samples
    for b, batch in enumerate(stream.batches):
        seen += len(batch)
        if seen >= next_point:
            points[b] = {"periodic": True, "task_end": False}
            while next_point <= seen:
                next_point += every_samples
    for b in stream.task_ends():
        points[b] = {"periodic": b in points, "task_end": True}
    return dict(sorted(points.items()))


def stream_without_training(stream: OnlineStream, evaluation: EvalConfig, evaluate: StreamEvaluation) -> dict[str, Any]:
    """The points of a stream for a method that does not train (zero-shot): the same points, the same model."""
    points = [_point(stream, b, kind, evaluate(b)) for b, kind in evaluation_batches(stream, evaluation.every_samples).items()]
    return _stream_stats(stream, 1, evaluation, points)


def _stream_stats(stream: OnlineStream, online_iters: int, evaluation: EvalConfig, points: list) -> dict[str, Any]:
    return {**stream.describe(), "online_iters": online_iters, "every_samples": evaluation.every_samples, "points": points}


def _constant_schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def train_on_stream(
    method: Method,
    bundle: ClipBundle,
    stream: OnlineStream,
    train: TrainConfig,
    options: StreamConfig,
    evaluation: EvalConfig,
    seed: int,
    console: Console,
    evaluate: StreamEvaluation,
    *,
    checkpoint: StepCheckpoint | None = None,
    resume: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
    on_step: StepLogger | None = None,
    on_warning: Callable[[str, str, int], None] | None = None,
    progress: RunProgress | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``stream`` in one pass; returns the step statistics with ``stream``: the evaluation
    points (``batch``, ``samples``, ``task``, ``task_end``, the scores) and the stream's shape."""
    info = distributed.current()
    if train.accumulate_steps != 1:
        raise ValueError("train.accumulate_steps: a stream's step is one incoming batch; expected 1")
    if any(len(b) < info.world for b in stream.batches):
        raise ValueError(f"a stream batch has fewer samples than the {info.world} processes")
    device = next(method.model.parameters()).device
    check_precision(train.precision, device)
    if train.gradient_checkpointing:
        enable_gradient_checkpointing(method.model)
    groups = method.parameter_groups()
    group_names = parameter_group_names(groups)
    scaler = torch.amp.GradScaler("cuda") if train.precision == "fp16" else None
    opt = _fresh_optimisation(groups, train, scaler)
    total = len(stream.batches) * train.online_iters
    cursor = Cursor(torch.Generator().manual_seed(seed))
    cursor.order = torch.arange(len(stream.data))
    cursor.picks = torch.randint(0, 1 << 30, (len(stream.data),), generator=cursor.generator)
    points: list[dict[str, Any]] = []
    if resume is not None:
        points = _restore(method, opt, cursor, resume, stream, groups, train)
    when = evaluation_batches(stream, evaluation.every_samples)
    method.train()
    started = time.perf_counter()
    with (progress or RunProgress(console)).training(stream.data.name, total, len(cursor.losses), total) as bar:
        for b in range(len(cursor.losses) // train.online_iters, len(stream.batches)):
            if options.reset_optimizer and b > 0 and stream.batch_tasks[b] != stream.batch_tasks[b - 1]:
                opt = _fresh_optimisation(groups, train, scaler)
            batch = _stream_batch(bundle, stream, b, cursor.picks, info).to(device)
            indices = torch.as_tensor(stream.batches[b], dtype=torch.long)
            for _ in range(train.online_iters):
                step = len(cursor.losses)
                value, terms, lrs = optimizer_step(method, lambda micro: batch, opt, train, step, stream.data.name, device)
                cursor.losses.append(value)
                bar.step(value)
                if on_step is not None:
                    on_step(step + 1, total, value, terms, dict(zip(group_names, lrs)))
                if on_warning is not None and len(cursor.losses) == loss_check_step(total):
                    message = flat_loss(cursor.losses, stream.data.name, total)
                    if message:
                        on_warning("loss_flat", message, len(cursor.losses))
                fault_point("step")
            method.observe_batch(stream.data, indices)
            if b in when:
                points.append(_point(stream, b, when[b], evaluate(b)))
                method.train()
            done = len(cursor.losses)
            if (
                checkpoint is not None and train.checkpoint_every_steps and b + 1 < len(stream.batches)
                and done // train.checkpoint_every_steps > (done - train.online_iters) // train.checkpoint_every_steps
            ):
                if info.is_main:
                    tensors, values = training_snapshot(method, opt.optimizer, opt.scheduler, scaler, cursor)
                    checkpoint(done, tensors, {**values, "stream_points": points})
                distributed.barrier()
    method.eval()
    losses = cursor.losses
    flat = flat_loss(losses, stream.data.name, total)
    return {
        "steps": len(losses),
        "samples": len(stream.data),
        "seconds": round(time.perf_counter() - started, 3),
        "first_loss": losses[0],
        "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "losses": [round(v, 6) for v in losses],
        "warnings": [{"kind": "loss_flat", "message": flat}] if flat else [],
        "stream": _stream_stats(stream, train.online_iters, evaluation, points),
    }


def _stream_batch(bundle: ClipBundle, stream: OnlineStream, b: int, picks: torch.Tensor, info) -> Any:
    """This process's share of incoming batch ``b`` (under torchrun each process takes a contiguous slice), its
    ``sample_index`` the samples' positions in the stream."""
    rows = torch.arange(len(stream.batches[b])).tensor_split(info.world)[info.rank]
    positions = torch.as_tensor(stream.batches[b], dtype=torch.long)[rows]
    batch = make_batch(bundle, stream.batch_data(b), rows, picks[positions])
    return dataclasses.replace(batch, sample_index=positions)


def _fresh_optimisation(groups, train: TrainConfig, scaler) -> Optimisation:
    optimizer = build_optimizer(groups, train)
    return Optimisation(optimizer, _constant_schedule(optimizer), scaler, [p for g in optimizer.param_groups for p in g["params"]])


def _point(stream: OnlineStream, batch: int, kind: dict[str, bool], scores: dict[str, Any]) -> dict[str, Any]:
    samples = sum(len(b) for b in stream.batches[: batch + 1])
    return {"batch": batch, "samples": samples, "task": stream.batch_tasks[batch], **kind, **scores}


def _restore(method, opt: Optimisation, cursor: Cursor, resume, stream: OnlineStream, groups, train: TrainConfig) -> list:
    """The in-stream snapshot restored; the optimiser is the one of the hidden task the snapshot was taken in."""
    tensors, values = resume
    try:
        restore_snapshot(method, opt.optimizer, opt.scheduler, opt.scaler, cursor, tensors, values)
        points = list(values["stream_points"])
        if len(cursor.losses) % train.online_iters or len(cursor.losses) // train.online_iters > len(stream.batches):
            raise ValueError(f"{len(cursor.losses)} steps is not a whole number of this stream's batches")
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(
            f"the in-stream checkpoint named by checkpoints/latest.json does not fit this run "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else 'missing entry'})"
        ) from None
    return points
