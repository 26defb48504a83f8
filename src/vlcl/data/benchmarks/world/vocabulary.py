"""The words of the world and the caption templates of its domains, and how training captions are shortened."""

from __future__ import annotations

from dataclasses import dataclass

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
