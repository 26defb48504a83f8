"""Image-text retrieval recall@K, pure functions over feature tensors.

Definitions. Image features I [N_img, d] and text features T [N_txt, d] are
L2-normalised and compared by cosine similarity, computed in float32.
``text_to_image[j]`` is the index of caption j's image; an image may have
several captions (5 in Flickr30k and MS-COCO).

``convention="any"`` (default), as in LAION's CLIP_benchmark
(``metrics/zeroshot_retrieval.py``) and the CLIP paper's Flickr30k / COCO
tables:

* text->image: caption j is a hit at K when its image is among the K images
  most similar to it.
* image->text: image i is a hit at K when ANY of its captions is among the K
  captions most similar to it. Images that have no caption have no correct
  answer and are left out of the image->text average (CLIP_benchmark's sets
  give every image captions, so the two agree there).

``convention="diagonal"``, open_clip's in-training metric (``get_clip_metrics``)
and the C-CLIP authors' code: caption j is paired with a copy of its image,
``image_features[text_to_image[j]]``, and on the N_txt x N_txt pair matrix only
the exact pair (the diagonal) is a match, in both directions. With several
captions per image, image->text counts the image's other captions as misses,
and text->image sees every other image once per caption; the copies of the
query's own image tie with the target exactly and are not counted as
competitors (they are the same image). The two conventions agree when every
image has one caption.

Ties are counted pessimistically: the rank of a query is the number of
non-matching candidates whose score is >= the score of the (best) matching
candidate, and the query is a hit at K iff rank < K. ``topk``/``argsort``
based code breaks ties by position instead, which lets a degenerate model
(all features equal) score 100%; here it scores chance or worse.

Non-finite features (NaN or inf, e.g. from a model whose weights diverged)
are an error, :class:`NonFiniteError`, never a score: every comparison with
NaN is false, so under the ">= the target" rule a NaN query would have no
competitor and rank first, and a broken model would score 100%.

Values are percentages (0-100). Similarities are computed ``chunk_size`` query
rows at a time, so memory is O(chunk_size x N) rather than O(N_img x N_txt).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

CONVENTIONS = ("any", "diagonal")


class NonFiniteError(ValueError):
    """Features or scores hold NaN or inf: nothing meaningful can be scored."""


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` and how many of its rows hold NaN or inf."""
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad_rows = int((~finite).reshape(len(tensor), -1).any(1).sum()) if tensor.ndim else 1
        raise NonFiniteError(f"{what}: {bad_rows} of {len(tensor) if tensor.ndim else 1} rows hold NaN or inf")


def _as_index(text_to_image: torch.Tensor | Sequence[int], num_texts: int, num_images: int, device: torch.device) -> torch.Tensor:
    """Validate caption->image indices and return them as a long tensor on ``device``."""
    index = torch.as_tensor(text_to_image)
    if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        raise ValueError(f"text_to_image must hold integer indices, got dtype {index.dtype}")
    if index.shape != (num_texts,):
        raise ValueError(f"text_to_image must have shape ({num_texts},) (one image per caption), got {tuple(index.shape)}")
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= num_images:
        raise ValueError(f"text_to_image holds indices in [{low}, {high}], outside [0, {num_images - 1}]")
    return index.to(device=device, dtype=torch.long)


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
    queries: torch.Tensor, keys: torch.Tensor, key_owner: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For query q whose positives are the keys k with key_owner[k] == q: the number of
    negatives scoring >= the best positive, and whether q has any positive at all."""
    ranks, has_positive = [], []
    for start in range(0, len(queries), chunk_size):
        scores = queries[start : start + chunk_size] @ keys.t()
        owners = torch.arange(start, start + len(scores), device=scores.device)
        positive = key_owner[None, :] == owners[:, None]
        best = scores.masked_fill(~positive, float("-inf")).max(1, keepdim=True).values
        ranks.append(((scores >= best) & ~positive).sum(1))
        has_positive.append(positive.any(1))
    return torch.cat(ranks), torch.cat(has_positive)


def _percent(hits: torch.Tensor) -> float:
    """Share of True in percent, from integer counts so that 7/20 gives exactly 35.0."""
    return 100.0 * int(hits.sum()) / hits.numel()


def _recall(ranks: torch.Tensor, ks: Sequence[int], prefix: str) -> dict[str, float]:
    return {f"{prefix}_R@{k}": _percent(ranks < k) for k in ks}


def retrieval_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    *,
    convention: str = "any",
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@K in percent, keys ``i2t_R@{k}`` and ``t2i_R@{k}``; see the module docstring."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; expected one of {CONVENTIONS}")
    ks = tuple(ks)
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of integers >= 1, got {list(ks)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    images, texts, index = _check_pairs(image_features, text_features, text_to_image)
    ks = tuple(int(k) for k in ks)

    if convention == "any":
        i2t, has_caption = _ranks_of_best_positive(images, texts, index, chunk_size)
        i2t = i2t[has_caption]  # no caption, no correct answer: excluded
        t2i = _ranks_of_targets(texts, images, index, chunk_size)
    else:
        paired = images[index]  # row j: the image of caption j
        diagonal = torch.arange(len(texts), device=texts.device)
        i2t = _ranks_of_targets(paired, texts, diagonal, chunk_size)
        t2i = _ranks_of_targets(texts, paired, diagonal, chunk_size, key_groups=index)
    return {**_recall(i2t, ks, "i2t"), **_recall(t2i, ks, "t2i")}
