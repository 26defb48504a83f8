"""Find a data set's files in its folder, whatever format they are in, and turn them into vlcl data sets.

A data set folder holds its splits in any supported format; :func:`discover`
recognises, for each split ``train`` / ``test`` (``val`` and ``validation``
stand in for a missing ``test``):

| what is in the folder | format |
|---|---|
| ``dataset_dict.json`` (or ``state.json``) | Hugging Face ``save_to_disk`` |
| ``dataset_*.json`` | Karpathy split file (its ``train``+``restval`` and ``test``) |
| ``<split>.csv`` / ``<split>.tsv`` | CSV / TSV |
| ``<split>.jsonl`` | JSON Lines |
| ``<split>.json`` or ``annotations/captions_<split>*.json`` | COCO captions |
| ``<split>/*.tar`` | WebDataset shards |
| ``<split>/<class>/*.jpg`` | image folders (classification) |
| ``<split>-*.parquet`` in the folder or ``data/`` (a hub download) | parquet |
| ``*.tar``, one ``*.csv`` / ``*.jsonl`` / ``*.parquet`` set without a split name | the whole data set (``all``) |

Compressed shards (``*.tar.gz``, ``*.tgz``) where nothing else is found are taken as
WebDataset too, so that reading them says to decompress them rather than that
the folder holds nothing vlcl reads.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vlcl.data.benchmark import CaptionedImages, ClassificationSet, RetrievalSet
from vlcl.data.formats import (
    DataError,
    Problems,
    Sample,
    read_coco,
    read_csv,
    read_hf,
    read_image_folder,
    read_jsonl,
    read_karpathy,
    read_webdataset,
)
from vlcl.data.formats.base import read_text, unreadable
from vlcl.data.formats.folder import is_image_folder
from vlcl.data.formats.hf import parquet_splits
from vlcl.data.formats.wds import compressed_shards
from vlcl.data.images import DEFAULT_MAX_IMAGE_PIXELS, ImageStore, check_image, thread_map

if TYPE_CHECKING:
    from vlcl.data.preprocess import ImagePreprocessor

SPLITS = ("train", "test", "val", "validation")
TEST_ALIASES = ("val", "validation")
IMAGE_FIELDS = ("filepath", "image", "file_name", "filename", "image_path", "path", "img")
DEFAULT_CAPTION_FIELDS = ("caption", "captions", "title", "text", "txt")


class MissingDataError(DataError):
    """No data where a data set should be."""


@dataclass(frozen=True)
class Source:
    format: str  # csv, jsonl, coco, karpathy, wds, folder, hf, parquet
    path: Path  # a file or a folder
    split: str | None = None  # the split inside the source (Karpathy file, DatasetDict)
    files: tuple[Path, ...] = ()  # parquet files

    def describe(self) -> str:
        where = (
            ", ".join(str(f) for f in self.files[:2]) + (" ..." if len(self.files) > 2 else "") if self.files else str(self.path)
        )
        inner = f" [{self.split}]" if self.split else ""
        return f"{self.format} {where}{inner}"


def _is_karpathy_name(path: Path) -> bool:
    """``dataset_coco.json``, ``dataset_flickr30k.json``... (not the Hugging Face ``dataset_info.json`` / ``dataset_dict.json``)."""
    if path.name in ("dataset_info.json", "dataset_dict.json"):
        return False
    return path.name.startswith("dataset_") or "karpathy" in path.name.lower()


def discover(folder: str | Path) -> dict[str, Source]:
    """The sources of a data set folder by split (``train``, ``test``, ``val``, ``validation``, ``all``)."""
    folder = Path(folder)
    found: dict[str, Source] = {}

    def add(split: str, source: Source) -> None:
        found.setdefault(split, source)

    if not folder.is_dir():
        return found
    if (folder / "dataset_dict.json").is_file():
        for split in _dataset_dict_splits(folder / "dataset_dict.json"):
            add(split, Source("hf", folder, split))
    elif (folder / "state.json").is_file():
        add("all", Source("hf", folder))
    for file in sorted(folder.glob("*.json")):
        if _is_karpathy_name(file):
            for split in ("train", "test", "val"):
                add(split, Source("karpathy", file, split))
    for split in SPLITS:
        for suffix, fmt in ((".csv", "csv"), (".tsv", "csv"), (".jsonl", "jsonl"), (".json", "coco")):
            if (folder / f"{split}{suffix}").is_file():
                add(split, Source(fmt, folder / f"{split}{suffix}"))
        sub = folder / split
        if sub.is_dir():
            if any(sub.glob("*.tar")):
                add(split, Source("wds", sub))
            elif (sub / "state.json").is_file():
                add(split, Source("hf", sub))
            elif any(sub.glob("*.parquet")):
                add(split, Source("parquet", sub, files=tuple(sorted(sub.glob("*.parquet")))))
            elif is_image_folder(sub):
                add(split, Source("folder", sub))
            elif compressed_shards(sub):
                add(split, Source("wds", sub))
    for file in sorted((folder / "annotations").glob("captions_*.json")):
        add("train" if "train" in file.stem else "val" if "val" in file.stem else "test", Source("coco", file))
    for split, files in parquet_splits(folder).items():
        add(split, Source("parquet", folder, files=tuple(files)))
    if any(folder.glob("*.tar")):
        add("all", Source("wds", folder))
    for suffix, fmt in ((".csv", "csv"), (".tsv", "csv"), (".jsonl", "jsonl")):
        files = [f for f in sorted(folder.glob(f"*{suffix}")) if f.stem not in SPLITS]
        if len(files) == 1:
            add("all", Source(fmt, files[0]))
    if not found and compressed_shards(folder):
        add("all", Source("wds", folder))
    if "test" not in found:
        alias = next((a for a in TEST_ALIASES if a in found), None)
        if alias:
            found["test"] = found[alias]
    return found


def _dataset_dict_splits(path: Path) -> list[str]:
    """The ``splits`` list of a Hugging Face ``dataset_dict.json``."""
    try:
        data = json.loads(read_text(path, "Hugging Face dataset_dict.json"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(f"{path}: malformed JSON ({exc})") from None
    splits = data.get("splits") if isinstance(data, dict) else None
    if not isinstance(splits, list) or not all(isinstance(split, str) for split in splits):
        raise DataError(f"{path}: expected an object with a 'splits' list of names (got {str(data)[:60]!r})")
    return splits


# -- reading ------------------------------------------------------------------------


def _csv_header(path: Path) -> list[str]:
    import csv

    # the header only, to choose columns; read_csv then reads (and checks) the whole file
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
            return next(csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), [])
    except csv.Error as exc:
        raise DataError(f"{path}: line 1: malformed CSV ({exc})") from None
    except OSError as exc:
        raise unreadable(path, exc, "annotation file") from None


def _jsonl_keys(path: Path) -> list[str]:
    """The keys of the first JSON object of a JSON Lines file, to choose fields; read_jsonl then checks every line."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(record, dict):
                    return list(record)
    except OSError as exc:
        raise unreadable(path, exc, "annotation file") from None
    return []


def _pick(present: list[str], candidates: tuple[str, ...], what: str, where: Path) -> str:
    for name in candidates:
        if name in present:
            return name
    raise DataError(
        f"{where}: no {what} field {' or '.join(repr(c) for c in candidates)} (found: {', '.join(present) or 'none'})"
    )


def read_source(
    source: Source,
    *,
    labels: bool,
    problems: Problems,
    captions: tuple[str, ...] = DEFAULT_CAPTION_FIELDS,
    image: str | None = None,
    label: str = "label",
) -> tuple[list[Sample], list[str] | None]:
    """Samples of one source, and class names the data itself declares (folder names, ``ClassLabel``), if any.

    ``captions`` are candidate caption fields (column, key, WebDataset extension), the first present is used.
    """
    fmt, path = source.format, source.path
    images = (image,) if image else IMAGE_FIELDS
    if fmt == "csv":
        header = _csv_header(path)
        if labels:
            raise DataError(f"{path}: CSV files hold captions; classification data goes in image folders, JSONL or WebDataset")
        return read_csv(
            path,
            image_column=_pick(header, images, "image", path),
            caption_column=_pick(header, captions, "caption", path),
            problems=problems,
        ), None
    if fmt == "jsonl":
        keys = _jsonl_keys(path)
        image_key = _pick(keys, images, "image", path) if keys else images[0]
        if labels:
            return read_jsonl(path, image_key=image_key, label_key=label, problems=problems), None
        caption_key = _pick(keys, captions, "caption", path) if keys else captions[0]
        return read_jsonl(path, image_key=image_key, caption_key=caption_key, problems=problems), None
    if fmt in ("coco", "karpathy") and labels:
        raise DataError(f"{path}: {fmt} files hold captions, not class labels")
    if fmt == "coco":
        return read_coco(path, problems=problems), None
    if fmt == "karpathy":
        return read_karpathy(path, split=source.split or "test", problems=problems), None
    if fmt == "wds":
        exts = tuple(dict.fromkeys(c for c in (*captions, "txt") if "." in c or c.isalnum()))
        return read_webdataset(path, caption_ext=exts, json_caption_key=captions, labels=labels, problems=problems), None
    if fmt == "folder":
        if not labels:
            raise DataError(f"{path}: an image folder holds classification data, not captions")
        return read_image_folder(path, problems=problems)
    if fmt in ("hf", "parquet"):
        return read_hf(
            path,
            split=source.split if fmt == "hf" else None,
            files=list(source.files) or None,
            image_column=image,
            caption_columns=captions,
            label_column=label if labels else None,
            problems=problems,
        )
    raise DataError(f"{path}: unknown format '{fmt}'")


# -- splitting, subsetting, checking -------------------------------------------------


def _rng(seed: int, name: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"{name}/{purpose}".encode())])


def random_split(samples: list[Sample], test_fraction: float, seed: int, name: str) -> tuple[list[Sample], list[Sample]]:
    """(train, test): a seeded random ``test_fraction`` of the images is the test split (the same for every run)."""
    order = _rng(seed, name, "split").permutation(len(samples))
    n_test = int(round(len(samples) * test_fraction))
    test = sorted(order[:n_test].tolist())
    train = sorted(order[n_test:].tolist())
    return [samples[i] for i in train], [samples[i] for i in test]


def subsample(samples: list[Sample], count: int | None, seed: int, name: str, purpose: str) -> list[Sample]:
    """At most ``count`` samples, a seeded subset in the original order."""
    if count is None or count >= len(samples):
        return samples
    keep = sorted(_rng(seed, name, purpose).permutation(len(samples))[:count].tolist())
    return [samples[i] for i in keep]


def per_class(samples: list[Sample], count: int | None, seed: int, name: str) -> list[Sample]:
    """At most ``count`` samples of every class (seeded), in the original order."""
    if count is None:
        return samples
    order = _rng(seed, name, "per_class").permutation(len(samples)).tolist()
    taken: dict[int, int] = {}
    keep = []
    for i in order:
        label = samples[i].label
        if taken.get(label, 0) < count:
            taken[label] = taken.get(label, 0) + 1
            keep.append(i)
    return [samples[i] for i in sorted(keep)]


def check_images(
    samples: list[Sample],
    level: str,
    problems: Problems,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[Sample]:
    """The samples whose image passes the check (``none``, ``header``, ``full``); the others are bad samples.

    ``header`` and ``full`` also refuse images over ``max_pixels`` (``data.max_image_pixels``; None: no limit).
    """
    if level == "none":
        return samples
    verdicts = thread_map(lambda s: check_image(s.image, level, max_pixels), samples, max(workers, 1))
    kept = []
    for sample, problem in zip(samples, verdicts):
        if problem is None:
            kept.append(sample)
        else:
            origin = f"{sample.origin}: " if sample.origin else ""
            problems.bad(f"{origin}image {sample.image.describe()} {problem}")
    return kept


# -- vlcl data sets ------------------------------------------------------------------


def store(
    samples: list[Sample], preprocess: ImagePreprocessor, workers: int, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> ImageStore:
    return ImageStore([s.image for s in samples], preprocess, workers, max_pixels)


def captioned_images(
    name: str,
    samples: list[Sample],
    preprocess: ImagePreprocessor,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> CaptionedImages:
    return CaptionedImages(name, store(samples, preprocess, workers, max_pixels), [list(s.captions) for s in samples])


def retrieval_set(
    name: str,
    samples: list[Sample],
    preprocess: ImagePreprocessor,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> RetrievalSet:
    images = store(samples, preprocess, workers, max_pixels)
    return RetrievalSet.from_caption_lists(name, images, [list(s.captions) for s in samples])


def classification_set(
    name: str,
    samples: list[Sample],
    classnames: list[str],
    templates: list[str],
    preprocess: ImagePreprocessor,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> ClassificationSet:
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    return ClassificationSet(name, store(samples, preprocess, workers, max_pixels), labels, list(classnames), list(templates))


def prompted_training_set(
    name: str,
    samples: list[Sample],
    classnames: list[str],
    templates: list[str],
    preprocess: ImagePreprocessor,
    workers: int,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> CaptionedImages:
    """Classification training data: labels and every class's prompts (trained with cross-entropy over them),
    and as each image's caption its class name in the set's first template (one caption per image keeps the
    teacher caches of the distillation methods at N embeddings)."""
    captions = [[templates[0].format(classnames[s.label])] for s in samples]
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    prompts = [[t.format(c) for t in templates] for c in classnames]
    return CaptionedImages(name, store(samples, preprocess, workers, max_pixels), captions, labels, prompts)
