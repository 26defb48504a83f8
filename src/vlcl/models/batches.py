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

from vlcl.models.encode import class_embeddings, text_embeddings, tokenize

if TYPE_CHECKING:
    from vlcl.data.benchmark import CaptionedImages
    from vlcl.models.loading import ClipBundle


def make_batch(bundle: ClipBundle, data: CaptionedImages, idx: torch.Tensor, picks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Images of ``idx`` with one caption each (caption ``pick % count`` of that image); for a classification
    task, the images with their ``labels`` and the task's class prompts as the text side instead.

    ``sample_index`` and ``caption_index`` say which pair each row is, so that a
    method can look up per-sample state (e.g. cached teacher features).
    """
    if hasattr(data, "arrays"):  # modality pairs (vlcl.data.feature_pairs): the features are the batch
        return pair_batch(data, idx)
    rows = idx.tolist()
    caption_index = [p % len(data.captions[i]) for i, p in zip(rows, picks.tolist())]
    pixels = bundle.preprocess.normalize_uint8(data.images[rows])
    batch = {"pixel_values": pixels, "sample_index": idx.clone(), "caption_index": torch.tensor(caption_index, dtype=torch.long)}
    if getattr(data, "labels", None) is not None:
        return {**batch, **class_prompt_tokens(bundle, data.class_prompts), "labels": data.labels[idx]}
    captions = [data.captions[i][c] for i, c in zip(rows, caption_index)]
    input_ids, attention_mask = tokenize(bundle.tokenizer, captions, bundle.context_length)
    return {**batch, "input_ids": input_ids, "attention_mask": attention_mask}


_PROMPT_TOKENS: dict[tuple, dict[str, torch.Tensor]] = {}


def class_prompt_tokens(bundle: ClipBundle, class_prompts: list[list[str]]) -> dict[str, torch.Tensor]:
    """The text side of a classification batch: every class's prompts, class by class (C x T rows of
    ``input_ids`` / ``attention_mask``), and ``class_templates`` = T. Tokenised once per prompt list."""
    key = (id(bundle.tokenizer), bundle.context_length, tuple(p for prompts in class_prompts for p in prompts))
    if key not in _PROMPT_TOKENS:
        if len(_PROMPT_TOKENS) > 64:
            _PROMPT_TOKENS.clear()
        ids, mask = tokenize(bundle.tokenizer, list(key[2]), bundle.context_length)
        _PROMPT_TOKENS[key] = {"input_ids": ids, "attention_mask": mask, "class_templates": torch.tensor(len(class_prompts[0]))}
    return dict(_PROMPT_TOKENS[key])


def text_side_embeddings(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Un-normalised embeddings of a batch's text side: one per caption, or one per class (the mean of its
    templates' normalised embeddings) when the tokens are class prompts (``class_templates`` given)."""
    texts = text_embeddings(model, batch["input_ids"], batch["attention_mask"])
    templates = batch.get("class_templates")
    return texts if templates is None else class_embeddings(texts, int(templates))


def is_classification(batch: dict[str, torch.Tensor]) -> bool:
    """A classification batch: ``labels`` index the class prompts that make up the text side."""
    return "labels" in batch


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
