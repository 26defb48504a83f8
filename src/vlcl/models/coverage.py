"""Tokenizer coverage: how much of a data set's text the model's tokenizer can read.

A word the tokenizer maps only to its unknown token (or to no token at all)
carries nothing: captions made of such words all encode alike, and a run on
them completes at chance level without an error. Before training, vlcl
measures for every data set the share of word occurrences in its captions and
class prompts that the tokenizer cannot read, and stops above
``data.max_unknown_words``.

A word is a whitespace-separated piece of text with the punctuation at its
ends removed; it is unknown when encoding it alone, without special tokens,
gives no id or only the tokenizer's unknown id. Byte-level BPE tokenizers
(OpenAI CLIP's) read every word; word-level ones (the embedded model's) read
only their vocabulary.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_PUNCTUATION = string.punctuation + "\u201c\u201d\u2018\u2019"


@dataclass(frozen=True)
class Coverage:
    """Unknown word occurrences of one data set's text."""

    words: int
    unknown: int
    examples: tuple[str, ...]
    """The most frequent unknown words, at most three."""

    @property
    def unknown_share(self) -> float:
        return self.unknown / self.words if self.words else 0.0


def words_of(texts: Iterable[str]) -> Counter:
    """Occurrences of every word of ``texts``."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(w for w in (piece.strip(_PUNCTUATION) for piece in text.split()) if w)
    return counts


def unknown_words(tokenizer, words: Iterable[str]) -> set[str]:
    """The words that ``tokenizer`` encodes to nothing or to its unknown token only."""
    words = list(words)
    if not words:
        return set()
    unk = getattr(tokenizer, "unk_token_id", None)
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"]
    return {word for word, ids in zip(words, encoded) if not ids or all(i == unk for i in ids)}


def coverage(tokenizer, texts: Iterable[str]) -> Coverage:
    counts = words_of(texts)
    unknown = unknown_words(tokenizer, counts)
    frequent = sorted(unknown, key=lambda w: (-counts[w], w))[:3]
    return Coverage(sum(counts.values()), sum(counts[w] for w in unknown), tuple(frequent))


def prompt_encodings(tokenizer, class_prompts: list[list[str]], context_length: int) -> list[tuple[tuple[int, ...], ...]]:
    """Per class, the token ids of each of its prompts as the run encodes them (truncated at ``context_length``,
    padding dropped): what the text tower sees of the class."""
    from vlcl.models.encode import tokenize  # torch: only when a set is checked

    flat = [p for prompts in class_prompts for p in prompts]
    if not flat:
        return [() for _ in class_prompts]
    ids, mask = tokenize(tokenizer, flat, context_length)
    rows = [tuple(int(i) for i, m in zip(row, keep) if m) for row, keep in zip(ids.tolist(), mask.tolist())]
    out, start = [], 0
    for prompts in class_prompts:
        out.append(tuple(rows[start : start + len(prompts)]))
        start += len(prompts)
    return out


def indistinguishable_classes(tokenizer, class_prompts: list[list[str]], context_length: int) -> list[list[int]]:
    """Groups (two or more class indices, ascending) of classes whose prompts are different texts but encode to the
    same token ids under every template: the model cannot tell them apart, by construction (a class name the
    tokenizer reads only as its unknown token, a name cut off by the context length).

    Classes whose prompts are the same text are the data's own choice and not listed (OpenAI's ImageNet class list
    names 'missile' and 'sunglasses' twice; the field evaluates it so)."""
    groups: dict[tuple, list[int]] = {}
    for index, encoded in enumerate(prompt_encodings(tokenizer, class_prompts, context_length)):
        groups.setdefault(encoded, []).append(index)
    return [g for g in groups.values() if len({tuple(class_prompts[i]) for i in g}) > 1]


def token_text(tokenizer, ids: tuple[int, ...]) -> str:
    """The tokens of one encoded prompt, readable: ``a photo of a [UNK] .``"""
    special = {getattr(tokenizer, name, None) for name in ("bos_token_id", "eos_token_id", "pad_token_id")} - {None}
    return tokenizer.decode([i for i in ids if i not in special]).strip()
