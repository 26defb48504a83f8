"""Drawing a random scene of a domain, by the domain's layout."""

from __future__ import annotations

import random
from collections.abc import Callable

from vlcl.data.benchmarks.world.domains import DomainSpec, Scene, WorldObject, domain_spec
from vlcl.data.benchmarks.world.vocabulary import POSITIONS, RELATION_POSITIONS, RELATIONS, SCATTERED, SIZES, TEXTURES


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
