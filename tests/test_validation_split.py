"""data.validation_fraction: a validation split carved from the training data, never from test data."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlcl.app.cli import main
from vlcl.config import ConfigError, load_config
from vlcl.data.benchmark import Benchmark, CaptionedImages, ClassificationSet, RetrievalSet, Task
from vlcl.data.benchmarks.embedded import build_embedded
from vlcl.data.benchmarks.feature_pairs import ModalityPairs
from vlcl.data.images import FileImage, ImageStore
from vlcl.data.preprocess import ImagePreprocessor
from vlcl.data.validation import split_indices, validation_split


def _tiny_embedded():
    return build_embedded(tasks=["sketch", "counting"], seed=0, train_scale=0.02, test_images=12, zeroshot_per_class=2)


def test_split_indices_are_disjoint_cover_everything_and_are_deterministic():
    train, val = split_indices(100, 0.2, seed=0, name="sketch")
    assert len(val) == 20 and len(train) == 80
    assert set(train).isdisjoint(val) and sorted([*train, *val]) == list(range(100))
    again = split_indices(100, 0.2, seed=0, name="sketch")
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    assert not np.array_equal(split_indices(100, 0.2, seed=1, name="sketch")[1], val)  # data.seed draws the split
    assert not np.array_equal(split_indices(100, 0.2, seed=0, name="counting")[1], val)  # each task its own draw
    assert [len(v) for _, v in (split_indices(3, 0.01, 0, "a"), split_indices(3, 0.99, 0, "a"))] == [1, 2]  # >= 1 each side


def test_embedded_split_carves_training_images_and_drops_every_test_set():
    original = _tiny_embedded()
    split = validation_split(original, 0.25, seed=0)
    assert split.heldout_retrieval == [] and split.zeroshot == []
    for before, after in zip(original.tasks, split.tasks):
        kept, carved = split_indices(len(before.train), 0.25, 0, before.name)
        assert isinstance(after.test, RetrievalSet) and after.test.name == before.test.name
        # the evaluation set is the carved training images with all their training captions, nothing of the test split
        assert np.array_equal(after.test.images, before.train.images[carved])
        assert after.test.captions == [c for i in carved for c in before.train.captions[i]]
        assert after.test.text_to_image.tolist() == [j for j, i in enumerate(carved) for _ in before.train.captions[i]]
        assert np.array_equal(after.train.images, before.train.images[kept])
        assert after.train.captions == [before.train.captions[i] for i in kept]
        assert len(after.train) + len(after.test.images) == len(before.train)
    report = split.data_report["validation"]
    assert report["fraction"] == 0.25 and report["seed"] == 0
    assert report["tasks"]["sketch"] == {"train": len(split.tasks[0].train), "validation": len(split.tasks[0].test.images)}
    assert set(report["dropped_test_sets"]) == {"base", "grainy", "zs_shape", "zs_colour", "zs_shape_colour"}
    again = validation_split(_tiny_embedded(), 0.25, seed=0)
    assert all(np.array_equal(a.test.images, b.test.images) for a, b in zip(again.tasks, split.tasks))


def _image_files(tmp_path, count):
    paths = []
    for i in range(count):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (8, 8), (i * 7 % 256, 0, 0)).save(path)
        paths.append(path)
    return paths


def test_lazy_store_classification_task_keeps_labels_prompts_and_decodes_nothing(tmp_path, monkeypatch):
    store = ImageStore([FileImage(p) for p in _image_files(tmp_path, 20)], ImagePreprocessor(8))
    labels = torch.tensor([i % 3 for i in range(20)], dtype=torch.long)
    classnames, templates = ["cat", "dog", "eel"], ["a photo of a {}.", "a {}."]
    prompts = [[t.format(c) for t in templates] for c in classnames]
    train = CaptionedImages("pets", store, [[prompts[int(y)][0]] for y in labels], labels, prompts)
    test_store = ImageStore([FileImage(tmp_path / "test.png")], ImagePreprocessor(8))
    test = ClassificationSet("pets", test_store, torch.tensor([0]), classnames, templates)
    heldout = ClassificationSet("zs_other", test_store, torch.tensor([0]), ["x"], ["{}"])
    benchmark = Benchmark("cls", [Task("pets", train, test)], zeroshot=[heldout])
    decoded = []
    monkeypatch.setattr(ImageStore, "decode", lambda self, i: decoded.append(i))
    split = validation_split(benchmark, 0.3, seed=4)
    kept, carved = split_indices(20, 0.3, 4, "pets")
    task = split.tasks[0]
    assert isinstance(task.test, ClassificationSet) and isinstance(task.test.images, ImageStore)
    assert task.test.images.sources == [store.sources[i] for i in carved]  # the training images, still lazy
    assert task.train.images.sources == [store.sources[i] for i in kept]
    assert not any(s.path.name == "test.png" for s in task.test.images.sources + task.train.images.sources)
    assert task.test.labels.tolist() == labels[carved].tolist() and task.train.labels.tolist() == labels[kept].tolist()
    assert task.test.classnames == classnames and task.test.templates == templates
    assert task.train.class_prompts == prompts
    assert task.train.captions == [[prompts[int(labels[i])][0]] for i in kept]  # captions follow their labels
    assert split.zeroshot == [task.test]  # the evaluator scores the validation set; the held-out set is gone
    assert decoded == []


def test_modality_pairs_are_split_alike():
    arrays = {"text": torch.arange(40.0).reshape(10, 4), "image": -torch.arange(40.0).reshape(10, 4)}
    task = Task("ti", ModalityPairs("ti", ("text", "image"), arrays), ModalityPairs("ti", ("text", "image"), {k: v[:2] for k, v in arrays.items()}))
    split = validation_split(Benchmark("features", [task], data_report={"widths": {"text": 4, "image": 4}}), 0.2, seed=0)
    kept, carved = split_indices(10, 0.2, 0, "ti")
    assert torch.equal(split.tasks[0].test.arrays["image"], arrays["image"][torch.as_tensor(carved)])
    assert torch.equal(split.tasks[0].train.arrays["text"], arrays["text"][torch.as_tensor(kept)])
    assert split.data_report["widths"] == {"text": 4, "image": 4}


def test_validation_fraction_is_checked():
    assert load_config(None, ["data.validation_fraction=0.1"]).data.validation_fraction == 0.1
    assert load_config(None).data.validation_fraction is None
    for bad in ("0", "1", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match="data.validation_fraction"):
            load_config(None, [f"data.validation_fraction={bad}"])


def test_a_run_on_validation_data_says_so_in_results(tmp_path, world_clip_dir):
    from test_run import quick_args

    run_dir = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir, "train.max_steps_per_task=2", "data.validation_fraction=0.2"), "-o", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == ["sketch", "counting"]
    assert results["heldout_retrieval"] == [] and results["zeroshot_sets"] == []
    validation = results["data"]["validation"]
    assert validation["fraction"] == 0.2 and "no test data" in validation["evaluated_on"]
    assert set(validation["tasks"]) == {"sketch", "counting"}
    assert results["config"]["data"]["validation_fraction"] == 0.2
    assert results["matrices"]["mean_R@1"] and results["summary"]["complete"]


def test_a_classification_folder_task_is_validated_on_its_training_images(tmp_path):
    from conftest import make_tiny_clip
    from realdata import write_image_folder

    classes = ["circle", "square", "triangle"]
    write_image_folder(tmp_path / "data" / "shapes" / "train", [0, 1, 2] * 10, classes)
    write_image_folder(tmp_path / "data" / "shapes" / "test", [0, 1, 2] * 2, classes, offset=50)
    clip = make_tiny_clip(tmp_path / "clip", vocabulary="world")
    argv = ["run", "data.benchmark=folders", "--data-root", str(tmp_path / "data"), f"model.path={clip}", "train.batch_size=4",
            "train.epochs=1", "threads=1", "data.validation_fraction=0.2", "--allow-unknown-words", "-o", str(tmp_path / "run")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["task_metric"] == "top1" and results["tasks"] == ["shapes"] and results["zeroshot_sets"] == []
    assert results["data"]["validation"]["tasks"] == {"shapes": {"train": 24, "validation": 6}}
    assert len(results["matrices"]["top1"]) == 1
