"""A setting registered from outside the package (this file), with a benchmark and a method of its own, runs
through ``vlcl run`` and ``vlcl report`` with no file of vlcl edited: the engine, the evaluator and the report ask
the setting (docs/settings.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vlcl.data.registry as benchmark_registry
import vlcl.methods.registry as method_registry
import vlcl.settings.base as setting_registry
from test_run import quick_args
from vlcl.app.cli import main
from vlcl.data.benchmark import Benchmark, CaptionedImages, Task
from vlcl.data.registry import benchmark_builder, list_benchmarks, register_benchmark
from vlcl.methods import Method, list_methods, register_method
from vlcl.settings import CaptionBatch, Setting, TaskMetric, list_settings, register_setting
from vlcl.settings.captions import image_rows
from vlcl.models.encode import tokenize

MATCHING = TaskMetric(
    kind="matching", keys=("accuracy",), section="matching", pretrained_row="accuracy_row", name="matching accuracy",
    label="caption matching accuracy (%, image -> its own caption among the set's)", axis="matching (%)",
    title="matching accuracy (%)", summary_label="matching accuracy",
)


class MatchingPairs(CaptionedImages):
    """Training pairs of the toy setting: image-caption pairs, batched by the toy setting."""

    setting = "toy_matching"


@dataclass
class MatchingSet:
    """A test set of the toy setting: image i's caption is captions[i]; scored by image->text top-1 only."""

    setting: ClassVar[str] = "toy_matching"
    name: str
    images: np.ndarray
    captions: list[str]


@dataclass
class ImageToTextBatch(CaptionBatch):
    """The toy setting's batch: its loss is the image->text half of the CLIP loss."""

    def task_loss(self, images, texts, logit_scale, context):
        logits = logit_scale * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).t()
        return "i2t", F.cross_entropy(logits, torch.arange(len(images)))


class ToyMatching(Setting):
    name = "toy_matching"
    description = "image->text matching, a toy setting registered by a test"
    metric = MATCHING
    metric_kinds = ("matching", "retrieval", "zeroshot")
    task_words = "matching tasks"

    def batch(self, bundle, data, idx, picks):
        rows = image_rows(bundle, data, idx, picks)
        captions = [data.captions[i][c] for i, c in zip(idx.tolist(), rows["caption_index"].tolist())]
        ids, mask = tokenize(bundle.tokenizer, captions, bundle.context_length)
        return ImageToTextBatch(**rows, input_ids=ids, attention_mask=mask)

    def stage_metrics(self, evaluator, model):
        scores = {}
        for task in evaluator.benchmark.tasks:
            images = evaluator.image_features(model, task.test.images)
            texts = evaluator.text_features(model, task.test.captions)
            hits = (images @ texts.t()).argmax(dim=1) == torch.arange(len(images))
            scores[task.test.name] = {"accuracy": 100.0 * hits.float().mean().item()}
        return {"matching": scores}


class ToyMatcher(Method):
    name = "toy_matcher"
    description = "fine-tuning on the toy matching setting (a test's method)"
    settings = ("toy_matching",)


def build_toy(**options) -> Benchmark:
    """The embedded benchmark's first two tasks as matching tasks (one caption per test image)."""
    embedded = benchmark_builder("embedded")(**options)
    tasks = []
    for task in embedded.tasks[:2]:
        train, test = task.train, task.test
        first = [int(torch.nonzero(test.text_to_image == i)[0]) for i in range(len(test.images))]
        tasks.append(Task(task.name, MatchingPairs(train.name, train.images, train.captions),
                          MatchingSet(test.name, test.images, [test.captions[j] for j in first])))
    return Benchmark("toy", tasks)


@pytest.fixture
def toy_registered(monkeypatch):
    """The toy setting, benchmark and method registered as a plugin would register them, and removed afterwards."""
    list_settings(), list_methods(), list_benchmarks()  # the built-in ones found first: the copies hold them
    monkeypatch.setattr(setting_registry, "_REGISTRY", dict(setting_registry._REGISTRY))
    monkeypatch.setattr(method_registry, "_REGISTRY", dict(method_registry._REGISTRY))
    monkeypatch.setattr(benchmark_registry, "_BENCHMARKS", dict(benchmark_registry._BENCHMARKS))
    register_setting(ToyMatching)
    register_method(ToyMatcher)
    register_benchmark("toy", "the toy matching setting (a test's benchmark)")(build_toy)


def test_a_setting_from_outside_runs_and_reports(tmp_path, world_clip_dir, toy_registered, capsys):
    run_dir = tmp_path / "run"
    args = [a for a in quick_args(world_clip_dir) if not a.startswith("data.tasks=")]
    assert main(["run", *args, "data.benchmark=toy", "method.name=toy_matcher", "-o", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["setting"]["name"] == "toy_matching" and results["task_metric"] == "accuracy"
    matrix = results["matrices"]["accuracy"]
    assert len(matrix) == 2 and all(0.0 <= v <= 100.0 for row in matrix for v in row)
    assert set(results["summary"]["matching"]["accuracy"]) >= {"last", "avg", "bwt"}
    steps = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert {term for r in steps if r["event"] == "step" for term in r["terms"]} == {"i2t"}  # the setting's loss
    assert "accuracy_row" in results["pretrained"]
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[1].split(",")[3] == "matching"  # the setting's kinds first
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "caption matching accuracy" in out and "matching accuracy last" in out
    assert "caption matching accuracy (%, image -> its own caption among the set's)" in out  # the Markdown
    page = tmp_path / "report.html"
    assert main(["report", str(run_dir), "-o", str(page)]) == 0
    assert "matching (%)" in page.read_text()  # the plots' axis, from results.json: the report never imports the setting


def test_a_method_that_does_not_support_the_setting_is_refused_naming_both(tmp_path, world_clip_dir, toy_registered, capsys):
    args = [a for a in quick_args(world_clip_dir) if not a.startswith("data.tasks=")]
    assert main(["run", *args, "data.benchmark=toy", "method.name=lwf", "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "method 'lwf' does not support setting 'toy_matching' (matching tasks), the setting of benchmark 'toy'" in err
    assert "methods that do: toy_matcher" in err
    assert not (tmp_path / "run").exists()


def test_an_entry_point_that_names_no_setting_is_refused():
    from vlcl.plugins import NotAPlugin

    with pytest.raises(NotAPlugin, match=r"names an int \(42\), not a setting"):
        setting_registry._adopt("fortytwo", 42)
    with pytest.raises(NotAPlugin, match="registers no setting"):
        setting_registry._adopt("json", json)
    assert set(list_settings()) >= {"captions", "classification", "modality_pairs"}
