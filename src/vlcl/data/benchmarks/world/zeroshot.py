"""The zero-shot classification sets of the base domain (shape, colour, shape and colour)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from vlcl.data.benchmarks.world.domains import DOMAINS, Scene, WorldObject
from vlcl.data.benchmarks.world.rendering import render
from vlcl.data.benchmarks.world.vocabulary import COLOURS, POSITIONS, SHAPES_BASE, SIZES

ZEROSHOT_SETS = ("shape", "colour", "shape_colour")
ZEROSHOT_CENTER_PROB = 0.5  # otherwise a random position


@dataclass
class ZeroShotSet:
    """Images with one class label each, class names and prompt templates with ``{}``."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    classnames: list[str]
    templates: list[str]


@dataclass(frozen=True)
class ZeroShotSpec:
    """Class names, prompt templates, and the object attributes a class fixes."""

    classes: tuple[tuple[str, dict[str, str]], ...]  # (classname, {"shape": ..., "colour": ...})
    templates: tuple[str, ...]


# Every prompt is a phrase the base domain's training captions contain (tested).
# Colour prompts avoid "a {}" (it would give "a orange ..."): "something red" is in distribution.
# Shape-colour prompts carry a size word for the same reason ("a small orange circle").
ZEROSHOT_SPECS: dict[str, ZeroShotSpec] = {
    "shape": ZeroShotSpec(
        tuple((s, {"shape": s}) for s in SHAPES_BASE),
        ("a photo of a {}", "a {}", "a picture of a {}", "an image of a {}", "a drawing of a {}", "there is a {}"),
    ),
    "colour": ZeroShotSpec(
        tuple((c, {"colour": c}) for c in COLOURS),
        ("something {}", "a photo of something {}", "a picture of something {}", "an image showing something {}", "there is something {}"),
    ),
    "shape_colour": ZeroShotSpec(
        tuple((f"{c} {s}", {"shape": s, "colour": c}) for s in SHAPES_BASE for c in COLOURS),
        ("a small {}", "a large {}", "a photo of a small {}", "a photo of a large {}", "a picture of a small {}", "a picture of a large {}"),
    ),
}


def _zeroshot_scene(fixed: dict[str, str], rng: random.Random) -> Scene:
    spec = DOMAINS["base"]
    position = "center" if rng.random() < ZEROSHOT_CENTER_PROB else rng.choice(POSITIONS)
    obj = WorldObject(
        fixed.get("shape") or rng.choice(spec.shapes), fixed.get("colour") or rng.choice(spec.colours), rng.choice(SIZES), position
    )
    return Scene("base", (obj,))


def generate_zeroshot_set(name: str, n_per_class: int, *, seed: int, size: int = 32) -> ZeroShotSet:
    """``n_per_class`` base-domain images per class, one object each, labels interleaved by class."""
    if name not in ZEROSHOT_SPECS:
        raise ValueError(f"unknown zero-shot set '{name}'; valid: {', '.join(ZEROSHOT_SETS)}")
    spec = ZEROSHOT_SPECS[name]
    rng = random.Random(f"{seed}/zeroshot/{name}")
    n = n_per_class * len(spec.classes)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % len(spec.classes)
    for i, label in enumerate(labels):
        images[i] = np.asarray(render(_zeroshot_scene(spec.classes[label][1], rng), rng, size))
    return ZeroShotSet(name, images, labels, [c for c, _ in spec.classes], list(spec.templates))
