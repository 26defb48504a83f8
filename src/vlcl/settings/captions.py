"""Image-caption sequences scored by retrieval (the VLCL-8 setting of C-CLIP).

Each task trains on image-caption pairs with the CLIP loss; its test set is a retrieval set, scored by recall@K
in both directions. The matrices are R@1 (the mean of both directions, the headline, and each direction).
"""

from __future__ import annotations

import itertools
from statistics import fmean
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from vlcl.losses import LossOutput, clip_loss
from vlcl.models.encode import text_embeddings, tokenize
from vlcl.schema import RECALL_METRIC
from vlcl.settings.base import Batch, Setting, TaskMetric, register_setting

if TYPE_CHECKING:
    from vlcl.data.benchmark import CaptionedImages
    from vlcl.models.loading import ClipBundle


@dataclass
class CaptionBatch(Batch):
    """Images with one caption each: ``input_ids`` row i is image i's caption."""

    caption_index: torch.Tensor
    """long [B]: which of its image's captions each row's text is (-1 for rows a method added)."""
    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    one_text_per_image = True
    """Row i of the text side belongs to image i (in-batch terms may go both ways: image->text and text->image)."""

    def __len__(self) -> int:
        return len(self.pixel_values)

    def text_side(self, model) -> torch.Tensor:
        """Un-normalised embeddings of the text side: one per caption."""
        return text_embeddings(model, self.input_ids, self.attention_mask)

    def paired_texts(self, texts: torch.Tensor) -> torch.Tensor:
        """One text embedding per image (terms defined on image-text pairs: C-CLIP's CKC, Mod-X's, MulKI's)."""
        return texts

    def teacher_texts(self, per_caption: torch.Tensor, per_class: torch.Tensor | None, captions_per_image: int) -> torch.Tensor:
        """The rows of a teacher's cached text embeddings that are this batch's text side."""
        return per_caption[(self.sample_index * captions_per_image + self.caption_index).to(per_caption.device)]

    def task_loss(self, images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor, context) -> tuple[str, torch.Tensor]:
        """The CLIP loss (``clip``) of the pairs."""
        return "clip", clip_loss(images, texts, logit_scale, gather=context.gather)

    def default_loss(self, method) -> LossOutput:
        images, texts = method.encode(self)
        name, loss = method.task_loss(images, texts, self)
        return LossOutput(loss, {name: float(loss.detach())})

    def with_pairs(self, pixels: torch.Tensor, captions: list[str], bundle: ClipBundle) -> CaptionBatch:
        """This batch followed by image-caption pairs a method adds (replay): their rows' indices are -1."""
        return self._appended(pixels, captions, bundle)

    def _appended(self, pixels: torch.Tensor, texts: list[str], bundle: ClipBundle, **fields: Any) -> CaptionBatch:
        """The rows of ``pixels`` appended to the images, ``texts`` to the text side (padded to one width)."""
        device = self.pixel_values.device
        if texts:
            ids, mask = tokenize(bundle.tokenizer, texts, bundle.context_length)
        else:  # nothing new on the text side
            ids, mask = self.input_ids[:0], self.attention_mask[:0]
        width = max(ids.shape[1], self.input_ids.shape[1])
        pad_id = bundle.tokenizer.pad_token_id if bundle.tokenizer.pad_token_id is not None else 0
        cur_ids, cur_mask = pad_tokens(self.input_ids, self.attention_mask, width, pad_id)
        ids, mask = pad_tokens(ids.to(device), mask.to(device), width, pad_id)
        minus_one = torch.full((len(pixels),), -1, dtype=torch.long, device=self.sample_index.device)
        return replace(
            self,
            pixel_values=torch.cat([self.pixel_values, pixels.to(device=device, dtype=self.pixel_values.dtype)]),
            input_ids=torch.cat([cur_ids, ids]),
            attention_mask=torch.cat([cur_mask, mask]),
            sample_index=torch.cat([self.sample_index, minus_one]),
            caption_index=torch.cat([self.caption_index, minus_one]),
            **fields,
        )


def pad_tokens(ids: torch.Tensor, mask: torch.Tensor, width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token ids (with ``pad_id``) and their attention mask (with 0) to ``width`` columns."""
    extra = width - ids.shape[1]
    if extra <= 0:
        return ids, mask
    return (
        torch.cat([ids, ids.new_full((len(ids), extra), pad_id)], dim=1),
        torch.cat([mask, mask.new_zeros((len(mask), extra))], dim=1),
    )


def image_rows(bundle: ClipBundle, data: CaptionedImages, idx: torch.Tensor, picks: torch.Tensor) -> dict[str, Any]:
    """The image side every CLIP batch shares: normalised pixels of ``idx`` and which caption each row drew
    (caption ``pick % count`` of its image)."""
    rows = idx.tolist()
    caption_index = [p % len(data.captions[i]) for i, p in zip(rows, picks.tolist())]
    return {
        "pixel_values": bundle.preprocess.normalize_uint8(data.images[rows]),
        "sample_index": idx.clone(),
        "caption_index": torch.tensor(caption_index, dtype=torch.long),
    }


RECALL = TaskMetric.from_json(RECALL_METRIC)  # part of the results schema: older files name it by task_metric


@register_setting
class Captions(Setting):
    name = "captions"
    description = "image-caption sequences scored by retrieval recall in both directions (VLCL-8)"
    metric = RECALL
    task_words = "image-caption (retrieval) tasks"

    def stage_data(self, parts: list[CaptionedImages], class_prompts: str) -> CaptionedImages:
        """The tasks' pairs one after the other (a joint stage); classification tasks keep the prompts
        ``train.class_prompts`` asks for (every template's, or the first)."""
        try:
            return concatenate([part.with_prompts(class_prompts) for part in parts])
        except ValueError as exc:
            raise ValueError(f"{exc} (train.class_prompts={class_prompts})") from None

    def stream_metrics(self, evaluator: Any, model: Any, stream: Any, batch: int) -> dict[str, Any]:
        """A caption stream: each task whose pairs the stream has shown so far, scored on its test set by mean R@1;
        ``score`` is their mean, ``per_unit`` holds them by task."""
        tasks = evaluator.benchmark.tasks
        scores = {tasks[k].name: evaluator.retrieval(model, tasks[k].test)["retrieval"]["mean_R@1"] for k in stream.tasks_seen_after(batch)}
        return {"score": fmean(scores.values()), "per_unit": scores}

    def batch(self, bundle: ClipBundle, data: CaptionedImages, idx: torch.Tensor, picks: torch.Tensor) -> CaptionBatch:
        rows = image_rows(bundle, data, idx, picks)
        captions = [data.captions[i][c] for i, c in zip(idx.tolist(), rows["caption_index"].tolist())]
        input_ids, attention_mask = tokenize(bundle.tokenizer, captions, bundle.context_length)
        return CaptionBatch(**rows, input_ids=input_ids, attention_mask=attention_mask)


def concatenate(datasets: list[CaptionedImages]) -> CaptionedImages:
    """One training set of several tasks (a joint stage). Classification tasks keep their classes apart: the
    label space is every task's classes one after the other, each task's labels shifted past the ones before."""
    from vlcl.data.benchmark import CaptionedImages
    from vlcl.data.images import concat_images

    if len(datasets) == 1:
        return datasets[0]
    labels = prompts = None
    if all(d.classification for d in datasets):
        offsets = itertools.accumulate((len(d.class_prompts) for d in datasets[:-1]), initial=0)
        labels = torch.cat([d.labels + offset for d, offset in zip(datasets, offsets)])
        prompts = [p for d in datasets for p in d.class_prompts]
    return CaptionedImages(
        "+".join(d.name for d in datasets),
        concat_images([d.images for d in datasets]),  # image stores stay lazy
        [caps for d in datasets for caps in d.captions],
        labels,
        prompts,
    )

