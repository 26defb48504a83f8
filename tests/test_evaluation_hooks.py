"""The evaluation hooks of the Method contract: routing a set (MoE-Adapters' DDAS) and a method's own class scores (RAIL)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from vlcl.config import EvalConfig
from vlcl.data.benchmarks.embedded_cls import build_embedded_cls
from vlcl.engine.evaluate import Evaluator
from vlcl.engine.results import metrics_rows
from vlcl.methods import Method
from vlcl.metrics import logit_accuracy, zeroshot_accuracy
from vlcl.models import load_clip


@pytest.fixture(scope="module")
def setting():
    bundle = load_clip("embedded")
    benchmark = build_embedded_cls(tasks=["sketch", "new_shapes"], train_scale=0.01, test_images=24, zeroshot_per_class=2)
    return bundle, benchmark, Evaluator(benchmark, bundle.tokenizer, bundle.preprocess, bundle.context_length, EvalConfig())


class BlindOnOneSet(Method):
    """Routes one set to a 'frozen' route whose image projection is zero (every image looks alike there)."""

    name = "blind_test"

    def __init__(self, model, blind_set: str):
        super().__init__()
        self.model, self.blind_set, self.calls = model, blind_set, []

    @contextmanager
    def evaluation_route(self, set_name, images):
        self.calls.append((set_name, len(images)))
        if set_name != self.blind_set:
            yield None
            return
        saved = self.model.visual_projection.weight.detach().clone()
        with torch.no_grad():
            self.model.visual_projection.weight.mul_(0).add_(1e-3)
        try:
            yield {"frozen": 0.25, "task": 0.75}
        finally:
            with torch.no_grad():
                self.model.visual_projection.weight.copy_(saved)


def test_route_hook_is_entered_around_each_set_and_its_shares_are_kept(setting):
    bundle, benchmark, evaluator = setting
    plain = evaluator.evaluate(bundle.model)
    blind_set = next(z.name for z in benchmark.zeroshot if z.name.startswith("zs_"))  # one the model solves
    method = BlindOnOneSet(bundle.model, blind_set)
    weights = bundle.model.visual_projection.weight.detach().clone()
    routed = evaluator.evaluate(bundle.model, hooks=method)
    every_set = [s.name for s in benchmark.retrieval_sets()] + [z.name for z in benchmark.zeroshot]
    assert [name for name, _ in method.calls] == every_set
    assert routed["routes"] == {blind_set: {"frozen": 0.25, "task": 0.75}} and "routes" not in plain
    assert routed["zeroshot"][blind_set]["top1"] < plain["zeroshot"][blind_set]["top1"]
    for name in every_set:
        if name != blind_set:
            assert routed["zeroshot"].get(name) == plain["zeroshot"].get(name)
    assert torch.equal(bundle.model.visual_projection.weight, weights)  # the hook restored the model
    rows = [r for r in metrics_rows({"stages": [{"index": 0, "name": "s", "metrics": routed}]}) if r["kind"] == "routes"]
    assert {(r["set"], r["metric"], r["value"]) for r in rows} == {(blind_set, "frozen", 0.25), (blind_set, "task", 0.75)}


class Oracle(Method):
    """Scores the true class of one task's images highest, by the class keys: what a perfect head would return."""

    name = "oracle_test"

    def __init__(self, images, labels, keys, extra_columns=0):
        super().__init__()
        self.images, self.true_keys, self.extra_columns, self.keys_seen = images, [keys[i] for i in labels], extra_columns, []

    def classification_logits(self, image_features, classifier, class_keys):
        self.keys_seen.append(list(class_keys))
        if not torch.equal(image_features, self.images):
            return None
        scores = torch.zeros(len(image_features), len(classifier) + self.extra_columns)
        scores[torch.arange(len(scores)), [class_keys.index(k) for k in self.true_keys]] = 1.0
        return scores


def oracle(setting, extra_columns=0):
    bundle, benchmark, evaluator = setting
    task = benchmark.tasks[0].test
    images = evaluator.image_features(bundle.model, task.images)  # the features the evaluation computes
    return task, Oracle(images, task.labels.tolist(), [tuple(p) for p in task.prompts()], extra_columns)


def test_a_methods_own_class_scores_replace_cosine_also_task_agnostically(setting):
    bundle, _, evaluator = setting
    task, method = oracle(setting)
    plain = evaluator.evaluate(bundle.model)
    result = evaluator.evaluate(bundle.model, hooks=method)
    assert plain["zeroshot"][task.name]["top1"] < 100.0
    assert result["zeroshot"][task.name]["top1"] == 100.0
    assert result["task_agnostic"][task.name]["top1"] == 100.0
    union = max(method.keys_seen, key=len)
    assert len(union) == len(set(union)) > len(task.classnames)  # the union's keys, each class once


def test_a_wrongly_shaped_score_matrix_is_refused(setting):
    bundle, _, evaluator = setting
    _, method = oracle(setting, extra_columns=1)
    with pytest.raises(ValueError, match=r"classification_logits returned shape .* expected"):
        evaluator.evaluate(bundle.model, hooks=method)


def test_logit_accuracy_equals_zeroshot_accuracy_on_cosine_logits():
    g = torch.Generator().manual_seed(0)
    images, classifier = torch.randn(50, 8, generator=g), F.normalize(torch.randn(7, 8, generator=g), dim=-1)
    labels = torch.randint(0, 7, (50,), generator=g)
    assert logit_accuracy(F.normalize(images, dim=-1) @ classifier.t(), labels) == zeroshot_accuracy(images, classifier, labels)
    with pytest.raises(ValueError, match="logits"):
        logit_accuracy(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
