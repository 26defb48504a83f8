"""Drawing a scene with Pillow: placing its objects, backgrounds, fills, outline, pixel grid and noise.

Geometry constants are in canvas units: the scene is drawn at :data:`SUPERSAMPLE` times the output size
(128 px for 32 px images), then downsampled with a box filter.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageOps

from vlcl.data.benchmarks.world.domains import DomainSpec, Scene, WorldObject, domain_spec
from vlcl.data.benchmarks.world.shapes import UNIT_SHAPES
from vlcl.data.benchmarks.world.vocabulary import COLOURS

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
