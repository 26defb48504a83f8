"""A deterministic procedural image-caption world, rendered with Pillow.

This is the embedded continual-learning benchmark: small coloured shapes on
32x32 images, described by short lowercase captions ("a large red circle on
the left"). Nothing is downloaded; every image and caption follows from a
seed.

Structure
---------
* A :class:`Scene` is a list of :class:`WorldObject` s plus an optional
  spatial relation; :func:`sample_scene` draws one for a domain.
* A domain is one declarative :class:`DomainSpec` in :data:`DOMAINS`: which
  shapes and colours, which *layout* (how objects are placed and phrased),
  which caption templates, and which rendering style (background, outline,
  texture, pixel grid, noise).
* :func:`describe` gives the canonical full description (used to keep test
  scenes unique), :func:`make_captions` the training or test captions,
  :func:`render` the image.
* :func:`generate_split` and :func:`generate_zeroshot_set` build the arrays the
  benchmark consumes.

Determinism: every function takes an explicit :class:`random.Random` (or a
seed that becomes one, via a string such as ``"0/base/test"``, whose seeding
is stable across processes). Neither Python's nor NumPy's global RNG is used.

Rendering draws at :data:`SUPERSAMPLE` times the output size (128 px for 32 px
images) in canvas units, then downsamples with a box filter. Geometry
constants below are in those 128-px canvas units.

Run ``python -m vlcl.data.benchmarks.world OUT_DIR`` to write one preview contact sheet
per domain.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageOps

# ---------------------------------------------------------------------------
# Vocabulary of the world
# ---------------------------------------------------------------------------

SHAPES_BASE = ("circle", "square", "triangle", "diamond", "star")
SHAPES_NEW = ("cross", "heart", "hexagon", "arrow")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "orange": (245, 140, 20),
    "yellow": (235, 220, 40),
    "green": (40, 190, 60),
    "cyan": (40, 210, 220),
    "blue": (60, 95, 240),
    "purple": (160, 70, 215),
    "white": (235, 235, 235),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
TEXTURES = ("striped", "dotted", "checkered")
RELATIONS = ("left of", "right of", "above", "below")
NUMBER_WORDS = ("one", "two", "three", "four")
PLURALS: dict[str, str] = {s: s + "es" if s.endswith(("s", "x")) else s + "s" for s in SHAPES_BASE + SHAPES_NEW}
PLURALS["cross"] = "crosses"

SCATTERED = "scattered"  # position of counting groups: copies placed anywhere
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left",),
    "right": ("on the right",),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "center": ("in the center", "in the middle"),
}
RELATION_PHRASES: dict[str, str] = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
INVERSE_RELATION: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
RELATION_POSITIONS: dict[str, tuple[str, str]] = {
    "left of": ("left", "right"),
    "right of": ("right", "left"),
    "above": ("top", "bottom"),
    "below": ("bottom", "top"),
}
GENERIC_NOUNS = ("shape", "object", "something")  # "something" takes no article and goes first: "something red"
GENERIC_ARTICLE_NOUNS = GENERIC_NOUNS[:2]
GENERIC_PLURALS = ("shapes", "objects")
CONNECTIVE_WORDS = ("a", "an", "and")

# ---------------------------------------------------------------------------
# Caption templates ("{}" is the scene phrase, which carries its own articles)
# ---------------------------------------------------------------------------

BASE_TEMPLATES = (
    "{}",
    "a photo of {}",
    "there is {}",
    "an image showing {}",
    "a picture of {}",
    "a drawing of {}",
    "an image of {}",
)
COUNTING_TEMPLATES = ("{}", "a photo of {}", "a picture of {}", "an image showing {}", "an image of {}", "a scene with {}")
SKETCH_TEMPLATES = (
    "a sketch of {}",
    "a line drawing of {}",
    "a pencil sketch showing {}",
    "an outline drawing of {}",
    "a sketch showing {}",
    "a simple line drawing of {}",
)
PIXEL_TEMPLATES = (
    "pixel art of {}",
    "a pixelated image of {}",
    "pixel art showing {}",
    "a pixelated picture of {}",
    "a retro pixel art image of {}",
    "low resolution pixel art of {}",
)
NEGATIVE_TEMPLATES = (
    "a negative of {}",
    "a photo negative of {}",
    "an inverted photo of {}",
    "an inverted image showing {}",
    "a negative image of {}",
    "inverted colours of {}",
)
GRAINY_TEMPLATES = (
    "a grainy photo of {}",
    "a noisy picture of {}",
    "a grainy image of {}",
    "a noisy photo showing {}",
    "a grainy picture of {}",
    "a low quality photo of {}",
)


@dataclass(frozen=True)
class CaptionNoise:
    """How training captions are shortened: each attribute is dropped independently."""

    drop_size: float = 0.3
    drop_colour: float = 0.4  # above the size's 0.3 so that shape-only captions are common enough to teach shape
    drop_position: float = 0.4
    generic_shape: float = 0.15  # shape word replaced by a GENERIC_NOUNS entry


TRAIN_CAPTION_NOISE = CaptionNoise()
NO_CAPTION_NOISE = CaptionNoise(0.0, 0.0, 0.0, 0.0)  # test captions and descriptions: every attribute
TEST_CAPTION_RETRIES = 20  # attempts per test caption to find a paraphrase not yet used for that image

# ---------------------------------------------------------------------------
# Rendering constants (canvas units: the supersampled 128-px canvas)
# ---------------------------------------------------------------------------

SUPERSAMPLE = 4
CANVAS = 128
SIZE_RADIUS: dict[str, float] = {"small": 18.0, "large": 26.0}
SIZE_JITTER = 0.08  # relative
POSITION_CENTRES: dict[str, tuple[float, float]] = {
    "left": (28.0, 64.0),
    "right": (100.0, 64.0),
    "top": (64.0, 28.0),
    "bottom": (64.0, 100.0),
    "center": (64.0, 64.0),
}
POSITION_JITTER = 5.0  # +- canvas px
COLOUR_JITTER = 15  # +- per channel
COUNT_GRID = 3  # counting copies go to distinct cells of a COUNT_GRID x COUNT_GRID grid
OUTLINE_WIDTH = 5  # sketch line width, canvas px
SKETCH_WOBBLE = 1.5  # sketch vertex jitter, canvas px
TEXTURE_PERIOD: dict[str, int] = {"striped": 14, "dotted": 16, "checkered": 10}
TEXTURE_SHADE = 0.35  # background of a pattern: the object colour times this
PIXEL_BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (22, 22, 30), (14, 16, 48))
GRAINY_GREY = (80, 150)  # range of the mid-grey background level
GRAINY_BLOTCH = 30  # amplitude of the low-frequency background texture


# ---------------------------------------------------------------------------
# Scenes and domains
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Scene sampling
# ---------------------------------------------------------------------------


def _random_object(spec: DomainSpec, rng: random.Random, position: str) -> WorldObject:
    texture = rng.choice(TEXTURES) if spec.textured else None
    return WorldObject(rng.choice(spec.shapes), rng.choice(spec.colours), rng.choice(SIZES), position, texture)


def _distinct_kinds(spec: DomainSpec, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """``n`` distinct (shape, colour) pairs."""
    if n > len(spec.shapes) * len(spec.colours):
        raise ValueError(f"a domain with {len(spec.shapes)} shapes and {len(spec.colours)} colours has no {n} distinct kinds")
    kinds: list[tuple[str, str]] = []
    while len(kinds) < n:
        kind = (rng.choice(spec.shapes), rng.choice(spec.colours))
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def _sample_positioned(spec: DomainSpec, rng: random.Random) -> tuple[tuple[WorldObject, ...], str | None]:
    positions = rng.sample(POSITIONS, rng.randint(1, spec.max_objects))
    return tuple(_random_object(spec, rng, p) for p in positions), None


def _sample_counting(spec: DomainSpec, rng: random.Random) -> tuple[tuple[WorldObject, ...], str | None]:
    kinds = _distinct_kinds(spec, rng, rng.randint(1, spec.max_objects))
    groups = tuple(WorldObject(s, c, "small", SCATTERED, count=rng.randint(1, spec.max_count)) for s, c in kinds)
    return groups, None


def _sample_spatial(spec: DomainSpec, rng: random.Random) -> tuple[tuple[WorldObject, ...], str | None]:
    relation = rng.choice(RELATIONS)
    kinds = _distinct_kinds(spec, rng, 2)
    positions = RELATION_POSITIONS[relation]
    objects = tuple(WorldObject(s, c, rng.choice(SIZES), p) for (s, c), p in zip(kinds, positions))
    return objects, relation


SceneSampler = Callable[[DomainSpec, random.Random], tuple[tuple[WorldObject, ...], str | None]]
SCENE_SAMPLERS: dict[str, SceneSampler] = {
    "positioned": _sample_positioned,
    "counting": _sample_counting,
    "spatial": _sample_spatial,
}


def sample_scene(domain: str, rng: random.Random) -> Scene:
    """Draw a random scene of ``domain``."""
    spec = domain_spec(domain)
    objects, relation = SCENE_SAMPLERS[spec.layout](spec, rng)
    return Scene(domain, objects, relation)


# ---------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------


def _with_article(words: list[str]) -> str:
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def _chance(p: float, rng: random.Random) -> bool:
    """True with probability ``p``; draws nothing when ``p`` is 0 (full captions use no randomness here)."""
    return p > 0 and rng.random() < p


def _object_phrase(obj: WorldObject, rng: random.Random, noise: CaptionNoise, *, with_position: bool) -> str:
    """ "a large striped red circle on the left"; ``noise`` may drop attributes (never the texture)."""
    size = None if _chance(noise.drop_size, rng) else obj.size
    colour = None if _chance(noise.drop_colour, rng) else obj.colour
    position = obj.position if with_position and not _chance(noise.drop_position, rng) else None
    generic = GENERIC_NOUNS if obj.texture is None else GENERIC_ARTICLE_NOUNS  # "something" would lose the texture
    noun = rng.choice(generic) if _chance(noise.generic_shape, rng) else obj.shape
    tail = [rng.choice(POSITION_PHRASES[position])] if position else []
    if noun == "something":
        return " ".join(["something", *([colour] if colour else []), *tail])
    words = [w for w in (size, obj.texture, colour, noun) if w]
    return " ".join([_with_article(words), *tail])


def _group_phrase(obj: WorldObject, rng: random.Random, noise: CaptionNoise) -> str:
    """ "two red circles"; ``noise`` may drop the colour or make the shape generic."""
    colour = None if _chance(noise.drop_colour, rng) else obj.colour
    plural = obj.count > 1
    if _chance(noise.generic_shape, rng):
        generic = rng.choice(GENERIC_PLURALS)
        noun = generic if plural else generic[:-1]
    else:
        noun = PLURALS[obj.shape] if plural else obj.shape
    return " ".join(w for w in (NUMBER_WORDS[obj.count - 1], colour, noun) if w)


def _positioned_body(scene: Scene, rng: random.Random, noise: CaptionNoise) -> str:
    objects = rng.sample(scene.objects, len(scene.objects))
    return " and ".join(_object_phrase(o, rng, noise, with_position=True) for o in objects)


def _counting_body(scene: Scene, rng: random.Random, noise: CaptionNoise) -> str:
    groups = rng.sample(scene.objects, len(scene.objects))
    return " and ".join(_group_phrase(g, rng, noise) for g in groups)


def _spatial_body(scene: Scene, rng: random.Random, noise: CaptionNoise) -> str:
    first, second = scene.objects
    relation = scene.relation
    assert relation is not None, "spatial scenes carry a relation"
    if _chance(0.5, rng):  # the inverse phrasing is an equally valid paraphrase
        first, second, relation = second, first, INVERSE_RELATION[relation]
    a = _object_phrase(first, rng, noise, with_position=False)
    b = _object_phrase(second, rng, noise, with_position=False)
    return f"{a} {RELATION_PHRASES[relation]} {b}"


BodyBuilder = Callable[[Scene, random.Random, CaptionNoise], str]
CAPTION_BODIES: dict[str, BodyBuilder] = {
    "positioned": _positioned_body,
    "counting": _counting_body,
    "spatial": _spatial_body,
}


class _CanonicalChoices(random.Random):
    """A stand-in rng for :func:`describe`: first option, original order, never a coin flip."""

    def choice(self, seq):  # type: ignore[override]
        return seq[0]

    def sample(self, population, k, *, counts=None):  # type: ignore[override]
        return list(population)[:k]

    def random(self) -> float:
        return 1.0


def _object_key(obj: WorldObject) -> tuple:
    position = POSITIONS.index(obj.position) if obj.position in POSITIONS else -1
    return (position, obj.shape, obj.colour, obj.size, obj.texture or "", obj.count)


def _canonical(scene: Scene) -> Scene:
    """Objects in a fixed order; spatial relations turned into "left of" / "above"."""
    if scene.relation is None:
        return replace(scene, objects=tuple(sorted(scene.objects, key=_object_key)))
    if scene.relation in ("right of", "below"):
        first, second = scene.objects
        return replace(scene, objects=(second, first), relation=INVERSE_RELATION[scene.relation])
    return scene


def describe(scene: Scene) -> str:
    """The canonical full description: every attribute, fixed order and phrasing, no style phrase.

    Two scenes of a domain with the same description are the same up to
    rendering jitter (object order and inverse relations do not matter).
    """
    layout = domain_spec(scene.domain).layout
    return CAPTION_BODIES[layout](_canonical(scene), _CanonicalChoices(0), NO_CAPTION_NOISE)


def _caption(scene: Scene, template: str, rng: random.Random, noise: CaptionNoise) -> str:
    return template.format(CAPTION_BODIES[domain_spec(scene.domain).layout](scene, rng, noise))


def _test_captions(scene: Scene, rng: random.Random, n: int) -> list[str]:
    """``n`` full paraphrases: distinct templates first, distinct strings where possible."""
    templates = domain_spec(scene.domain).templates
    order = rng.sample(templates, len(templates))
    captions: list[str] = []
    for i in range(n):
        caption = _caption(scene, order[i % len(order)], rng, NO_CAPTION_NOISE)
        for _ in range(TEST_CAPTION_RETRIES):
            if caption not in captions:
                break
            caption = _caption(scene, rng.choice(templates), rng, NO_CAPTION_NOISE)
        captions.append(caption)
    return captions


def make_captions(scene: Scene, rng: random.Random, n: int, *, train: bool) -> list[str]:
    """``n`` captions of ``scene``.

    ``train=True``: random templates with attributes dropped (see
    :class:`CaptionNoise`), so short prompts like "a photo of a circle" are in
    distribution. ``train=False``: full descriptions, distinct paraphrases.
    """
    if not train:
        return _test_captions(scene, rng, n)
    spec = domain_spec(scene.domain)
    return [_caption(scene, rng.choice(spec.templates), rng, spec.caption_noise) for _ in range(n)]


# ---------------------------------------------------------------------------
# Shapes: unit polygons (radius about 1, y pointing down)
# ---------------------------------------------------------------------------

Polygon = tuple[tuple[float, float], ...]


def _regular(n: int, radius: float = 1.0, start_deg: float = -90.0, inner: float | None = None) -> Polygon:
    """A regular n-gon, or an n-pointed star when ``inner`` is given."""
    steps = 2 * n if inner is not None else n
    points = []
    for k in range(steps):
        r = inner if inner is not None and k % 2 else radius
        a = math.radians(start_deg + 360.0 * k / steps)
        points.append((r * math.cos(a), r * math.sin(a)))
    return tuple(points)


def _heart() -> Polygon:
    ts = (2 * math.pi * k / 40 for k in range(40))
    pts = [(16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))) for t in ts]
    return tuple((x / 16.5, (y + 2.5) / 15.0) for x, y in pts)


def _cross(arm: float = 0.34) -> Polygon:
    a, b = arm, 1.0
    return ((-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a))


UNIT_SHAPES: dict[str, Polygon] = {
    "circle": _regular(32),
    "square": ((-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)),
    "triangle": tuple((x * 1.1, y * 1.1 + 0.22) for x, y in _regular(3)),
    "diamond": ((0.0, -1.05), (0.72, 0.0), (0.0, 1.05), (-0.72, 0.0)),
    "star": _regular(5, inner=0.45),
    "cross": _cross(),
    "heart": _heart(),
    "hexagon": _regular(6, start_deg=0.0),
    "arrow": ((-1.0, -0.28), (0.15, -0.28), (0.15, -0.75), (1.0, 0.0), (0.15, 0.75), (0.15, 0.28), (-1.0, 0.28)),
}


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where one drawn copy goes on the canvas."""

    obj: WorldObject
    cx: float
    cy: float
    radius: float


def _jitter(rng: random.Random, amount: float) -> float:
    return rng.uniform(-amount, amount)


def _jittered_colour(name: str, rng: random.Random) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-COLOUR_JITTER, COLOUR_JITTER))) for c in COLOURS[name])  # type: ignore[return-value]


def _radius(size: str, rng: random.Random) -> float:
    return SIZE_RADIUS[size] * (1.0 + _jitter(rng, SIZE_JITTER))


def _place_positioned(scene: Scene, rng: random.Random) -> Iterator[Placement]:
    for obj in scene.objects:
        x, y = POSITION_CENTRES[obj.position]
        yield Placement(obj, x + _jitter(rng, POSITION_JITTER), y + _jitter(rng, POSITION_JITTER), _radius(obj.size, rng))


def _place_scattered(scene: Scene, rng: random.Random) -> Iterator[Placement]:
    """Every copy in its own grid cell, jittered inside it: copies never overlap."""
    copies = [obj for obj in scene.objects for _ in range(obj.count)]
    if len(copies) > COUNT_GRID**2:
        raise ValueError(f"{len(copies)} copies do not fit a {COUNT_GRID}x{COUNT_GRID} grid")
    cell = CANVAS / COUNT_GRID
    for obj, index in zip(copies, rng.sample(range(COUNT_GRID**2), len(copies))):
        radius = _radius(obj.size, rng)
        slack = max(0.0, cell / 2 - radius - 1)
        cx = (index % COUNT_GRID + 0.5) * cell + _jitter(rng, slack)
        cy = (index // COUNT_GRID + 0.5) * cell + _jitter(rng, slack)
        yield Placement(obj, cx, cy, radius)


OBJECT_PLACERS: dict[str, Callable[[Scene, random.Random], Iterator[Placement]]] = {
    "positioned": _place_positioned,
    "counting": _place_scattered,
    "spatial": _place_positioned,
}


def _dark_background(rng: random.Random) -> Image.Image:
    level = rng.randint(0, 28)
    blue = level + (rng.randint(10, 40) if rng.random() < 0.5 else 0)  # grey or navy
    return Image.new("RGB", (CANVAS, CANVAS), (level, level, blue))


def _white_background(rng: random.Random) -> Image.Image:
    level = rng.randint(238, 255)
    return Image.new("RGB", (CANVAS, CANVAS), (level, level, level))


def _grey_background(rng: random.Random) -> Image.Image:
    """Mid grey with low-frequency blotches (a 4x4 random grid, smoothly upscaled)."""
    level = rng.randint(*GRAINY_GREY)
    cells = bytes(min(255, max(0, level + rng.randint(-GRAINY_BLOTCH, GRAINY_BLOTCH))) for _ in range(16))
    grey = Image.frombytes("L", (4, 4), cells).resize((CANVAS, CANVAS), Image.BILINEAR)
    return Image.merge("RGB", (grey, grey, grey))


BACKGROUNDS: dict[str, Callable[[random.Random], Image.Image]] = {
    "dark": _dark_background,
    "white": _white_background,
    "grey": _grey_background,
}


def _polygon(place: Placement, rng: random.Random, wobble: float = 0.0) -> list[tuple[float, float]]:
    unit = UNIT_SHAPES[place.obj.shape]
    return [(place.cx + x * place.radius + _jitter(rng, wobble), place.cy + y * place.radius + _jitter(rng, wobble)) for x, y in unit]


@lru_cache(maxsize=None)
def _pattern(texture: str) -> Image.Image:
    """A 2x-canvas "L" mask of the pattern (255 = pattern colour); crops give random phases."""
    period = TEXTURE_PERIOD[texture]
    n = 2 * CANVAS
    yy, xx = np.mgrid[0:n, 0:n]
    if texture == "striped":
        on = ((xx + yy) % period) < period // 2
    elif texture == "dotted":
        d = (xx % period - period / 2 + 0.5) ** 2 + (yy % period - period / 2 + 0.5) ** 2
        on = d <= (period * 0.3) ** 2
    else:
        on = ((xx // period) + (yy // period)) % 2 == 0
    return Image.fromarray((on * 255).astype(np.uint8), "L")


def _paint_textured(canvas: Image.Image, points: list[tuple[float, float]], colour: tuple[int, int, int], texture: str, rng: random.Random) -> None:
    """Fill the polygon with a darker shade, then the pattern in ``colour`` (work limited to its bounding box)."""
    x0, y0 = (max(0, int(min(c)) - 1) for c in zip(*points))
    x1, y1 = (min(CANVAS, int(max(c)) + 2) for c in zip(*points))
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in points], fill=255)
    dx, dy = rng.randrange(CANVAS), rng.randrange(CANVAS)
    pattern = _pattern(texture).crop((dx, dy, dx + mask.width, dy + mask.height))
    box = (x0, y0, x1, y1)
    canvas.paste(tuple(int(c * TEXTURE_SHADE) for c in colour), box, mask)
    canvas.paste(colour, box, ImageChops.multiply(mask, pattern))


def _paint(canvas: Image.Image, draw: ImageDraw.ImageDraw, place: Placement, spec: DomainSpec, rng: random.Random) -> None:
    colour = _jittered_colour(place.obj.colour, rng)
    if spec.outline:
        points = _polygon(place, rng, SKETCH_WOBBLE)
        draw.line([*points, points[0], points[1]], fill=colour, width=OUTLINE_WIDTH, joint="curve")
    elif place.obj.texture is not None:
        _paint_textured(canvas, _polygon(place, rng), colour, place.obj.texture, rng)
    else:
        draw.polygon(_polygon(place, rng), fill=colour)


@lru_cache(maxsize=None)
def _palette() -> np.ndarray:
    return np.array([*COLOURS.values(), *PIXEL_BACKGROUNDS], dtype=np.int32)


def _pixelate(canvas: Image.Image, grid: int, size: int) -> Image.Image:
    """Point-sample a grid x grid image, snap every pixel to the palette, upscale NEAREST."""
    small = np.asarray(canvas.resize((grid, grid), Image.NEAREST), dtype=np.int32)
    palette = _palette()
    nearest = ((small[:, :, None, :] - palette[None, None]) ** 2).sum(-1).argmin(-1)
    snapped = Image.fromarray(palette[nearest].astype(np.uint8), "RGB")
    return snapped.resize((size, size), Image.NEAREST)


def _add_noise(image: Image.Image, sigma: float, rng: random.Random) -> Image.Image:
    noise_rng = np.random.default_rng(rng.getrandbits(64))
    pixels = np.asarray(image, dtype=np.float32) + noise_rng.normal(0.0, sigma, (image.height, image.width, 3))
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def render(scene: Scene, rng: random.Random, size: int = 32) -> Image.Image:
    """Draw ``scene`` as an RGB image ``size`` pixels square (jittered by ``rng``)."""
    spec = domain_spec(scene.domain)
    canvas = BACKGROUNDS[spec.background](rng)
    draw = ImageDraw.Draw(canvas)
    for place in OBJECT_PLACERS[spec.layout](scene, rng):
        _paint(canvas, draw, place, spec, rng)
    if spec.pixel_grid is not None:
        image = _pixelate(canvas, spec.pixel_grid, size)
    else:
        image = canvas if size == CANVAS else canvas.resize((size, size), Image.BOX)
    if spec.inverted:
        image = ImageOps.invert(image)
    if spec.noise_sigma > 0:
        image = _add_noise(image, spec.noise_sigma, rng)
    return image


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Zero-shot classification sets
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Classification tasks (the embedded_cls benchmark)
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Vocabulary and previews
# ---------------------------------------------------------------------------


def _words(texts: Sequence[str]) -> set[str]:
    return {w for t in texts for w in t.replace("{}", " ").split()}


def world_vocabulary() -> list[str]:
    """Every word any caption, template or class name of any domain can produce, sorted."""
    texts: list[str] = [*SHAPES_BASE, *SHAPES_NEW, *PLURALS.values(), *COLOURS, *SIZES, *TEXTURES, *NUMBER_WORDS]
    texts += [*GENERIC_NOUNS, *GENERIC_PLURALS, *CONNECTIVE_WORDS, *RELATION_PHRASES.values()]
    texts += [p for phrases in POSITION_PHRASES.values() for p in phrases]
    texts += [t for spec in DOMAINS.values() for t in spec.templates]
    texts += [t for z in ZEROSHOT_SPECS.values() for t in z.templates]
    texts += [c for z in ZEROSHOT_SPECS.values() for c, _ in z.classes]
    return sorted(w.lower() for w in _words(texts))


def contact_sheet(domain: str, n: int = 8, *, seed: int = 0, scale: int = 4, size: int = 32) -> tuple[Image.Image, list[str]]:
    """``n`` test images of ``domain`` side by side, upscaled ``scale`` times, and their first captions."""
    split = generate_split(domain, n, seed=seed, split="test", captions_per_image=1, size=size)
    cell = size * scale
    sheet = Image.new("RGB", (n * (cell + 2), cell), (128, 128, 128))
    for i, image in enumerate(split.images):
        sheet.paste(Image.fromarray(image).resize((cell, cell), Image.NEAREST), (i * (cell + 2), 0))
    return sheet, [caps[0] for caps in split.captions]


def _write_previews(out_dir: str) -> None:
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for domain in DOMAINS:
        sheet, captions = contact_sheet(domain)
        sheet.save(out / f"{domain}.png")
        print(f"[{domain}] {out / f'{domain}.png'}")
        for i, caption in enumerate(captions):
            print(f"  {i}: {caption}")


if __name__ == "__main__":
    import sys

    _write_previews(sys.argv[1] if len(sys.argv) > 1 else "world_preview")
