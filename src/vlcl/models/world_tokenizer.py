"""A word-level tokenizer for the procedural world, as a Hugging Face fast tokenizer.

The vocabulary is every word any domain of the world can produce (so words of
later tasks exist but are untrained at pre-training time, as new words are for
a real CLIP). Any other text still encodes: unknown words become ``[UNK]``.
Ids 0-3 are ``[PAD] [UNK] <start> <end>``; the end id is 3, never 2, because
transformers' CLIP text tower treats eos_token_id == 2 as a legacy config and
pools at the largest id instead of the end token.
"""

from __future__ import annotations

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "<start>", "<end>")
PUNCTUATION = (".", ",", "!", "?", "'", "-")


def build_world_tokenizer(vocabulary: list[str], context_length: int) -> PreTrainedTokenizerFast:
    words = [w for w in dict.fromkeys(list(vocabulary) + list(PUNCTUATION)) if w not in SPECIAL_TOKENS]
    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + words)}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<start> $A <end>", special_tokens=[("<start>", vocab["<start>"]), ("<end>", vocab["<end>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<start>",
        eos_token="<end>",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=context_length,
    )
