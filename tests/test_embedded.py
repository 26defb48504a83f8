import numpy as np
import pytest

from vlcl.data.benchmarks.embedded import AVAILABLE_TASKS, DEFAULT_SEQUENCE, build_embedded
from vlcl.data.registry import UnknownBenchmarkError


def small(**kwargs):
    return build_embedded(train_scale=0.01, test_images=20, zeroshot_per_class=2, **kwargs)


def test_default_sequence_and_heldout_sets():
    bench = small()
    assert bench.task_names == list(DEFAULT_SEQUENCE) and len(bench.task_names) >= 6
    assert [s.name for s in bench.heldout_retrieval] == ["base", "grainy"]
    assert [z.name for z in bench.zeroshot] == ["zs_shape", "zs_colour", "zs_shape_colour"]
    for task in bench.tasks:
        assert len(task.test.images) == 20 and len(task.test.captions) == 100  # 5 captions per test image
        assert task.test.text_to_image.tolist() == [i for i in range(20) for _ in range(5)]
        assert len(task.train) == max(1, round(AVAILABLE_TASKS[task.name].train_images * 0.01))
    heldout = {s.name for s in bench.heldout_retrieval}
    assert not heldout & set(bench.task_names), "held-out domains are never trained on"
    for z in bench.zeroshot:
        assert len(z.classnames) >= 5 and all("{}" in t for t in z.templates)
        assert sorted(set(z.labels.tolist())) == list(range(len(z.classnames)))


def test_deterministic_for_a_seed():
    a, b, c = small(seed=3), small(seed=3), small(seed=4)
    assert np.array_equal(a.tasks[0].train.images, b.tasks[0].train.images)
    assert a.tasks[0].test.captions == b.tasks[0].test.captions
    assert not np.array_equal(a.tasks[0].train.images, c.tasks[0].train.images)


def test_task_selection_and_errors():
    assert small(tasks=["spatial", "sketch"]).task_names == ["spatial", "sketch"]
    assert "negative" in AVAILABLE_TASKS  # available, not in the default sequence
    assert "base" in AVAILABLE_TASKS and "base" not in DEFAULT_SEQUENCE
    with pytest.raises(UnknownBenchmarkError, match="unknown task 'skecth'.*sketch"):
        small(tasks=["skecth"])
    with pytest.raises(UnknownBenchmarkError, match="twice"):
        small(tasks=["sketch", "sketch"])


def test_the_base_task_is_new_pairs_of_the_pretraining_world_tested_on_the_heldout_base_set():
    from vlcl.data.benchmarks.embedded import pretraining_set

    bench = small(tasks=["base"])
    task, heldout_base = bench.tasks[0], bench.heldout_retrieval[0]
    assert heldout_base.name == "base" and task.test.captions == heldout_base.captions
    pretraining = pretraining_set(len(task.train), seed=0)
    assert not any(np.array_equal(a, b) for a, b in zip(task.train.images, pretraining.images))
