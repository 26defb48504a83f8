"""Classification tasks train with cross-entropy over their class prompts (ZSCL's MTIL recipe), every method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_data
from vlcl.config import TrainConfig, load_config
from vlcl.data.benchmark import CaptionedImages
from vlcl.settings.captions import concatenate
from vlcl.engine.train import planned_steps
from vlcl.losses import class_prompt_loss, clip_loss
from vlcl.methods import RunContext, Stage, create_method, list_methods, method_class
from vlcl.models import load_clip
from vlcl.settings import make_batch
from vlcl.models.encode import class_embeddings, image_embeddings, text_embeddings

STAGE = Stage(0, "t0", (0,))
CLASSES = ["red circle", "blue square", "green triangle"]
TEMPLATES = ["a photo of a {}", "a sketch of a {}"]


def class_data(n=12, size=16, seed=0, templates=TEMPLATES, classes=CLASSES, name="cls") -> CaptionedImages:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    labels = torch.arange(n) % len(classes)
    prompts = [[t.format(c) for t in templates] for c in classes]
    captions = [[prompts[int(y)][0]] for y in labels]
    return CaptionedImages(name, images, captions, labels, prompts)


def setup(name, tiny_clip_dir, smoothing=0.2, **options):
    bundle = load_clip(str(tiny_clip_dir))
    method = create_method(name, options)
    method.setup(bundle.model, RunContext(["t0"], seed=0, bundle=bundle, label_smoothing=smoothing))
    return method, bundle


def test_class_prompt_loss_is_smoothed_cross_entropy_over_class_logits():
    torch.manual_seed(0)
    images, classes, labels = torch.randn(6, 8), torch.randn(3, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    logits = 20.0 * F.normalize(images, dim=-1) @ F.normalize(classes, dim=-1).t()
    expected = F.cross_entropy(logits, labels, label_smoothing=0.2)
    assert torch.allclose(class_prompt_loss(images, classes, labels, 20.0, label_smoothing=0.2), expected)


def test_images_of_one_class_are_not_each_others_negatives():
    """Two identical images of one class: the contrastive loss cannot go below ln 2, cross-entropy goes to ~0."""
    image = F.normalize(torch.randn(1, 8), dim=-1)
    images = torch.cat([image, image])
    classes = torch.cat([image, -image])
    labels = torch.tensor([0, 0])
    assert float(class_prompt_loss(images, classes, labels, 100.0)) < 1e-6
    assert float(clip_loss(images, classes[[0, 0]], 100.0)) == pytest.approx(np.log(2), abs=1e-4)


def test_classification_batch_holds_labels_and_every_class_prompt(tiny_clip_dir):
    bundle = load_clip(str(tiny_clip_dir))
    data = class_data()
    batch = make_batch(bundle, data, torch.tensor([4, 5, 6]), torch.zeros(3, dtype=torch.long))
    assert batch.labels.tolist() == [1, 2, 0]
    assert batch.class_templates == 2 and len(batch.input_ids) == 3 * 2
    first = make_batch(bundle, data.with_prompts("first"), torch.tensor([4]), torch.zeros(1, dtype=torch.long))
    assert first.class_templates == 1 and len(first.input_ids) == 3


def test_base_loss_on_a_classification_batch_is_the_class_prompt_cross_entropy(tiny_clip_dir):
    method, bundle = setup("finetune", tiny_clip_dir)
    data = class_data()
    batch = make_batch(bundle, data, torch.arange(6), torch.zeros(6, dtype=torch.long))
    output = method.training_loss(batch, 0)
    assert set(output.logs) == {"ce"}
    model = method.model
    prompts = text_embeddings(model, batch.input_ids, batch.attention_mask)
    classes = class_embeddings(prompts, 2)
    expected = class_prompt_loss(image_embeddings(model, batch.pixel_values), classes, batch.labels, method.logit_scale(), label_smoothing=0.2)
    assert torch.allclose(output.loss, expected)
    # the class embedding averages the normalised template embeddings
    per_template = F.normalize(prompts, dim=-1).view(3, 2, -1)
    assert torch.allclose(classes, per_template.mean(dim=1))


def test_caption_batches_keep_the_clip_loss(tiny_clip_dir):
    method, bundle = setup("finetune", tiny_clip_dir)
    data = tiny_data()
    batch = make_batch(bundle, data, torch.arange(8), torch.arange(8))
    assert set(method.training_loss(batch, 0).logs) == {"clip"}


CLIP_METHODS = [
    name for name in list_methods()
    if {"captions", "classification"} & set(method_class(name).settings) and method_class(name).trains and method_class(name).optimises
]


@pytest.mark.parametrize("name", CLIP_METHODS)
def test_every_method_trains_a_classification_task(name, tiny_clip_dir, tmp_path):
    """Each method's loss on a classification batch is finite, has gradients and names the cross-entropy."""
    options = {"reference": "embedded", "reference_images": 8} if name == "zscl" else {}
    if name == "mulki":
        options = {"prototypes": 3}
    try:
        method, bundle = setup(name, tiny_clip_dir, **options)
    except Exception:  # a method whose options do not fit a 16-pixel model: its defaults
        method, bundle = setup(name, tiny_clip_dir)
    data = class_data().with_prompts("first")
    method.begin_task(STAGE, data)
    method.train()
    batch = make_batch(bundle, data, torch.arange(6), torch.zeros(6, dtype=torch.long))
    output = method.training_loss(batch, 0)
    assert torch.isfinite(output.loss) and "ce" in output.logs and "clip" not in output.logs
    output.loss.backward()
    trained = [p for module in method.training_modules().values() for p in module.parameters() if p.requires_grad]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)  # moe_adapters trains modules beside the model


def test_lwf_distils_the_class_logits_only(tiny_clip_dir):
    from vlcl.methods.lwf import softened_kl

    method, bundle = setup("lwf", tiny_clip_dir)
    data = class_data().with_prompts("first")
    method.begin_task(STAGE, data)
    method.train()
    with torch.no_grad():
        for p in method.model.vision_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = make_batch(bundle, data, torch.arange(6), torch.zeros(6, dtype=torch.long))
    output = method.training_loss(batch, 0)
    images, classes = method.encode(batch)
    old_images, old_classes = method.teacher.features(batch)
    student = method.logit_scale() * F.normalize(images, dim=-1) @ F.normalize(classes, dim=-1).t()
    teacher = method.teacher.logit_scale * F.normalize(old_images, dim=-1) @ F.normalize(old_classes, dim=-1).t()
    assert student.shape == (6, 3)
    assert output.logs["distill"] == pytest.approx(float(softened_kl(teacher, student, 2.0).detach()), rel=1e-4)


def test_replay_adds_the_old_classes_to_the_label_space(tiny_clip_dir):
    method, bundle = setup("replay", tiny_clip_dir, replay_batch_size=12)  # the whole buffer: both old classes
    old = class_data(classes=["red circle", "blue square"], name="old").with_prompts("first")
    method.begin_task(Stage(0, "old", (0,)), old)
    method.end_task(Stage(0, "old", (0,)))
    new = class_data(classes=["green triangle", "yellow star", "red circle"], name="new").with_prompts("first")
    method.begin_task(Stage(1, "new", (1,)), new)
    batch = make_batch(bundle, new, torch.arange(3), torch.zeros(3, dtype=torch.long))
    full, replayed = method.with_replay(batch)
    assert len(full.pixel_values) == 3 + 12 and replayed.tolist() == [False] * 3 + [True] * 12
    # 'a photo of a red circle' is a current class: it keeps its label; 'blue square' is added as class 3
    text = bundle.tokenizer.batch_decode(full.input_ids, skip_special_tokens=True)
    assert len(text) == 4 and "blue square" in text[3]
    labels = full.labels[3:].tolist()
    assert sorted(set(labels)) == [2, 3] and labels.count(2) == labels.count(3) == 6
    assert torch.isfinite(method.training_loss(batch, 0).loss)


def test_a_joint_stage_keeps_every_tasks_classes_apart():
    a, b = class_data(n=6, name="a"), class_data(n=6, classes=["x one", "x two"], name="b")
    joint = concatenate([a.with_prompts("first"), b.with_prompts("first")])
    assert len(joint.class_prompts) == 5 and joint.labels[6:].tolist() == [3, 4, 3, 4, 3, 4]


def test_with_prompts_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="first"):
        class_data().with_prompts("best")


def test_iterations_fix_the_steps_per_task():
    train = TrainConfig(iterations=25, batch_size=4)
    assert planned_steps(10, train) == (2, 25)
    assert planned_steps(10, TrainConfig(epochs=3, batch_size=4)) == (2, 6)


@pytest.mark.parametrize(
    "lr, expected",
    [(1e-3, [1e-3, 1e-3, 1e-3]), ([1e-3, 2e-3, 3e-3], [1e-3, 2e-3, 3e-3]), ({"default": 1e-5, "b": 5e-5}, [1e-5, 5e-5, 1e-5])],
)
def test_per_task_learning_rates(lr, expected):
    train = TrainConfig(lr=lr)
    order = ["a", "b", "c"]
    assert [train.lr_for([name], order) for name in order] == expected


@pytest.mark.parametrize(
    "lr, message",
    [([1e-3, 2e-3], "lists 2 learning rates for 3 tasks"), ({"d": 1e-3}, "names 'd', which is not a task"), ({"a": 1e-3}, "no learning rate for task 'b'")],
)
def test_per_task_learning_rate_errors(lr, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(lr=lr).lr_for(["b"], ["a", "b", "c"])


def test_a_joint_stage_needs_one_learning_rate():
    with pytest.raises(ValueError, match="different learning rates"):
        TrainConfig(lr=[1e-3, 2e-3]).lr_for(["a", "b"], ["a", "b"])


def test_config_reads_a_per_task_mapping():
    config = load_config(None, ["train.lr={default: 1.0e-5, mnist: 5.0e-5}", "train.iterations=1000"])
    assert config.train.lr == {"default": 1e-5, "mnist": 5e-5} and config.train.iterations == 1000


def run_cli(*args):
    from vlcl.app.cli import main

    return main(["run", *args])


TINY_EMBEDDED = ["data.train_scale=0.02", "data.test_images=10", "data.zeroshot_per_class=2", "train.epochs=1", "threads=1", "data.tasks=[sketch,new_shapes]"]


def test_a_run_trains_each_task_at_its_learning_rate_and_iterations(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli(*TINY_EMBEDDED, "train.lr={sketch: 1.0e-3, new_shapes: 2.0e-3}", "train.iterations=3", "train.batch_size=8", "-o", str(run_dir)) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert [s["train"]["steps"] for s in results["stages"][1:]] == [3, 3]
    assert results["config"]["train"]["lr"] == {"sketch": 1e-3, "new_shapes": 2e-3}


def test_an_unknown_task_in_the_learning_rates_stops_before_writing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(*TINY_EMBEDDED, "train.lr={sketch: 1.0e-3, mnist: 2.0e-3}", "-o", str(run_dir)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'train.lr' names 'mnist'" in err[0]
    assert not run_dir.exists()
