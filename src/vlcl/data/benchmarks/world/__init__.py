"""A deterministic procedural image-caption world, rendered with Pillow.

This is the embedded continual-learning benchmark: small coloured shapes on
32x32 images, described by short lowercase captions ("a large red circle on
the left"). Nothing is downloaded; every image and caption follows from a
seed.

Structure (one module per job; the names used outside the world are also here: ``world.generate_split``)
---------
* :mod:`.vocabulary`: the words of the world, the caption templates, how
  training captions are shortened (:class:`CaptionNoise`).
* :mod:`.domains`: a :class:`Scene` is a list of :class:`WorldObject` s plus an
  optional spatial relation; a domain is one declarative :class:`DomainSpec` in
  :data:`DOMAINS`: which shapes and colours, which *layout* (how objects are
  placed and phrased), which caption templates, and which rendering style
  (background, outline, texture, pixel grid, noise).
* :mod:`.scenes`: :func:`sample_scene` draws a scene of a domain.
* :mod:`.captions`: :func:`describe` gives the canonical full description (used
  to keep test scenes unique), :func:`make_captions` the training or test captions.
* :mod:`.shapes` and :mod:`.rendering`: :func:`render` draws the image.
* :mod:`.splits`, :mod:`.zeroshot`, :mod:`.class_tasks`: :func:`generate_split`,
  :func:`generate_zeroshot_set` and :func:`generate_class_split` build the arrays
  the benchmarks consume.
* :mod:`.time`: the drifting domains of the time-continual benchmark (``"t2014/photo"`` ...).
* :mod:`.preview`: contact sheets; :func:`world_vocabulary` (here) every word.

Determinism: every function takes an explicit :class:`random.Random` (or a
seed that becomes one, via a string such as ``"0/base/test"``, whose seeding
is stable across processes). Neither Python's nor NumPy's global RNG is used.

Rendering draws at :data:`SUPERSAMPLE` times the output size (128 px for 32 px
images) in canvas units, then downsamples with a box filter. Geometry
constants (:mod:`.rendering`) are in those 128-px canvas units.

Run ``python -m vlcl.data.benchmarks.world OUT_DIR`` to write one preview contact sheet
per domain.
"""

from __future__ import annotations

from collections.abc import Sequence

from vlcl.data.benchmarks.world.captions import describe, make_captions
from vlcl.data.benchmarks.world.class_tasks import CLASS_TASKS, ClassSplit, ClassTaskSpec, generate_class_split
from vlcl.data.benchmarks.world.domains import DOMAINS, DomainSpec, Scene, WorldObject, domain_spec
from vlcl.data.benchmarks.world.preview import contact_sheet
from vlcl.data.benchmarks.world.rendering import OBJECT_PLACERS, PIXEL_BACKGROUNDS, SUPERSAMPLE, render
from vlcl.data.benchmarks.world.scenes import sample_scene
from vlcl.data.benchmarks.world.splits import Split, generate_split
from vlcl.data.benchmarks.world.vocabulary import (
    COLOURS,
    CONNECTIVE_WORDS,
    GENERIC_NOUNS,
    GENERIC_PLURALS,
    NUMBER_WORDS,
    PLURALS,
    POSITION_PHRASES,
    RELATION_PHRASES,
    RELATION_POSITIONS,
    SCATTERED,
    SHAPES_BASE,
    SHAPES_NEW,
    SIZES,
    TEXTURES,
    CaptionNoise,
)
from vlcl.data.benchmarks.world.time import TIME_STEP_NAMES, TIME_STEPS, TimeStep, time_step
from vlcl.data.benchmarks.world.zeroshot import ZEROSHOT_SETS, ZEROSHOT_SPECS, ZeroShotSet, generate_zeroshot_set


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


__all__ = [
    "CLASS_TASKS",
    "COLOURS",
    "CaptionNoise",
    "ClassSplit",
    "ClassTaskSpec",
    "DOMAINS",
    "DomainSpec",
    "NUMBER_WORDS",
    "OBJECT_PLACERS",
    "PIXEL_BACKGROUNDS",
    "PLURALS",
    "RELATION_POSITIONS",
    "SCATTERED",
    "SHAPES_BASE",
    "SHAPES_NEW",
    "SUPERSAMPLE",
    "TIME_STEPS",
    "TIME_STEP_NAMES",
    "TimeStep",
    "Scene",
    "Split",
    "WorldObject",
    "ZEROSHOT_SETS",
    "ZEROSHOT_SPECS",
    "ZeroShotSet",
    "contact_sheet",
    "describe",
    "domain_spec",
    "generate_class_split",
    "generate_split",
    "generate_zeroshot_set",
    "make_captions",
    "render",
    "sample_scene",
    "time_step",
    "world_vocabulary",
]
