"""The embedded time-continual benchmark: the procedural world drifting over six time steps, no download.

TiC-CLIP's setting (Garg et al., 2023) on the procedural world: data arrives in time steps, and the world
it shows ages - new shapes, styles and words appear, some fade out, caption habits change and the mixture
of scenes shifts - so that the shipped CLIP (pre-trained on the base world) frozen at the first step falls
behind on later ones (measured: ``benchmarks/time_properties.py``, docs/time.md). Each step is an
image-caption task with training captions and a retrieval test set; held out and never trained on, as in
``embedded``: the base world's test split, the grainy domain and the three zero-shot classification sets.

Steps are named by year, ``t2014`` .. ``t2019`` (TiC-DataComp's first six years): the names sort in time
order, read as time in the matrices, and say that the order is part of the benchmark (``data.tasks`` may
pick a subset; reordering it is allowed but no longer a time order). The years are labels only.

Drift schedule (each step mixes world domains, :mod:`vlcl.data.benchmarks.world.time`; every word is in
the shipped tokenizer, "new" means absent from the step-1 captions):

| step | shapes (new / faded) | colours | scene mixture | caption habits |
|---|---|---|---|---|
| t2014 | circle square triangle diamond star | all 8 | photo 100% | base templates ("a photo of", "there is", "a drawing of" ...), base noise |
| t2015 | + cross | all 8 | photo 70%, counting 30% (up to 3) | photo / picture / image prefixes, bare captions |
| t2016 | + heart / - diamond | - white | photo 40%, counting 30% (up to 4), sketch 30% | "a picture of", "a scene with", sketch words; longer captions |
| t2017 | + hexagon / - triangle | 7 | photo 30% (up to 3 objects), sketch 30%, spatial 40% | scene phrase first: "{} in a picture", "{} in a sketch" |
| t2018 | + arrow / - square | - yellow, white | texture 40%, spatial 30%, pixel art 30% | "{} in the picture", "{} in pixel art"; no photo prefixes |
| t2019 | - star (circle cross heart hexagon arrow) | red green cyan blue purple | pixel art 40%, spatial 30%, texture 30% (up to 3) | scene phrase first only, longest captions, most generic nouns |

Training captions drop attributes less at each step (size 0.3 -> 0.1, colour 0.4 -> 0.1, position 0.4 ->
0.15) and use a generic noun more often (0.15 -> 0.3). Test captions are full descriptions, as in ``embedded``.
"""

from __future__ import annotations

import numpy as np

from vlcl.data.benchmark import Benchmark, CaptionedImages, RetrievalSet, Task
from vlcl.data.benchmarks import world
from vlcl.data.benchmarks.embedded import (
    CAPTIONS_PER_TEST_IMAGE,
    CAPTIONS_PER_TRAIN_IMAGE,
    HELDOUT_DOMAINS,
    TEST_IMAGES,
    _test_set,
    _zeroshot_set,
)
from vlcl.data.benchmarks.world.time import TIME_STEP_NAMES, allocate, time_step
from vlcl.data.registry import register_benchmark, resolve_task_names

TRAIN_IMAGES = 3000  # per step, before data.train_scale
DEFAULT_SEQUENCE = TIME_STEP_NAMES


def _mixture(step: str, n_images: int, seed: int, split: str, captions_per_image: int, image_size: int):
    """The step's images and captions: each domain's share of ``n_images`` in turn (test: unique per domain)."""
    spec = time_step(step)
    images, captions = [], []
    for domain, n in zip(spec.domains, allocate(n_images, spec.weights)):
        if n == 0:
            continue
        part = world.generate_split(domain, n, seed=seed, split=split, captions_per_image=captions_per_image, size=image_size)
        images.append(part.images)
        captions += part.captions
    return np.concatenate(images), captions


def step_train_set(step: str, n_images: int, seed: int, image_size: int = 32) -> CaptionedImages:
    images, captions = _mixture(step, n_images, seed, "train", CAPTIONS_PER_TRAIN_IMAGE, image_size)
    return CaptionedImages(step, images, captions)


def step_test_set(step: str, n_images: int, seed: int, image_size: int = 32) -> RetrievalSet:
    images, captions = _mixture(step, n_images, seed, "test", CAPTIONS_PER_TEST_IMAGE, image_size)
    return RetrievalSet.from_caption_lists(step, images, captions)


@register_benchmark("embedded_time", "procedural world drifting over 6 time steps t2014..t2019 (TiC-CLIP's setting, no download)")
def build_embedded_time(*, tasks: list[str] | None = None, seed: int = 0, train_scale: float = 1.0, test_images: int | None = None, zeroshot_per_class: int | None = None, image_size: int = 32, **_: object) -> Benchmark:
    n_test = test_images or TEST_IMAGES
    names = resolve_task_names("embedded_time", list(TIME_STEP_NAMES), tasks, list(DEFAULT_SEQUENCE))
    built = [
        Task(
            name,
            step_train_set(name, max(1, round(TRAIN_IMAGES * train_scale)), seed, image_size),
            step_test_set(name, n_test, seed, image_size),
            time_step(name).description,
        )
        for name in names
    ]
    heldout = [_test_set(domain, n_test, seed, image_size) for domain in HELDOUT_DOMAINS]
    zeroshot = [_zeroshot_set(name, zeroshot_per_class, seed, image_size) for name in world.ZEROSHOT_SETS]
    return Benchmark("embedded_time", built, heldout, zeroshot)
