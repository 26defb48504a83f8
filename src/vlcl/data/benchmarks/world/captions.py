"""A scene in words: its canonical description, and the training and test captions of a domain."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

from vlcl.data.benchmarks.world.domains import Scene, WorldObject, domain_spec
from vlcl.data.benchmarks.world.vocabulary import (
    GENERIC_ARTICLE_NOUNS,
    GENERIC_NOUNS,
    GENERIC_PLURALS,
    INVERSE_RELATION,
    NO_CAPTION_NOISE,
    NUMBER_WORDS,
    PLURALS,
    POSITION_PHRASES,
    POSITIONS,
    RELATION_PHRASES,
    TEST_CAPTION_RETRIES,
    CaptionNoise,
)


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
