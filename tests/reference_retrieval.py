"""The row-chunked retrieval recall that vlcl used until the one-pass blocked version (issue 18), kept as a
reference: tests check that :func:`vlcl.metrics.retrieval_recall` gives the same numbers to the bit.

Two similarity products (one per direction) over chunks of query rows; definitions in the module docstring of
vlcl.metrics.retrieval."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from vlcl.metrics.retrieval import CONVENTIONS, _as_groups, _as_index, _recall, check_finite


def _check_pairs(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shared validation: L2-normalised float32 images and texts, and the long caption->image index."""
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError(
            f"features must be 2-D [N, d], got image {tuple(image_features.shape)} and text {tuple(text_features.shape)}"
        )
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(f"feature widths differ: image d={image_features.shape[1]}, text d={text_features.shape[1]}")
    if len(image_features) == 0 or len(text_features) == 0:
        raise ValueError(f"need at least one image and one caption, got {len(image_features)} and {len(text_features)}")
    index = _as_index(text_to_image, len(text_features), len(image_features), image_features.device)
    check_finite(image_features, "image features")
    check_finite(text_features, "text features")
    images = F.normalize(image_features.detach().float(), dim=-1)
    texts = F.normalize(text_features.detach().float().to(images.device), dim=-1)
    return images, texts, index


def _ranks_of_targets(
    queries: torch.Tensor, keys: torch.Tensor, targets: torch.Tensor, chunk_size: int, key_groups: torch.Tensor | None = None
) -> torch.Tensor:
    """Rank of key ``targets[q]`` for each query q: how many OTHER keys score >= it (pessimistic ties).

    Keys in the same ``key_groups`` entry as the target (copies of one image) are not competitors.
    """
    ranks = []
    for start in range(0, len(queries), chunk_size):
        scores = queries[start : start + chunk_size] @ keys.t()
        target = targets[start : start + chunk_size, None]
        at_least = scores >= scores.gather(1, target)
        at_least.scatter_(1, target, False)  # the target itself is not a competitor
        if key_groups is not None:
            at_least &= key_groups[None, :] != key_groups[target]
        ranks.append(at_least.sum(1))
    return torch.cat(ranks)


def _ranks_of_best_positive(
    queries: torch.Tensor,
    keys: torch.Tensor,
    positives: Callable[[int, int], torch.Tensor],
    chunk_size: int,
    key_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query q: the number of non-positive keys scoring >= its best positive key, and whether it has one.

    ``positives(start, stop)`` is the bool mask [stop - start, len(keys)] of the positive keys of queries
    start..stop-1; ``key_weight[k]`` is how many candidates key k stands for (default 1 each).
    """
    ranks, has_positive = [], []
    for start in range(0, len(queries), chunk_size):
        scores = queries[start : start + chunk_size] @ keys.t()
        positive = positives(start, start + len(scores))
        best = scores.masked_fill(~positive, float("-inf")).max(1, keepdim=True).values
        beaten = (scores >= best) & ~positive
        ranks.append(beaten.sum(1) if key_weight is None else (beaten * key_weight[None, :]).sum(1))
        has_positive.append(positive.any(1))
    return torch.cat(ranks), torch.cat(has_positive)


def _own_captions(key_owner: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
    """Positives of images start..stop-1: their own captions (``key_owner[k]``: the image of caption k)."""

    def positives(start: int, stop: int) -> torch.Tensor:
        owners = torch.arange(start, stop, device=key_owner.device)
        return key_owner[None, :] == owners[:, None]

    return positives


def _strings_owned(images: torch.Tensor, index: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[len(images), num_groups] bool: image ``images[q]`` owns a caption of group g."""
    rows, captions = (index[None, :] == images[:, None]).nonzero(as_tuple=True)
    owned = torch.zeros(len(images), num_groups, dtype=torch.bool, device=index.device)
    owned[rows, groups[captions]] = True
    return owned


def _owners_of_strings(query_groups: torch.Tensor, index: torch.Tensor, groups: torch.Tensor, num_images: int) -> torch.Tensor:
    """[len(query_groups), num_images] bool: image i owns a caption of group ``query_groups[q]``."""
    rows, captions = (groups[None, :] == query_groups[:, None]).nonzero(as_tuple=True)
    owners = torch.zeros(len(query_groups), num_images, dtype=torch.bool, device=index.device)
    owners[rows, index[captions]] = True
    return owners


def _distinct_string_ranks(images, texts, index, groups, convention):
    """Image->text ranks over distinct strings, one column per string at its best copy: the full matrix, string by
    string (the metric's own code works in blocks and scatters)."""
    scores = torch.nn.functional.normalize(images, dim=-1) @ torch.nn.functional.normalize(texts, dim=-1).t()
    strings = sorted(set(groups.tolist()))
    by_string = torch.stack([scores[:, groups == g].max(1).values for g in strings], 1)
    if convention == "any":
        ranks = []
        for i in range(len(images)):
            own = sorted(set(groups[index == i].tolist()))
            if own:
                best = by_string[i, own].max()
                others = [g for g in strings if g not in own]
                ranks.append(int((by_string[i, others] >= best).sum()))
        return torch.tensor(ranks, dtype=torch.long)
    ranks = []
    for j in range(len(texts)):
        row, own = int(index[j]), int(groups[j])
        others = [g for g in strings if g != own]
        ranks.append(int((by_string[row, others] >= by_string[row, own]).sum()))
    return torch.tensor(ranks, dtype=torch.long)


def _grouped_ranks(
    images: torch.Tensor, texts: torch.Tensor, index: torch.Tensor, groups: torch.Tensor, convention: str, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(i2t, t2i) ranks when captions of one group are the same text (module docstring)."""
    num_groups = int(groups.max()) + 1
    device = texts.device

    def image_positives(start: int, stop: int) -> torch.Tensor:  # images start..stop-1 -> captions of their strings
        return _strings_owned(torch.arange(start, stop, device=device), index, groups, num_groups)[:, groups]

    def text_positives(start: int, stop: int) -> torch.Tensor:  # captions start..stop-1 -> images owning their string
        return _owners_of_strings(groups[start:stop], index, groups, len(images))

    if convention == "any":
        t2i, _ = _ranks_of_best_positive(texts, images, text_positives, chunk_size)
        if num_groups < len(texts):  # image->text ranks distinct strings
            return _distinct_string_ranks(images, texts, index, groups, "any"), t2i
        i2t, has_caption = _ranks_of_best_positive(images, texts, image_positives, chunk_size)
        return i2t[has_caption], t2i  # no caption, no correct answer: excluded

    def pair_positives(start: int, stop: int) -> torch.Tensor:  # pair j -> the captions with caption j's string
        return groups[start:stop, None] == groups[None, :]

    if num_groups < len(texts):
        i2t = _distinct_string_ranks(images, texts, index, groups, "diagonal")
    else:
        i2t, _ = _ranks_of_best_positive(images[index], texts, pair_positives, chunk_size)
    # text->image on the pair gallery: image i appears once per caption it has, all copies scoring the same,
    # so it is scored once against the images and counted with that weight (an image without captions is no pair).
    copies = torch.bincount(index, minlength=len(images))
    t2i, _ = _ranks_of_best_positive(texts, images, text_positives, chunk_size, key_weight=copies)
    return i2t, t2i


def reference_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    *,
    convention: str = "any",
    chunk_size: int = 1024,
    text_groups: torch.Tensor | Sequence[int] | None = None,
) -> dict[str, float]:
    """Recall@K in percent, keys ``i2t_R@{k}`` and ``t2i_R@{k}``; see the module docstring.

    ``text_groups`` (long [N_txt], e.g. :func:`caption_groups` of the caption strings): captions with one id are
    the same text, so an identical caption of another image is a correct answer; None: every caption distinct.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; expected one of {CONVENTIONS}")
    ks = tuple(ks)
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of integers >= 1, got {list(ks)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    images, texts, index = _check_pairs(image_features, text_features, text_to_image)
    ks = tuple(int(k) for k in ks)

    if text_groups is not None:
        groups = _as_groups(text_groups, len(texts), texts.device)
        i2t, t2i = _grouped_ranks(images, texts, index, groups, convention, chunk_size)
    elif convention == "any":
        i2t, has_caption = _ranks_of_best_positive(images, texts, _own_captions(index), chunk_size)
        i2t = i2t[has_caption]  # no caption, no correct answer: excluded
        t2i = _ranks_of_targets(texts, images, index, chunk_size)
    else:
        paired = images[index]  # row j: the image of caption j
        diagonal = torch.arange(len(texts), device=texts.device)
        i2t = _ranks_of_targets(paired, texts, diagonal, chunk_size)
        t2i = _ranks_of_targets(texts, paired, diagonal, chunk_size, key_groups=index)
    return {**_recall(i2t, ks, "i2t"), **_recall(t2i, ks, "t2i")}
