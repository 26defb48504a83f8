"""Retrieval recall@K and alignment diagnostics on hand-built and random features."""

from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from vlcl.metrics import alignment_diagnostics, retrieval_recall
from vlcl.metrics.retrieval import caption_groups

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
    images, texts = torch.randn(40, 2), torch.randn(40, 2)  # features (80 values) smaller than a tile
    with LargestTensor() as mode:
        retrieval_recall(images, texts, torch.arange(40), convention=convention, block_bytes=8 * 3 * 6)
    assert mode.numel <= 200  # tiles of 18 scores and per-tile bookkeeping (196 tiles), never the 40 x 40 matrix


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


# -- identical caption strings of different images (text_groups) -------------------------------------------


def shared_caption_case(nearest_is_other):
    """Images e0, e1, e2 with one caption each; images 0 and 1 are both captioned "a handwritten digit seven".

    ``nearest_is_other``: each of the two "seven" captions is nearer to the OTHER image (0.8) than to its own
    (0.6); else both have the same features (as an encoder gives for one string), tying at 1/sqrt2 with both."""
    if nearest_is_other:
        seven_0, seven_1 = torch.tensor([0.6, 0.8, 0.0]), torch.tensor([0.8, 0.6, 0.0])
    else:
        seven_0 = seven_1 = torch.tensor([1.0, 1.0, 0.0])
    texts = torch.stack([seven_0, seven_1, E[2]])
    captions = ["a handwritten digit seven", "a handwritten digit seven", "a handwritten digit two"]
    return E.clone(), texts, [0, 1, 2], captions


@pytest.mark.parametrize("nearest_is_other", [True, False])
@pytest.mark.parametrize("convention", ["any", "diagonal"])
def test_identical_caption_of_another_image_is_a_hit(convention, nearest_is_other):
    images, texts, index, captions = shared_caption_case(nearest_is_other)
    # Old rule: image 0's best own caption is beaten by (or ties with) image 1's "seven", and caption 0 "seven"
    # finds image 1 first (or tied): a miss at K=1 for both "seven" images, in both directions -> 1/3.
    old = retrieval_recall(images, texts, index, ks=(1, 2), convention=convention)
    assert old == pytest.approx({"i2t_R@1": 100 / 3, "i2t_R@2": 100.0, "t2i_R@1": 100 / 3, "t2i_R@2": 100.0})
    # New rule: the other "seven" caption is the same text, so image 0 retrieving it is right, and image 1
    # owns "seven" too, so caption 0 retrieving image 1 is right: every query a hit at K=1.
    groups = caption_groups(captions)
    assert groups.tolist() == [0, 0, 1]
    new = retrieval_recall(images, texts, index, ks=(1, 2), convention=convention, text_groups=groups)
    assert new == {"i2t_R@1": 100.0, "i2t_R@2": 100.0, "t2i_R@1": 100.0, "t2i_R@2": 100.0}


def test_tie_with_a_different_caption_string_still_counts_against_the_model():
    # Image 0 = e0 captioned "seven"; image 1 = e1 captioned "seven" and "a digit". All three captions are
    # e0 + e1, so every image-caption score ties at 1/sqrt2.
    images, texts = E[:2].clone(), torch.tensor([[1.0, 1.0, 0.0]] * 3)
    index, groups = [0, 1, 1], caption_groups(["seven", "seven", "a digit"])
    # any, i2t: image 0's positives are both "seven" captions; "a digit" is another text that ties: rank 1.
    #   Image 1 owns both strings, every caption is a positive: rank 0 -> R@1 = 1/2.
    # any, t2i: "seven" captions: both images own "seven", rank 0. "a digit": only image 1 owns it, image 0
    #   ties: rank 1 -> R@1 = 2/3.
    recall = retrieval_recall(images, texts, index, ks=(1, 2), text_groups=groups)
    assert recall == pytest.approx({"i2t_R@1": 50.0, "i2t_R@2": 100.0, "t2i_R@1": 200 / 3, "t2i_R@2": 100.0})
    # diagonal, pairs (e0, "seven"), (e1, "seven"), (e1, "a digit"); i2t: pairs 0 and 1 have both "seven" captions
    #   as positives and tie with "a digit" (rank 1); pair 2's positive "a digit" ties with the "seven" string,
    #   one text however many copies (rank 1). t2i: "seven" -> copies of images 0 and 1 all positives (rank 0); "a digit" -> image 1's two copies
    #   positives, image 0's one copy ties (rank 1).
    diagonal = retrieval_recall(images, texts, index, ks=(1, 2, 3), convention="diagonal", text_groups=groups)
    assert diagonal == pytest.approx(
        {"i2t_R@1": 0.0, "i2t_R@2": 100.0, "i2t_R@3": 100.0, "t2i_R@1": 200 / 3, "t2i_R@2": 100.0, "t2i_R@3": 100.0}
    )


@pytest.mark.parametrize("convention", ["any", "diagonal"])
def test_distinct_captions_give_the_old_numbers(convention):
    g = torch.Generator().manual_seed(3)
    images, texts = torch.randn(12, 6, generator=g), torch.randn(40, 6, generator=g)
    index = torch.randint(0, 11, (40,), generator=g)  # several captions per image; image 11 has none
    ks = (1, 2, 5, 10)
    old = retrieval_recall(images, texts, index, ks=ks, convention=convention, chunk_size=7)
    assert retrieval_recall(images, texts, index, ks=ks, convention=convention, chunk_size=7, text_groups=torch.arange(40)) == old
    scattered = (torch.randperm(40, generator=g) * 3 + 5).tolist()  # any distinct ids, as a list
    assert retrieval_recall(images, texts, index, ks=ks, convention=convention, chunk_size=7, text_groups=scattered) == old


def test_copies_of_a_string_occupy_one_rank_by_hand():
    """Image 0 = e0 captioned "zero"; image 1 = e1 captioned "one" three times (three copies of one string), whose
    features lie nearer image 0 than "zero" does. Ranked over captions, the three copies of "one" fill ranks 0-2
    before "zero" (rank 3): R@1 = R@2 = R@3 = 50. Ranked over distinct texts, "one" is one text (rank 0) and
    "zero" is rank 1 for image 0: R@1 = 50, R@2 = 100. Text->image ranks images and is unchanged: "zero" finds
    image 0 first (0.6 vs 0); each "one" scores image 0 at 0.8 and image 1 at 0.6 (rank 1)."""
    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    zero, one = torch.tensor([0.6, 0.0, 0.8]), torch.tensor([0.8, 0.6, 0.0])
    texts, index = torch.stack([zero, one, one, one]), [0, 1, 1, 1]
    separate = retrieval_recall(images, texts, index, ks=(1, 2, 3, 4))
    assert separate == {**{f"i2t_R@{k}": 50.0 for k in (1, 2, 3)}, "i2t_R@4": 100.0, "t2i_R@1": 25.0, **{f"t2i_R@{k}": 100.0 for k in (2, 3, 4)}}
    grouped = retrieval_recall(images, texts, index, ks=(1, 2, 3, 4), text_groups=caption_groups(["zero", "one", "one", "one"]))
    assert grouped == {"i2t_R@1": 50.0, **{f"i2t_R@{k}": 100.0 for k in (2, 3, 4)}, "t2i_R@1": 25.0, **{f"t2i_R@{k}": 100.0 for k in (2, 3, 4)}}


def test_random_features_over_ten_strings_score_chance_of_ten_texts():
    """The issue's case: 100 random images, 10 caption strings of 10 copies each. Over 10 distinct texts R@10 is
    100 by construction, and R@1 / R@5 lie near chance (10 / 50), not R@1 = R@5 = R@10."""
    g = torch.Generator().manual_seed(0)
    images, strings = torch.randn(100, 16, generator=g), [f"digit {i % 10}" for i in range(100)]
    texts = torch.randn(10, 16, generator=g)[torch.arange(100) % 10]  # one string, one feature
    recall = retrieval_recall(images, texts, torch.arange(100), text_groups=caption_groups(strings))
    assert recall["i2t_R@10"] == 100.0 and recall["i2t_R@1"] < recall["i2t_R@5"] < recall["i2t_R@10"]
    assert 0 < recall["i2t_R@1"] <= 25 and 30 <= recall["i2t_R@5"] <= 70


def grouped_reference(images, texts, text_to_image, groups, ks, convention):
    """Brute force from the module docstring's rule with text groups, plain Python over one full score matrix."""
    images = torch.nn.functional.normalize(images.float(), dim=-1)
    texts = torch.nn.functional.normalize(texts.float(), dim=-1)
    owner, group = [int(i) for i in text_to_image], [int(x) for x in groups]
    s = (images @ texts.t()).tolist()  # s[i][j], image i vs caption j
    captions, gallery = range(len(texts)), range(len(images))
    owners_of = {x: {owner[k] for k in captions if group[k] == x} for x in set(group)}  # images owning a string

    def rank(scores, positive):  # non-positives scoring >= the best positive
        best = max(scores[k] for k in positive)
        return sum(1 for k in range(len(scores)) if k not in positive and scores[k] >= best)

    def string_rank(row, positive):  # image->text: distinct strings, each at its best copy
        best_copy = {x: max(row[k] for k in captions if group[k] == x) for x in set(group)}
        best = max(best_copy[x] for x in positive)
        return sum(1 for x in best_copy if x not in positive and best_copy[x] >= best)

    if convention == "any":
        i2t = []
        for i in gallery:
            own = {group[k] for k in captions if owner[k] == i}
            if own:
                i2t.append(string_rank(s[i], own))
        t2i = [rank([s[i][j] for i in gallery], owners_of[group[j]]) for j in captions]
    else:  # the pair gallery: pair k = (image owner[k], caption k)
        i2t = [string_rank(s[owner[j]], {group[j]}) for j in captions]
        t2i = [
            rank([s[owner[k]][j] for k in captions], {k for k in captions if owner[k] in owners_of[group[j]]})
            for j in captions
        ]
    out = {f"i2t_R@{k}": 100.0 * sum(r < k for r in i2t) / len(i2t) for k in ks}
    out.update({f"t2i_R@{k}": 100.0 * sum(r < k for r in t2i) / len(t2i) for k in ks})
    return out


@pytest.mark.parametrize("convention", ["any", "diagonal"])
@pytest.mark.parametrize("ties", [False, True])
def test_grouped_matches_brute_force_reference(convention, ties):
    g = torch.Generator().manual_seed(4)
    if ties:  # signed basis vectors: exact cosines in {-1, 0, 1}, many ties
        images = torch.eye(3)[torch.randint(0, 3, (8,), generator=g)] * (torch.randint(0, 2, (8, 1), generator=g) * 2 - 1)
        texts = torch.eye(3)[torch.randint(0, 3, (20,), generator=g)] * (torch.randint(0, 2, (20, 1), generator=g) * 2 - 1)
    else:
        images, texts = torch.randn(8, 5, generator=g), torch.randn(20, 5, generator=g)
    index = torch.randint(0, 7, (20,), generator=g)  # image 7 has no caption: left out of "any" i2t
    groups = torch.randint(0, 6, (20,), generator=g)  # 20 captions, at most 6 distinct strings
    ks = (1, 2, 5, 10)
    got = retrieval_recall(images, texts, index, ks=ks, convention=convention, chunk_size=3, text_groups=groups)
    assert got == pytest.approx(grouped_reference(images, texts, index, groups, ks, convention))


@pytest.mark.parametrize("convention", ["any", "diagonal"])
def test_grouped_similarities_are_never_materialised_in_full(convention):
    images, texts = torch.randn(20, 2), torch.randn(40, 2)  # two captions per image, 10 distinct strings
    index, groups = torch.arange(40) // 2, torch.arange(40) % 10
    with LargestTensor() as mode:
        retrieval_recall(images, texts, index, convention=convention, block_bytes=8 * 3 * 6, text_groups=groups)
    assert mode.numel < 20 * 40 // 4  # tiles of 18 scores, positives and bookkeeping; never the 20 x 40 matrix


def test_caption_groups_compare_exact_strings():
    assert caption_groups(["a cat", "a dog", "a cat", "A cat", "a cat "]).tolist() == [0, 1, 0, 2, 3]
    assert caption_groups([]).tolist() == []


@pytest.mark.parametrize(
    ("groups", "message"), [([0, 1], "shape"), ([0.0, 1.0, 2.0], "integer"), ([True, False, True], "integer")]
)
def test_invalid_text_groups_raise(groups, message):
    with pytest.raises(ValueError, match=message):
        retrieval_recall(torch.eye(3), torch.eye(3), [0, 1, 2], text_groups=groups)


def test_evaluator_scores_identical_captions_as_one_text(tiny_clip_dir):
    # Two identical images, both captioned "a red circle": every score ties. The old rule scored 0 (the other
    # image's identical caption, and the other identical image, tie with the target); both are the right answer.
    import numpy as np

    from vlcl.config import EvalConfig
    from vlcl.data.benchmark import Benchmark, RetrievalSet
    from vlcl.engine.evaluate import Evaluator
    from vlcl.models.loading import load_clip

    bundle = load_clip(str(tiny_clip_dir))
    images = np.full((2, 16, 16, 3), 128, dtype=np.uint8)
    twins = RetrievalSet.from_caption_lists("twins", images, [["a red circle"], ["a red circle"]])
    benchmark = Benchmark("twins", [], heldout_retrieval=[twins])
    for convention in ("any", "diagonal"):
        config = EvalConfig(ks=[1], recall_convention=convention)
        evaluator = Evaluator(benchmark, bundle.tokenizer, bundle.preprocess, bundle.context_length, config)
        with torch.no_grad():
            recall = evaluator.retrieval(bundle.model, twins)["retrieval"]
        assert recall == {"i2t_R@1": 100.0, "t2i_R@1": 100.0, "mean_R@1": 100.0}, convention


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
