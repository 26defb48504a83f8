"""Shared fixtures: a tiny random CLIP in Hugging Face format, made in a temporary folder."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

@pytest.fixture(autouse=True)
def _no_automatic_report(request, monkeypatch):
    """`vlcl run` and `vlcl compare` end by writing report.html (about 0.5 s of plotting a run); the many tiny runs of
    the suite skip it, in this process, unless the test is marked `report` (tests/test_report_html.py and the
    module-scoped runs of tests/test_report_browser.py, made before this fixture applies, keep it)."""
    if request.node.get_closest_marker("report") is None:
        monkeypatch.setattr("vlcl.report.html.auto_report", lambda *args, **kwargs: None)



TINY_WORDS = "a an the of on in at and photo picture sketch red green blue yellow circle square triangle star left right top bottom two blue squares".split()


def shipped_words():
    """Every word of the shipped class names and templates, split as the word-level tokenizer splits them."""
    import re

    from vlcl.data.benchmarks.catalogue import shipped

    texts = [t for kind in ("classnames", "templates") for names in shipped(kind).values() for t in names]
    return sorted({w.lower() for t in texts for w in re.findall(r"\w+|[^\w\s]+", t)})


def make_tiny_clip(directory, *, vocabulary=None, words=(), width=32, layers=1, image_size=16, patch_size=8, seed=0):
    from vlcl.data.preprocess import ImagePreprocessor
    from vlcl.models.loading import ClipBundle, save_clip
    from vlcl.app.pretrain import PretrainSettings, build_random_clip

    settings = PretrainSettings(seed=seed, width=width, layers=layers, heads=2, image_size=image_size, patch_size=patch_size, context_length=16, projection_dim=width)
    if vocabulary != "world":
        from transformers import CLIPConfig, CLIPModel

        from vlcl.models.world_tokenizer import build_world_tokenizer

        bundle = build_random_clip(settings)
        tokenizer = build_world_tokenizer(TINY_WORDS + [w for w in words if w not in TINY_WORDS], settings.context_length)
        config = bundle.model.config
        config.text_config.vocab_size = len(tokenizer)
        torch.manual_seed(seed)
        bundle = ClipBundle(CLIPModel(CLIPConfig(text_config=config.text_config.to_dict(), vision_config=config.vision_config.to_dict(), projection_dim=width)), tokenizer, ImagePreprocessor(image_size), "tiny")
    else:
        bundle = build_random_clip(settings)
    save_clip(bundle, directory)
    return directory


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def reading_clip_dir(tmp_path_factory):
    """A tiny CLIP whose tokenizer reads every shipped class name and template, and the test sets' aircraft."""
    return make_tiny_clip(tmp_path_factory.mktemp("reading_clip"), words=shipped_words() + ["707", "727", "737", "200", "300", "320"])


CAPTIONS = ["a red circle", "two blue squares", "a green triangle on the left", "a yellow star at the top"]


def tiny_data(n=16, size=16, seed=0):
    """Random uint8 images with two captions each, for method tests on the tiny CLIP."""
    import numpy as np

    from vlcl.data.benchmark import CaptionedImages

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return CaptionedImages("tiny", images, [[CAPTIONS[i % 4], CAPTIONS[(i + 1) % 4]] for i in range(n)])


@pytest.fixture(scope="session")
def world_clip_dir(tmp_path_factory):
    """A tiny random CLIP with the procedural world's full vocabulary."""
    return make_tiny_clip(tmp_path_factory.mktemp("world_clip"), vocabulary="world")
