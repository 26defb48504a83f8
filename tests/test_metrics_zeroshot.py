"""Zero-shot classifier construction and accuracy."""

from __future__ import annotations

import math

import pytest
import torch

from vlcl.metrics import zeroshot_accuracy, zeroshot_classifier


def test_templates_are_normalised_before_averaging():
    # Class 0: templates 3*e0 and e1 -> e0, e1 -> mean (1/2, 1/2) -> (1/sqrt2, 1/sqrt2);
    # averaging before normalising would let the long template dominate: (3, 1)/sqrt10.
    features = torch.tensor([[[3.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [0.0, 5.0]]])
    r = 1 / math.sqrt(2)
    assert torch.allclose(zeroshot_classifier(features), torch.tensor([[r, r], [0.0, 1.0]]))


def test_classifier_is_invariant_to_template_order():
    features = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(0))
    shuffled = features[:, torch.tensor([3, 0, 5, 1, 4, 2])]
    classifier = zeroshot_classifier(features)
    assert classifier.shape == (4, 8)
    assert torch.allclose(classifier, zeroshot_classifier(shuffled), atol=1e-6)
    assert torch.allclose(classifier.norm(dim=-1), torch.ones(4))


def test_accuracy_on_an_imbalanced_hand_case():
    # 6 classes, classifier = identity, so logits are the (normalised) image coordinates.
    images = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],  # label 0: correct
            [1, 0, 0, 0, 0, 0],  # label 0: correct
            [1, 0, 0, 0, 0, 0],  # label 0: correct
            [1, 2, 0, 0, 0, 0],  # label 0: class 1 higher -> rank 1, top-5 only
            [0, 1, 0, 0, 0, 0],  # label 1: correct
            [2, 2, 1, 2, 2, 2],  # label 2: all 5 others higher -> rank 5, misses top-5
            [1, 0, 1, 0, 0, 0],  # label 2: tie with class 0 -> rank 1 (pessimistic), top-5 only
        ],
        dtype=torch.float32,
    )
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    # top1 = 4/7; top5 = 6/7; per class: 0 -> 3/4, 1 -> 1/1, 2 -> 0/2; classes 3-5 absent, not averaged:
    # mean_per_class_recall = (0.75 + 1 + 0) / 3 = 58.33%
    result = zeroshot_accuracy(images, torch.eye(6), labels)
    assert result == pytest.approx({"top1": 400 / 7, "top5": 600 / 7, "mean_per_class_recall": 175 / 3})
    assert zeroshot_accuracy(images, torch.eye(6), labels, chunk_size=2) == result


def test_top5_is_omitted_with_five_classes():
    images = torch.eye(5)
    result = zeroshot_accuracy(images, torch.eye(5), [0, 1, 2, 3, 3])  # last image is class 4, labelled 3
    assert result == pytest.approx({"top1": 80.0, "mean_per_class_recall": (1 + 1 + 1 + 0.5) / 4 * 100})


def test_equal_logits_score_zero_top1():
    images = torch.ones(4, 3)
    result = zeroshot_accuracy(images, torch.ones(7, 3), [0, 1, 2, 6])
    assert result == {"top1": 0.0, "top5": 0.0, "mean_per_class_recall": 0.0}  # 6 tied competitors each


@pytest.mark.parametrize(
    ("labels", "classifier", "message"),
    [
        ([0, 1, 3], torch.eye(3), "outside"),
        ([0, 1], torch.eye(3), "shape"),
        ([0.0, 1.0, 2.0], torch.eye(3), "integer"),
        ([0, 1, 2], torch.eye(4), r"\[C, d\]"),
    ],
)
def test_invalid_inputs_raise(labels, classifier, message):
    with pytest.raises(ValueError, match=message):
        zeroshot_accuracy(torch.eye(3), classifier, labels)
