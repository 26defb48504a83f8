"""Training batches: images of a captioned set with one caption each, tokenised and normalised for the model.

Shared by the engine's training loop (``vlcl.engine.train``) and the methods
that draw batches of their own (ewc's Fisher estimate), so that a method never
imports the engine. It sits beside the tokenizer and the preprocessing it
uses; the data layer is only read (``data.captions``, ``data.images``), so
``vlcl.data`` is imported for the type only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vlcl.models.encode import tokenize

if TYPE_CHECKING:
    from vlcl.data.benchmark import CaptionedImages
    from vlcl.models.loading import ClipBundle


def make_batch(bundle: ClipBundle, data: CaptionedImages, idx: torch.Tensor, picks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Images of ``idx`` with one caption each (caption ``pick % count`` of that image).

    ``sample_index`` and ``caption_index`` say which pair each row is, so that a
    method can look up per-sample state (e.g. cached teacher features).
    """
    if hasattr(data, "arrays"):  # modality pairs (vlcl.data.feature_pairs): the features are the batch
        return pair_batch(data, idx)
    rows = idx.tolist()
    caption_index = [p % len(data.captions[i]) for i, p in zip(rows, picks.tolist())]
    captions = [data.captions[i][c] for i, c in zip(rows, caption_index)]
    input_ids, attention_mask = tokenize(bundle.tokenizer, captions, bundle.context_length)
    pixels = bundle.preprocess.normalize_uint8(data.images[rows])
    return {
        "pixel_values": pixels,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "sample_index": idx.clone(),
        "caption_index": torch.tensor(caption_index, dtype=torch.long),
    }


PAIR_PREFIX = "features:"


def pair_batch(data, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """``features:A`` and ``features:B`` rows of a modality pair (A, B), in that order, and ``sample_index``."""
    a, b = data.modalities
    return {f"{PAIR_PREFIX}{a}": data.arrays[a][idx], f"{PAIR_PREFIX}{b}": data.arrays[b][idx], "sample_index": idx.clone()}


def pair_of(batch: dict[str, torch.Tensor]) -> tuple[tuple[str, str], torch.Tensor, torch.Tensor] | None:
    """((A, B), x_A, x_B) of a modality-pair batch, None for a CLIP batch."""
    keys = [k for k in batch if k.startswith(PAIR_PREFIX)]
    if len(keys) != 2:
        return None
    return (keys[0][len(PAIR_PREFIX):], keys[1][len(PAIR_PREFIX):]), batch[keys[0]], batch[keys[1]]
