"""What becomes of a data set's samples: seeded splits and subsets, the image check, and the vlcl data sets
(:mod:`vlcl.data.benchmark`'s types) made of them, for the benchmarks read from a data root."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from vlcl.data.benchmark import CaptionedImages, ClassificationSet, RetrievalSet
from vlcl.data.formats import Problems, Sample
from vlcl.data.images import DEFAULT_MAX_IMAGE_PIXELS, ImageStore, check_image, thread_map

if TYPE_CHECKING:
    from vlcl.data.preprocess import ImagePreprocessor


# -- splitting, subsetting, checking -------------------------------------------------


def _rng(seed: int, name: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"{name}/{purpose}".encode())])


def random_split(samples: list[Sample], test_fraction: float, seed: int, name: str) -> tuple[list[Sample], list[Sample]]:
    """(train, test): a seeded random ``test_fraction`` of the images is the test split (the same for every run)."""
    order = _rng(seed, name, "split").permutation(len(samples))
    n_test = int(round(len(samples) * test_fraction))
    test = sorted(order[:n_test].tolist())
    train = sorted(order[n_test:].tolist())
    return [samples[i] for i in train], [samples[i] for i in test]


def subsample(samples: list[Sample], count: int | None, seed: int, name: str, purpose: str) -> list[Sample]:
    """At most ``count`` samples, a seeded subset in the original order."""
    if count is None or count >= len(samples):
        return samples
    keep = sorted(_rng(seed, name, purpose).permutation(len(samples))[:count].tolist())
    return [samples[i] for i in keep]


def per_class(samples: list[Sample], count: int | None, seed: int, name: str) -> list[Sample]:
    """At most ``count`` samples of every class (seeded), in the original order."""
    if count is None:
        return samples
    order = _rng(seed, name, "per_class").permutation(len(samples)).tolist()
    taken: dict[int, int] = {}
    keep = []
    for i in order:
        label = samples[i].label
        if taken.get(label, 0) < count:
            taken[label] = taken.get(label, 0) + 1
            keep.append(i)
    return [samples[i] for i in sorted(keep)]


def check_images(
    samples: list[Sample],
    level: str,
    problems: Problems,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[Sample]:
    """The samples whose image passes the check (``none``, ``header``, ``full``); the others are bad samples.

    ``header`` and ``full`` also refuse images over ``max_pixels`` (``data.max_image_pixels``; None: no limit).
    """
    if level == "none":
        return samples
    verdicts = thread_map(lambda s: check_image(s.image, level, max_pixels), samples, max(workers, 1))
    kept = []
    for sample, problem in zip(samples, verdicts):
        if problem is None:
            kept.append(sample)
        else:
            origin = f"{sample.origin}: " if sample.origin else ""
            problems.bad(f"{origin}image {sample.image.describe()} {problem}")
    return kept


# -- vlcl data sets ------------------------------------------------------------------


def store(
    samples: list[Sample], preprocess: ImagePreprocessor, workers: int, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> ImageStore:
    return ImageStore([s.image for s in samples], preprocess, workers, max_pixels)


def captioned_images(
    name: str,
    samples: list[Sample],
    preprocess: ImagePreprocessor,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> CaptionedImages:
    return CaptionedImages(name, store(samples, preprocess, workers, max_pixels), [list(s.captions) for s in samples])


def retrieval_set(
    name: str,
    samples: list[Sample],
    preprocess: ImagePreprocessor,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> RetrievalSet:
    images = store(samples, preprocess, workers, max_pixels)
    return RetrievalSet.from_caption_lists(name, images, [list(s.captions) for s in samples])


def classification_set(
    name: str,
    samples: list[Sample],
    classnames: list[str],
    templates: list[str],
    preprocess: ImagePreprocessor,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> ClassificationSet:
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    return ClassificationSet(name, store(samples, preprocess, workers, max_pixels), labels, list(classnames), list(templates))


def prompted_training_set(
    name: str,
    samples: list[Sample],
    classnames: list[str],
    templates: list[str],
    preprocess: ImagePreprocessor,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> CaptionedImages:
    """Classification training data: labels and every class's prompts (trained with cross-entropy over them),
    and as each image's caption its class name in the set's first template (one caption per image keeps the
    teacher caches of the distillation methods at N embeddings)."""
    captions = [[templates[0].format(classnames[s.label])] for s in samples]
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    prompts = [[t.format(c) for t in templates] for c in classnames]
    return CaptionedImages(name, store(samples, preprocess, workers, max_pixels), captions, labels, prompts)
