"""Time one training epoch of cclip (teacher cache on and off) against lora, same model and data.

Usage:
    python benchmarks/cclip_epoch_time.py [--task counting] [--repeats 3] [--threads N]

Every variant trains one epoch of the same task from the same shipped model and
seed; the cache's one-off cost (encoding the task with the old model at
begin_task) is counted inside cclip's time. Prints seconds (best of
--repeats) and the ratios to lora side by side. Goal (issue 3): cclip with the
cache at most 1.15x lora.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console

from vlcl.config import TrainConfig
from vlcl.data.embedded import build_embedded
from vlcl.engine.train import train_on
from vlcl.methods import RunContext, Stage, create_method
from vlcl.models import load_clip


def epoch_seconds(name: str, options: dict, data, batch_size: int) -> float:
    bundle = load_clip("embedded")
    method = create_method(name, options)
    method.setup(bundle.model, RunContext(["task"], seed=0, bundle=bundle))
    started = time.perf_counter()
    method.begin_task(Stage(0, "task", (0,)), data)
    train_on(method, bundle, data, "task", TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3), seed=0, console=Console(quiet=True))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="counting")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = build_embedded(tasks=[args.task]).tasks[0].train
    variants = {
        "lora": ("lora", {}),
        "cclip (teacher cache)": ("cclip", {"cache_teacher": True}),
        "cclip (teacher forward per step)": ("cclip", {"cache_teacher": False}),
    }
    times = {label: min(epoch_seconds(name, opts, data, args.batch_size) for _ in range(args.repeats)) for label, (name, opts) in variants.items()}
    print(f"one epoch of '{args.task}' ({len(data)} pairs, batch {args.batch_size}, {torch.get_num_threads()} threads), best of {args.repeats}:")
    for label, seconds in times.items():
        print(f"  {label:34s} {seconds:7.2f} s   ratio to lora {seconds / times['lora']:.3f}")


if __name__ == "__main__":
    main()
