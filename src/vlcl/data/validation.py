"""A validation split carved from every task's training data (``data.validation_fraction``).

Hyper-parameters are chosen on data the run trains on, never on test data
(``vlcl compare --tune``, docs/tuning.md). With ``data.validation_fraction=f``
every task keeps ``1 - f`` of its training data for training, and the carved
``f`` becomes the set the task is evaluated on, in place of its test split:

- a caption task: a :class:`RetrievalSet` of the carved images with all their
  training captions (every caption points at its image);
- a classification task: a :class:`ClassificationSet` of the carved images with
  their labels, and the class names and prompt templates of the task's test set;
- a modality-pair task (feature mode): the carved pairs.

Which images are carved is drawn from ``data.seed`` and the task's name, so a
split is the same in every run with that data seed, whatever the method, the
run seed or the other tasks. Test data is not read at all: the held-out
retrieval sets and zero-shot sets are test data and are dropped, and a task's
test split serves only for the class names and templates of a classification
task (never its images or labels). The split and its sizes are recorded in the
benchmark's data report, hence in results.json under ``data.validation``.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from vlcl.data.benchmark import Benchmark, CaptionedImages, ClassificationSet, Images, RetrievalSet, Task
from vlcl.data.benchmarks.feature_pairs import ModalityPairs
from vlcl.data.images import DataError, ImageStore


def split_indices(count: int, fraction: float, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of a set of ``count`` rows, each sorted; disjoint, together every row.

    ``round(fraction * count)`` rows (at least one, and at least one row left for training) drawn without
    replacement by a generator seeded with ``seed`` and the CRC-32 of ``name``.
    """
    if count < 2:
        raise DataError(f"task '{name}': {count} training sample(s), too few to carve a validation split (data.validation_fraction)")
    carved = min(max(1, round(fraction * count)), count - 1)
    order = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))]).permutation(count)
    return np.sort(order[carved:]), np.sort(order[:carved])


def take_images(images: Images, rows: Sequence[int] | np.ndarray) -> Images:
    """The images at ``rows``: an array for an array, a lazy store (nothing decoded) for a store."""
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(images, ImageStore):
        return images.subset(rows.tolist())
    return np.ascontiguousarray(images[rows])


def subset_captioned(data: CaptionedImages, rows: Sequence[int] | np.ndarray) -> CaptionedImages:
    """The pairs at ``rows``; a classification task keeps its labels (those rows) and every class's prompts."""
    rows = np.asarray(rows, dtype=np.int64)
    labels = None if data.labels is None else data.labels[torch.as_tensor(rows, dtype=torch.long)]
    return dataclasses.replace(data, images=take_images(data.images, rows), captions=[list(data.captions[i]) for i in rows], labels=labels)


def _split_task(task: Task, fraction: float, seed: int) -> tuple[Task, dict[str, int]]:
    train = task.train
    kept, carved = split_indices(len(train), fraction, seed, task.name)
    if isinstance(train, ModalityPairs):
        pick = {m: torch.as_tensor(rows, dtype=torch.long) for m, rows in (("train", kept), ("val", carved))}
        new_train = ModalityPairs(train.name, train.modalities, {m: x[pick["train"]] for m, x in train.arrays.items()})
        evaluation = ModalityPairs(task.test.name, train.modalities, {m: x[pick["val"]] for m, x in train.arrays.items()})
    elif not isinstance(train, CaptionedImages):
        raise DataError(f"task '{task.name}': cannot carve a validation split from {type(train).__name__} training data")
    elif isinstance(task.test, ClassificationSet):
        if train.labels is None:
            raise DataError(f"task '{task.name}': a classification task whose training data has no labels; no validation split")
        if len(train.class_prompts) != len(task.test.classnames):
            raise DataError(
                f"task '{task.name}': {len(train.class_prompts)} training classes but {len(task.test.classnames)} test classes"
            )
        new_train = subset_captioned(train, kept)
        carved_set = subset_captioned(train, carved)
        evaluation = ClassificationSet(task.test.name, carved_set.images, carved_set.labels, list(task.test.classnames), list(task.test.templates))
    else:
        new_train = subset_captioned(train, kept)
        carved_set = subset_captioned(train, carved)
        evaluation = RetrievalSet.from_caption_lists(task.test.name, carved_set.images, carved_set.captions)
    return dataclasses.replace(task, train=new_train, test=evaluation), {"train": len(kept), "validation": len(carved)}


def validation_split(benchmark: Benchmark, fraction: float, seed: int) -> Benchmark:
    """``benchmark`` with every task's evaluation set carved from its training data and no held-out sets."""
    if not 0 < fraction < 1:
        raise DataError(f"data.validation_fraction={fraction}: expected a share strictly between 0 and 1")
    tasks, sizes = [], {}
    for task in benchmark.tasks:
        split, sizes[task.name] = _split_task(task, fraction, seed)
        tasks.append(split)
    dropped = [s.name for s in benchmark.heldout_retrieval] + [z.name for z in benchmark.heldout_zeroshot]
    report = dict(benchmark.data_report)
    report["validation"] = {
        "fraction": fraction,
        "seed": seed,
        "evaluated_on": "validation sets carved from each task's training data; no test data is evaluated",
        "tasks": sizes,
        "dropped_test_sets": dropped,
    }
    return dataclasses.replace(benchmark, tasks=tasks, heldout_retrieval=[], zeroshot=[], data_report=report)
