"""The procedural image-caption world (vlcl.data.benchmarks.world)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest

from vlcl.data.benchmarks import world
from vlcl.data.benchmarks.world import DomainSpec, Scene, WorldObject

VOCAB = set(world.world_vocabulary())


def _digest(split: world.Split) -> str:
    h = hashlib.sha256(split.images.tobytes())
    h.update("\n".join("|".join(caps) for caps in split.captions).encode())
    return h.hexdigest()


def _scenes(domain: str, n: int, seed: int = 0) -> list[Scene]:
    rng = random.Random(f"test/{domain}/{seed}")
    return [world.sample_scene(domain, rng) for _ in range(n)]


# --- determinism ------------------------------------------------------------------------------


def test_split_is_deterministic_and_seed_dependent():
    a = world.generate_split("texture", 12, seed=3, split="train", captions_per_image=2)
    b = world.generate_split("texture", 12, seed=3, split="train", captions_per_image=2)
    c = world.generate_split("texture", 12, seed=4, split="train", captions_per_image=2)
    assert a.images.dtype == np.uint8 and a.images.shape == (12, 32, 32, 3)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions and a.descriptions == b.descriptions
    assert not np.array_equal(a.images, c.images)


def test_split_is_identical_in_another_process():
    code = (
        "import hashlib; from vlcl.data.benchmarks import world\n"
        "s = world.generate_split('counting', 6, seed=1, split='test', captions_per_image=3)\n"
        "h = hashlib.sha256(s.images.tobytes()); h.update('\\n'.join('|'.join(c) for c in s.captions).encode())\n"
        "print(h.hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == _digest(world.generate_split("counting", 6, seed=1, split="test", captions_per_image=3))


def test_global_random_states_are_untouched():
    py_state, np_state = random.getstate(), np.random.get_state()
    world.generate_split("grainy", 4, seed=0, split="train", captions_per_image=1)
    world.generate_zeroshot_set("colour", 1, seed=0)
    assert random.getstate() == py_state
    assert all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(np.random.get_state(), np_state))


def test_same_description_renders_differently():
    scene = Scene("base", (WorldObject("star", "red", "large", "left"),))
    a, b = (np.asarray(world.render(scene, random.Random(s))) for s in (1, 2))
    assert a.shape == (32, 32, 3) and not np.array_equal(a, b)


# --- test splits and captions -----------------------------------------------------------------


@pytest.mark.parametrize("domain", list(world.DOMAINS))
def test_test_split_is_unique_with_full_paraphrases(domain):
    split = world.generate_split(domain, 30, seed=0, split="test", captions_per_image=5)
    assert len(split) == 30 and len(set(split.descriptions)) == 30
    for caps in split.captions:
        assert len(caps) == 5 and len(set(caps)) == 5


@pytest.mark.parametrize("domain", list(world.DOMAINS))
def test_test_captions_name_every_attribute(domain):
    rng = random.Random(0)
    for scene in _scenes(domain, 40):
        for caption in world.make_captions(scene, rng, 5, train=False):
            words = caption.split()
            for obj in scene.objects:
                assert obj.colour in words
                assert (world.PLURALS[obj.shape] if obj.count > 1 else obj.shape) in words
                assert obj.texture is None or obj.texture in words
                if world.DOMAINS[domain].layout == "counting":
                    assert world.NUMBER_WORDS[obj.count - 1] in words
                else:
                    assert obj.size in words


def test_description_ignores_object_order_and_inverse_relations():
    a, b = WorldObject("circle", "red", "large", "left"), WorldObject("square", "blue", "small", "top")
    assert world.describe(Scene("base", (a, b))) == world.describe(Scene("base", (b, a)))
    left = Scene("spatial", (WorldObject("circle", "red", "small", "left"), WorldObject("star", "cyan", "large", "right")), "left of")
    right = Scene("spatial", tuple(reversed(left.objects)), "right of")
    assert world.describe(left) == world.describe(right) == "a small red circle to the left of a large cyan star"


def test_train_captions_contain_short_prompts_and_keep_textures():
    rng = random.Random(0)
    base = {c for s in _scenes("base", 3000) for c in world.make_captions(s, rng, 2, train=True)}
    assert any(c.startswith("a photo of a circle") for c in base)
    assert any("a red object" in c for c in base) and any(c.startswith("something red") for c in base)
    assert any(len(c.split()) <= 3 for c in base)
    for scene in _scenes("texture", 200):
        for caption in world.make_captions(scene, rng, 3, train=True):
            assert all(o.texture in caption.split() for o in scene.objects)


def test_every_caption_word_is_in_the_vocabulary():
    assert world.world_vocabulary() == sorted(VOCAB) and all(w == w.lower() and w.isalpha() for w in VOCAB)
    rng = random.Random(0)
    for domain in world.DOMAINS:
        for scene in _scenes(domain, 300):
            for train in (True, False):
                for caption in world.make_captions(scene, rng, 3, train=train):
                    words = caption.split()
                    assert set(words) <= VOCAB, (domain, caption)
                    assert caption == " ".join(words) and len(words) <= 30
    for name in world.ZEROSHOT_SETS:
        z = world.generate_zeroshot_set(name, 1, seed=0)
        assert {w for t in z.templates for c in z.classnames for w in t.format(c).split()} <= VOCAB


def test_zeroshot_prompts_are_phrases_of_base_training_captions():
    rng = random.Random(1)
    captions = [c for s in _scenes("base", 8000) for c in world.make_captions(s, rng, 3, train=True)]
    text = "|" + "|".join(captions) + "|"
    for name in world.ZEROSHOT_SETS:
        spec = world.ZEROSHOT_SPECS[name]
        for template in spec.templates:
            for classname, _ in spec.classes:
                prompt = template.format(classname)
                assert any(f"{a}{prompt}{b}" in text for a in "| " for b in "| "), prompt


# --- spatial ---------------------------------------------------------------------------------------

RELATION_FIRST_POSITION = {"to the left of": "left", "to the right of": "right", "above": "top", "below": "bottom"}


def _first_named(caption: str, objects: tuple[WorldObject, ...]) -> WorldObject:
    return min(objects, key=lambda o: caption.index(f"{o.colour} {o.shape}"))


def test_spatial_captions_agree_with_the_relation():
    rng = random.Random(0)
    for scene in _scenes("spatial", 200):
        first, second = scene.objects
        assert (first.position, second.position) == world.RELATION_POSITIONS[scene.relation]
        for caption in world.make_captions(scene, rng, 4, train=False):
            phrase = next(p for p in RELATION_FIRST_POSITION if f" {p} " in caption)
            assert _first_named(caption, scene.objects).position == RELATION_FIRST_POSITION[phrase], caption


def _centroid_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean())


def test_spatial_image_puts_the_first_object_on_the_left():
    red, blue = WorldObject("circle", "red", "large", "left"), WorldObject("square", "blue", "large", "right")
    image = np.asarray(world.render(Scene("spatial", (red, blue), "left of"), random.Random(0)))
    r, g, b = image.astype(int).transpose(2, 0, 1)
    assert _centroid_x((r > 150) & (g < 110) & (b < 110)) < 12 < 20 < _centroid_x((b > 150) & (r < 120))


# --- styles ----------------------------------------------------------------------------------------


def _images(domain: str, n: int = 24) -> np.ndarray:
    return world.generate_split(domain, n, seed=0, split="train", captions_per_image=1).images.astype(np.float32)


def _roughness(images: np.ndarray) -> float:
    return float(np.abs(np.diff(images, axis=2)).mean())


def test_domains_look_different_from_base():
    base = _images("base")
    assert base.mean() < 60
    assert _images("sketch").mean() > 200
    assert _roughness(_images("grainy")) > 4 * _roughness(base)
    pixel = _images("pixel_art")
    grid = world.DOMAINS["pixel_art"].pixel_grid
    cells = np.floor((np.arange(32) + 0.5) * grid / 32).astype(int)  # which grid cell each pixel shows
    for image in pixel:  # blocky: every pixel repeats the first pixel of its cell
        first = {c: int(np.argmax(cells == c)) for c in range(grid)}
        rows = [first[c] for c in cells]
        assert np.array_equal(image, image[rows][:, rows])
    assert len(np.unique(pixel.reshape(-1, 3), axis=0)) <= len(world.COLOURS) + len(world.PIXEL_BACKGROUNDS)
    plain = [s for s in _scenes("texture", 20) if all(o.size == "large" for o in s.objects)]
    for scene in plain[:5]:
        flat = Scene("base", tuple(WorldObject(o.shape, o.colour, o.size, o.position) for o in scene.objects))
        assert _roughness(np.asarray(world.render(scene, random.Random(0)), np.float32)[None]) > _roughness(
            np.asarray(world.render(flat, random.Random(0)), np.float32)[None]
        )


def test_counting_copies_do_not_overlap():
    scene = Scene("counting", (WorldObject("square", "white", "small", world.SCATTERED, count=4), WorldObject("circle", "red", "small", world.SCATTERED, count=4)))
    places = list(world.OBJECT_PLACERS["counting"](scene, random.Random(0)))
    assert len(places) == 8
    for i, p in enumerate(places):
        for q in places[i + 1 :]:
            assert max(abs(p.cx - q.cx), abs(p.cy - q.cy)) >= p.radius + q.radius


# --- zero-shot sets and errors ---------------------------------------------------------------------


@pytest.mark.parametrize("name, n_classes", [("shape", 5), ("colour", 8), ("shape_colour", 40)])
def test_zeroshot_set_is_balanced(name, n_classes):
    z = world.generate_zeroshot_set(name, 3, seed=0)
    assert z.name == name and len(z.classnames) == n_classes and len(set(z.classnames)) == n_classes
    assert z.images.shape == (3 * n_classes, 32, 32, 3) and z.images.dtype == np.uint8
    assert z.labels.dtype == np.int64 and np.bincount(z.labels).tolist() == [3] * n_classes
    assert z.templates and all("{}" in t for t in z.templates)


def test_errors_name_the_problem(monkeypatch):
    with pytest.raises(ValueError, match="unknown world domain"):
        world.generate_split("photos", 1, seed=0, split="train", captions_per_image=1)
    with pytest.raises(ValueError, match="split"):
        world.generate_split("base", 1, seed=0, split="val", captions_per_image=1)
    monkeypatch.setitem(world.DOMAINS, "tiny", DomainSpec(shapes=("circle",), colours=("red",), max_objects=1))
    assert len(world.generate_split("tiny", 10, seed=0, split="test", captions_per_image=1)) == 10
    with pytest.raises(ValueError, match="'tiny'"):
        world.generate_split("tiny", 11, seed=0, split="test", captions_per_image=1)


def test_render_speed_is_reported():
    for domain in world.DOMAINS:
        rng = random.Random(0)
        scenes = _scenes(domain, 100)
        start = time.perf_counter()
        for scene in scenes:
            world.render(scene, rng)
        print(f"render {domain:>10}: {(time.perf_counter() - start) / len(scenes) * 1e6:6.0f} us/image")
