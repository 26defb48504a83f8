"""Time one training epoch of cclip (teacher cache on and off) against lora, same model and data.

Usage:
    python benchmarks/cclip_epoch_time.py [--task counting] [--repeats 3] [--threads N] [--epochs-per-task 5]

Every variant starts from the shipped model and trains the same task with the
same seed. Two times are measured separately: ``begin_task`` (for cclip with
the cache: encoding every image and training caption of the task once with the
old model) and one training epoch after it. Printed side by side, best of
--repeats, with ratios to lora: the epoch alone (the cache in use), and the
whole task at --epochs-per-task epochs (begin_task + that many epochs, computed
from the two measurements). Goal (issue 3): cclip with the cache at most
1.15x lora.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console

from vlcl.config import TrainConfig
from vlcl.data.benchmarks.embedded import build_embedded
from vlcl.engine.train import train_on
from vlcl.methods import RunContext, Stage, create_method
from vlcl.models import load_clip


def measure(name: str, options: dict, data, batch_size: int) -> tuple[float, float]:
    """(begin_task seconds, one epoch seconds)."""
    bundle = load_clip("embedded")
    method = create_method(name, options)
    method.setup(bundle.model, RunContext(["task"], seed=0, bundle=bundle))
    started = time.perf_counter()
    method.begin_task(Stage(0, "task", (0,)), data)
    begun = time.perf_counter()
    train_on(method, bundle, data, "task", TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3), seed=0, console=Console(quiet=True))
    return begun - started, time.perf_counter() - begun


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="counting")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--epochs-per-task", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = build_embedded(tasks=[args.task]).tasks[0].train
    variants = {
        "lora": ("lora", {}),
        "cclip (teacher cache)": ("cclip", {"cache_teacher": True}),
        "cclip (teacher forward per step)": ("cclip", {"cache_teacher": False}),
    }
    times = {}
    for label, (name, opts) in variants.items():
        runs = [measure(name, opts, data, args.batch_size) for _ in range(args.repeats)]
        times[label] = (min(r[0] for r in runs), min(r[1] for r in runs))
    e = args.epochs_per_task
    print(f"'{args.task}': {len(data)} pairs, batch {args.batch_size}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"  {'variant':34s} {'begin_task':>10s} {'epoch':>8s} {'epoch/lora':>10s} {f'task({e} ep)/lora':>16s}")
    lora_begin, lora_epoch = times["lora"]
    for label, (begin, epoch) in times.items():
        task_ratio = (begin + e * epoch) / (lora_begin + e * lora_epoch)
        print(f"  {label:34s} {begin:9.2f}s {epoch:7.2f}s {epoch / lora_epoch:10.3f} {task_ratio:16.3f}")


if __name__ == "__main__":
    main()
