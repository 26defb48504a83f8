"""A benchmark as one stream (``data.stream=online``): its tasks' training samples in one order, cut into batches.

The stream's data is one :class:`~vlcl.data.benchmark.CaptionedImages` whose row i is the i-th sample of the
stream. For a classification benchmark the tasks' classes are pooled: a class is identified by its test prompts
(two tasks naming a class alike share it, as the task-agnostic scores do), and the stream's classes are numbered
in the order they first appear, so that "the classes seen so far" after a batch are the classes
``0 .. exposed_after(batch) - 1``. The hidden tasks (:mod:`vlcl.data.stream`: sharp or Si-Blurry) decide the
order; the method is never told them (docs/streams.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from vlcl.data.benchmark import Benchmark, CaptionedImages, ClassificationSet
from vlcl.data.images import concat_images
from vlcl.data.stream import sharp_split, si_blurry_plan, stream_batches
from vlcl.data.validation import subset_captioned, take_images


class StreamError(ValueError):
    """A benchmark or stream option that cannot make a stream: one line naming what and why."""


@dataclass
class OnlineStream:
    """Every training sample of a benchmark once, in stream order, and the batches they arrive in."""

    data: CaptionedImages
    """The stream's samples in stream order; a classification stream's labels are stream classes."""
    batches: list[list[int]]
    """Positions in ``data`` of each incoming batch, in order (consecutive; a batch never straddles a hidden task)."""
    batch_tasks: list[int]
    """The hidden task of each batch."""
    task_names: list[str]
    """The hidden tasks' names: the benchmark's tasks (sharp), or ``task 1``, ``task 2``... (Si-Blurry)."""
    source_tasks: list[int]
    """For each position, the benchmark task the sample comes from."""
    class_keys: list[tuple[str, ...]] | None
    """A classification stream's classes in order of first appearance: each one's test prompts. None: captions."""
    boundaries: str
    dropped_samples: int = 0
    """Training samples in no hidden task (the Si-Blurry rounding of the authors' code drops a few)."""

    def __post_init__(self) -> None:
        labels = self.data.labels
        self._exposed = (
            np.maximum.accumulate([int(labels[b].max()) + 1 for b in self.batches]).tolist() if labels is not None else None
        )

    @property
    def classification(self) -> bool:
        return self.class_keys is not None

    def exposed_after(self, batch: int) -> int:
        """Number of classes seen once batch ``batch`` (0-based) has arrived (the classes 0 .. n-1)."""
        if self._exposed is None:
            raise ValueError("a caption stream has no classes")
        return self._exposed[batch]

    def tasks_seen_after(self, batch: int) -> list[int]:
        """The benchmark tasks (indices) whose samples the stream has shown once batch ``batch`` has arrived."""
        last = self.batches[batch][-1]
        return sorted(set(self.source_tasks[: last + 1]))

    def batch_data(self, batch: int) -> CaptionedImages:
        """Batch ``batch``'s samples as training data (row i: the batch's i-th sample). A classification stream's
        class prompts are those of the classes seen so far (cross-entropy over every seen class, the asymmetric
        protocol of SIT's 'all'): the classes yet to come are not in its label space."""
        rows = self.batches[batch]
        data = subset_captioned(self.data, rows)
        if self.class_keys is None:
            return data
        return dataclasses.replace(data, class_prompts=self.data.class_prompts[: self.exposed_after(batch)])

    def task_ends(self) -> list[int]:
        """The index of each hidden task's last batch (hidden tasks without samples have none)."""
        return [b for b in range(len(self.batches)) if b + 1 == len(self.batches) or self.batch_tasks[b + 1] != self.batch_tasks[b]]

    def describe(self) -> dict:
        """What results.json records of the stream (its shape, not its samples)."""
        sizes = [0] * len(self.task_names)
        for batch, task in zip(self.batches, self.batch_tasks):
            sizes[task] += len(batch)
        return {
            "boundaries": self.boundaries, "samples": len(self.data), "batches": len(self.batches),
            "hidden_tasks": self.task_names, "task_sizes": sizes, "dropped_samples": self.dropped_samples,
            "classes": len(self.class_keys) if self.class_keys is not None else None,
        }


def _class_key(task_test, train: CaptionedImages, label: int) -> tuple[str, ...]:
    """A training class's identity: its test set's prompts when the test set has the same classes, else its
    training prompts."""
    if isinstance(task_test, ClassificationSet) and len(task_test.classnames) == len(train.class_prompts):
        return tuple(task_test.prompts()[label])
    return tuple(train.class_prompts[label])


def build_stream(
    benchmark: Benchmark, stream, batch_size: int, seed: int, trains: list[CaptionedImages] | None = None
) -> OnlineStream:
    """The stream of ``benchmark``'s tasks under ``stream`` (a :class:`vlcl.config.StreamConfig`), cut into batches
    of ``batch_size``; ``seed`` draws the order (the run's data seed). ``trains``: each task's training data as its
    stage would train it (default: the tasks' own)."""
    trains = trains if trains is not None else [task.train for task in benchmark.tasks]
    classified = [t.classification for t in trains]
    if any(classified) and not all(classified):
        raise StreamError(f"benchmark '{benchmark.name}': a stream needs tasks of one kind, labelled or captioned")
    source = np.concatenate([np.full(len(t), k) for k, t in enumerate(trains)])
    rows = np.concatenate([np.arange(len(t)) for t in trains])
    keys = None
    if classified[0]:
        keys_of_task = [
            [_class_key(task.test, train, c) for c in range(len(train.class_prompts))] for task, train in zip(benchmark.tasks, trains)
        ]
        pooled = list(dict.fromkeys(k for task_keys in keys_of_task for k in task_keys))
        index = {k: c for c, k in enumerate(pooled)}
        pooled_labels = np.concatenate([[index[keys_of_task[k][int(l)]] for l in t.labels] for k, t in enumerate(trains)])
    if classified[0] and len({len(p) for t in trains for p in t.class_prompts}) > 1:
        raise StreamError(
            f"benchmark '{benchmark.name}': its tasks' classes have different numbers of training prompts, which one "
            "stream's label space cannot hold; use train.class_prompts=first"
        )
    if stream.boundaries == "si_blurry":
        if not classified[0]:
            raise StreamError(
                f"stream.boundaries=si_blurry: benchmark '{benchmark.name}' has image-caption tasks, and Si-Blurry blurs "
                "classes; use stream.boundaries=sharp for a caption stream"
            )
        hidden = stream.tasks or len(trains)
        try:
            plan = si_blurry_plan(pooled_labels, hidden, stream.disjoint_percent, stream.blurry_percent, stream.random_sizes, seed)
        except ValueError as exc:
            raise StreamError(f"stream (si_blurry over {len(pooled)} classes): {exc}") from None
        segments, dropped, names = plan.segments, len(plan.dropped_samples), [f"task {t + 1}" for t in range(hidden)]
    else:
        if stream.tasks is not None and stream.tasks != len(trains):
            raise StreamError(f"stream.tasks={stream.tasks}: a sharp stream has the benchmark's {len(trains)} tasks")
        segments, dropped, names = sharp_split(source, len(trains), seed), 0, list(benchmark.task_names)
    order = [i for segment in segments for i in segment]
    if len(order) < 2:
        raise StreamError(f"benchmark '{benchmark.name}': a stream of {len(order)} samples")
    offsets = np.cumsum([0] + [len(s) for s in segments])
    local = [[int(offsets[t]) + j for j in range(len(s))] for t, s in enumerate(segments)]
    batches = stream_batches(local, batch_size)
    batch_tasks = [int(np.searchsorted(offsets, b[0], side="right") - 1) for b in batches]
    images = _gather_images(trains, source, rows, order)
    captions = [list(trains[source[i]].captions[rows[i]]) for i in order]
    labels = prompts = None
    if classified[0]:
        first_seen = list(dict.fromkeys(int(pooled_labels[i]) for i in order))
        renumber = {c: n for n, c in enumerate(first_seen)}
        labels = torch.tensor([renumber[int(pooled_labels[i])] for i in order], dtype=torch.long)
        keys = [pooled[c] for c in first_seen]
        prompts_of = {}
        for k, train in enumerate(trains):
            for c, key in enumerate(keys_of_task[k]):
                prompts_of.setdefault(key, list(train.class_prompts[c]))
        prompts = [prompts_of[key] for key in keys]
    data = CaptionedImages(f"{benchmark.name} stream", images, captions, labels, prompts)
    return OnlineStream(data, batches, batch_tasks, names, [int(source[i]) for i in order], keys, stream.boundaries, dropped)


def _gather_images(trains: list[CaptionedImages], source: np.ndarray, rows: np.ndarray, order: list[int]):
    """The images of ``order`` (positions into the tasks' concatenation), in that order; stores stay lazy."""
    pieces, start = [], 0
    order_array = np.asarray(order)
    # consecutive runs from one task are taken together (a sharp stream is one run per task)
    while start < len(order_array):
        task = source[order_array[start]]
        end = start
        while end < len(order_array) and source[order_array[end]] == task:
            end += 1
        pieces.append(take_images(trains[task].images, rows[order_array[start:end]]))
        start = end
    return concat_images(pieces)
