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
answer for every caption of that group.

Image->text ranks distinct texts: a group of identical strings is one candidate
and occupies one rank, scored by its best copy (the copies of one string encode
to the same features; the best copy makes the rule exact when rounding gives
them different ones). Without this, the copies of the nearest wrong string fill
the top K: with 10 strings of 10 copies each, a wrong string ranks its 10 copies
before the right one and R@1 = R@5 = R@10. Ranked over distinct texts, random
features give about 10 / 50 / 100 there, as a gallery of 10 texts should.
Text->image ranks images, each once, and is unchanged by this. The positives of
a query are then:

* ``"any"``, image->text: the strings of the image's own captions; the other
  strings are its candidates.
* ``"any"``, text->image: every image that owns a caption with the caption's
  string (its own image among them).
* ``"diagonal"``: pair j's match is the pair itself and the pairs it is
  indistinguishable from by text: image->text, caption j's string (the image's
  own captions with other strings stay misses, as in the diagonal convention,
  one rank per string); text->image, every copy of an image that owns a caption
  with caption j's string (copies of a correct image are that image, as copies
  of the query's own image already are). With one caption per image the two
  conventions still agree.

The tie rule is unchanged: the rank of a query is the number of candidates that
are NOT positives (distinct strings, for image->text) whose score is >= the score
of the best positive, and the query is a hit at K iff rank < K. A positive never
counts against the model; a different caption string, or an image owning none of
the query's string, that ties with the best positive does. ``text_groups=None`` (the default) makes every
caption its own string: exactly the rule without groups, and the same numbers as
``text_groups=torch.arange(N_txt)``.

Values are percentages (0-100).

How it is computed (one pass, memory by a budget). One similarity matrix
S = I T^T serves both directions: the rank of caption j (text->image) counts
down column j, the rank of an image (image->text) along its row. S is cut into
tiles, a block of images x a slab of captions, of at most ``TILE_BYTES``
(16 MB with the comparison mask: tiles that stay in the processor's caches
count fastest); each tile is computed once, by one matrix product, and each of
its scores is compared with the threshold of its column (the caption's best
positive) and of its row (the image's best positive), adding to both
directions' counts. A threshold is a score of the same matrix, never a dot
product computed apart (a value rounded differently could break a tie in the
model's favour): captions are ordered by their image so that an image and its
captions meet in one tile, and the tiles that hold positives are computed
first; a tile is counted once the thresholds of its rows and columns are
final, and one whose are not yet (duplicate caption strings spread over the
data, an image's captions cut across two slabs) is kept while the kept tiles
fit in ``block_bytes``, or else computed again, by the same product, in the
sweep over the other tiles. Memory: the features, ``block_bytes``, and
bookkeeping linear in the number of captions and positives.

The numbers are those of the row-chunked computation vlcl used before, which
computed one product per direction (``tests/reference_retrieval.py`` keeps it;
the tests compare the two on random features and on features whose scores are
exact, so that ties are exact, in both conventions, with and without duplicate
captions, at many block sizes). The two can differ only where two
mathematically equal scores were rounded differently by the old code's two
products (S and S^T), so that it could rank them one way in one direction and
the other way in the other; one matrix now decides both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vlcl.errors import RunFailedError

CONVENTIONS = ("any", "diagonal")


class NonFiniteError(RunFailedError, ValueError):
    """Features or scores hold NaN or inf: nothing meaningful can be scored."""


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` and how many of its rows hold NaN or inf.

    Checked a few million values at a time, so that a large gallery needs no full-size mask."""
    rows = tensor.reshape(len(tensor), -1) if tensor.ndim else tensor.reshape(1, 1)
    step = max(1, (1 << 22) // max(1, rows.shape[1]))  # a few million values at a time: no full-size copy
    if rows.is_floating_point() and all(
        bool(torch.isfinite(rows[i : i + step].sum(dtype=torch.float64))) for i in range(0, len(rows), step)
    ):
        return  # a NaN or an inf makes its block's sum NaN or inf; finite sums mean every value is finite
    if all(bool(torch.isfinite(rows[i : i + step]).all()) for i in range(0, len(rows), step)):
        return
    bad_rows = sum(int((~torch.isfinite(rows[i : i + step])).any(1).sum()) for i in range(0, len(rows), step))
    raise NonFiniteError(f"{what}: {bad_rows} of {len(rows)} rows hold NaN or inf")


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
    """Shared validation: float32 images and texts on one device, and the long caption->image index."""
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
    images = image_features.detach().float()
    return images, text_features.detach().float().to(images.device), index


class _Unit:
    """Rows of a feature matrix scaled to unit length on demand, to the bit as ``F.normalize`` scales them:
    the norms are computed once (as ``F.normalize`` does, over the whole tensor), each block is divided when used,
    so no normalised copy of a large gallery is kept."""

    def __init__(self, features: torch.Tensor, eps: float = 1e-12):
        self.features = features
        self.norms = features.norm(2, 1, keepdim=True).clamp_min(eps)

    def rows(self, which: slice | torch.Tensor) -> torch.Tensor:
        return self.features[which] / self.norms[which]


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


def _percent(hits: torch.Tensor) -> float:
    """Share of True in percent, from integer counts so that 7/20 gives exactly 35.0."""
    return 100.0 * int(hits.sum()) / hits.numel()


def _recall(ranks: torch.Tensor, ks: Sequence[int], prefix: str) -> dict[str, float]:
    return {f"{prefix}_R@{k}": _percent(ranks < k) for k in ks}


DEFAULT_BLOCK_BYTES = 256 * 2**20
"""``retrieval_recall``'s memory budget for the similarity tiles: the tile being counted and the tiles kept until
their thresholds are final."""

TILE_BYTES = 16 * 2**20
"""Largest tile: tiles whose scores stay in the processor's caches count faster than large ones (measured in
benchmarks/retrieval_scale.py), so a larger budget keeps more tiles rather than making them larger."""

_BYTES_PER_SCORE = 8  # a float32 score, its bool comparison mask, a bool row subset, slack for the int32 counts


def _join(keys: torch.Tensor, table_keys: torch.Tensor, table_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every match of ``keys`` in a table: pairs (a, table_values[b]) for each b with ``table_keys[b] == keys[a]``."""
    order = torch.argsort(table_keys, stable=True)
    sorted_keys, values = table_keys[order], table_values[order]
    first = torch.searchsorted(sorted_keys, keys)
    counts = torch.searchsorted(sorted_keys, keys, right=True) - first
    left = torch.repeat_interleave(torch.arange(len(keys), device=keys.device), counts)
    offset = torch.arange(len(left), device=keys.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return left, values[first[left] + offset]


@dataclass
class _Queries:
    """Ranked queries of one direction: the entries of S that are their positives, and what is known of them.

    Entry e is S[rows[e], cols[e]] and belongs to query ``owner[e]``; a query's threshold is the largest score
    of its entries (its best positive), its rank the number of other candidates scoring at least that."""

    rows: torch.Tensor
    cols: torch.Tensor
    owner: torch.Tensor
    count: int

    def __post_init__(self) -> None:
        device = self.rows.device
        self.threshold = torch.full((self.count,), float("-inf"), device=device)
        self.rank = torch.zeros(self.count, dtype=torch.long, device=device)


def _positives(index: torch.Tensor, groups: torch.Tensor, convention: str, num_images: int) -> tuple[_Queries, _Queries, torch.Tensor]:
    """(text->image queries, one per caption; image->text queries; the image row of each image->text query).

    Caption j's positives are the images that own a caption with j's string. Under ``any`` an image with
    captions is one query whose positives are the captions with its strings; under ``diagonal`` pair j (image
    ``index[j]``, caption j) is one, whose positives are the captions with j's string (module docstring)."""
    captions = torch.arange(len(index), device=index.device)
    owned = torch.unique(groups * num_images + index)  # (string, image) pairs: image owns a caption of the string
    owner_string, owner_image = owned // num_images, owned % num_images
    caption, image = _join(groups, owner_string, owner_image)
    to_image = _Queries(image, caption, caption, len(index))
    if convention == "any":
        query_row = torch.unique(owner_image)  # images that have a caption
        pair, caption = _join(owner_string, groups, captions)
        query = torch.searchsorted(query_row, owner_image)[pair]
    else:
        query_row = index
        query, caption = _join(groups, groups, captions)
    return to_image, _Queries(query_row[query], caption, query, len(query_row)), query_row


@dataclass
class _Tiling:
    """Image blocks (contiguous rows) x caption slabs (runs of captions ordered by their image)."""

    block_starts: list[int]
    slab_starts: list[int]
    order: torch.Tensor  # captions by image (stable): slab l is order[slab_starts[l]:slab_starts[l + 1]]
    position: torch.Tensor  # position of each caption in ``order``

    @property
    def blocks(self) -> int:
        return len(self.block_starts) - 1

    def tile_of(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Tile id (slab-major: slab * blocks + block) of entries (rows, cols)."""
        device = rows.device
        block = torch.searchsorted(torch.tensor(self.block_starts, device=device), rows, right=True) - 1
        slab = torch.searchsorted(torch.tensor(self.slab_starts, device=device), self.position[cols], right=True) - 1
        return slab * self.blocks + block


def _tiling(index: torch.Tensor, num_images: int, tile_bytes: int, max_rows: int | None) -> _Tiling:
    """Tiles of about ``tile_bytes``, square in scores per side (b images x the captions of about b images), so that
    an image block and its captions' slab meet in one tile; a slab is cut where an image block ends."""
    scores = max(1, tile_bytes // _BYTES_PER_SCORE)
    per_image = max(len(index) / num_images, 1e-9)
    rows = max(1, min(num_images, math.isqrt(max(1, int(scores / per_image)))))
    if max_rows is not None:
        rows = min(rows, max_rows)
    columns = max(1, scores // rows)
    order = torch.argsort(index, stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order), device=order.device)
    block_starts = list(range(0, num_images, rows)) + [num_images]
    cuts = torch.searchsorted(index[order], torch.tensor(block_starts, device=index.device)).tolist()
    slab_starts = [0]
    for start, stop in zip(cuts[:-1], cuts[1:]):
        slab_starts += list(range(start + columns, stop, columns)) + ([stop] if stop > slab_starts[-1] else [])
    return _Tiling(block_starts, slab_starts, order, position)


class _Sweep:
    """Computes tiles of S = I T^T and adds each to both directions' ranks (module docstring)."""

    def __init__(self, images: torch.Tensor, texts: torch.Tensor, tiling: _Tiling, to_image: _Queries, to_text: _Queries,
                 query_row: torch.Tensor, weights: torch.Tensor | None):
        self.images, self.texts, self.tiling = _Unit(images), _Unit(texts), tiling
        self.to_image, self.to_text, self.weights = to_image, to_text, weights
        self.slots = self._slots(query_row)
        self.entries = {name: self._by_tile(queries) for name, queries in (("to_image", to_image), ("to_text", to_text))}

    def _slots(self, query_row: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, list[int]]]:
        """Image->text queries sharing a row (diagonal: one per caption of the image) take one slot each, so that a
        tile compares each row with one threshold per slot: per slot, (its queries by row, their rows, the first of
        them in each image block)."""
        order = torch.argsort(query_row, stable=True)
        rows = query_row[order]
        slot = torch.arange(len(order), device=order.device) - torch.searchsorted(rows, rows)
        starts = torch.tensor(self.tiling.block_starts, device=rows.device)
        slots = []
        for m in range(int(slot.max()) + 1 if len(slot) else 0):
            queries, their_rows = order[slot == m], rows[slot == m]  # still sorted by row
            slots.append((queries, their_rows, torch.searchsorted(their_rows, starts).tolist()))
        return slots

    def _by_tile(self, queries: _Queries) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Entries sorted by tile: (their tile ids, the permutation, the first entry of each tile id)."""
        tiles = self.tiling.tile_of(queries.rows, queries.cols)
        order = torch.argsort(tiles, stable=True)
        count = self.tiling.blocks * (len(self.tiling.slab_starts) - 1)
        bounds = torch.searchsorted(tiles[order], torch.arange(count + 1, device=tiles.device)).tolist()
        return tiles[order], order, bounds

    def tile_ids(self) -> list[int]:
        return list(range(self.tiling.blocks * (len(self.tiling.slab_starts) - 1)))

    def where(self, tile: int) -> tuple[int, int, torch.Tensor]:
        """(first row, last row + 1, the slab's captions) of a tile."""
        slab, block = divmod(tile, self.tiling.blocks)
        starts = self.tiling.slab_starts
        return self.tiling.block_starts[block], self.tiling.block_starts[block + 1], self.tiling.order[starts[slab] : starts[slab + 1]]

    def scores(self, tile: int, slab_texts: torch.Tensor | None = None) -> torch.Tensor:
        first, stop, captions = self.where(tile)
        texts = self.texts.rows(captions) if slab_texts is None else slab_texts
        return self.images.rows(slice(first, stop)) @ texts.t()

    def _local(self, tile: int, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A tile's entries of one direction: (entry ids, local row, local column)."""
        _, order, bounds = self.entries[name]
        entries = order[bounds[tile] : bounds[tile + 1]]
        queries = getattr(self, name)
        first, _, _ = self.where(tile)
        slab_start = self.tiling.slab_starts[tile // self.tiling.blocks]
        return entries, queries.rows[entries] - first, self.tiling.position[queries.cols[entries]] - slab_start

    def raise_thresholds(self, tile: int, scores: torch.Tensor) -> None:
        """Take the tile's positive scores into their queries' thresholds (the best positive so far)."""
        for name in ("to_image", "to_text"):
            entries, rows, cols = self._local(tile, name)
            queries = getattr(self, name)
            queries.threshold.scatter_reduce_(0, queries.owner[entries], scores[rows, cols], "amax")

    def count(self, tile: int, scores: torch.Tensor) -> None:
        """Add the tile to the ranks: per column, the rows scoring at least the caption's threshold (weighted by
        copies under ``diagonal``); per row, the columns scoring at least each of its queries' thresholds; minus the
        positives among them (a positive is never a competitor)."""
        first, stop, captions = self.where(tile)
        at_least = scores >= self.to_image.threshold[captions][None, :]
        weights = None if self.weights is None else self.weights[first:stop]
        if weights is None:
            self.to_image.rank[captions] += at_least.sum(0, dtype=torch.int32)
        else:
            for value in torch.unique(weights[weights > 0]).tolist():
                rows = weights == value
                hits = at_least.sum(0, dtype=torch.int32) if bool(rows.all()) else at_least[rows].sum(0, dtype=torch.int32)
                self.to_image.rank[captions] += hits.long() * value
        del at_least
        block = tile % self.tiling.blocks
        for queries, rows, bounds in self.slots:
            queries, local = queries[bounds[block] : bounds[block + 1]], rows[bounds[block] : bounds[block + 1]] - first
            if not len(queries):
                continue
            threshold = torch.full((stop - first,), float("inf"), device=scores.device)
            threshold[local] = self.to_text.threshold[queries]
            self.to_text.rank[queries] += (scores >= threshold[:, None]).sum(1, dtype=torch.int32)[local]
        for name in ("to_image", "to_text"):
            entries, rows, cols = self._local(tile, name)
            queries = getattr(self, name)
            owner = queries.owner[entries]
            reached = scores[rows, cols] >= queries.threshold[owner]
            step = torch.ones_like(owner) if name == "to_text" or self.weights is None else self.weights[queries.rows[entries]]
            queries.rank.index_add_(0, owner[reached], -step[reached])


def _blocked_ranks(
    images: torch.Tensor, texts: torch.Tensor, index: torch.Tensor, groups: torch.Tensor, convention: str,
    block_bytes: int, max_rows: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text ranks, text->image ranks), each tile of S computed once (module docstring)."""
    to_image, to_text, query_row = _positives(index, groups, convention, len(images))
    tile_bytes = min(block_bytes, TILE_BYTES)
    tiling = _tiling(index, len(images), tile_bytes, max_rows)
    weights = torch.bincount(index, minlength=len(images)) if convention == "diagonal" else None
    sweep = _Sweep(images, texts, tiling, to_image, to_text, query_row, weights)

    # 1. the tiles that hold positives, in order; a tile is ready to count once every threshold of its rows and
    #    columns is final (its last positive tile has been seen)
    positive = sorted(set(sweep.entries["to_image"][0].tolist()) | set(sweep.entries["to_text"][0].tolist()))
    step_of = {tile: step for step, tile in enumerate(positive)}
    ready = _ready_steps(sweep, step_of)
    counted: set[int] = set()
    held: dict[int, torch.Tensor] = {}
    for step, tile in enumerate(positive):
        scores = sweep.scores(tile)
        sweep.raise_thresholds(tile, scores)
        if ready[tile] <= step:
            sweep.count(tile, scores)
            counted.add(tile)
        elif 4 * (sum(s.numel() for s in held.values()) + scores.numel()) <= block_bytes - tile_bytes:
            held[tile] = scores  # counted when ready; beyond the budget a tile is computed again in the sweep below
        for waiting in [t for t in held if ready[t] <= step]:
            sweep.count(waiting, held.pop(waiting))
            counted.add(waiting)
    # 2. every other tile, slab by slab (each slab's captions scaled once)
    slab_texts, slab_of = None, None
    for tile in sweep.tile_ids():
        if tile in counted:
            continue
        slab = tile // tiling.blocks
        if slab != slab_of:
            slab_texts, slab_of = sweep.texts.rows(sweep.where(tile)[2]), slab
        sweep.count(tile, sweep.scores(tile, slab_texts))
    return to_text.rank, to_image.rank


def _ready_steps(sweep: _Sweep, step_of: dict[int, int]) -> dict[int, int]:
    """For each tile, the step of the positive sweep after which the thresholds of its rows' queries and of its
    columns are final: the last step that saw one of their positives (a block of images without captions, which
    has no queries, adds no step of its own)."""
    tiling = sweep.tiling
    steps = torch.tensor([step_of.get(t, -1) for t in sweep.tile_ids()] or [0], dtype=torch.long)
    blocks, slabs = tiling.blocks, len(tiling.slab_starts) - 1
    slab_ready = torch.full((slabs,), -1, dtype=torch.long)
    block_ready = torch.full((blocks,), -1, dtype=torch.long)
    for name, ready in (("to_image", slab_ready), ("to_text", block_ready)):
        tiles, order, _ = sweep.entries[name]
        queries = getattr(sweep, name)
        last = torch.full((queries.count,), -1, dtype=torch.long)
        last.scatter_reduce_(0, queries.owner[order].cpu(), steps[tiles.cpu()], "amax")
        if name == "to_image":  # a caption query is its slab's column
            slab = torch.searchsorted(torch.tensor(tiling.slab_starts), tiling.position.cpu(), right=True) - 1
            ready.scatter_reduce_(0, slab, last, "amax")
        else:  # an image->text query sits on its row's block
            rows = queries.rows.new_empty(queries.count)
            rows[queries.owner] = queries.rows
            block = torch.searchsorted(torch.tensor(tiling.block_starts), rows.cpu(), right=True) - 1
            ready.scatter_reduce_(0, block, last, "amax")
    return {t: int(max(slab_ready[t // blocks], block_ready[t % blocks])) for t in sweep.tile_ids()}


def _distinct_text_ranks(
    images: torch.Tensor, texts: torch.Tensor, index: torch.Tensor, groups: torch.Tensor, convention: str,
    block_bytes: int, max_rows: int | None,
) -> torch.Tensor:
    """Image->text ranks over distinct strings (module docstring): per query, the strings that are not its positives
    and whose best copy scores at least its best positive string. Image blocks of at most ``block_bytes`` of scores
    (each row: a score per caption and per string); ``any``: one query per image with a caption, ``diagonal``: one
    per pair (image ``index[j]``, caption j), whose positive is caption j's string."""
    num_groups = int(groups.max()) + 1
    unit_images, unit_texts = _Unit(images), _Unit(texts).rows(slice(None))
    rows = max(1, block_bytes // (_BYTES_PER_SCORE * (len(texts) + num_groups)))
    if max_rows is not None:
        rows = min(rows, max_rows)
    ranks = []
    for start in range(0, len(images), rows):
        stop = min(start + rows, len(images))
        scores = unit_images.rows(slice(start, stop)) @ unit_texts.t()
        by_string = scores.new_full((stop - start, num_groups), float("-inf"))
        by_string.scatter_reduce_(1, groups.expand(stop - start, -1), scores, "amax")  # each string at its best copy
        del scores
        pairs = ((index >= start) & (index < stop)).nonzero(as_tuple=True)[0]  # the captions of the block's images
        local = index[pairs] - start
        if convention == "any":
            positive = torch.zeros_like(by_string, dtype=torch.bool)
            positive[local, groups[pairs]] = True  # image owns a caption of the string
            has_caption = positive.any(1)
            best = torch.where(positive, by_string, float("-inf")).amax(1, keepdim=True)
            rank = ((by_string >= best) & ~positive).sum(1)
            ranks.append(rank[has_caption])
        else:
            best = by_string[local, groups[pairs]]
            ranks.append((by_string[local] >= best[:, None]).sum(1) - 1)  # the positive string itself is no competitor
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long, device=images.device)


def retrieval_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    *,
    convention: str = "any",
    chunk_size: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    text_groups: torch.Tensor | Sequence[int] | None = None,
) -> dict[str, float]:
    """Recall@K in percent, keys ``i2t_R@{k}`` and ``t2i_R@{k}``; see the module docstring.

    ``text_groups`` (long [N_txt], e.g. :func:`caption_groups` of the caption strings): captions with one id are
    the same text, so an identical caption of another image is a correct answer; None: every caption distinct.
    ``block_bytes``: the memory for tiles of the similarity matrix, the one being counted (at most ``TILE_BYTES``)
    and those kept until their thresholds are final (the result does not depend on it);
    ``chunk_size``: at most that many images per tile (None: as the budget gives).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; expected one of {CONVENTIONS}")
    ks = tuple(ks)
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of integers >= 1, got {list(ks)}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be >= 1, got {block_bytes}")
    images, texts, index = _check_pairs(image_features, text_features, text_to_image)
    ks = tuple(int(k) for k in ks)
    if text_groups is None:
        groups = torch.arange(len(texts), device=images.device)  # every caption its own string
    else:
        groups = _as_groups(text_groups, len(texts), images.device)
    i2t, t2i = _blocked_ranks(images, texts, index, groups, convention, block_bytes, chunk_size)
    if int(groups.max()) + 1 < len(texts):  # identical strings: image->text ranks each distinct text once
        i2t = _distinct_text_ranks(images, texts, index, groups, convention, block_bytes, chunk_size)
    return {**_recall(i2t, ks, "i2t"), **_recall(t2i, ks, "t2i")}
