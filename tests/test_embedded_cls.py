"""The embedded classification benchmark (``embedded_cls``): class-space tasks of the procedural world."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlcl.app.cli import main
from vlcl.data.benchmark import CaptionedImages, ClassificationSet
from vlcl.data.benchmarks import world
from vlcl.data.benchmarks.embedded import build_embedded
from vlcl.data.benchmarks.embedded_cls import AVAILABLE_TASKS, DEFAULT_SEQUENCE, build_embedded_cls
from vlcl.data.registry import UnknownBenchmarkError, benchmark_builder, list_benchmarks
from vlcl.engine.loop import check_tokenizer_coverage
from vlcl.models import load_clip
from vlcl.models.coverage import unknown_words, words_of

ROOT = Path(__file__).resolve().parents[1]


def small(**kwargs):
    return build_embedded_cls(train_scale=0.01, test_images=20, zeroshot_per_class=2, **kwargs)


@pytest.fixture(scope="module")
def embedded_tokenizer():
    return load_clip("embedded").tokenizer


def test_registered_and_found_by_name():
    assert "embedded_cls" in list_benchmarks()
    assert benchmark_builder("embedded_cls") is build_embedded_cls


def test_default_sequence_is_classification_tasks():
    bench = small()
    assert bench.name == "embedded_cls" and bench.setting == "classification"
    assert bench.task_names == list(DEFAULT_SEQUENCE) and len(bench.task_names) >= 5
    for task in bench.tasks:
        spec = world.CLASS_TASKS[task.name]
        classes = len(spec.classes)
        train, test = task.train, task.test
        assert isinstance(train, CaptionedImages) and train.classification
        assert isinstance(test, ClassificationSet)
        assert len(train) == max(classes, round(AVAILABLE_TASKS[task.name].train_images * 0.01))
        assert len(test.images) == 20 and test.images.shape[1:] == (32, 32, 3) and test.images.dtype == np.uint8
        for labels in (train.labels, test.labels):
            assert labels.dtype == torch.long and 0 <= int(labels.min()) and int(labels.max()) < classes
            assert torch.bincount(labels, minlength=classes).min() > 0, "no empty class"
        assert test.classnames == list(spec.classes) and test.templates == list(spec.templates)
        assert train.class_prompts == test.prompts()
        assert train.captions == [[spec.templates[0].format(spec.classes[label])] for label in train.labels.tolist()]
        assert all(t.count("{}") == 1 for t in spec.templates) and len(set(spec.classes)) == classes
    assert [s.name for s in bench.heldout_retrieval] == ["base", "grainy"]
    assert [z.name for z in bench.heldout_zeroshot] == ["zs_shape", "zs_colour", "zs_shape_colour"]
    assert [z.name for z in bench.zeroshot] == ["zs_shape", "zs_colour", "zs_shape_colour", *bench.task_names]


def test_heldout_sets_are_the_embedded_benchmarks():
    cls, caption = small(seed=2), build_embedded(seed=2, train_scale=0.001, test_images=20, zeroshot_per_class=2)
    for a, b in zip([*cls.heldout_retrieval, *cls.heldout_zeroshot], [*caption.heldout_retrieval, *caption.zeroshot]):
        assert a.name == b.name and np.array_equal(a.images, b.images)


def test_every_word_is_known_to_the_embedded_tokenizer(embedded_tokenizer):
    for spec in world.CLASS_TASKS.values():
        texts = [*spec.classes, *spec.templates, *(t.format(c) for t in spec.templates for c in spec.classes)]
        assert not unknown_words(embedded_tokenizer, words_of(texts)), spec.description
        assert set(words_of(texts)) <= set(world.world_vocabulary())
    bench = small(tasks=list(AVAILABLE_TASKS))
    check_tokenizer_coverage(bench, embedded_tokenizer, 0.0)  # not one unknown word in any set
    assert set(bench.data_report["unknown_words"].values()) == {0.0}


def test_deterministic_for_a_seed():
    a, b, c = small(seed=3), small(seed=3), small(seed=4)
    for x, y in zip(a.tasks, b.tasks):
        assert np.array_equal(x.train.images, y.train.images) and torch.equal(x.train.labels, y.train.labels)
        assert np.array_equal(x.test.images, y.test.images) and torch.equal(x.test.labels, y.test.labels)
    assert not np.array_equal(a.tasks[0].train.images, c.tasks[0].train.images)
    assert not np.array_equal(a.tasks[0].train.images[: len(a.tasks[0].test.images)], a.tasks[0].test.images), "train and test draw apart"


def test_task_selection_and_errors():
    bench = small(tasks=["spatial", "new_shapes"])
    assert bench.task_names == ["spatial", "new_shapes"] and bench.zeroshot[-2:] == [t.test for t in bench.tasks]
    assert np.array_equal(bench.tasks[1].train.images, small().tasks[0].train.images), "a task's data does not depend on its place"
    assert "negative" in AVAILABLE_TASKS and "negative" not in DEFAULT_SEQUENCE  # available, not in the default sequence
    with pytest.raises(UnknownBenchmarkError, match="unknown task 'countng'.*counting"):
        small(tasks=["countng"])
    with pytest.raises(UnknownBenchmarkError, match="twice"):
        small(tasks=["texture", "texture"])
    with pytest.raises(ValueError, match="leave one empty"):
        world.generate_class_split("sketch", 6, seed=0, split="train")
    with pytest.raises(ValueError, match="unknown classification task"):
        world.generate_class_split("sketches", 10, seed=0, split="train")


def test_spatial_classes_put_red_and_blue_where_the_relation_says():
    split = world.generate_class_split("spatial", 8, seed=0, split="test", size=32)
    red = (split.images[..., 0].astype(int) - split.images[..., 2] > 100)
    blue = (split.images[..., 2].astype(int) - split.images[..., 0] > 100)
    for image_red, image_blue, label in zip(red, blue, split.labels):
        (ry, rx), (by, bx) = (np.argwhere(m).mean(0) for m in (image_red, image_blue))
        relation = split.classnames[label]
        expected = {"to the left of": rx < bx, "to the right of": rx > bx, "above": ry < by, "below": ry > by}[relation]
        assert expected, relation


def _properties():
    spec = importlib.util.spec_from_file_location("embedded_cls_properties", ROOT / "benchmarks" / "embedded_cls_properties.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_writes_a_top1_matrix(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [
        "run", "data.benchmark=embedded_cls", "data.tasks=[new_shapes,counting]", "data.train_scale=0.02", "data.test_images=12",
        "data.zeroshot_per_class=2", "train.epochs=1", "train.batch_size=8", "threads=1", "-o", str(run_dir),
    ]
    assert main(args) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["benchmark"] == "embedded_cls" and results["task_metric"] == "top1"
    assert results["tasks"] == ["new_shapes", "counting"] and results["zeroshot_sets"] == ["zs_shape", "zs_colour", "zs_shape_colour"]
    matrix = results["matrices"]["top1"]
    assert len(matrix) == 2 and all(len(row) == 2 and all(0 <= v <= 100 for v in row) for row in matrix)
    assert len(results["pretrained"]["top1_row"]["top1"]) == 2
    assert set(results["summary"]["classification"]["top1"]) >= {"last", "avg", "transfer"}
    assert results["data"]["unknown_words"]["new_shapes"] == 0.0
    capsys.readouterr()
    assert _properties().main(run_dir) in (0, 1)  # the property check reads such a run (a tiny one need not pass)
    printed = capsys.readouterr().out.splitlines()
    assert printed and all(line.startswith(("PASS", "FAIL")) for line in printed)
