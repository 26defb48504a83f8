"""What a scene is (objects, an optional relation) and what makes each domain: its shapes, colours, layout, templates and style."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vlcl.data.benchmarks.world.vocabulary import (
    BASE_TEMPLATES,
    COLOURS,
    COUNTING_TEMPLATES,
    GRAINY_TEMPLATES,
    NEGATIVE_TEMPLATES,
    PIXEL_TEMPLATES,
    SHAPES_BASE,
    SHAPES_NEW,
    SKETCH_TEMPLATES,
    TRAIN_CAPTION_NOISE,
    CaptionNoise,
)


@dataclass(frozen=True)
class WorldObject:
    """One object, or for counting scenes a group of ``count`` identical copies."""

    shape: str
    colour: str
    size: str
    position: str
    texture: str | None = None
    count: int = 1


@dataclass(frozen=True)
class Scene:
    """A scene of a domain. For spatial scenes ``objects[0] <relation> objects[1]``."""

    domain: str
    objects: tuple[WorldObject, ...]
    relation: str | None = None


Layout = Literal["positioned", "counting", "spatial"]
Background = Literal["dark", "white", "grey"]  # keys of BACKGROUNDS


@dataclass(frozen=True)
class DomainSpec:
    """Everything that makes a domain: what is in its scenes, how they are phrased and drawn.

    ``layout`` selects the scene sampler, phrase builder and object placer:
    ``"positioned"`` (objects at distinct named positions), ``"counting"``
    (groups of copies at scattered places) or ``"spatial"`` (two objects in a
    relation).
    """

    shapes: tuple[str, ...] = SHAPES_BASE
    colours: tuple[str, ...] = tuple(COLOURS)
    layout: Layout = "positioned"
    templates: tuple[str, ...] = BASE_TEMPLATES
    max_objects: int = 2  # objects (positioned) or groups (counting)
    max_count: int = 1  # copies per group
    textured: bool = False
    background: Background = "dark"
    outline: bool = False
    pixel_grid: int | None = None  # point-sample to grid x grid, snap to the palette, NEAREST upscale
    noise_sigma: float = 0.0  # gaussian pixel noise at output resolution
    inverted: bool = False  # photo negative; captions keep naming the original colours (a deliberate conflict)
    caption_noise: CaptionNoise = TRAIN_CAPTION_NOISE  # training captions; test captions use none


DOMAINS: dict[str, DomainSpec] = {
    "base": DomainSpec(),
    "sketch": DomainSpec(
        colours=tuple(c for c in COLOURS if c != "white"), templates=SKETCH_TEMPLATES, background="white", outline=True
    ),
    # Few colours, so that retrieval needs the new shape words rather than colour and position alone.
    "new_shapes": DomainSpec(shapes=SHAPES_NEW, colours=("white", "yellow", "cyan")),
    "counting": DomainSpec(layout="counting", templates=COUNTING_TEMPLATES, max_count=4),
    "texture": DomainSpec(textured=True),
    "spatial": DomainSpec(layout="spatial"),
    # 12x12 (at 8 every shape becomes a blob) and three colours, so that retrieval needs the shapes.
    "pixel_art": DomainSpec(templates=PIXEL_TEMPLATES, pixel_grid=12, colours=("red", "green", "blue")),
    "negative": DomainSpec(templates=NEGATIVE_TEMPLATES, inverted=True),
    "grainy": DomainSpec(templates=GRAINY_TEMPLATES, background="grey", noise_sigma=25.0),
}


def domain_spec(domain: str) -> DomainSpec:
    """The spec of ``domain``; a ``ValueError`` listing valid names otherwise."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown world domain '{domain}'; valid: {', '.join(DOMAINS)}")
    return DOMAINS[domain]
