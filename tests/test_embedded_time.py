"""The embedded time-continual benchmark (``embedded_time``): the procedural world drifting over six time steps."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from vlcl.app.cli import main
from vlcl.data.benchmarks import world
from vlcl.data.benchmarks.embedded_time import DEFAULT_SEQUENCE, TRAIN_IMAGES, build_embedded_time, step_test_set, step_train_set
from vlcl.data.benchmarks.world.time import TIME_STEPS, allocate, time_step
from vlcl.data.registry import UnknownBenchmarkError, benchmark_builder, list_benchmarks
from vlcl.models.coverage import words_of


def small(**kwargs):
    return build_embedded_time(train_scale=0.01, test_images=20, zeroshot_per_class=2, **kwargs)


def test_registered_with_six_time_steps_in_order():
    assert "embedded_time" in list_benchmarks() and benchmark_builder("embedded_time") is build_embedded_time
    bench = small()
    assert bench.task_names == list(DEFAULT_SEQUENCE) == ["t2014", "t2015", "t2016", "t2017", "t2018", "t2019"]
    assert bench.task_names == sorted(bench.task_names)  # names sort in time order
    assert [s.name for s in bench.heldout_retrieval] == ["base", "grainy"]  # as in embedded
    assert [z.name for z in bench.zeroshot] == ["zs_shape", "zs_colour", "zs_shape_colour"]
    for task in bench.tasks:
        assert len(task.train) == round(TRAIN_IMAGES * 0.01) and len(task.train.captions[0]) == 3
        assert len(task.test.images) == 20 and task.test.text_to_image.tolist() == [i for i in range(20) for _ in range(5)]


def test_train_scale_and_test_images_honoured():
    bench = build_embedded_time(tasks=["t2019"], train_scale=0.005, test_images=7, zeroshot_per_class=1)
    assert len(bench.tasks[0].train) == 15 and len(bench.tasks[0].test.images) == 7
    assert len(build_embedded_time(tasks=["t2014"], train_scale=0.0001, test_images=3, zeroshot_per_class=1).tasks[0].train) == 1


def test_deterministic_for_a_seed():
    a, b, c = small(seed=3, tasks=["t2016"]), small(seed=3, tasks=["t2016"]), small(seed=4, tasks=["t2016"])
    assert np.array_equal(a.tasks[0].train.images, b.tasks[0].train.images)
    assert a.tasks[0].train.captions == b.tasks[0].train.captions and a.tasks[0].test.captions == b.tasks[0].test.captions
    assert not np.array_equal(a.tasks[0].train.images, c.tasks[0].train.images)


def test_task_selection_and_errors():
    assert small(tasks=["t2019", "t2014"]).task_names == ["t2019", "t2014"]
    with pytest.raises(UnknownBenchmarkError, match="unknown task 't2020'.*t2014"):
        small(tasks=["t2020"])
    with pytest.raises(ValueError, match="unknown time step"):
        time_step("2014")


def test_allocation_splits_by_weight():
    assert allocate(10, (0.7, 0.3)) == [7, 3]
    assert allocate(300, (0.4, 0.3, 0.3)) == [120, 90, 90]
    assert sum(allocate(7, (0.4, 0.3, 0.3))) == 7 and min(allocate(3, (0.4, 0.3, 0.3))) == 1


def _words(step: str, n: int = 200) -> set[str]:
    data = step_train_set(step, n, seed=0)
    return set(words_of([c for caps in data.captions for c in caps] + step_test_set(step, 60, seed=0).captions))


def test_vocabulary_drifts_both_ways():
    first, last = _words("t2014"), _words("t2019")
    assert {"hexagon", "arrow", "heart", "cross", "pixel", "striped"} <= last - first  # new words
    assert {"diamond", "triangle", "square", "star", "white", "photo", "drawing"} <= first - last  # faded words


def test_caption_habits_change():
    first = step_test_set("t2014", 60, seed=0).captions
    last = step_test_set("t2019", 60, seed=0).captions
    assert not any(" in a picture" in c or " in the image" in c for c in first)
    assert sum(c.startswith(("a ", "an ")) and " in " in c.split(" of ")[-1] for c in last) > len(last) / 2  # scene phrase first
    short = lambda step: np.mean([len(c.split()) for caps in step_train_set(step, 300, seed=0).captions for c in caps])
    assert short("t2019") > short("t2014") + 2  # training captions get longer


def test_scene_mixture_shifts():
    layouts = {s.name: Counter(world.DOMAINS[d].layout for d in s.domains) for s in TIME_STEPS}
    assert set(layouts["t2014"]) == {"positioned"} and "spatial" in layouts["t2019"]
    styles = lambda s: {k for k, _, spec in time_step(s).mixture}
    assert styles("t2014") == {"photo"} and styles("t2019") == {"pixel", "spatial", "texture"}
    for step in TIME_STEPS:
        assert abs(sum(step.weights) - 1.0) < 1e-9
    assert world.DOMAINS["t2019/pixel"].pixel_grid == 12 and world.DOMAINS["t2016/sketch"].outline


def test_the_shipped_tokenizer_reads_every_word():
    from vlcl.engine.loop import check_tokenizer_coverage
    from vlcl.models import load_clip

    bench = build_embedded_time(train_scale=0.03, test_images=30, zeroshot_per_class=1)
    check_tokenizer_coverage(bench, load_clip("embedded").tokenizer, 0.0)  # not one unknown word
    assert set(bench.data_report["unknown_words"].values()) == {0.0}
    texts = [c for t in bench.tasks for caps in t.train.captions for c in caps] + [c for t in bench.tasks for c in t.test.captions]
    assert set(words_of(texts)) <= set(world.world_vocabulary())


def test_world_vocabulary_is_unchanged_by_the_time_domains():
    assert len(world.world_vocabulary()) == 83  # the shipped tokenizer's words: the time steps add none


@pytest.mark.slow
def test_tiny_run_writes_a_time_matrix(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [
        "run", "data.benchmark=embedded_time", "data.tasks=[t2014,t2019]", "data.train_scale=0.01", "data.test_images=12",
        "data.zeroshot_per_class=2", "train.epochs=1", "train.batch_size=8", "threads=1", "-o", str(run_dir),
    ]
    assert main(args) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["benchmark"] == "embedded_time" and results["tasks"] == ["t2014", "t2019"]
    matrix = results["matrices"]["mean_R@1"]
    assert len(matrix) == 2 and all(len(row) == 2 and all(0 <= v <= 100 for v in row) for row in matrix)
