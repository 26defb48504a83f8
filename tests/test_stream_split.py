"""The order of a stream: the Si-Blurry split (both size branches), the sharp split, batches, the measured shares."""

from __future__ import annotations

import numpy as np
import pytest

from vlcl.data.stream import si_blurry_plan, si_blurry_split, sharp_split, split_shares, stream_batches

# 20 classes x 30 samples, interleaved (sample i has class i % 20); 5 tasks, N = 50, M = 10.
LABELS = np.tile(np.arange(20), 30)
TASKS, N, M = 5, 50, 10


def outside_home(plan, labels) -> list[int]:
    """The samples of each task's planned blurry classes that sit in another segment."""
    where = segment_of(plan.segments)
    return [i for t, cs in enumerate(plan.blurry_classes) for i in np.flatnonzero(np.isin(labels, cs)) if where[i] != t]


def flat(segments: list[list[int]]) -> list[int]:
    return [i for segment in segments for i in segment]


def segment_of(segments: list[list[int]]) -> dict[int, int]:
    return {i: t for t, segment in enumerate(segments) for i in segment}


@pytest.mark.parametrize("random_sizes", [False, True])
def test_every_sample_once_and_disjoint_classes_in_one_task(random_sizes):
    plan = si_blurry_plan(LABELS, TASKS, N, M, random_sizes=random_sizes, seed=3)
    assert sorted(flat(plan.segments)) == list(range(len(LABELS)))  # 20 classes: nothing rounded away
    assert plan.dropped_classes == [] and plan.dropped_samples == []
    # N% of 20 = 10 disjoint classes (a multiple of 5), the other 10 blurry
    assert sum(map(len, plan.disjoint_classes)) == 10 and sum(map(len, plan.blurry_classes)) == 10
    where = segment_of(plan.segments)
    for t, classes in enumerate(plan.disjoint_classes):
        for c in classes:
            assert {where[i] for i in np.flatnonzero(LABELS == c)} == {t}


def test_fixed_sizes_equal_groups_and_exact_moves():
    plan = si_blurry_plan(LABELS, TASKS, N, M, random_sizes=False, seed=0)
    assert [len(g) for g in plan.disjoint_classes] == [2] * 5 and [len(g) for g in plan.blurry_classes] == [2] * 5
    # each task: 60 disjoint + 60 blurry samples; gives 60 * 10 // 100 = 6, gets back 30 // 5 = 6
    assert [len(s) for s in plan.segments] == [120] * 5
    where = segment_of(plan.segments)
    movable = set()  # the first 6 of each task's blurry samples, in data set order (the official rule)
    for t, classes in enumerate(plan.blurry_classes):
        own = np.flatnonzero(np.isin(LABELS, classes)).tolist()
        movable |= set(own[:6])
        assert all(where[i] == t for i in own[6:])
    outside = outside_home(plan, LABELS)
    assert set(outside) <= movable and 0 < len(outside) <= 30  # M% of the 300 blurry samples moved at most


def test_rounding_drops_leftover_classes_with_their_samples():
    # 23 classes x 10, 5 tasks: disjoint 23 * 50 // 100 = 11 -> 10; blurry 13 -> 10; 3 classes dropped
    labels = np.repeat(np.arange(23), 10)
    for random_sizes in (False, True):
        plan = si_blurry_plan(labels, TASKS, N, 30, random_sizes=random_sizes, seed=1)
        assert len(plan.dropped_classes) == 3
        # fixed sizes: each task gives 20 * 30 // 100 = 6, pool 30, 30 % 5 = 0 left over: only the 3 classes
        assert plan.dropped_samples == np.flatnonzero(np.isin(labels, plan.dropped_classes)).tolist()
        assert len(plan.dropped_samples) == 30
        assert sorted(flat(plan.segments) + plan.dropped_samples) == list(range(len(labels)))


def test_fixed_sizes_drop_an_uneven_pool_remainder():
    # 3 tasks, 3 blurry classes of 10 (N = 0), M = 10: each gives 1, pool 3, equal shares 1 -> nothing left;
    # with task sizes 10, 10, 20 (class 2 twice as big): gives 1, 1, 2 = pool 4, shares 4 // 3 = 1, 1 dropped
    labels = np.array([0] * 10 + [1] * 10 + [2] * 20)
    plan = si_blurry_plan(labels, 3, 0, 10, random_sizes=False, seed=0)
    assert len(plan.dropped_samples) == 1 and plan.dropped_classes == []
    assert sorted(flat(plan.segments) + plan.dropped_samples) == list(range(40))


def test_random_sizes_move_m_percent_and_vary_task_sizes():
    plan = si_blurry_plan(LABELS, TASKS, N, M, random_sizes=True, seed=0)
    assert len({len(s) for s in plan.segments}) > 1  # random cut points: tasks differ
    assert len(outside_home(plan, LABELS)) <= 300 * M // 100  # 30 of the 300 blurry samples are moved, some land back home


def test_documented_shares_on_a_shuffled_data_set():
    labels = np.random.default_rng(7).permutation(np.repeat(np.arange(100), 40))  # 100 classes, 4000 samples
    fixed = split_shares(si_blurry_split(labels, 10, N, M, random_sizes=False, seed=0), labels)
    assert fixed["disjoint_classes"] == 50 and fixed["blurry_classes"] == 50  # every blurry class lost some
    assert fixed["samples"] == 4000 and fixed["blurry_samples"] == 2000
    # each task gives 200 * 10 // 100 = 20 (M%), 1 in 10 lands back home: about 9% outside
    assert 0.07 <= fixed["blurry_outside_share"] <= 0.10
    # random sizes: 200 of the 2000 blurry samples move, taken from each task's first blurry samples, so some
    # blurry classes keep all their samples home and measure as disjoint
    rnd = split_shares(si_blurry_split(labels, 10, N, M, random_sizes=True, seed=0), labels)
    assert rnd["samples"] == 4000 and rnd["disjoint_classes"] >= 50
    assert 0 < rnd["blurry_outside_home"] <= 200


def test_same_seed_same_split_other_seed_other_split():
    for random_sizes in (False, True):
        first = si_blurry_split(LABELS, TASKS, N, M, random_sizes=random_sizes, seed=5)
        assert si_blurry_split(LABELS, TASKS, N, M, random_sizes=random_sizes, seed=5) == first
        assert si_blurry_split(LABELS, TASKS, N, M, random_sizes=random_sizes, seed=6) != first


def test_extreme_percents():
    all_disjoint = si_blurry_plan(LABELS, TASKS, 100, M, random_sizes=False, seed=0)
    assert split_shares(all_disjoint.segments, LABELS)["blurry_classes"] == 0
    all_blurry = si_blurry_plan(LABELS, TASKS, 0, 0, random_sizes=True, seed=0)
    assert all_blurry.disjoint_classes == [[]] * 5
    assert split_shares(all_blurry.segments, LABELS)["blurry_classes"] == 0  # M = 0: nothing moves


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"labels": []}, "labels"),
        ({"labels": [0.5, 1.5]}, "labels"),
        ({"num_tasks": 0}, "num_tasks"),
        ({"num_tasks": 21}, "num_tasks"),
        ({"disjoint_percent": 101}, "disjoint_percent"),
        ({"blurry_percent": -1}, "blurry_percent"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    call = {"labels": LABELS, "num_tasks": TASKS, **kwargs}
    with pytest.raises(ValueError, match=argument) as caught:
        si_blurry_split(**call)
    assert "\n" not in str(caught.value)


def test_sharp_split_keeps_tasks_in_order():
    task_of_sample = [2, 0, 1, 0, 2, 1, 0, 2]
    segments = sharp_split(task_of_sample, 3, seed=0)
    assert [sorted(s) for s in segments] == [[1, 3, 6], [2, 5], [0, 4, 7]]
    assert sharp_split(task_of_sample, 3, seed=0) == segments
    assert sharp_split(task_of_sample, 4, seed=0)[3] == []  # a task without samples: an empty segment
    with pytest.raises(ValueError, match="task_of_sample"):
        sharp_split(task_of_sample, 2, seed=0)
    with pytest.raises(ValueError, match="num_tasks"):
        sharp_split(task_of_sample, 0, seed=0)


def test_sharp_split_shuffles_within_a_task():
    segments = sharp_split([0] * 50 + [1] * 50, 2, seed=0)
    assert segments[0] != list(range(50)) and sorted(segments[0]) == list(range(50))
    assert sharp_split([0] * 50 + [1] * 50, 2, seed=1) != segments


def test_stream_batches_remainder_rule():
    segments = [list(range(0, 7)), [7], list(range(8, 13)), list(range(13, 19))]
    batches = stream_batches(segments, batch_size=3, min_batch=2)
    # 7 = 3 + 4 (a remainder of 1 joins the previous batch); 1 alone (no previous batch);
    # 5 = 3 + 2 (a remainder of 2 is its own batch); 6 = 3 + 3
    assert batches == [[0, 1, 2], [3, 4, 5, 6], [7], [8, 9, 10], [11, 12], [13, 14, 15], [16, 17, 18]]
    assert stream_batches(segments, batch_size=3, min_batch=1)[1] == [3, 4, 5]
    assert stream_batches([[], [1, 2]], batch_size=4) == [[1, 2]]


def test_stream_batches_never_straddle_and_use_every_index_once():
    segments = si_blurry_split(LABELS, TASKS, N, M, random_sizes=True, seed=2)
    batches = stream_batches(segments, batch_size=16)
    assert flat(batches) == flat(segments)  # stream order kept, each index once
    where = segment_of(segments)
    assert all(len({where[i] for i in batch}) == 1 for batch in batches)
    assert all(2 <= len(batch) < 32 for batch in batches)


def test_stream_batches_bad_sizes():
    with pytest.raises(ValueError, match="batch_size"):
        stream_batches([[0, 1]], batch_size=0)
    with pytest.raises(ValueError, match="min_batch"):
        stream_batches([[0, 1]], batch_size=4, min_batch=5)


def test_split_shares_on_a_hand_made_split():
    labels = [0, 0, 0, 1, 1, 1, 2, 2]
    # class 0 only in task 0; class 1 home task 1 with one sample in task 0; class 2 split 1:1 (home = task 0)
    shares = split_shares([[0, 1, 2, 3, 6], [4, 5, 7]], labels)
    assert shares == {
        "task_sizes": [5, 3],
        "samples": 8,
        "classes": 3,
        "disjoint_classes": 1,
        "blurry_classes": 2,
        "blurry_samples": 5,
        "blurry_outside_home": 2,
        "blurry_outside_share": 0.4,
    }
