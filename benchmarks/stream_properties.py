"""Measure the streams that stream mode (``data.stream=online``) makes of the embedded benchmarks, side by side.

Usage:
    python benchmarks/stream_properties.py [--seeds 0 1 2] [--tasks default 5] [--batch-size 64] [--train-scale 1.0]

For ``embedded_cls`` as a Si-Blurry stream (vlcl.data.online.build_stream with the StreamConfig defaults: N=50%
disjoint classes, M=10% of the blurry classes' samples moved, random hidden-task sizes; and the same with fixed
sizes), for each number of hidden tasks in ``--tasks`` (``default``: StreamConfig's, the benchmark's number of
tasks) and each seed, and for the caption benchmark ``embedded`` as a sharp stream, one row per stream:

* samples in the stream, of the benchmark's training samples; dropped (in no hidden task, the official rounding);
  batches (``--batch-size``, the remainder rule of vlcl.data.stream.stream_batches); hidden-task sizes;
* classes in the stream (of the benchmark's pooled classes); the disjoint share of classes (classes in exactly one
  hidden task; target N) and the share of the blurry classes' samples outside their home task (target M; with
  fixed sizes about M (T-1)/T, as a moved sample lands back home 1 time in T) - both measured from the stream
  (vlcl.data.stream.split_shares), not read from the plan;
* the classes that first appear in each hidden task;
* ``once``: every stream position in exactly one batch, the batches consecutive and within one hidden task, and by
  content (image bytes, captions) the stream's samples are the benchmark's training samples, each once, less
  exactly the dropped ones.

The seeds here are run seeds (``seed=S``) over the data of ``--data-seed``: the stream's order is drawn from
``vlcl.seeds.stream_seed(seed, data.seed)`` as the engine draws it (``stream.seed`` unset), so these are the streams
of a comparison's ``--seeds``. Nothing is trained; offline,
about a minute on 2 cores at the default scale (most of it generating the images). Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from statistics import fmean

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from vlcl.config import StreamConfig, TrainConfig
from vlcl.data.benchmarks.embedded import build_embedded
from vlcl.data.benchmarks.embedded_cls import build_embedded_cls
from vlcl.data.online import StreamError, _class_key, build_stream
from vlcl.data.stream import si_blurry_plan, split_shares
from vlcl.seeds import stream_seed

N_TARGET = StreamConfig().disjoint_percent
M_TARGET = StreamConfig().blurry_percent


def training_parts(benchmark) -> list:
    """Each task's training data as a stage trains it (train.class_prompts=first, the default)."""
    return [task.train.with_prompts(TrainConfig().class_prompts) for task in benchmark.tasks]


def _sample_keys(data, rows) -> Counter:
    images = np.asarray(data.images[list(rows)])
    return Counter((hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest(), tuple(data.captions[r])) for image, r in zip(images, rows))


def every_sample_once(stream, trains) -> tuple[bool, str]:
    """The checks of ``once`` (see the module docstring): (ok, what failed)."""
    positions = [p for batch in stream.batches for p in batch]
    if positions != list(range(len(stream.data))):
        return False, "batches are not every position once, in order"
    sizes = stream.describe()["task_sizes"]
    task_of = np.repeat(np.arange(len(sizes)), sizes)
    if any(set(task_of[b]) != {stream.batch_tasks[i]} for i, b in enumerate(stream.batches)):
        return False, "a batch straddles a hidden task"
    total = sum(len(t) for t in trains)
    if len(stream.data) + stream.dropped_samples != total:
        return False, f"{len(stream.data)} + {stream.dropped_samples} dropped != {total} training samples"
    source = np.asarray(stream.source_tasks)
    for k, train in enumerate(trains):
        if _sample_keys(stream.data, np.flatnonzero(source == k).tolist()) - _sample_keys(train, range(len(train))):
            return False, f"task {k}: a stream sample that is not one of its training samples (or one twice)"
    everything = sum((_sample_keys(t, range(len(t))) for t in trains), Counter())
    missing = everything - _sample_keys(stream.data, range(len(stream.data)))
    if sum(missing.values()) != stream.dropped_samples:
        return False, f"{sum(missing.values())} training samples missing, {stream.dropped_samples} dropped"
    return True, ""


def _segments(stream) -> list[list[int]]:
    segments = [[] for _ in stream.task_names]
    for batch, task in zip(stream.batches, stream.batch_tasks):
        segments[task].extend(batch)
    return segments


def first_appearances(stream) -> list[int]:
    """Per hidden task, the classes whose first sample in the stream is in it."""
    labels = stream.data.labels.tolist()
    counts = [0] * len(stream.task_names)
    seen: set[int] = set()
    for segment, task in zip(_segments(stream), range(len(stream.task_names))):
        new = {labels[i] for i in segment} - seen
        counts[task] = len(new)
        seen |= new
    return counts


def pooled_labels(benchmark, trains) -> np.ndarray:
    """The tasks' labels in one class space, as build_stream pools them (a class is its test prompts)."""
    keys = [[_class_key(task.test, train, c) for c in range(len(train.class_prompts))] for task, train in zip(benchmark.tasks, trains)]
    index = {k: c for c, k in enumerate(dict.fromkeys(k for task_keys in keys for k in task_keys))}
    return np.concatenate([[index[keys[k][int(label)]] for label in t.labels] for k, t in enumerate(trains)])


def planned_moved_share(stream, benchmark, trains, options, seed) -> float | None:
    """Of the samples of the classes the plan made blurry (in the stream), the share in a hidden task other than
    their class's home task; None when the plan rebuilt here is not the stream's (it must be: same sizes, drops)."""
    labels = pooled_labels(benchmark, trains)
    plan = si_blurry_plan(labels, options.tasks or len(trains), options.disjoint_percent, options.blurry_percent, options.random_sizes, seed)
    if [len(s) for s in plan.segments] != stream.describe()["task_sizes"] or len(plan.dropped_samples) != stream.dropped_samples:
        return None
    home = {c: t for t, classes in enumerate(plan.blurry_classes) for c in classes}
    blurry = [(t, home[labels[i]]) for t, segment in enumerate(plan.segments) for i in segment if labels[i] in home]
    return 100.0 * sum(t != h for t, h in blurry) / len(blurry) if blurry else 0.0


def order_key(stream) -> str:
    """A short fingerprint of the stream's samples in order (image bytes): two seeds, two orders."""
    return hashlib.sha1(np.ascontiguousarray(np.asarray(stream.data.images[list(range(len(stream.data)))])).tobytes()).hexdigest()[:8]


def _sizes(values: list[int]) -> str:
    return " ".join(str(v) for v in values)


def classification_table(trains, benchmark, seeds, task_counts, batch_size, failures: list[str], data_seed: int = 0) -> Table:
    pooled = len(build_stream(benchmark, StreamConfig(boundaries="sharp"), batch_size, 0, trains=trains).class_keys)
    total = sum(len(t) for t in trains)
    table = Table(title=f"embedded_cls as a Si-Blurry stream ({len(trains)} tasks, {total} training samples, {pooled} classes; "
                  f"batch {batch_size}; targets N={N_TARGET}% disjoint classes, M={M_TARGET}% moved)", box=box.SIMPLE_HEAD)
    for column in ("T", "sizes", "seed", "samples", "dropped", "batches", "hidden-task sizes", "classes",
                   "disjoint classes % (measured)", "blurry outside home % (measured)", "moved % (plan's blurry)",
                   "new classes per task", "order", "once"):
        table.add_column(column, justify="left" if column in ("sizes", "hidden-task sizes", "new classes per task", "order", "once") else "right",
                         no_wrap=column in ("hidden-task sizes", "new classes per task"))
    for tasks in task_counts:
        for random_sizes in (True, False):
            options = StreamConfig(boundaries="si_blurry", tasks=tasks, random_sizes=random_sizes)
            hidden = tasks or len(trains)
            disjoint, outside, moved = [], [], []
            for seed in seeds:
                try:
                    stream = build_stream(benchmark, options, batch_size, stream_seed(seed, data_seed), trains=trains)
                except StreamError as exc:
                    table.add_row(str(hidden), "random" if random_sizes else "fixed", str(seed), "-", "-", "-", str(exc), *["-"] * 7)
                    continue
                shares = split_shares(_segments(stream), stream.data.labels.numpy())
                ok, why = every_sample_once(stream, trains)
                if not ok:
                    failures.append(f"embedded_cls T={hidden} seed {seed}: {why}")
                share = 100.0 * shares["disjoint_classes"] / shares["classes"]
                disjoint.append(share)
                outside.append(100.0 * shares["blurry_outside_share"])
                planned = planned_moved_share(stream, benchmark, trains, options, stream_seed(seed, data_seed))
                if planned is None:
                    failures.append(f"embedded_cls T={hidden} seed {seed}: the rebuilt Si-Blurry plan is not the stream's")
                else:
                    moved.append(planned)
                shape = stream.describe()
                table.add_row(
                    str(hidden), "random" if random_sizes else "fixed", str(seed), str(shape["samples"]), str(shape["dropped_samples"]),
                    str(shape["batches"]), _sizes(shape["task_sizes"]), f"{shape['classes']}/{pooled}",
                    f"{share:.0f} ({shares['disjoint_classes']})", f"{outside[-1]:.1f}", "-" if planned is None else f"{planned:.1f}",
                    _sizes(first_appearances(stream)), order_key(stream), "OK" if ok else f"FAIL: {why}",
                )
            if disjoint:
                fixed_target = f" (M(T-1)/T = {M_TARGET * (hidden - 1) / hidden:.1f})" if not random_sizes else ""
                table.add_row(str(hidden), "random" if random_sizes else "fixed", "mean", "", "", "", "", "",
                              f"{fmean(disjoint):.0f}", f"{fmean(outside):.1f}", f"{fmean(moved):.1f}{fixed_target}" if moved else "-",
                              "", "", "", end_section=True)
    return table


def caption_table(trains, benchmark, seeds, batch_size, failures: list[str], data_seed: int = 0) -> Table:
    total = sum(len(t) for t in trains)
    table = Table(title=f"embedded (captions) as a sharp stream ({len(trains)} tasks, {total} training pairs; batch {batch_size})",
                  box=box.SIMPLE_HEAD)
    for column in ("seed", "samples", "dropped", "batches", "hidden tasks", "hidden-task sizes", "batches per task",
                   "last batch per task", "tasks in order", "order", "once"):
        table.add_column(column, justify="left" if column in ("hidden tasks", "hidden-task sizes", "batches per task", "last batch per task", "order", "once") else "right",
                         no_wrap=column != "tasks in order")
    for seed in seeds:
        stream = build_stream(benchmark, StreamConfig(boundaries="sharp"), batch_size, stream_seed(seed, data_seed), trains=trains)
        ok, why = every_sample_once(stream, trains)
        in_order = stream.source_tasks == sorted(stream.source_tasks) and _sizes([len(t) for t in trains]) == _sizes(stream.describe()["task_sizes"])
        if not ok:
            failures.append(f"embedded seed {seed}: {why}")
        if not in_order:
            failures.append(f"embedded seed {seed}: the hidden tasks are not the benchmark's tasks in order")
        shape = stream.describe()
        per_task = [stream.batch_tasks.count(t) for t in range(len(trains))]
        last = [len(stream.batches[b]) for b in stream.task_ends()]
        table.add_row(str(seed), str(shape["samples"]), str(shape["dropped_samples"]), str(shape["batches"]), " ".join(shape["hidden_tasks"]),
                      _sizes(shape["task_sizes"]), _sizes(per_task), _sizes(last), "yes" if in_order else "NO", order_key(stream),
                      "OK" if ok else f"FAIL: {why}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (default: 0 1 2)")
    parser.add_argument("--tasks", nargs="+", default=["default", "5"],
                        help="Si-Blurry hidden tasks: 'default' (StreamConfig: the benchmark's tasks) and/or numbers (default: default 5)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size, help="train.batch_size (default: %(default)s)")
    parser.add_argument("--train-scale", type=float, default=1.0, help="data.train_scale (default: the full benchmarks)")
    parser.add_argument("--data-seed", type=int, default=0, help="data.seed of the generated images (default: 0)")
    parser.add_argument("--width", type=int, default=220, help="console width of the tables")
    args = parser.parse_args(argv)
    task_counts = [None if t == "default" else int(t) for t in args.tasks]
    console = Console(width=args.width, highlight=False)
    failures: list[str] = []
    small = {"seed": args.data_seed, "train_scale": args.train_scale, "test_images": 8, "zeroshot_per_class": 1}
    classification = build_embedded_cls(**small)
    console.print(classification_table(training_parts(classification), classification, args.seeds, task_counts, args.batch_size, failures, args.data_seed))
    captions = build_embedded(**small)
    console.print(caption_table(training_parts(captions), captions, args.seeds, args.batch_size, failures, args.data_seed))
    for failure in failures:
        console.print(f"FAIL  {failure}")
    console.print("every check passed" if not failures else f"{len(failures)} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
