"""A frozen copy of a model whose features a method distils from (C-CLIP, LwF, Mod-X).

With ``cache=True`` the teacher's embeddings of every (image, caption) pair of
the task are computed once, when the task begins, and looked up per step by
``sample_index`` / ``caption_index``: the teacher is frozen and the data has
no random augmentation, so these are the numbers a teacher forward per step
would give, at a fraction of the cost. The copy of the model is then released;
memory is (1 + captions per image) x N x d floats. For a classification task
the cache also holds the teacher's class embeddings (its prompts' mean per
class), the text side of a classification batch.
"""

from __future__ import annotations

import copy

import torch
from transformers import CLIPModel

from vlcl.data.benchmark import CaptionedImages
from vlcl.models.encode import image_embeddings, text_embeddings, tokenize
from vlcl.models.loading import ClipBundle
from vlcl.settings import CaptionBatch
from vlcl.settings.classification import class_text_side


class TeacherCache:
    """Teacher embeddings of every (image, caption) pair of a task, computed once."""

    def __init__(self, teacher: CLIPModel, data: CaptionedImages, bundle: ClipBundle, batch_size: int):
        device = next(teacher.parameters()).device
        with torch.no_grad():
            self.images = torch.cat(
                [
                    image_embeddings(teacher, bundle.preprocess.normalize_uint8(data.images[s : s + batch_size]).to(device))
                    for s in range(0, len(data), batch_size)
                ]
            )
        self.captions_per_image = max(len(c) for c in data.captions)
        flat = [caps[i % len(caps)] for caps in data.captions for i in range(self.captions_per_image)]
        ids, mask = tokenize(bundle.tokenizer, flat, bundle.context_length)
        with torch.no_grad():
            self.texts = torch.cat(
                [
                    text_embeddings(teacher, ids[s : s + batch_size].to(device), mask[s : s + batch_size].to(device))
                    for s in range(0, len(flat), batch_size)
                ]
            )
        self.classes = None
        if data.class_prompts is not None:  # a classification task: its batches' text side is the classes
            with torch.no_grad():
                self.classes = class_text_side(teacher, bundle, data.class_prompts, device)

    def lookup(self, batch: CaptionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.images[batch.sample_index.to(self.images.device)]
        return images, batch.teacher_texts(self.texts, self.classes, self.captions_per_image)


class FrozenTeacher:
    """The model as it is now, frozen: its embeddings of a batch, from a cache when possible."""

    def __init__(self, model: CLIPModel, data: CaptionedImages | None, bundle: ClipBundle, *, cache: bool, batch_size: int = 256):
        model_copy = copy.deepcopy(model).eval().requires_grad_(False)
        self.logit_scale = float(model_copy.logit_scale.exp().clamp(max=100.0))
        self.cache = TeacherCache(model_copy, data, bundle, batch_size) if cache and data is not None else None
        self.model = None if self.cache is not None else model_copy  # the cache replaces the second model

    def features(self, batch: CaptionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised (image, text) embeddings of the batch's pairs (of its images and classes for a
        classification batch), without gradients."""
        if self.cache is not None:
            return self.cache.lookup(batch)
        with torch.no_grad():
            return image_embeddings(self.model, batch.pixel_values), batch.text_side(self.model)
