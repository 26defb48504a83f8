"""The registry of data formats: a format is one module of :mod:`vlcl.data.formats` that registers itself.

A module registers each format it defines with :func:`register_format`: the format's name, how a source of it
is read (a function of the :class:`Source` and the :class:`ReadRequest`), what it can hold (captions, class
labels), and where it is found in a data set folder (:class:`Finder` s). Every module of the package is imported
before the registry is first asked (:func:`get_format`, :func:`finders`): adding a format is adding its file.

Where a format is found: :func:`vlcl.data.formats.detect.discover` runs the finders of every format stage by
stage, in the order of :data:`STAGES`, and within a stage by ``rank`` (the lowest first); the first source found
for a split is the one read. The stages, and the ranks of the shipped formats:

| stage | a finder is called with | yields | shipped (rank) |
|---|---|---|---|
| ``folder`` | the data set folder | (split, source) pairs | hf (10), karpathy (20) |
| ``split_file`` | the folder and a split name | sources of files named after the split | csv (10), jsonl (20), coco (30) |
| ``split_folder`` | the split's sub-folder, when there is one | one source or None: the first found wins | wds (10), hf (20), parquet (30), folder (40), compressed wds (50) |
| ``folder_splits`` | the data set folder | (split, source) pairs | coco's annotations/ (10), parquet (20) |
| ``whole`` | the data set folder | (``all``, source) pairs: the whole data set | wds (10), csv (20), jsonl (30) |
| ``fallback`` | the data set folder, only where nothing else was found | (split, source) pairs | compressed wds (10) |
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vlcl.data.formats.base import Problems, Sample

SPLITS = ("train", "test", "val", "validation")
"""The split names a data set folder is searched for (``val`` and ``validation`` stand in for a missing ``test``)."""
IMAGE_FIELDS = ("filepath", "image", "file_name", "filename", "image_path", "path", "img")
DEFAULT_CAPTION_FIELDS = ("caption", "captions", "title", "text", "txt")


@dataclass(frozen=True)
class Source:
    format: str  # the name of a registered format: csv, jsonl, coco, karpathy, wds, folder, hf, parquet
    path: Path  # a file or a folder
    split: str | None = None  # the split inside the source (Karpathy file, DatasetDict)
    files: tuple[Path, ...] = ()  # parquet files

    def describe(self) -> str:
        where = (
            ", ".join(str(f) for f in self.files[:2]) + (" ..." if len(self.files) > 2 else "") if self.files else str(self.path)
        )
        inner = f" [{self.split}]" if self.split else ""
        return f"{self.format} {where}{inner}"


@dataclass(frozen=True)
class ReadRequest:
    """What is asked of a source: class labels or captions, where bad samples go, and the fields to read.

    ``captions`` are candidate caption fields (column, key, WebDataset extension), the first present is used;
    ``image`` names the image field (None: the first of :data:`IMAGE_FIELDS` present, or the format's own guess).
    """

    labels: bool
    problems: Problems
    captions: tuple[str, ...] = DEFAULT_CAPTION_FIELDS
    image: str | None = None
    label: str = "label"

    @property
    def image_fields(self) -> tuple[str, ...]:
        return (self.image,) if self.image else IMAGE_FIELDS


Reader = Callable[[Source, ReadRequest], "tuple[list[Sample], list[str] | None]"]
"""Samples of one source, and the class names the data itself declares (folder names, ``ClassLabel``), if any."""
Stage = Literal["folder", "split_file", "split_folder", "folder_splits", "whole", "fallback"]
STAGES: tuple[Stage, ...] = ("folder", "split_file", "split_folder", "folder_splits", "whole", "fallback")


@dataclass(frozen=True)
class Finder:
    """Where a format is found: ``find`` is called at ``stage`` (see the module docstring for what it takes and yields)."""

    stage: Stage
    rank: int
    find: Callable


@dataclass(frozen=True)
class Format:
    name: str
    read: Reader
    finders: tuple[Finder, ...] = ()
    captions: bool = True
    """It can hold captions (an image folder cannot)."""
    labels: bool = True
    """It can hold class labels (CSV and COCO files cannot)."""


_FORMATS: dict[str, Format] = {}
_LOADED = False


def register_format(
    name: str, *, read: Reader, find: tuple[Finder, ...] = (), captions: bool = True, labels: bool = True
) -> Format:
    """Register the format ``name``; see the module docstring."""
    if name in _FORMATS:
        raise ValueError(f"data format '{name}' is registered twice")
    for finder in find:
        if finder.stage not in STAGES:
            raise ValueError(f"data format '{name}': stage '{finder.stage}' is not one of {STAGES}")
    _FORMATS[name] = Format(name, read, tuple(find), captions, labels)
    return _FORMATS[name]


def _load() -> None:
    """Every module of vlcl.data.formats, once: each registers its formats when imported."""
    global _LOADED
    if _LOADED:
        return
    package = importlib.import_module("vlcl.data.formats")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _LOADED = True


def get_format(name: str) -> Format | None:
    _load()
    return _FORMATS.get(name)


def format_names() -> list[str]:
    _load()
    return list(_FORMATS)


def finders(stage: Stage) -> list[Finder]:
    """The finders of every format at ``stage``, lowest rank first."""
    _load()
    return sorted((f for fmt in _FORMATS.values() for f in fmt.finders if f.stage == stage), key=lambda f: f.rank)


__all__ = [
    "DEFAULT_CAPTION_FIELDS",
    "Finder",
    "Format",
    "IMAGE_FIELDS",
    "ReadRequest",
    "Reader",
    "SPLITS",
    "STAGES",
    "Source",
    "Stage",
    "finders",
    "format_names",
    "get_format",
    "register_format",
]
