"""Retrieval recall@K and alignment diagnostics on hand-built and random features."""

from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from vlcl.metrics import alignment_diagnostics, retrieval_recall

E = torch.eye(3)  # unit basis vectors: every cosine is exactly -1, 0 or 1, so ties are exact


def five_caption_case():
    """Image 0 = e0 with captions [e0, e2, e2, e2, e2]; image 1 = e1 with five captions e1."""
    images = torch.stack([E[0], E[1]])
    texts = torch.stack([E[0], E[2], E[2], E[2], E[2], E[1], E[1], E[1], E[1], E[1]])
    return images, texts, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_any_counts_an_image_as_hit_when_one_of_its_five_captions_is_retrieved():
    # i2t: image 0's best caption c0 scores 1, no negative scores >= 1 -> rank 0; image 1 likewise -> 2/2.
    # t2i: c0 and c5..c9 find their image alone at score 1 (rank 0); c1..c4 (e2) score 0 with both
    #      images, a tie, so rank 1: miss at K=1, hit at K=2 -> R@1 = 6/10, R@2 = 10/10.
    recall = retrieval_recall(*five_caption_case(), ks=(1, 2))
    assert recall == {"i2t_R@1": 100.0, "i2t_R@2": 100.0, "t2i_R@1": 60.0, "t2i_R@2": 100.0}


def test_diagonal_differs_from_any_on_multi_caption_data():
    # Pair matrix 10 x 10, pair j = (image of caption j, caption j).
    # i2t: j=0 (e0 vs c0) rank 0; j=1..4 (e0 vs its own e2 caption, score 0) tie with every other
    #      score-0 caption and lose to c0: rank 9; j=5..9 (e1) tie with the 4 other e1 captions:
    #      rank 4 -> R@1 = 1/10, R@5 = 6/10.
    # t2i: copies of the caption's own image are not competitors. c0 and c5..c9 score 1 with their
    #      image and 0 with the other image's copies: rank 0. c1..c4 (e2) score 0 everywhere and tie
    #      with the 5 copies of image 1: rank 5 -> R@1 = R@5 = 6/10.
    recall = retrieval_recall(*five_caption_case(), ks=(1, 5), convention="diagonal")
    assert recall == {"i2t_R@1": 10.0, "i2t_R@5": 60.0, "t2i_R@1": 60.0, "t2i_R@5": 60.0}


def test_identical_features_never_score_100():
    # 4 images, 8 captions (2 each), all features e0: every score is 1.
    # i2t: 6 negative captions tie with the best positive -> rank 6; t2i: 3 other images tie -> rank 3.
    images, texts, index = E[0].repeat(4, 1), E[0].repeat(8, 1), [0, 0, 1, 1, 2, 2, 3, 3]
    assert retrieval_recall(images, texts, index, ks=(1, 3, 4)) == {
        "i2t_R@1": 0.0, "i2t_R@3": 0.0, "i2t_R@4": 0.0, "t2i_R@1": 0.0, "t2i_R@3": 0.0, "t2i_R@4": 100.0,
    }
    diagonal = retrieval_recall(images, texts, index, ks=(1,), convention="diagonal")
    assert diagonal == {"i2t_R@1": 0.0, "t2i_R@1": 0.0}


def test_diagonal_agrees_with_any_for_one_caption_per_image():
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(9, 8, generator=g), torch.randn(9, 8, generator=g)
    index = torch.randperm(9, generator=g)  # caption j belongs to image index[j], one caption each
    any_ = retrieval_recall(images, texts, index, ks=(1, 2, 5))
    assert retrieval_recall(images, texts, index, ks=(1, 2, 5), convention="diagonal") == any_


@pytest.mark.parametrize("convention", ["any", "diagonal"])
def test_chunked_equals_unchunked(convention):
    g = torch.Generator().manual_seed(1)
    images, texts = torch.randn(10, 6, generator=g), torch.randn(23, 6, generator=g)
    index = torch.randint(0, 10, (23,), generator=g)
    small = retrieval_recall(images, texts, index, ks=(1, 3, 5), convention=convention, chunk_size=3)
    assert small == retrieval_recall(images, texts, index, ks=(1, 3, 5), convention=convention, chunk_size=10_000)


class LargestTensor(TorchFunctionMode):
    """Records the largest tensor any torch call returns."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.numel = max(self.numel, out.numel())
        return out


@pytest.mark.parametrize("convention", ["any", "diagonal"])
def test_similarities_are_never_materialised_in_full(convention):
    images, texts = torch.randn(40, 2), torch.randn(40, 2)  # features (80 values) smaller than a chunk
    with LargestTensor() as mode:
        retrieval_recall(images, texts, torch.arange(40), convention=convention, chunk_size=3)
    assert mode.numel == 3 * 40  # one chunk of scores, never the 40 x 40 matrix


def reference_recall(images, texts, text_to_image, ks, convention):
    """Brute force from the definitions, plain Python loops over one full score matrix."""
    images = torch.nn.functional.normalize(images.float(), dim=-1)
    texts = torch.nn.functional.normalize(texts.float(), dim=-1)
    owner = [int(i) for i in text_to_image]
    source = list(range(len(images)))  # which original image each gallery row is
    if convention == "diagonal":
        images, source, owner = images[owner], owner, list(range(len(owner)))
    s = (images @ texts.t()).tolist()  # s[i][j], image i vs caption j
    i2t = []
    for i in range(len(images)):
        positives = [j for j in range(len(texts)) if owner[j] == i]
        if positives:
            best = max(s[i][j] for j in positives)
            i2t.append(sum(1 for j in range(len(texts)) if owner[j] != i and s[i][j] >= best))
    t2i = [
        sum(1 for i in range(len(images)) if source[i] != source[owner[j]] and s[i][j] >= s[owner[j]][j])
        for j in range(len(texts))
    ]
    out = {f"i2t_R@{k}": 100.0 * sum(r < k for r in i2t) / len(i2t) for k in ks}
    out.update({f"t2i_R@{k}": 100.0 * sum(r < k for r in t2i) / len(t2i) for k in ks})
    return out


@pytest.mark.parametrize("convention", ["any", "diagonal"])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_brute_force_reference(convention, ties):
    g = torch.Generator().manual_seed(2)
    if ties:  # signed basis vectors: exact cosines in {-1, 0, 1}, many ties
        images = torch.eye(3)[torch.randint(0, 3, (8,), generator=g)] * (torch.randint(0, 2, (8, 1), generator=g) * 2 - 1)
        texts = torch.eye(3)[torch.randint(0, 3, (20,), generator=g)] * (torch.randint(0, 2, (20, 1), generator=g) * 2 - 1)
    else:
        images, texts = torch.randn(8, 5, generator=g), torch.randn(20, 5, generator=g)
    index = torch.randint(0, 7, (20,), generator=g)  # image 7 has no caption: left out of i2t
    ks = (1, 2, 5, 10)
    got = retrieval_recall(images, texts, index, ks=ks, convention=convention, chunk_size=3)
    assert got == pytest.approx(reference_recall(images, texts, index, ks, convention))


def test_half_precision_input_and_list_index():
    images, texts, index = five_caption_case()
    assert retrieval_recall(images.half(), texts.bfloat16(), index, ks=(1,)) == {"i2t_R@1": 100.0, "t2i_R@1": 60.0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text_features": torch.zeros(3, 5)}, "widths differ"),
        ({"image_features": torch.zeros(4)}, "2-D"),
        ({"text_to_image": [0, 1]}, "shape"),
        ({"text_to_image": [0, 1, 4]}, "outside"),
        ({"text_to_image": [0, -1, 1]}, "outside"),
        ({"text_to_image": [0.0, 1.0, 2.0]}, "integer"),
        ({"ks": (1, 0)}, "ks"),
        ({"ks": ()}, "ks"),
        ({"convention": "mean"}, "unknown convention"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_invalid_inputs_raise(kwargs, message):
    arguments = {"image_features": torch.zeros(4, 3), "text_features": torch.zeros(3, 3), "text_to_image": [0, 1, 2], **kwargs}
    with pytest.raises(ValueError, match=message):
        retrieval_recall(**arguments)


def test_alignment_on_hand_vectors():
    # Normalised: images e0, e1; captions t0 = (1,1)/sqrt2 and t2 = e0 of image 0, t1 = -e1 of image 1.
    # matched = (1/sqrt2 + (-1) + 1) / 3
    # gap = || (1/2, 1/2) - ((1/sqrt2 + 1)/3, (1/sqrt2 - 1)/3) ||
    r = 1 / math.sqrt(2)
    images = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    texts = torch.tensor([[1.0, 1.0], [0.0, -5.0], [4.0, 0.0]])
    result = alignment_diagnostics(images, texts, torch.tensor([0, 1, 0]))
    assert result["matched_cosine"] == pytest.approx(r / 3)
    assert result["modality_gap"] == pytest.approx(math.hypot(0.5 - (r + 1) / 3, 0.5 - (r - 1) / 3))


def test_alignment_of_identical_modalities():
    features = torch.randn(5, 4)
    result = alignment_diagnostics(features, 2 * features, torch.arange(5))
    assert result == pytest.approx({"matched_cosine": 1.0, "modality_gap": 0.0}, abs=1e-6)
