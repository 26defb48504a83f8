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

Identical captions of different images (``text_groups``). Data sets where
different images share a caption string (two images both captioned "a
handwritten digit seven") make the other image's identical caption a miss no
model can avoid: the two texts are the same input and score the same. With
``text_groups`` (long [N_txt], ``text_groups[j]`` the id of caption j's distinct
string; :func:`caption_groups` makes it from the strings, exact comparison)
identical caption strings are the same text: captions of one group are
interchangeable, and an image that owns a caption of a group is a correct
answer for every caption of that group. The positives of a query are then:

* ``"any"``, image->text: every caption whose string equals one of the image's
  own captions.
* ``"any"``, text->image: every image that owns a caption with the caption's
  string (its own image among them).
* ``"diagonal"``: pair j's match is the pair itself and the pairs it is
  indistinguishable from by text: image->text, the captions with caption j's
  string (the image's own captions with other strings stay misses, as in the
  diagonal convention); text->image, every copy of an image that owns a caption
  with caption j's string (copies of a correct image are that image, as copies
  of the query's own image already are). With one caption per image the two
  conventions still agree.

The tie rule is unchanged: the rank of a query is the number of candidates that
are NOT positives whose score is >= the score of the best positive, and the query
is a hit at K iff rank < K. A positive never counts against the model; a
different caption string, or an image owning none of the query's string, that
ties with the best positive does. ``text_groups=None`` (the default) makes every
caption its own string: exactly the rule without groups, and the same numbers as
``text_groups=torch.arange(N_txt)``.

Values are percentages (0-100). Similarities are computed ``chunk_size`` query
rows at a time, so memory is O(chunk_size x N) rather than O(N_img x N_txt)
(N = N_img + N_txt), with or without groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def caption_groups(captions: Sequence[str]) -> torch.Tensor:
    """``text_groups`` of :func:`retrieval_recall`: long [len(captions)], equal ids for equal strings (exact comparison),
    numbered in order of first appearance."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(caption, len(ids)) for caption in captions], dtype=torch.long)


def _as_groups(text_groups: torch.Tensor | Sequence[int], num_texts: int, device: torch.device) -> torch.Tensor:
    """Validate caption group ids and return them renumbered 0..G-1 as a long tensor on ``device``."""
    groups = torch.as_tensor(text_groups)
    if groups.dtype.is_floating_point or groups.dtype.is_complex or groups.dtype == torch.bool:
        raise ValueError(f"text_groups must hold integer ids, got dtype {groups.dtype}")
    if groups.shape != (num_texts,):
        raise ValueError(f"text_groups must have shape ({num_texts},) (one group per caption), got {tuple(groups.shape)}")
    return torch.unique(groups, return_inverse=True)[1].to(device=device, dtype=torch.long)


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
        i2t, has_caption = _ranks_of_best_positive(images, texts, image_positives, chunk_size)
        t2i, _ = _ranks_of_best_positive(texts, images, text_positives, chunk_size)
        return i2t[has_caption], t2i  # no caption, no correct answer: excluded

    def pair_positives(start: int, stop: int) -> torch.Tensor:  # pair j -> the captions with caption j's string
        return groups[start:stop, None] == groups[None, :]

    i2t, _ = _ranks_of_best_positive(images[index], texts, pair_positives, chunk_size)
    # text->image on the pair gallery: image i appears once per caption it has, all copies scoring the same,
    # so it is scored once against the images and counted with that weight (an image without captions is no pair).
    copies = torch.bincount(index, minlength=len(images))
    t2i, _ = _ranks_of_best_positive(texts, images, text_positives, chunk_size, key_weight=copies)
    return i2t, t2i


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
