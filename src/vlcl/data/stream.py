"""The order of a stream: a benchmark's training samples as one sequence of batches, each sample seen once.

Stream mode (online lifelong learning; Wang et al. 2024, "CLIP model is an Efficient Online Lifelong
Learner", the SIT setting) trains on hidden tasks one after another, one pass, batch by batch. Two orders:

* :func:`si_blurry_split`, the Si-Blurry split of the official code (Debatrix/LifeLong-CLIP,
  ``utils/online_sampler.py``, ``OnlineSampler``): some classes are disjoint (they live in one task only),
  the others blurry (a share of their samples is moved into other tasks); with ``random_sizes`` the tasks
  have random numbers of classes and of moved samples (the authors' ``--rnd_NM``, used by their scripts).
* :func:`sharp_split`, the benchmark's own tasks one after another ("sharp boundaries").

:func:`stream_batches` cuts the segments (hidden tasks) into batches, :func:`split_shares` measures what
a split did (disjoint classes, blurry share, task sizes) so tests and benchmark scripts can show it.

Everything here is seeded with a numpy Generator; the official code draws from a torch generator, so the
same seed gives another split than the official one, but with the same structure (the same counts and
rules, including what the official code drops).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SiBlurryPlan:
    """A Si-Blurry split and how it was made, per hidden task (all class ids and sample indices as ints).

    ``segments[t]``: task t's sample indices in stream order. ``disjoint_classes[t]`` / ``blurry_classes[t]``:
    the classes assigned to task t (a blurry class's home task). ``dropped_classes``: classes in neither
    role (the official rounding). ``dropped_samples``: sample indices in no segment, sorted.
    """

    segments: list[list[int]]
    disjoint_classes: list[list[int]]
    blurry_classes: list[list[int]]
    dropped_classes: list[int]
    dropped_samples: list[int]


# -- argument checks -----------------------------------------------------------------


def _as_labels(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    """A non-empty 1-D integer array, or a one-line ValueError naming ``name``."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of ints, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold ints, got dtype {array.dtype}")
    return array.astype(np.int64)


def _check_percent(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 100:
        raise ValueError(f"{name} must be an int in 0..100, got {value!r}")


def _check_num_tasks(num_tasks: int, at_most: int, what: str) -> None:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or not 1 <= num_tasks <= at_most:
        raise ValueError(f"num_tasks must be an int in 1..{at_most} ({what}), got {num_tasks!r}")


# -- Si-Blurry -----------------------------------------------------------------------


def _role_counts(num_classes: int, num_tasks: int, disjoint_percent: int) -> tuple[int, int]:
    """(disjoint, blurry) class counts, each a multiple of ``num_tasks``, as the official sampler rounds.

    Disjoint: N% of the classes, rounded down, then down to a multiple of the task count; blurry: the rest,
    rounded down to a multiple of the task count. The classes left over (fewer than ``num_tasks``) are dropped.
    """
    disjoint = num_classes * disjoint_percent // 100 // num_tasks * num_tasks
    blurry = (num_classes - disjoint) // num_tasks * num_tasks
    return disjoint, blurry


def _random_cuts(total: int, num_tasks: int, rng: np.random.Generator) -> list[int]:
    """``num_tasks + 1`` sorted cut points from 0 to ``total``: the inner ones uniform in [0, total).

    The official ``[0] + sorted(randint(0, total, (T - 1,))) + [total]``: a part may be empty, except the
    last, which always holds at least one item when ``total > 0``.
    """
    inner = np.sort(rng.integers(0, total, size=num_tasks - 1)) if total > 0 else np.zeros(num_tasks - 1, int)
    return [0, *inner.tolist(), total]


def _groups(pool: np.ndarray, num_tasks: int, random_sizes: bool, rng: np.random.Generator) -> list[list[int]]:
    """``pool`` (classes in drawn order) cut into one consecutive group per task: equal or random sizes."""
    if not random_sizes or pool.size == 0:
        return [part.tolist() for part in np.array_split(pool, num_tasks)]
    cuts = _random_cuts(pool.size, num_tasks, rng)
    return [pool[cuts[t] : cuts[t + 1]].tolist() for t in range(num_tasks)]


def _samples_of(labels: np.ndarray, groups: list[list[int]]) -> list[list[int]]:
    """Per group, the indices of the samples whose label is in it, in data set order."""
    return [np.flatnonzero(np.isin(labels, group)).tolist() for group in groups]


def _move_equal_shares(blurry: list[list[int]], percent: int, rng: np.random.Generator) -> tuple[list[list[int]], list[int]]:
    """Fixed sizes: every task gives its first M% (data set order) and gets back an equal share of the pool.

    As the official sampler: task t gives ``len(blurry[t]) * M // 100`` samples, the pooled samples are
    shuffled and each task receives ``len(pool) // T``; the last ``len(pool) % T`` of the shuffled pool go
    to no task. Returns (per task blurry samples, the dropped samples).
    """
    num_tasks = len(blurry)
    given = [len(samples) * percent // 100 for samples in blurry]
    pool = [i for samples, count in zip(blurry, given) for i in samples[:count]]
    pool = [pool[j] for j in rng.permutation(len(pool))]
    share = len(pool) // num_tasks
    kept = [samples[count:] + pool[t * share : (t + 1) * share] for t, (samples, count) in enumerate(zip(blurry, given))]
    return kept, pool[num_tasks * share :]


def _move_random_shares(blurry: list[list[int]], percent: int, rng: np.random.Generator) -> list[list[int]]:
    """Random sizes: M% of all blurry samples, cut at random points, given and received task by task.

    As the official sampler: the total ``sum(len) * M // 100`` is cut into one random part per task; task t
    gives its first part-many samples (data set order; all it has when it has fewer) and, after the pool is
    shuffled, receives the next part-many (fewer when the pool runs short). No sample is dropped.
    """
    total = sum(len(samples) for samples in blurry) * percent // 100
    if total == 0:
        return [list(samples) for samples in blurry]
    cuts = _random_cuts(total, len(blurry), rng)
    parts = [cuts[t + 1] - cuts[t] for t in range(len(blurry))]
    pool = [i for samples, count in zip(blurry, parts) for i in samples[:count]]
    pool = [pool[j] for j in rng.permutation(len(pool))]
    kept, start = [], 0
    for samples, count in zip(blurry, parts):
        kept.append(samples[count:] + pool[start : start + count])
        start += count
    return kept


def si_blurry_plan(
    labels: Sequence[int] | np.ndarray,
    num_tasks: int,
    disjoint_percent: int = 50,
    blurry_percent: int = 10,
    random_sizes: bool = True,
    seed: int = 0,
) -> SiBlurryPlan:
    """The Si-Blurry split of :func:`si_blurry_split` together with its class roles and what it dropped."""
    targets = _as_labels(labels, "labels")
    classes = np.unique(targets)
    _check_num_tasks(num_tasks, classes.size, "at most the number of distinct labels")
    _check_percent(disjoint_percent, "disjoint_percent")
    _check_percent(blurry_percent, "blurry_percent")
    rng = np.random.default_rng(seed)
    disjoint_count, blurry_count = _role_counts(classes.size, num_tasks, disjoint_percent)
    order = classes[rng.permutation(classes.size)]
    disjoint_groups = _groups(order[:disjoint_count], num_tasks, random_sizes, rng)
    blurry_groups = _groups(order[disjoint_count : disjoint_count + blurry_count], num_tasks, random_sizes, rng)
    disjoint = _samples_of(targets, disjoint_groups)
    blurry = _samples_of(targets, blurry_groups)
    if random_sizes:
        blurry, moved_dropped = _move_random_shares(blurry, blurry_percent, rng), []
    else:
        blurry, moved_dropped = _move_equal_shares(blurry, blurry_percent, rng)
    segments = []
    for own, shared in zip(disjoint, blurry):
        task = own + shared
        segments.append([task[j] for j in rng.permutation(len(task))])
    dropped_classes = sorted(order[disjoint_count + blurry_count :].tolist())
    dropped = np.flatnonzero(np.isin(targets, dropped_classes)).tolist() + moved_dropped
    return SiBlurryPlan(segments, disjoint_groups, blurry_groups, dropped_classes, sorted(dropped))


def si_blurry_split(
    labels: Sequence[int] | np.ndarray,
    num_tasks: int,
    disjoint_percent: int = 50,
    blurry_percent: int = 10,
    random_sizes: bool = True,
    seed: int = 0,
) -> list[list[int]]:
    """Per hidden task, the indices into ``labels`` of its samples in stream order (Si-Blurry, official rules).

    The classes are the distinct values of ``labels``, drawn in a seeded random order. The first
    ``disjoint_percent``% of them (rounded down, then down to a multiple of ``num_tasks``) are disjoint: each
    belongs to one task, all its samples there. The rest, rounded down to a multiple of ``num_tasks``, are
    blurry: each has a home task, and ``blurry_percent``% of the blurry samples are moved and redistributed
    over the tasks. Each task's samples are then shuffled.

    * ``random_sizes=False`` (the official ``varing_NM`` off): every task gets the same number of disjoint and
      of blurry classes; each task gives the first M% of its blurry samples (in data set order, not drawn:
      on a class-sorted data set they come from the task's first blurry classes) to a shuffled pool and gets
      back ``len(pool) // num_tasks`` of it.
    * ``random_sizes=True`` (``--rnd_NM``, the authors' scripts): the disjoint classes, the blurry classes and
      the moved-sample total (M% of all blurry samples) are each cut at ``num_tasks - 1`` uniform random
      points, so tasks differ in size (a task may even be empty); task t gives and receives its part of
      the moved samples.

    Dropped, exactly as the official code drops them: the fewer than ``num_tasks`` classes left over by the
    rounding, with all their samples; with fixed sizes also the ``len(pool) % num_tasks`` moved samples the
    equal shares leave over. :func:`si_blurry_plan` lists them. (With 0 disjoint or 0 blurry classes the
    official fixed-size branch fails on an empty reshape; here those groups are empty.)
    """
    return si_blurry_plan(labels, num_tasks, disjoint_percent, blurry_percent, random_sizes, seed).segments


# -- sharp boundaries ----------------------------------------------------------------


def sharp_split(task_of_sample: Sequence[int] | np.ndarray, num_tasks: int, seed: int) -> list[list[int]]:
    """Per task 0..num_tasks-1, the indices of its samples, shuffled (the benchmark's own tasks in order).

    ``task_of_sample[i]`` is the task of sample i. A task with no samples is an empty segment.
    """
    tasks = _as_labels(task_of_sample, "task_of_sample")
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an int >= 1, got {num_tasks!r}")
    if tasks.min() < 0 or tasks.max() >= num_tasks:
        raise ValueError(f"task_of_sample must hold task ids in 0..{num_tasks - 1}, got {tasks.min()}..{tasks.max()}")
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(tasks == t)).tolist() for t in range(num_tasks)]


# -- batches -------------------------------------------------------------------------


def _segment_batches(segment: list[int], batch_size: int, min_batch: int) -> list[list[int]]:
    """One segment's batches: full ones, then the remainder as its own batch or folded into the last."""
    batches = [segment[start : start + batch_size] for start in range(0, len(segment), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < min_batch:
        batches[-2].extend(batches.pop())
    return batches


def stream_batches(segments: list[list[int]], batch_size: int, min_batch: int = 2) -> list[list[int]]:
    """The stream's batches in order, each within one segment (hidden task); every index exactly once.

    A segment is cut into ``batch_size`` batches; its last, incomplete batch stays a smaller batch of its own
    when it has at least ``min_batch`` samples, as the official sampler keeps each task's remainder (its
    data loader does not drop the last batch), and otherwise joins the segment's previous batch: a contrastive
    batch of one image-text pair has no negatives. A segment shorter than ``min_batch`` is a batch of its own
    (there is nothing to join). Batches never straddle a boundary, so a task change is a batch change.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(min_batch, bool) or not isinstance(min_batch, (int, np.integer)) or not 1 <= min_batch <= batch_size:
        raise ValueError(f"min_batch must be an int in 1..batch_size ({batch_size}), got {min_batch!r}")
    return [batch for segment in segments for batch in _segment_batches(list(segment), batch_size, min_batch)]


# -- measuring a split ---------------------------------------------------------------


def split_shares(segments: list[list[int]], labels: Sequence[int] | np.ndarray) -> dict[str, object]:
    """What a split did, measured from its segments: class roles, the blurry share, task sizes.

    * ``task_sizes``: samples per segment; ``samples``: their total; ``classes``: distinct classes present.
    * ``disjoint_classes``: classes present in exactly one segment; ``blurry_classes``: in more than one.
      Measured, not planned: a blurry class none of whose samples left its task counts as disjoint here.
    * ``blurry_samples``: the samples of blurry classes; ``blurry_outside_home``: those outside their class's
      home segment (the one holding most of the class, the earliest on a tie); ``blurry_outside_share``:
      their ratio (0.0 without blurry samples). For the fixed-size Si-Blurry split (M% moved, T tasks) about
      ``M * (T - 1) / T`` percent, as a moved sample lands back home 1 time in T; with random sizes a task
      gives its part of the moved samples from its first blurry samples, so blurry classes that gave none
      measure as disjoint and the share is over fewer samples.
    """
    targets = _as_labels(labels, "labels")
    counts: dict[int, list[int]] = {}
    for t, segment in enumerate(segments):
        for i in segment:
            counts.setdefault(int(targets[i]), [0] * len(segments))[t] += 1
    blurry = {c: per_task for c, per_task in counts.items() if sum(n > 0 for n in per_task) > 1}
    blurry_samples = sum(sum(per_task) for per_task in blurry.values())
    outside = sum(sum(per_task) - max(per_task) for per_task in blurry.values())
    return {
        "task_sizes": [len(segment) for segment in segments],
        "samples": sum(len(segment) for segment in segments),
        "classes": len(counts),
        "disjoint_classes": len(counts) - len(blurry),
        "blurry_classes": len(blurry),
        "blurry_samples": blurry_samples,
        "blurry_outside_home": outside,
        "blurry_outside_share": outside / blurry_samples if blurry_samples else 0.0,
    }
