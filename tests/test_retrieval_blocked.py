"""The one-pass, blocked retrieval recall gives the numbers of the two-product, row-chunked computation it replaced."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from reference_retrieval import reference_recall
from vlcl.metrics.retrieval import TILE_BYTES, _Unit, retrieval_recall


def exact_features(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    """Rows with four entries of +-1 (norm 2): every cosine is an exact multiple of 1/4, so ties are exact ties
    whatever the order of the sums."""
    x = torch.zeros(n, d)
    for row in range(n):
        x[row, torch.randperm(d, generator=g)[:4]] = torch.randint(0, 2, (4,), generator=g).float() * 2 - 1
    return x


def case(seed: int, exact: bool):
    g = torch.Generator().manual_seed(seed)
    images, texts = int(torch.randint(1, 25, (1,), generator=g)), int(torch.randint(1, 70, (1,), generator=g))
    if exact:
        image_features, text_features = exact_features(images, 7, g), exact_features(texts, 7, g)
    else:
        image_features, text_features = torch.randn(images, 5, generator=g), torch.randn(texts, 5, generator=g)
    index = torch.randint(0, images, (texts,), generator=g)
    if seed % 2:
        index = torch.sort(index).values  # captions grouped by image, as data sets list them
    duplicates = torch.randint(0, max(1, texts // 3), (texts,), generator=g)  # caption strings used several times
    return image_features, text_features, index, duplicates


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("exact", [False, True], ids=["random", "exact-ties"])
def test_blocked_recall_equals_the_row_chunked_reference(seed, exact):
    images, texts, index, duplicates = case(seed, exact)
    for convention, groups, block in itertools.product(("any", "diagonal"), (None, duplicates), (64, 1 << 10, 1 << 20)):
        expected = reference_recall(images, texts, index, ks=(1, 2, 5), convention=convention, chunk_size=7, text_groups=groups)
        got = retrieval_recall(images, texts, index, ks=(1, 2, 5), convention=convention, block_bytes=block, text_groups=groups)
        assert got == expected, (convention, groups is not None, block)


@pytest.mark.parametrize("convention", ["any", "diagonal"])
def test_tiles_computed_again_when_none_can_be_kept(convention):
    # a budget of one tile keeps nothing: tiles whose thresholds are not final when first computed (duplicate
    # captions of far-apart images) are computed a second time, by the same product, and give the same numbers
    images, texts, index, duplicates = case(3, exact=True)
    expected = reference_recall(images, texts, index, convention=convention, chunk_size=5, text_groups=duplicates)
    for rows in (1, 2, 3):
        assert retrieval_recall(images, texts, index, convention=convention, block_bytes=48, chunk_size=rows, text_groups=duplicates) == expected


def test_unit_rows_equal_normalize_to_the_bit():
    features = torch.randn(50, 33) * torch.rand(50, 1) * 100
    unit = _Unit(features)
    assert torch.equal(torch.cat([unit.rows(slice(i, i + 7)) for i in range(0, 50, 7)]), F.normalize(features, dim=-1))
    picked = torch.tensor([3, 49, 0, 3])
    assert torch.equal(unit.rows(picked), F.normalize(features, dim=-1)[picked])


def test_the_budget_does_not_change_the_numbers_at_a_realistic_size():
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(600, 64, generator=g), torch.randn(3000, 64, generator=g)
    index = torch.arange(3000) // 5
    texts[::7] = texts[1::7][: len(texts[::7])]  # some identical captions across images
    groups = torch.arange(3000)
    groups[::7] = groups[1::7][: len(groups[::7])]
    expected = reference_recall(images, texts, index, convention="any", chunk_size=1024, text_groups=groups)
    for block in (TILE_BYTES // 64, TILE_BYTES, 4 * TILE_BYTES):
        assert retrieval_recall(images, texts, index, block_bytes=block, text_groups=groups) == expected
