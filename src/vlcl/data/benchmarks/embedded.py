"""The embedded benchmark: a procedural image-caption world, no download.

The *base* world is what the shipped CLIP was pre-trained on. Six continual
tasks each shift the distribution the way the real VLCL tasks do - a new
visual style (sketch, texture, photo negatives), new vocabulary (new shapes), new
caption structure (counting, spatial relations). Held out and never trained
on: the base world's own test split, a *grainy* photo domain (zero-shot
retrieval) and three zero-shot classification sets (shape, colour, shape and
colour) with prompt templates.

Sizes below were tuned so that the benchmark separates methods (README,
"The embedded benchmark"): every task is learnable but not known before
training, and naive fine-tuning forgets without forgetting everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlcl.data.benchmark import (
    Benchmark,
    CaptionedImages,
    ClassificationSet,
    RetrievalSet,
    Task,
)
from vlcl.data.benchmarks import world
from vlcl.data.registry import register_benchmark, resolve_task_names


@dataclass(frozen=True)
class TaskSpec:
    domain: str
    train_images: int
    description: str


AVAILABLE_TASKS: dict[str, TaskSpec] = {spec.domain: spec for spec in (
    TaskSpec("sketch", 3500, "style shift: coloured outlines on white"),
    TaskSpec("new_shapes", 3000, "new vocabulary: cross, heart, hexagon, arrow"),
    TaskSpec("negative", 2000, "colour conflict: photo negatives whose captions name the original colours"),
    TaskSpec("counting", 5000, "new caption structure: 'two red circles and one blue square'"),
    TaskSpec("texture", 2000, "style and vocabulary: striped, dotted, checkered fills"),
    TaskSpec("spatial", 3000, "new caption structure: relations 'left of', 'above'"),
    TaskSpec("pixel_art", 2000, "style shift: 12x12 pixel art in three colours"),
    TaskSpec("base", 3000, "no shift: the pre-training world itself, a task the model already solves (as Flickr30K is for CLIP)"),
)}
DEFAULT_SEQUENCE = ("sketch", "new_shapes", "counting", "pixel_art", "texture", "spatial")
HELDOUT_DOMAINS = ("base", "grainy")
TEST_IMAGES = 300
CAPTIONS_PER_TEST_IMAGE = 5
CAPTIONS_PER_TRAIN_IMAGE = 3
ZEROSHOT_IMAGES_PER_SET = 320


def _train_set(domain: str, n_images: int, seed: int, image_size: int) -> CaptionedImages:
    split = world.generate_split(domain, n_images, seed=seed, split="train", captions_per_image=CAPTIONS_PER_TRAIN_IMAGE, size=image_size)
    return CaptionedImages(domain, split.images, split.captions)


def _test_set(domain: str, n_images: int, seed: int, image_size: int) -> RetrievalSet:
    split = world.generate_split(domain, n_images, seed=seed, split="test", captions_per_image=CAPTIONS_PER_TEST_IMAGE, size=image_size)
    return RetrievalSet.from_caption_lists(domain, split.images, split.captions)


def _zeroshot_set(name: str, per_class: int | None, seed: int, image_size: int) -> ClassificationSet:
    probe = world.generate_zeroshot_set(name, 1, seed=seed, size=image_size)
    n = per_class or max(1, ZEROSHOT_IMAGES_PER_SET // len(probe.classnames))
    z = world.generate_zeroshot_set(name, n, seed=seed, size=image_size)
    return ClassificationSet(f"zs_{name}", z.images, torch.as_tensor(z.labels, dtype=torch.long), list(z.classnames), list(z.templates))


def pretraining_set(n_images: int, seed: int, image_size: int = 32) -> CaptionedImages:
    """The base world's training data, used by ``vlcl pretrain`` (a different seed stream from the tests)."""
    return _train_set("base", n_images, seed + 7919, image_size)


@register_benchmark("embedded", "procedural image-caption world: 6 shift tasks, 2 held-out retrieval domains, 3 zero-shot sets (no download)")
def build_embedded(*, tasks: list[str] | None = None, seed: int = 0, train_scale: float = 1.0, test_images: int | None = None, zeroshot_per_class: int | None = None, image_size: int = 32, **_: object) -> Benchmark:
    n_test = test_images or TEST_IMAGES
    names = resolve_task_names("embedded", list(AVAILABLE_TASKS), tasks, list(DEFAULT_SEQUENCE))
    specs = [AVAILABLE_TASKS[name] for name in names]
    built = [
        Task(
            spec.domain,
            _train_set(spec.domain, max(1, round(spec.train_images * train_scale)), seed, image_size),
            _test_set(spec.domain, n_test, seed, image_size),
            spec.description,
        )
        for spec in specs
    ]
    heldout = [_test_set(domain, n_test, seed, image_size) for domain in HELDOUT_DOMAINS]
    zeroshot = [_zeroshot_set(name, zeroshot_per_class, seed, image_size) for name in world.ZEROSHOT_SETS]
    return Benchmark("embedded", built, heldout, zeroshot)
