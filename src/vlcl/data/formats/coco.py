"""COCO captions JSON and Karpathy split JSON (the Flickr30K 1K and COCO 5K test splits).

Found as ``<split>.json`` or ``annotations/captions_<split>*.json`` (COCO), and as ``dataset_*.json`` (Karpathy:
its ``train`` + ``restval``, ``test`` and ``val``) in a data set folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlcl.data.formats.base import (
    DataError,
    Problems,
    Sample,
    choose_image_root,
    clean_captions,
    need_file,
    read_text,
)
from vlcl.data.formats.registry import Finder, ReadRequest, Source, register_format
from vlcl.data.images import FileImage

KARPATHY_SPLITS = {"train": ("train", "restval"), "test": ("test",), "val": ("val",), "restval": ("restval",)}
"""A Karpathy split name -> the ``split`` values it takes; ``train`` includes ``restval`` (113K COCO training images)."""


def load_json(path: Path, what: str = "JSON file") -> Any:
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: malformed JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits, nesting too deep
        raise DataError(f"{path}: unreadable JSON ({exc.__class__.__name__}: {exc})") from None


def _hashable_id(value: Any) -> bool:
    """COCO ids are numbers or strings; a list or object there cannot key an image."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def read_coco(path: str | Path, *, image_root: str | Path | None = None, problems: Problems | None = None) -> list[Sample]:
    """``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``: one sample per image."""
    path = need_file(Path(path), "COCO annotation file")
    problems = problems or Problems()
    data = load_json(path, "COCO annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: not a COCO captions file (expected top-level 'images' and 'annotations' lists)")
    files: dict[Any, str] = {}
    order: list[Any] = []
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not _hashable_id(image.get("id")) or not isinstance(image.get("file_name"), str):
            problems.bad(f"{path}: images[{i}]: expected an object with 'id' (a number or string) and 'file_name'")
            continue
        if image["id"] in files:
            problems.bad(f"{path}: images[{i}]: id {image['id']!r} is used by an earlier image")
            continue
        files[image["id"]] = image["file_name"]
        order.append(image["id"])
    captions: dict[Any, list[str]] = {image_id: [] for image_id in order}
    for i, ann in enumerate(data["annotations"]):
        origin = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict) or not _hashable_id(ann.get("image_id")):
            problems.bad(f"{origin}: expected an object with 'image_id' (a number or string) and 'caption'")
            continue
        if ann["image_id"] not in captions:
            problems.bad(f"{origin}: image_id {ann['image_id']!r} is not in 'images'")
            continue
        captions[ann["image_id"]] += clean_captions(ann.get("caption", ""), origin, problems)
    stem = path.stem.split("_", 1)[-1]  # captions_val2014.json -> val2014
    root = (
        Path(image_root)
        if image_root is not None
        else choose_image_root(path.parent, [files[i] for i in order], (".", "images", stem, "..", f"../{stem}", "../images"))
    )
    samples = []
    for n, image_id in enumerate(order):
        origin = f"{path}: image id {image_id}"
        if not captions[image_id]:
            problems.bad(f"{origin}: no caption")
            continue
        samples.append(Sample(FileImage(root / files[image_id], origin), captions[image_id], key=str(image_id)))
    return samples


def is_karpathy(data: Any) -> bool:
    images = data.get("images") if isinstance(data, dict) else None
    return isinstance(images, list) and bool(images) and isinstance(images[0], dict) and "sentences" in images[0]


def karpathy_splits(path: Path) -> list[str]:
    data = load_json(path, "Karpathy split file")
    images = data.get("images") if isinstance(data, dict) else None
    return sorted({str(image.get("split")) for image in images or [] if isinstance(image, dict) and image.get("split")})


def read_karpathy(
    path: str | Path,
    *,
    split: str = "test",
    image_root: str | Path | None = None,
    problems: Problems | None = None,
) -> list[Sample]:
    """Karpathy's ``dataset_{coco,flickr30k}.json``: images of ``split`` with their ``sentences[].raw`` captions."""
    path = need_file(Path(path), "Karpathy split file")
    problems = problems or Problems()
    data = load_json(path, "Karpathy split file")
    if not is_karpathy(data):
        raise DataError(f"{path}: not a Karpathy split file (expected 'images' with 'sentences')")
    wanted = KARPATHY_SPLITS.get(split, (split,))
    chosen = [(i, image) for i, image in enumerate(data["images"]) if isinstance(image, dict) and image.get("split") in wanted]
    if not chosen:
        raise DataError(f"{path}: no image in split '{split}' (splits: {', '.join(karpathy_splits(path))})")

    def name(image: dict) -> str:
        folder, file = image.get("filepath") or "", image.get("filename") or ""
        return str(Path(folder if isinstance(folder, str) else "") / (file if isinstance(file, str) else ""))

    root = (
        Path(image_root)
        if image_root is not None
        else choose_image_root(
            path.parent, [name(image) for _, image in chosen], (".", "images", "flickr30k-images", "..", "../images")
        )
    )
    samples = []
    for i, image in chosen:
        origin = f"{path}: images[{i}]"
        if not isinstance(image.get("filename"), str) or not image["filename"]:
            problems.bad(f"{origin}: no 'filename'")
            continue
        if not isinstance(image.get("filepath") or "", str):
            problems.bad(f"{origin}: 'filepath' is not text ({image['filepath']!r})")
            continue
        sentences = image.get("sentences") or []
        if not isinstance(sentences, list):  # a string would be read as one caption per character
            problems.bad(f"{origin}: 'sentences' is not a list (got {type(sentences).__name__})")
            continue
        raw = [s.get("raw", "") if isinstance(s, dict) else s for s in sentences]
        captions = clean_captions(raw, origin, problems)
        if captions:
            samples.append(Sample(FileImage(root / name(image), origin), captions, key=name(image)))
    return samples


# -- as registered formats ---------------------------------------------------------------------------------


def _is_karpathy_name(path: Path) -> bool:
    """``dataset_coco.json``, ``dataset_flickr30k.json``... (not the Hugging Face ``dataset_info.json`` / ``dataset_dict.json``)."""
    if path.name in ("dataset_info.json", "dataset_dict.json"):
        return False
    return path.name.startswith("dataset_") or "karpathy" in path.name.lower()


def _karpathy_files(folder: Path) -> Iterator[tuple[str, Source]]:
    for file in sorted(folder.glob("*.json")):
        if _is_karpathy_name(file):
            for split in ("train", "test", "val"):
                yield split, Source("karpathy", file, split)


def _split_json(folder: Path, split: str) -> Iterator[Source]:
    if (folder / f"{split}.json").is_file():
        yield Source("coco", folder / f"{split}.json")


def _annotation_files(folder: Path) -> Iterator[tuple[str, Source]]:
    for file in sorted((folder / "annotations").glob("captions_*.json")):
        yield "train" if "train" in file.stem else "val" if "val" in file.stem else "test", Source("coco", file)


def _captions_only(source: Source, request: ReadRequest) -> None:
    if request.labels:
        raise DataError(f"{source.path}: {source.format} files hold captions, not class labels")


def _read_coco_source(source: Source, request: ReadRequest) -> tuple[list[Sample], None]:
    _captions_only(source, request)
    return read_coco(source.path, problems=request.problems), None


def _read_karpathy_source(source: Source, request: ReadRequest) -> tuple[list[Sample], None]:
    _captions_only(source, request)
    return read_karpathy(source.path, split=source.split or "test", problems=request.problems), None


register_format(
    "coco",
    read=_read_coco_source,
    labels=False,
    find=(Finder("split_file", 30, _split_json), Finder("folder_splits", 10, _annotation_files)),
)
register_format("karpathy", read=_read_karpathy_source, labels=False, find=(Finder("folder", 20, _karpathy_files),))
