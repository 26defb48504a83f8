"""Optimisation of one stage: batches, AdamW, warm-up + cosine, clipping, the method's hooks."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vlcl.config import TrainConfig
from vlcl.data.benchmark import CaptionedImages
from vlcl.engine.optim import build_optimizer, build_scheduler
from vlcl.methods.base import Method
from vlcl.models.encode import tokenize
from vlcl.models.loading import ClipBundle


class NonFiniteLossError(RuntimeError):
    pass


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def make_batch(bundle: ClipBundle, data: CaptionedImages, idx: torch.Tensor, picks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Images of ``idx`` with one caption each (caption ``pick % count`` of that image).

    ``sample_index`` and ``caption_index`` say which pair each row is, so that a
    method can look up per-sample state (e.g. cached teacher features).
    """
    rows = idx.tolist()
    caption_index = [p % len(data.captions[i]) for i, p in zip(rows, picks.tolist())]
    captions = [data.captions[i][c] for i, c in zip(rows, caption_index)]
    input_ids, attention_mask = tokenize(bundle.tokenizer, captions, bundle.context_length)
    pixels = bundle.preprocess.normalize_uint8(data.images[rows])
    return {
        "pixel_values": pixels,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "sample_index": idx.clone(),
        "caption_index": torch.tensor(caption_index, dtype=torch.long),
    }


def planned_steps(num_samples: int, train: TrainConfig) -> tuple[int, int]:
    """(steps per epoch, total steps); the last incomplete batch is dropped (contrastive batches stay full)."""
    steps_per_epoch = num_samples // train.batch_size
    total = train.epochs * steps_per_epoch
    if train.max_steps_per_task:
        total = min(total, train.max_steps_per_task)
    return steps_per_epoch, total


def train_on(
    method: Method, bundle: ClipBundle, data: CaptionedImages, label: str, train: TrainConfig, seed: int, console: Console
) -> dict[str, Any]:
    """Train ``method.model`` on ``data`` for ``train.epochs``; returns step, time and loss statistics."""
    steps_per_epoch, total = planned_steps(len(data), train)
    if steps_per_epoch == 0:
        raise ValueError(f"task '{data.name}' has {len(data)} training pairs, fewer than train.batch_size={train.batch_size}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = build_optimizer(method.parameter_groups(), train)
    scheduler = build_scheduler(optimizer, total, train)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    method.train()
    started = time.perf_counter()
    losses: list[float] = []
    with progress_bar(console) as bar:
        task = bar.add_task(f"train {label}", total=total, info="")
        while len(losses) < total:
            order = torch.randperm(len(data), generator=generator)
            picks = torch.randint(0, 1 << 30, (len(data),), generator=generator)
            for b in range(min(steps_per_epoch, total - len(losses))):
                step = len(losses)
                idx = order[b * train.batch_size : (b + 1) * train.batch_size]
                output = method.training_loss(make_batch(bundle, data, idx, picks[idx]), step)
                loss = float(output.loss.detach())
                if not np.isfinite(loss):
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss}) at step {step} of stage '{label}'; "
                        "stopped, the last complete checkpoint is kept (try a lower train.lr)"
                    )
                optimizer.zero_grad(set_to_none=True)
                output.loss.backward()
                if train.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
                method.before_optimizer_step(step)
                optimizer.step()
                scheduler.step()
                method.after_optimizer_step(step)
                losses.append(loss)
                bar.update(task, advance=1, info=f"loss {loss:.3f}")
    method.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": len(losses),
        "samples": len(losses) * train.batch_size,
        "seconds": round(time.perf_counter() - started, 3),
        "first_loss": losses[0],
        "final_loss": float(np.mean(tail)),
        "losses": [round(v, 6) for v in losses],
    }
