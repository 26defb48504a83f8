"""Classification sequences as ZSCL trains and scores them (MTIL).

Each task trains with cross-entropy over its class prompts (every class's templates, averaged; label smoothing
``train.label_smoothing``) and is scored by top-1 accuracy in its own label space. A stage's evaluation adds
the task-agnostic scores, with no task identity at test time: every task's test images among the union of
every task's classes (``task_agnostic``, the X-TAIL setting of RAIL) and among the classes of the tasks trained
so far (``seen_classes``). Classes whose prompts are identical are one class.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING, Any

import torch

from vlcl.losses import class_prompt_loss
from vlcl.metrics import continual_summary
from vlcl.models.encode import class_embeddings, text_embeddings, tokenize
from vlcl.schema import TASK_AGNOSTIC_ROWS, TOP1_METRIC
from vlcl.settings.base import TaskMetric, register_setting
from vlcl.settings.captions import CaptionBatch, Captions, image_rows

if TYPE_CHECKING:
    from vlcl.data.benchmark import CaptionedImages
    from vlcl.models.loading import ClipBundle


@dataclass
class ClassBatch(CaptionBatch):
    """Images with their ``labels``; the text side is every class's prompts, class by class (C x T rows of
    ``input_ids`` / ``attention_mask``, T = ``class_templates``)."""

    labels: torch.Tensor
    class_templates: int
    class_prompts: list[list[str]]
    """Every class's prompts (the strings of the text side)."""

    one_text_per_image = False  # the text side is one row per class: in-batch terms go image->text only

    def text_side(self, model) -> torch.Tensor:
        """Un-normalised embeddings of the text side: one per class, the mean of its templates' normalised ones."""
        return class_embeddings(text_embeddings(model, self.input_ids, self.attention_mask), self.class_templates)

    def paired_texts(self, texts: torch.Tensor) -> torch.Tensor:
        return texts[self.labels]

    def teacher_texts(self, per_caption: torch.Tensor, per_class: torch.Tensor | None, captions_per_image: int) -> torch.Tensor:
        return per_class

    def task_loss(self, images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor, context) -> tuple[str, torch.Tensor]:
        """Cross-entropy over the class prompts (``ce``)."""
        return "ce", class_prompt_loss(images, texts, self.labels, logit_scale, label_smoothing=context.label_smoothing)

    def with_pairs(self, pixels: torch.Tensor, captions: list[str], bundle: ClipBundle) -> ClassBatch:
        """This batch followed by image-caption pairs a method adds (replay), each caption an old class's prompt:
        a caption that is a current class's first prompt takes its label, any other becomes a class of its own
        (its prompt repeated once per template, so that its template mean is that prompt)."""
        index = {prompts[0]: c for c, prompts in enumerate(self.class_prompts)}
        added: list[str] = []
        labels = []
        for caption in captions:
            if caption not in index:
                index[caption] = len(self.class_prompts) + len(added)
                added.append(caption)
            labels.append(index[caption])
        new_labels = torch.tensor(labels, dtype=torch.long, device=self.labels.device)
        texts = [c for c in added for _ in range(self.class_templates)]
        return self._appended(
            pixels, texts, bundle, labels=torch.cat([self.labels, new_labels]),
            class_prompts=[*self.class_prompts, *([c] * self.class_templates for c in added)],
        )


_PROMPT_TOKENS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def class_prompt_tokens(bundle: ClipBundle, class_prompts: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every class's prompts tokenised, class by class (C x T rows): tokenised once per prompt list."""
    key = (id(bundle.tokenizer), bundle.context_length, tuple(p for prompts in class_prompts for p in prompts))
    if key not in _PROMPT_TOKENS:
        if len(_PROMPT_TOKENS) > 64:
            _PROMPT_TOKENS.clear()
        _PROMPT_TOKENS[key] = tokenize(bundle.tokenizer, list(key[2]), bundle.context_length)
    return _PROMPT_TOKENS[key]


def class_text_side(model, bundle: ClipBundle, class_prompts: list[list[str]], device: torch.device) -> torch.Tensor:
    """Un-normalised class embeddings of ``class_prompts`` under ``model`` (what a teacher caches)."""
    ids, mask = class_prompt_tokens(bundle, class_prompts)
    return class_embeddings(text_embeddings(model, ids.to(device), mask.to(device)), len(class_prompts[0]))


TOP1 = TaskMetric.from_json(TOP1_METRIC)  # part of the results schema: older files name it by task_metric

TASK_AGNOSTIC_DEFINITION = (
    "top-1 with no task identity: 'matrix' classifies every task's test images among the classes of every task "
    "(X-TAIL, RAIL 2024; Transfer/Avg/Last as for the per-task matrix); 'seen_classes' among the classes of the tasks "
    "trained so far, for those tasks only (null for tasks not yet trained). Classes with identical prompts are one class."
)


@register_setting
class Classification(Captions):
    name = "classification"
    description = "classification sequences trained over class prompts and scored by top-1 (MTIL, as ZSCL)"
    metric = TOP1
    metric_kinds = ("retrieval", "alignment", "zeroshot", "task_agnostic", "routes")
    summary_rows = tuple(tuple(row) for row in TASK_AGNOSTIC_ROWS)
    task_words = "classification tasks"

    def batch(self, bundle: ClipBundle, data: CaptionedImages, idx: torch.Tensor, picks: torch.Tensor) -> ClassBatch:
        ids, mask = class_prompt_tokens(bundle, data.class_prompts)
        return ClassBatch(
            **image_rows(bundle, data, idx, picks), input_ids=ids, attention_mask=mask, labels=data.labels[idx],
            class_templates=len(data.class_prompts[0]), class_prompts=data.class_prompts,
        )

    def stage_metrics(self, evaluator: Any, model: Any) -> dict[str, dict]:
        """``seen_classes``: the first k tasks among their classes, for every k (the results pick the k a stage
        has trained); ``task_agnostic``: k = every task."""
        tasks = [t.test for t in evaluator.benchmark.tasks]
        seen = {str(k): evaluator.task_agnostic(tasks[:k]) for k in range(1, len(tasks) + 1)}
        return {"seen_classes": seen, "task_agnostic": seen[str(len(tasks))]}

    def stream_metrics(self, evaluator: Any, model: Any, stream: Any, batch: int) -> dict[str, Any]:
        """A classification stream, as the SIT authors score it: every test image of a class the stream has shown
        so far (over every task's test set), classified among those classes alone; ``score`` is top-1 over those
        images, ``per_unit`` each class's top-1 (for F_last), by class index in the stream."""
        return seen_classes_scores(evaluator, model, stream.class_keys[: stream.exposed_after(batch)])

    def results_sections(
        self, tasks: list[str], pretrained: dict, trained: list[dict], *, continual: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``task_agnostic``: its matrix (and the seen-classes one) with their summaries."""
        agnostic = task_agnostic_results(tasks, pretrained, trained, continual=continual)
        summary = {"task_agnostic": agnostic["summary"], "seen_classes": agnostic["seen_classes"]["summary"]} if trained else {}
        return {"task_agnostic": agnostic}, summary


def task_agnostic_results(tasks: list[str], pretrained: dict, trained: list[dict], *, continual: bool) -> dict[str, Any]:
    """The task-agnostic matrix and the seen-classes matrix of a classification sequence, with summaries."""
    row = lambda record: [record["metrics"]["task_agnostic"][t]["top1"] for t in tasks]  # noqa: E731
    matrix = [row(r) for r in trained]
    seen_rows, count = [], 0
    for record in trained:
        count += len(record["trained_on"])
        scores = record["metrics"]["seen_classes"][str(count)]
        seen_rows.append([scores.get(t, {}).get("top1") for t in tasks])
    result: dict[str, Any] = {"definition": TASK_AGNOSTIC_DEFINITION, "pretrained_row": row(pretrained), "matrix": matrix}
    if matrix:
        result["summary"] = continual_summary(matrix) if continual else {"last": fmean(matrix[-1])}
    seen_means = [fmean(v for v in r if v is not None) for r in seen_rows]
    result["seen_classes"] = {
        "matrix": seen_rows,
        "summary": {"last": seen_means[-1], "avg": fmean(seen_means)} if seen_means else {},
    }
    return result


def seen_classes_scores(evaluator: Any, model: Any, keys: list[tuple[str, ...]]) -> dict[str, Any]:
    """Top-1 of the test images of the classes ``keys`` (each class's prompts) among those classes only, over every
    task's test set (``evaluator.benchmark``); classes are embedded as the evaluation embeds them (the mean of their
    prompts' normalised embeddings)."""
    from vlcl.data.validation import take_images
    from vlcl.metrics import per_class_scores, zeroshot_accuracy_and_predictions

    index = {key: c for c, key in enumerate(keys)}
    features, labels = [], []
    for task in evaluator.benchmark.tasks:
        test_keys = [tuple(p) for p in task.test.prompts()]
        mapped = torch.tensor([index.get(k, -1) for k in test_keys], dtype=torch.long)[task.test.labels]
        rows = torch.nonzero(mapped >= 0).flatten()
        if len(rows):
            features.append(evaluator.image_features(model, take_images(task.test.images, rows.numpy())))
            labels.append(mapped[rows])
    if not features:
        raise ValueError(f"no test image of the {len(keys)} classes the stream has shown so far")
    prompts = [p for key in keys for p in key]
    texts = torch.nn.functional.normalize(evaluator.text_features(model, prompts).float(), dim=-1)
    starts = list(itertools.accumulate((len(k) for k in keys), initial=0))
    classifier = torch.nn.functional.normalize(torch.stack([texts[a:b].mean(0) for a, b in zip(starts, starts[1:])]), dim=-1)
    accuracy, predicted = zeroshot_accuracy_and_predictions(torch.cat(features), classifier, torch.cat(labels))
    per_class = per_class_scores(predicted, torch.cat(labels), len(keys), confusion=False)["top1"]
    return {"score": accuracy["top1"], "per_unit": {str(c): v for c, v in enumerate(per_class)}}
