"""The evaluation protocol of one stage: retrieval, zero-shot classification, alignment.

For every retrieval set (each task's test split and every held-out set):
recall@K in both directions and the alignment diagnostics. For every
zero-shot set: top-1, top-5 and mean per-class recall with template-averaged
class embeddings. Captions are tokenised once per run and reused at every
stage.

The benchmark's setting (vlcl.settings) then adds what it scores beside them
(``Setting.stage_metrics``): the classification setting scores its tasks
task-agnostically with :meth:`Evaluator.task_agnostic`, each task's test
images among the union of several tasks' classes (classes whose prompts are
identical are one class).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import numpy as np
import torch
from transformers import CLIPModel

from vlcl.config import EvalConfig
from vlcl.data.benchmark import Benchmark, ClassificationSet, RetrievalSet
from vlcl.data.preprocess import ImagePreprocessor
from vlcl.engine.distributed import gather_rows, shard_range
from vlcl.metrics import (
    NonFiniteError,
    alignment_diagnostics,
    logit_accuracy,
    logit_predictions,
    per_class_scores,
    retrieval_recall,
    union_label_space,
    zeroshot_accuracy,
    zeroshot_accuracy_and_predictions,
    zeroshot_classifier,
)
from vlcl.models.encode import encode_images, encode_token_batches, tokenize
from vlcl.settings import Setting, setting_of

Progress = Callable[[str], None]


class EvaluationHooks(Protocol):
    """What a method may change in the evaluation (``vlcl.methods.Method`` has both, as no-ops by default)."""

    def evaluation_route(self, set_name: str, images: np.ndarray) -> AbstractContextManager[dict[str, float] | None]: ...

    def classification_logits(
        self, image_features: torch.Tensor, classifier: torch.Tensor, class_keys: list[tuple[str, ...]]
    ) -> torch.Tensor | None: ...


class NoHooks:
    """Plain CLIP evaluation: nothing routed, cosine similarity to the class embeddings."""

    def evaluation_route(self, set_name: str, images: np.ndarray) -> AbstractContextManager[dict[str, float] | None]:
        return nullcontext(None)

    def classification_logits(self, image_features, classifier, class_keys) -> torch.Tensor | None:
        return None


def mean_recall_at_1(recall: dict[str, float]) -> float:
    """The headline retrieval number: mean of image->text and text->image R@1."""
    return (recall["i2t_R@1"] + recall["t2i_R@1"]) / 2


def _named(set_name: str, evaluate, *args):
    """Run one set's evaluation; a model that yields NaN or inf features fails naming the set."""
    try:
        return evaluate(*args)
    except NonFiniteError as exc:
        raise NonFiniteError(f"set '{set_name}': {exc}; the model's weights or inputs are broken, nothing was scored") from None


class Evaluator:
    def __init__(
        self, benchmark: Benchmark, tokenizer, preprocess: ImagePreprocessor, context_length: int, config: EvalConfig,
        setting: Setting | None = None,
    ):
        from vlcl.metrics.retrieval import caption_groups

        self.benchmark = benchmark
        self.setting = setting or setting_of(benchmark)
        self.tokenizer, self.context_length = tokenizer, context_length
        self.preprocess = preprocess
        self.config = config
        self._features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        """Image features and class embeddings of this stage's classification sets, for the task-agnostic scores."""
        self._hooks: EvaluationHooks = NoHooks()
        self._tokens = {s.name: tokenize(tokenizer, s.captions, context_length) for s in benchmark.retrieval_sets()}
        # identical caption strings (exact comparison) are one text for retrieval recall (vlcl.metrics.retrieval)
        self._text_groups = {s.name: caption_groups(s.captions) for s in benchmark.retrieval_sets()}
        self._prompt_tokens = {
            z.name: tokenize(tokenizer, [p for prompts in z.prompts() for p in prompts], context_length)
            for z in benchmark.zeroshot
        }

    @property
    def set_count(self) -> int:
        return len(self.benchmark.retrieval_sets()) + len(self.benchmark.zeroshot)

    def image_features(self, model: CLIPModel, images: np.ndarray) -> torch.Tensor:
        """Image features; under torchrun each process encodes a contiguous shard and the shards are gathered."""
        first, last = shard_range(len(images))
        chunks = [torch.zeros(0, model.config.projection_dim)]
        for start in range(first, last, self.config.batch_size):
            pixels = self.preprocess.normalize_uint8(images[start : min(last, start + self.config.batch_size)])
            chunks.append(encode_images(model, pixels, self.config.batch_size))
        return gather_rows(torch.cat(chunks), len(images))

    def text_features(self, model: CLIPModel, texts: list[str]) -> torch.Tensor:
        """Un-normalised features of ``texts`` (tokenised as the run's retrieval captions are)."""
        return self._texts(model, *tokenize(self.tokenizer, texts, self.context_length))

    def _texts(self, model: CLIPModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        first, last = shard_range(len(ids))
        if first == last:
            local = torch.zeros(0, model.config.projection_dim)
        else:
            local = encode_token_batches(model, ids[first:last], mask[first:last], self.config.batch_size)
        return gather_rows(local, len(ids))

    def retrieval(self, model: CLIPModel, dataset: RetrievalSet) -> dict[str, dict[str, float]]:
        image_features = self.image_features(model, dataset.images)
        ids, mask = self._tokens[dataset.name]
        text_features = self._texts(model, ids, mask)
        recall = retrieval_recall(
            image_features,
            text_features,
            dataset.text_to_image,
            ks=tuple(self.config.ks),
            convention=self.config.recall_convention,
            chunk_size=self.config.chunk_size,
            block_bytes=self.config.retrieval_memory_mb << 20,
            text_groups=self._text_groups[dataset.name],
        )
        recall["mean_R@1"] = mean_recall_at_1(recall)
        alignment = alignment_diagnostics(image_features, text_features, dataset.text_to_image)
        return {"retrieval": recall, "alignment": alignment}

    def classification(self, model: CLIPModel, dataset: ClassificationSet) -> tuple[dict[str, float], dict[str, list]]:
        """(accuracies, per-class scores: classes, support, top-1 and, up to ``eval.confusion_max_classes``
        classes, the confusion matrix)."""
        image_features, classifier = self._class_features(model, dataset)
        keys = [tuple(p) for p in dataset.prompts()]
        logits = self._method_logits(image_features, classifier, keys)
        if logits is None:
            accuracy, predicted = zeroshot_accuracy_and_predictions(image_features, classifier, dataset.labels)
        else:
            accuracy, predicted = logit_accuracy(logits, dataset.labels), logit_predictions(logits, dataset.labels)
        confusion = len(dataset.classnames) <= self.config.confusion_max_classes
        per_class = per_class_scores(predicted, dataset.labels, len(dataset.classnames), confusion=confusion)
        return accuracy, {"classes": list(dataset.classnames), **per_class}

    def _accuracy(self, image_features: torch.Tensor, classifier: torch.Tensor, keys: list[tuple[str, ...]], labels) -> dict[str, float]:
        """Accuracy by cosine similarity to ``classifier``, or by the scores the method computes itself."""
        logits = self._method_logits(image_features, classifier, keys)
        return zeroshot_accuracy(image_features, classifier, labels) if logits is None else logit_accuracy(logits, labels)

    def _method_logits(self, image_features: torch.Tensor, classifier: torch.Tensor, keys: list[tuple[str, ...]]) -> torch.Tensor | None:
        """The scores the method computes itself (``classification_logits``), checked for their shape; None: cosine."""
        logits = self._hooks.classification_logits(image_features, classifier, keys)
        if logits is not None and tuple(logits.shape) != (len(image_features), len(classifier)):
            raise ValueError(f"classification_logits returned shape {tuple(logits.shape)}, expected {(len(image_features), len(classifier))}")
        return logits

    def _class_features(self, model: CLIPModel, dataset: ClassificationSet) -> tuple[torch.Tensor, torch.Tensor]:
        """(image features, class embeddings) of a classification set; kept for the task-agnostic scores."""
        image_features = self.image_features(model, dataset.images)
        ids, mask = self._prompt_tokens[dataset.name]
        prompts = self._texts(model, ids, mask)
        classifier = zeroshot_classifier(prompts.view(len(dataset.classnames), len(dataset.templates), -1))
        self._features[dataset.name] = (image_features, classifier)
        return image_features, classifier

    def task_agnostic(self, tasks: list[ClassificationSet]) -> dict[str, dict[str, float]]:
        """Top-1 of each of ``tasks`` among the union of their classes (features of this stage's evaluation)."""
        features = [self._features[t.name] for t in tasks]
        keys = [[tuple(p) for p in t.prompts()] for t in tasks]
        union, maps = union_label_space([classifier for _, classifier in features], keys)
        union_keys = list(dict.fromkeys(key for task_keys in keys for key in task_keys))  # the union's order
        return {
            t.name: {"top1": self._accuracy(images, union, union_keys, maps[k][t.labels])["top1"]}
            for k, (t, (images, _)) in enumerate(zip(tasks, features))
        }

    @torch.no_grad()
    def evaluate(self, model: CLIPModel, progress: Progress | None = None, hooks: EvaluationHooks | None = None) -> dict[str, dict]:
        """All metrics of one stage, keyed by set name; ``hooks`` (the method) may route sets and score classes."""
        was_training = model.training
        model.eval()
        self._features, self._hooks = {}, hooks or NoHooks()
        result: dict[str, dict] = {"retrieval": {}, "alignment": {}, "zeroshot": {}}
        routes: dict[str, dict[str, float]] = {}
        per_class: dict[str, dict[str, list]] = {}
        for dataset in self.benchmark.retrieval_sets():
            if progress:
                progress(dataset.name)
            with self._hooks.evaluation_route(dataset.name, dataset.images) as route:
                metrics = _named(dataset.name, self.retrieval, model, dataset)
            result["retrieval"][dataset.name] = metrics["retrieval"]
            result["alignment"][dataset.name] = metrics["alignment"]
            if route is not None:
                routes[dataset.name] = route
        for dataset in self.benchmark.zeroshot:
            if progress:
                progress(dataset.name)
            with self._hooks.evaluation_route(dataset.name, dataset.images) as route:
                result["zeroshot"][dataset.name], per_class[dataset.name] = _named(dataset.name, self.classification, model, dataset)
            if route is not None:
                routes[dataset.name] = route
        if routes:
            result["routes"] = routes
        if per_class:
            result["per_class"] = per_class  # not a metric kind: the stage record keeps it apart (StageRecord)
        result.update(self.setting.stage_metrics(self, model))
        self._features, self._hooks = {}, NoHooks()
        model.train(was_training)
        return result


class PairEvaluator:
    """The protocol of the modality-pair setting (``features``): after every stage, every pair's test set in both
    directions (A->B reported as ``i2t``, B->A as ``t2i``; cosine similarity, as every retrieval number in vlcl)."""

    def __init__(self, benchmark: Benchmark, config: EvalConfig, setting: Setting | None = None):
        self.benchmark = benchmark
        self.config = config
        self.setting = setting or setting_of(benchmark)

    @property
    def set_count(self) -> int:
        return len(self.benchmark.tasks)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, progress: Progress | None = None, hooks: EvaluationHooks | None = None) -> dict[str, dict]:
        """Every pair's test set in both directions; ``hooks`` play no part (a pair has no classes, and the methods
        that train feature maps route nothing)."""
        retrieval = {}
        for task in self.benchmark.tasks:
            if progress:
                progress(task.name)
            a, b = task.test.modalities
            fa, fb = model(a, task.test.arrays[a]), model(b, task.test.arrays[b])
            recall = _named(task.name, retrieval_recall, fa, fb, torch.arange(len(fb)), tuple(self.config.ks))
            recall["mean_R@1"] = mean_recall_at_1(recall)
            retrieval[task.name] = recall
        return {"retrieval": retrieval, "alignment": {}, "zeroshot": {}, **self.setting.stage_metrics(self, model)}
