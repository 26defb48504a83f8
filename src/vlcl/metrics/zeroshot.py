"""Zero-shot classification with prompt-ensembled class embeddings.

Classifier (CLIP's prompt ensembling, Radford et al. 2021, as in
CLIP_benchmark's ``zero_shot_classifier``): for class c with templates
t = 1..T, w_c = normalise(mean_t normalise(e_{c,t})).

Accuracy: image features are L2-normalised, logits = image @ classifier^T
(the classifier is used as given: pass ``zeroshot_classifier``'s output).
Ties are counted pessimistically: a sample is correct at top-k iff the number
of OTHER classes whose logit is >= the true class's logit is < k, so a
degenerate model with equal logits never scores 100%. Keys, in percent:

* ``top1``;
* ``top5``, only when there are more than 5 classes (with 5 or fewer every
  sample is trivially correct at top-5, so the key is omitted);
* ``mean_per_class_recall``: the mean, over the classes present in
  ``labels``, of the top-1 recall within each class (robust to imbalance).

Per class (:func:`per_class_scores`): each class's support (test images),
top-1 (None for a class with no test image) and the confusion matrix, rows the
true class and columns the predicted one. The prediction follows the tie rule:
an image is predicted as its true class iff it is correct at top-1 (no other
class scores >= it), else as the highest-scoring other class (the first of
tied ones), so the diagonal of the confusion matrix sums to the top-1 hits.

Task-agnostic classification (:func:`union_label_space`): the label spaces of
several tasks merged into one, classes with identical prompts merged, so that
a test image is classified among every task's classes with no task identity.

NaN or inf in the features or the classifier raise
:class:`vlcl.metrics.retrieval.NonFiniteError` (a NaN logit has no competitor
that is >= it, so it would count as correct).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vlcl.metrics.retrieval import _percent, check_finite


def zeroshot_classifier(class_template_features: torch.Tensor) -> torch.Tensor:
    """[C, T, d] template embeddings -> [C, d] unit-norm class embeddings (float32)."""
    if class_template_features.ndim != 3:
        raise ValueError(f"expected [classes, templates, d] features, got shape {tuple(class_template_features.shape)}")
    check_finite(class_template_features, "class prompt features")
    per_template = F.normalize(class_template_features.detach().float(), dim=-1)
    return F.normalize(per_template.mean(dim=1), dim=-1)


def _ranks_in(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Number of other classes whose logit is >= the true class's, per row of ``logits``."""
    target = labels[:, None]
    at_least = logits >= logits.gather(1, target)
    at_least.scatter_(1, target, False)  # the true class does not compete with itself
    return at_least.sum(1)


def _true_class_ranks(images: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Number of other classes whose logit is >= the true class's, per sample."""
    ranks = []
    for start in range(0, len(images), chunk_size):
        logits = images[start : start + chunk_size] @ classifier.t()
        ranks.append(_ranks_in(logits, labels[start : start + chunk_size]))
    return torch.cat(ranks)


def _check_labels(labels: torch.Tensor | Sequence[int], num_images: int, num_classes: int, device: torch.device) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != (num_images,):
        raise ValueError(f"labels must have shape ({num_images},), got {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels lie in [{int(labels.min())}, {int(labels.max())}], outside [0, {num_classes - 1}]")
    return labels.to(device=device, dtype=torch.long)


def _predicted(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the true class when it is correct at top-1 (the tie rule), else the best other class."""
    target = labels[:, None]
    others = scores.scatter(1, target, float("-inf"))
    best_other, other_class = others.max(1)
    return torch.where(best_other >= scores.gather(1, target).squeeze(1), other_class, labels)


def _validate(image_features: torch.Tensor, classifier: torch.Tensor, labels, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(unit image features, float32 classifier, long labels) after the shared checks."""
    if image_features.ndim != 2 or classifier.ndim != 2 or image_features.shape[1] != classifier.shape[1]:
        raise ValueError(
            f"expected image [N, d] and classifier [C, d], got {tuple(image_features.shape)} and {tuple(classifier.shape)}"
        )
    if len(image_features) == 0 or len(classifier) == 0:
        raise ValueError(f"need at least one image and one class, got {len(image_features)} and {len(classifier)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    check_finite(image_features, "image features")
    check_finite(classifier, "classifier")
    images = F.normalize(image_features.detach().float(), dim=-1)
    weights = classifier.detach().float().to(images.device)
    return images, weights, _check_labels(labels, len(images), len(weights), images.device)


def zeroshot_predictions(
    image_features: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor | Sequence[int], *, chunk_size: int = 4096
) -> torch.Tensor:
    """Long [N]: each image's predicted class under the tie rule (module docstring), for :func:`per_class_scores`."""
    return zeroshot_accuracy_and_predictions(image_features, classifier, labels, chunk_size=chunk_size)[1]


def zeroshot_accuracy_and_predictions(
    image_features: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor | Sequence[int], *, chunk_size: int = 4096
) -> tuple[dict[str, float], torch.Tensor]:
    """:func:`zeroshot_accuracy` and :func:`zeroshot_predictions` from one pass over the logits."""
    images, weights, labels = _validate(image_features, classifier, labels, chunk_size)
    ranks, predicted = [], []
    for start in range(0, len(images), chunk_size):
        logits, chunk = images[start : start + chunk_size] @ weights.t(), labels[start : start + chunk_size]
        ranks.append(_ranks_in(logits, chunk))
        predicted.append(_predicted(logits, chunk))
    return _accuracies(torch.cat(ranks), labels, len(weights)), torch.cat(predicted)


def logit_predictions(logits: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """:func:`zeroshot_predictions` of scores a method computed itself ([N, C] ``logits``)."""
    check_finite(logits, "logits")
    scores = logits.detach().float()
    return _predicted(scores, _check_labels(labels, len(scores), scores.shape[1], scores.device))


def per_class_scores(
    predicted: torch.Tensor, labels: torch.Tensor | Sequence[int], num_classes: int, *, confusion: bool = True
) -> dict[str, list]:
    """``support`` (test images per class), ``top1`` (percent, None where a class has no test image) and, with
    ``confusion``, the ``confusion`` matrix of counts (rows: true class, columns: predicted), as lists."""
    predicted = torch.as_tensor(predicted)
    labels = _check_labels(labels, len(predicted), num_classes, predicted.device)
    if predicted.shape != labels.shape or bool(((predicted < 0) | (predicted >= num_classes)).any()):
        raise ValueError(f"predicted must hold {len(labels)} class indices in [0, {num_classes - 1}]")
    support = torch.bincount(labels, minlength=num_classes)
    hits = torch.bincount(labels[predicted == labels], minlength=num_classes)
    result: dict[str, list] = {
        "support": support.tolist(),
        "top1": [100.0 * int(h) / int(n) if n else None for h, n in zip(hits, support)],
    }
    if confusion:
        cells = torch.bincount(labels * num_classes + predicted.long(), minlength=num_classes * num_classes)
        result["confusion"] = cells.view(num_classes, num_classes).tolist()
    return result


def zeroshot_accuracy(
    image_features: torch.Tensor,
    classifier: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    *,
    chunk_size: int = 4096,
) -> dict[str, float]:
    """Top-1, top-5 (more than 5 classes only) and mean per-class recall, in percent."""
    images, weights, labels = _validate(image_features, classifier, labels, chunk_size)
    return _accuracies(_true_class_ranks(images, weights, labels, chunk_size), labels, len(weights))


def logit_accuracy(logits: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> dict[str, float]:
    """:func:`zeroshot_accuracy` of scores a method computed itself ([N, C] ``logits``, e.g. RAIL's fusion of a
    regression head with zero-shot probabilities): top-1, top-5 (more than 5 classes only), mean per-class recall."""
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"expected [N, C] logits with at least one image and one class, got {tuple(logits.shape)}")
    check_finite(logits, "logits")
    scores = logits.detach().float()
    labels = _check_labels(labels, len(scores), scores.shape[1], scores.device)
    return _accuracies(_ranks_in(scores, labels), labels, scores.shape[1])


def _accuracies(ranks: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    correct = ranks < 1
    result = {"top1": _percent(correct)}
    if num_classes > 5:
        result["top5"] = _percent(ranks < 5)
    counts = torch.bincount(labels, minlength=num_classes).double()
    hits = torch.bincount(labels[correct], minlength=num_classes).double()
    present = counts > 0  # classes absent from the labels have no recall to average
    result["mean_per_class_recall"] = 100.0 * (hits[present] / counts[present]).mean().item()
    return result


def union_label_space(classifiers: Sequence[torch.Tensor], class_keys: Sequence[Sequence[object]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The union of several label spaces, for task-agnostic classification (X-TAIL: no task identity at test time).

    ``classifiers[k]`` is task k's [C_k, d] class embeddings and ``class_keys[k]`` one key per class saying
    which classes are the same (vlcl: the tuple of the class's prompts - identical text is one class, not two
    classes that tie). Returns the [U, d] union classifier, classes in order of first appearance, and per task
    the long [C_k] map from its labels to the union's.
    """
    if len(classifiers) != len(class_keys):
        raise ValueError(f"{len(classifiers)} classifiers but {len(class_keys)} key lists")
    index: dict[object, int] = {}
    rows, maps = [], []
    for classifier, keys in zip(classifiers, class_keys):
        if len(classifier) != len(keys):
            raise ValueError(f"a classifier of {len(classifier)} classes has {len(keys)} class keys")
        mapping = []
        for row, key in zip(classifier, keys):
            if key not in index:
                index[key] = len(rows)
                rows.append(row)
            mapping.append(index[key])
        maps.append(torch.tensor(mapping, dtype=torch.long))
    return torch.stack(rows), maps
