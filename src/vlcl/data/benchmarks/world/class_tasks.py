"""The classification tasks of the world (the embedded_cls benchmark): class names, prompts, the scene of a label."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vlcl.data.benchmarks.world.domains import DOMAINS, Scene, WorldObject
from vlcl.data.benchmarks.world.rendering import render
from vlcl.data.benchmarks.world.splits import SPLITS
from vlcl.data.benchmarks.world.vocabulary import (
    COLOURS,
    NEGATIVE_TEMPLATES,
    PIXEL_TEMPLATES,
    POSITIONS,
    RELATION_PHRASES,
    RELATION_POSITIONS,
    RELATIONS,
    SCATTERED,
    SHAPES_BASE,
    SHAPES_NEW,
    SIZES,
    SKETCH_TEMPLATES,
    TEXTURES,
)
from vlcl.data.benchmarks.world.zeroshot import ZEROSHOT_CENTER_PROB, ZEROSHOT_SPECS

CLASS_CENTER_PROB = ZEROSHOT_CENTER_PROB  # a single object sits in the center this often, else at a random position
SPATIAL_CLASS_COLOURS = ("red", "blue")  # subject and object of the spatial classes: "something red above something blue"


def _free_position(rng: random.Random) -> str:
    return "center" if rng.random() < CLASS_CENTER_PROB else rng.choice(POSITIONS)


def _any_colour(rng: random.Random) -> str:
    return rng.choice(tuple(COLOURS))


def _new_shape_scene(label: int, rng: random.Random) -> Scene:
    return Scene("new_shapes", (WorldObject(SHAPES_NEW[label], _any_colour(rng), rng.choice(SIZES), _free_position(rng)),))


def _count_scene(label: int, rng: random.Random) -> Scene:
    group = WorldObject(rng.choice(SHAPES_BASE), _any_colour(rng), "small", SCATTERED, count=label + 1)
    return Scene("counting", (group,))


def _texture_scene(label: int, rng: random.Random) -> Scene:
    obj = WorldObject(rng.choice(SHAPES_BASE), _any_colour(rng), "large", _free_position(rng), TEXTURES[label])
    return Scene("texture", (obj,))


def _pixel_shape_scene(label: int, rng: random.Random) -> Scene:
    colour = rng.choice(DOMAINS["pixel_art"].colours)
    return Scene("pixel_art", (WorldObject(SHAPES_BASE[label], colour, "large", _free_position(rng)),))


def _relation_scene(label: int, rng: random.Random) -> Scene:
    relation = RELATIONS[label]
    positions = RELATION_POSITIONS[relation]
    objects = tuple(WorldObject(rng.choice(SHAPES_BASE), c, rng.choice(SIZES), p) for c, p in zip(SPATIAL_CLASS_COLOURS, positions))
    return Scene("spatial", objects, relation)


SKETCH_COLOURS = DOMAINS["sketch"].colours


def _sketch_colour_scene(label: int, rng: random.Random) -> Scene:
    return Scene("sketch", (WorldObject(rng.choice(SHAPES_BASE), SKETCH_COLOURS[label], rng.choice(SIZES), _free_position(rng)),))


def _negative_colour_scene(label: int, rng: random.Random) -> Scene:
    return Scene("negative", (WorldObject(rng.choice(SHAPES_BASE), tuple(COLOURS)[label], rng.choice(SIZES), _free_position(rng)),))


@dataclass(frozen=True)
class ClassTaskSpec:
    """A classification task of the world: class names, prompt templates, and the scene drawn for a label."""

    classes: tuple[str, ...]
    templates: tuple[str, ...]  # "{}" is the class name
    scene: Callable[[int, random.Random], Scene]  # (label, rng) -> a scene of that class
    description: str


def _filled(templates: Sequence[str], phrase: str) -> tuple[str, ...]:
    return tuple(t.format(phrase) for t in templates)


# Every class name and prompt uses only words of world_vocabulary() (tested), so the shipped tokenizer reads them.
CLASS_TASKS: dict[str, ClassTaskSpec] = {
    "new_shapes": ClassTaskSpec(
        SHAPES_NEW, ZEROSHOT_SPECS["shape"].templates, _new_shape_scene, "new vocabulary: cross, heart, hexagon or arrow"
    ),
    "counting": ClassTaskSpec(
        ("one shape", "two shapes", "three shapes", "four shapes"),
        ("a photo of {}", "a picture of {}", "an image of {}", "an image showing {}", "a scene with {}", "{}"),
        _count_scene,
        "counts: one to four copies of a shape",
    ),
    "texture": ClassTaskSpec(
        TEXTURES,
        ("a photo of a {} shape", "a {} shape", "a picture of a {} object", "an image of a {} shape", "there is a {} object", "a drawing of a {} shape"),
        _texture_scene,
        "fills: striped, dotted or checkered",
    ),
    "pixel_art": ClassTaskSpec(
        SHAPES_BASE, _filled(PIXEL_TEMPLATES, "a {}"), _pixel_shape_scene, "style shift: the base shapes as 12x12 pixel art"
    ),
    "spatial": ClassTaskSpec(
        tuple(RELATION_PHRASES[r] for r in RELATIONS),
        _filled(
            ("{}", "a photo of {}", "a picture of {}", "an image showing {}", "there is {}", "an image of {}"),
            f"something {SPATIAL_CLASS_COLOURS[0]} {{}} something {SPATIAL_CLASS_COLOURS[1]}",
        ),
        _relation_scene,
        "relations: something red left of, right of, above or below something blue",
    ),
    "sketch": ClassTaskSpec(
        SKETCH_COLOURS, _filled(SKETCH_TEMPLATES, "something {}"), _sketch_colour_scene, "style shift: the colour of an outline on white"
    ),
    "negative": ClassTaskSpec(
        tuple(COLOURS),
        _filled(NEGATIVE_TEMPLATES, "something {}"),
        _negative_colour_scene,
        "colour conflict: photo negatives named by their original colour",
    ),
}


@dataclass
class ClassSplit:
    """Images (uint8 [N, size, size, 3]) with one class label each, the class names and prompt templates."""

    images: np.ndarray
    labels: np.ndarray
    classnames: list[str]
    templates: list[str]

    def __len__(self) -> int:
        return len(self.images)


def generate_class_split(task: str, n_images: int, *, seed: int, split: str, size: int = 32) -> ClassSplit:
    """``n_images`` images of the classification task ``task``, labels interleaved by class (every class has
    ``n_images // classes`` or one more). One stream seeded by ``f"{seed}/cls/{task}/{split}"``: the train and
    test splits of a task, and different tasks, draw apart."""
    if task not in CLASS_TASKS:
        raise ValueError(f"unknown classification task '{task}'; valid: {', '.join(CLASS_TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
    spec = CLASS_TASKS[task]
    if n_images < len(spec.classes):
        raise ValueError(f"task '{task}' has {len(spec.classes)} classes: {n_images} images would leave one empty")
    rng = random.Random(f"{seed}/cls/{task}/{split}")
    labels = np.arange(n_images, dtype=np.int64) % len(spec.classes)
    images = np.empty((n_images, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i] = np.asarray(render(spec.scene(int(label), rng), rng, size))
    return ClassSplit(images, labels, list(spec.classes), list(spec.templates))
