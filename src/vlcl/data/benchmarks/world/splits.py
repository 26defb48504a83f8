"""The image-caption splits of a domain (the embedded benchmark's tasks and held-out retrieval sets)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from vlcl.data.benchmarks.world.captions import describe, make_captions
from vlcl.data.benchmarks.world.domains import Scene, domain_spec
from vlcl.data.benchmarks.world.rendering import render
from vlcl.data.benchmarks.world.scenes import sample_scene

SPLITS = ("train", "test")
UNIQUE_TRIES_PER_IMAGE = 50  # test splits give up after this many draws per requested image (plus a floor)


@dataclass
class Split:
    """Images (uint8 [N, size, size, 3]), their captions and canonical descriptions."""

    images: np.ndarray
    captions: list[list[str]]
    descriptions: list[str]

    def __len__(self) -> int:
        return len(self.images)


def _scenes(domain: str, n: int, rng: random.Random, unique: bool) -> list[Scene]:
    scenes: list[Scene] = []
    seen: set[str] = set()
    budget = UNIQUE_TRIES_PER_IMAGE * n + 1000
    while len(scenes) < n:
        if budget == 0:
            raise ValueError(f"domain '{domain}' could not produce {n} unique scene descriptions (got {len(scenes)})")
        budget -= 1
        scene = sample_scene(domain, rng)
        key = describe(scene)
        if unique and key in seen:
            continue
        seen.add(key)
        scenes.append(scene)
    return scenes


def generate_split(domain: str, n_images: int, *, seed: int, split: str, captions_per_image: int, size: int = 32) -> Split:
    """A reproducible split of ``domain``.

    ``split="test"``: unique descriptions, ``captions_per_image`` full
    paraphrases each. ``split="train"``: duplicates allowed, noisy training
    captions. Scenes are sampled first, then captions and images, all from one
    stream seeded by ``f"{seed}/{domain}/{split}"``.
    """
    domain_spec(domain)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
    rng = random.Random(f"{seed}/{domain}/{split}")
    scenes = _scenes(domain, n_images, rng, unique=split == "test")
    images = np.empty((n_images, size, size, 3), dtype=np.uint8)
    captions = []
    for i, scene in enumerate(scenes):
        captions.append(make_captions(scene, rng, captions_per_image, train=split == "train"))
        images[i] = np.asarray(render(scene, rng, size))
    return Split(images, captions, [describe(s) for s in scenes])
