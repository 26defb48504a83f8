"""RAIL (``rail``): closed-form regression on frozen CLIP features, fused with zero-shot CLIP."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from test_run import quick_args
from vlcl.app.cli import main
from vlcl.data.benchmark import CaptionedImages
from vlcl.data.benchmarks.embedded_cls import build_embedded_cls
from vlcl.methods import RunContext, Stage, create_method
from vlcl.models import load_clip
from vlcl.methods.rail.analytic import kernel_ridge_solution, one_hot_targets, ridge_solution


@pytest.fixture(scope="module")
def setting():
    bundle = load_clip("embedded")
    benchmark = build_embedded_cls(tasks=["sketch", "counting"], train_scale=0.03, test_images=40, zeroshot_per_class=2)
    return bundle, benchmark


def rail(bundle, **options):
    method = create_method("rail", options)
    method.setup(bundle.model, RunContext(task_names=["sketch", "counting"], seed=0, bundle=bundle))
    return method


def with_a_shared_class(first: CaptionedImages, second: CaptionedImages) -> CaptionedImages:
    """``second`` with ``first``'s class 1 (same prompts) added as its class 0, on ``first``'s images of it."""
    shared = (first.labels == 1).nonzero().flatten()[:5]
    images = torch.cat([torch.as_tensor(second.images), torch.as_tensor(first.images[shared.numpy()])]).numpy()
    labels = torch.cat([second.labels + 1, torch.zeros(len(shared), dtype=torch.long)])
    prompts = [first.class_prompts[1], *second.class_prompts]
    return CaptionedImages("mixed", images, [[p[0]] for p in (prompts[i] for i in labels.tolist())], labels, prompts)


@pytest.mark.parametrize("form", ["primal", "dual"])
def test_the_regression_after_two_tasks_is_the_ridge_solution_on_everything_seen(setting, form):
    bundle, benchmark = setting
    method = rail(bundle, form=form, hidden_dim=300, update_rows=16)
    first, second = benchmark.tasks[0].train, with_a_shared_class(benchmark.tasks[0].train, benchmark.tasks[1].train)
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    for index, data in enumerate([first, second]):
        method.begin_task(Stage(index, data.name, (index,)), data)
        method.end_task(Stage(index, data.name, (index,)))
    # a class seen before with identical prompts keeps its column: one column fewer than the classes listed
    classes = len(first.class_prompts) + len(second.class_prompts) - 1
    assert len(method.class_keys) == classes and method.class_keys[1] == tuple(first.class_prompts[1])
    features = torch.cat([method.encode_images(first.images), method.encode_images(second.images)])
    labels = torch.cat([first.labels, torch.tensor([1, *range(len(first.class_prompts), classes)])[second.labels]])
    targets = one_hot_targets(labels, classes)
    if form == "primal":
        expected = ridge_solution(method.expansion(features.double()), targets, method.options.ridge_gamma)
        assert torch.allclose(method.ridge.W, expected, atol=1e-5)
    else:
        expected = kernel_ridge_solution(features, targets, method.options.kernel_lambda, method.options.kernel_gamma)
        assert torch.allclose(method.alpha, expected, atol=1e-5)
    # CLIP is frozen: not one bit of it changed
    after = bundle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in bundle.model.parameters())


def test_images_of_an_unseen_task_predicted_as_unseen_classes_keep_the_zero_shot_scores(setting):
    bundle, benchmark = setting
    method = rail(bundle)
    seen, unseen = benchmark.tasks[0], benchmark.tasks[1]
    method.begin_task(Stage(0, seen.name, (0,)), seen.train)
    keys = [tuple(p) for t in (seen, unseen) for p in t.test.prompts()]  # the union, the learned classes first
    with torch.no_grad():
        from vlcl.models.encode import encode_texts

        prompts = encode_texts(bundle.model, bundle.tokenizer, [p for key in keys for p in key])
        classifier = F.normalize(prompts.view(len(keys), -1, prompts.shape[-1]).mean(1), dim=-1)
        images = torch.cat([method.encode_images(seen.test.images), method.encode_images(unseen.test.images)]) * 3.0
    scores = method.classification_logits(images, classifier, keys)
    zero_shot = torch.softmax(100.0 * (F.normalize(images.double(), dim=-1) @ classifier.double().mT), dim=1)
    learned = len(seen.test.classnames)
    routed = zero_shot.argmax(1) < learned
    assert 0 < int(routed.sum()) < len(images)
    kept = ~routed
    assert torch.equal(scores[kept], zero_shot[kept])  # exactly zero-shot CLIP
    fused = 0.2 * zero_shot[routed]
    fused[:, :learned] += 0.8 * method.regression_logits(F.normalize(images[routed].double(), dim=-1))
    assert torch.allclose(scores[routed], fused, atol=1e-6)
    # the regression fits the learned task: its own test images do better than zero-shot among its classes
    own = torch.arange(len(seen.test.labels))
    accuracy = (scores[own, :learned].argmax(1) == seen.test.labels).float().mean()
    assert accuracy > (zero_shot[own, :learned].argmax(1) == seen.test.labels).float().mean()


def test_a_caption_benchmark_is_refused_in_one_line_before_anything_is_written(tmp_path, world_clip_dir, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir, "method.name=rail"), "-o", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "method 'rail' does not support setting 'captions' (image-caption (retrieval) tasks)" in err
    assert not run_dir.exists()


def test_a_run_takes_no_step_keeps_clip_and_scores_unseen_tasks_as_zero_shot(tmp_path, world_clip_dir, monkeypatch):
    import vlcl.engine.loop as loop

    def no_optimiser(*args, **kwargs):
        raise AssertionError("rail must not be optimised")

    monkeypatch.setattr(loop, "train_on", no_optimiser)
    run_dir = tmp_path / "run"
    args = quick_args(world_clip_dir, "method.name=rail", "data.benchmark=embedded_cls", "method.form=primal", "method.hidden_dim=64")
    assert main(["run", *args, "-o", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert [s["train"]["steps"] for s in results["stages"][1:]] == [0, 0]
    assert all(s["train"]["samples"] > 0 for s in results["stages"][1:])
    matrix, pretrained = results["matrices"]["top1"], results["pretrained"]["top1_row"]["top1"]
    assert matrix[0][1] == pretrained[1]  # task 2 before it is learnt: exactly zero-shot CLIP
    saved = load_clip(str(run_dir / "checkpoints" / "stage_01" / "model")).model.state_dict()
    original = load_clip(str(world_clip_dir)).model.state_dict()
    assert all(torch.equal(saved[k], original[k]) for k in original)
