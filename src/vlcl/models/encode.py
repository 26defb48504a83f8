"""Feature extraction: the CLIP embedding of images and texts.

The towers are called directly (tower -> pooled output -> projection) rather
than through ``get_*_features`` because that method's return type changed
between transformers 4 and 5.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers import CLIPModel


def image_embeddings(model: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """Un-normalised image embeddings [N, d] (with gradients if enabled)."""
    pooled = model.vision_model(pixel_values=pixel_values).pooler_output
    return model.visual_projection(pooled)


def text_embeddings(model: CLIPModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Un-normalised text embeddings [N, d] (with gradients if enabled)."""
    pooled = model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return model.text_projection(pooled)


def class_embeddings(prompt_features: torch.Tensor, templates: int) -> torch.Tensor:
    """[C x T, d] prompt embeddings, class by class -> [C, d]: the mean of each class's L2-normalised template
    embeddings (CLIP's prompt ensemble, renormalised by whoever compares them); T = 1 is the identity."""
    if templates == 1:
        return prompt_features
    per_template = F.normalize(prompt_features, dim=-1)
    return per_template.view(-1, templates, per_template.shape[-1]).mean(dim=1)


def _batches(count: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_images(model: CLIPModel, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised image embeddings [N, d] in float32 on the CPU."""
    device = _device(model)
    chunks = [
        F.normalize(image_embeddings(model, pixel_values[s].to(device)).float(), dim=-1).cpu()
        for s in _batches(len(pixel_values), batch_size)
    ]
    return torch.cat(chunks)


@torch.no_grad()
def encode_token_batches(
    model: CLIPModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised text embeddings [N, d] from pre-tokenised ids."""
    device = _device(model)
    chunks = []
    for s in _batches(len(input_ids), batch_size):
        mask = attention_mask[s]
        width = int(mask.sum(dim=1).max())  # trim padding shared by the whole batch
        ids = input_ids[s, :width].to(device)
        chunks.append(F.normalize(text_embeddings(model, ids, mask[:, :width].to(device)).float(), dim=-1).cpu())
    return torch.cat(chunks)


def tokenize(tokenizer, texts: list[str], context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask padded to the longest text (at most ``context_length``)."""
    encoded = tokenizer(
        list(texts), padding="longest", truncation=True, max_length=context_length, return_tensors="pt"
    )
    return encoded["input_ids"], encoded["attention_mask"]


@torch.no_grad()
def encode_texts(model: CLIPModel, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings [N, d] for raw strings."""
    context_length = int(model.config.text_config.max_position_embeddings)
    ids, mask = tokenize(tokenizer, texts, context_length)
    return encode_token_batches(model, ids, mask, batch_size)
