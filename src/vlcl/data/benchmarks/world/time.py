"""The drifting world of the time-continual benchmark ``embedded_time``: one set of domains per time step.

A time step is a *mixture* of world domains (:class:`~vlcl.data.benchmarks.world.domains.DomainSpec`, named
``"<step>/<kind>"`` and added to :data:`~vlcl.data.benchmarks.world.domains.DOMAINS`), each with the step's
shapes, colours, caption templates and caption noise. Every word is a word of the base world's vocabulary
(:func:`~vlcl.data.benchmarks.world.world_vocabulary`), so the shipped tokenizer reads every caption; what is
new at a later step is a word the step-1 captions never use, not a word the tokenizer lacks. The schedule
is documented in :mod:`vlcl.data.benchmarks.embedded_time`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vlcl.data.benchmarks.world.domains import DOMAINS, DomainSpec
from vlcl.data.benchmarks.world.vocabulary import BASE_TEMPLATES, COLOURS, CaptionNoise


@dataclass(frozen=True)
class TimeStep:
    """One time step: the domains it mixes (kind -> (weight, spec)), and a one-line description."""

    name: str
    mixture: tuple[tuple[str, float, DomainSpec], ...]
    description: str

    def domain(self, kind: str) -> str:
        return f"{self.name}/{kind}"

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self.domain(kind) for kind, _, _ in self.mixture)

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(w for _, w, _ in self.mixture)


ALL_COLOURS = tuple(COLOURS)
# Shapes: the base five at the start; cross, heart, hexagon and arrow appear one step after another while
# diamond, triangle, square and star fade out.
SHAPES = {
    "t2014": ("circle", "square", "triangle", "diamond", "star"),
    "t2015": ("circle", "square", "triangle", "diamond", "star", "cross"),
    "t2016": ("circle", "square", "triangle", "star", "cross", "heart"),
    "t2017": ("circle", "square", "star", "cross", "heart", "hexagon"),
    "t2018": ("circle", "star", "cross", "heart", "hexagon", "arrow"),
    "t2019": ("circle", "cross", "heart", "hexagon", "arrow"),
}
COLOURS_BY_STEP = {
    "t2014": ALL_COLOURS,
    "t2015": ALL_COLOURS,
    "t2016": tuple(c for c in ALL_COLOURS if c != "white"),
    "t2017": tuple(c for c in ALL_COLOURS if c != "white"),
    "t2018": ("red", "orange", "green", "cyan", "blue", "purple"),
    "t2019": ("red", "green", "cyan", "blue", "purple"),
}
# Caption habits: photo-style prefixes fade; scene phrase first ("{} in a picture") takes over; captions get
# longer (fewer attributes dropped) and generic nouns ("an object", "something") more common.
TEMPLATES = {
    "t2014": BASE_TEMPLATES,
    "t2015": ("a photo of {}", "a picture of {}", "an image of {}", "there is {}", "{}"),
    "t2016": ("a picture of {}", "an image showing {}", "a scene with {}", "{}", "an image with {}"),
    "t2017": ("{} in a picture", "an image showing {}", "a scene with {}", "{} in the image", "a scene showing {}"),
    "t2018": ("{} in the picture", "{} in a scene", "a scene with {}", "{}", "{} in an image"),
    "t2019": ("{}", "{} in the image", "{} in a picture", "{} in the scene", "{} in an image"),
}
SKETCH_TEMPLATES = {
    "t2016": ("a sketch of {}", "a line drawing of {}", "a pencil sketch showing {}", "a sketch showing {}", "an outline drawing of {}"),
    "t2017": ("a sketch of {}", "{} in a sketch", "a simple line drawing of {}", "{} in a line drawing", "{} in a pencil sketch"),
}
PIXEL_TEMPLATES = {
    "t2018": ("pixel art of {}", "a pixelated image of {}", "{} in pixel art", "pixel art showing {}", "a pixelated picture of {}"),
    "t2019": ("{} in pixel art", "{} in a pixelated image", "{} in retro pixel art", "{} in a pixelated picture", "{} in low resolution pixel art"),
}
NOISE = {
    "t2014": CaptionNoise(),
    "t2015": CaptionNoise(0.3, 0.35, 0.35, 0.15),
    "t2016": CaptionNoise(0.25, 0.3, 0.3, 0.2),
    "t2017": CaptionNoise(0.2, 0.25, 0.25, 0.25),
    "t2018": CaptionNoise(0.15, 0.2, 0.2, 0.25),
    "t2019": CaptionNoise(0.1, 0.1, 0.15, 0.3),
}


def _spec(step: str, **kw) -> DomainSpec:
    base = DomainSpec(shapes=SHAPES[step], colours=COLOURS_BY_STEP[step], templates=TEMPLATES[step], caption_noise=NOISE[step])
    return replace(base, **kw)


TIME_STEPS: tuple[TimeStep, ...] = (
    TimeStep("t2014", (("photo", 1.0, _spec("t2014")),), "the pre-training world: photos of the base shapes"),
    TimeStep("t2015", (
        ("photo", 0.7, _spec("t2015")),
        ("counting", 0.3, _spec("t2015", layout="counting", max_count=3)),
    ), "cross appears; counting captions; photo prefixes and bare captions"),
    TimeStep("t2016", (
        ("photo", 0.4, _spec("t2016")),
        ("counting", 0.3, _spec("t2016", layout="counting", max_count=4)),
        ("sketch", 0.3, _spec("t2016", templates=SKETCH_TEMPLATES["t2016"], background="white", outline=True)),
    ), "heart appears, diamond and white fade; sketches; 'a scene with'"),
    TimeStep("t2017", (
        ("photo", 0.3, _spec("t2017", max_objects=3)),
        ("sketch", 0.3, _spec("t2017", templates=SKETCH_TEMPLATES["t2017"], background="white", outline=True)),
        ("spatial", 0.4, _spec("t2017", layout="spatial")),
    ), "hexagon appears, triangle fades; spatial relations; scene phrase first"),
    TimeStep("t2018", (
        ("texture", 0.4, _spec("t2018", textured=True)),
        ("spatial", 0.3, _spec("t2018", layout="spatial")),
        ("pixel", 0.3, _spec("t2018", templates=PIXEL_TEMPLATES["t2018"], pixel_grid=12)),
    ), "arrow appears, square, yellow and photos fade; textures and pixel art"),
    TimeStep("t2019", (
        ("pixel", 0.4, _spec("t2019", templates=PIXEL_TEMPLATES["t2019"], pixel_grid=12)),
        ("spatial", 0.3, _spec("t2019", layout="spatial")),
        ("texture", 0.3, _spec("t2019", textured=True, max_objects=3)),
    ), "star, orange and sketches gone; pixel art leads; long captions, scene phrase first"),
)
TIME_STEP_NAMES = tuple(step.name for step in TIME_STEPS)

for _step in TIME_STEPS:
    for _kind, _, _domain_spec in _step.mixture:
        DOMAINS[_step.domain(_kind)] = _domain_spec


def time_step(name: str) -> TimeStep:
    for step in TIME_STEPS:
        if step.name == name:
            return step
    raise ValueError(f"unknown time step '{name}'; valid: {', '.join(TIME_STEP_NAMES)}")


def allocate(n: int, weights: tuple[float, ...]) -> list[int]:
    """``n`` split by ``weights`` (largest remainder), every share at least 1 when ``n`` allows."""
    total = sum(weights)
    raw = [n * w / total for w in weights]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[: n - sum(counts)]:
        counts[i] += 1
    for i, c in enumerate(counts):
        if c == 0 and n >= len(counts):
            j = max(range(len(counts)), key=lambda j: counts[j])
            counts[j] -= 1
            counts[i] = 1
    return counts
