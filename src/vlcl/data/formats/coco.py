"""COCO captions JSON and Karpathy split JSON (the Flickr30K 1K and COCO 5K test splits)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlcl.data.formats.base import (
    DataError,
    Problems,
    Sample,
    choose_image_root,
    clean_captions,
    need_file,
)
from vlcl.data.images import FileImage

KARPATHY_SPLITS = {"train": ("train", "restval"), "test": ("test",), "val": ("val",), "restval": ("restval",)}
"""A Karpathy split name -> the ``split`` values it takes; ``train`` includes ``restval`` (113K COCO training images)."""


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: malformed JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def read_coco(path: str | Path, *, image_root: str | Path | None = None, problems: Problems | None = None) -> list[Sample]:
    """``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``: one sample per image."""
    path = need_file(Path(path), "COCO annotation file")
    problems = problems or Problems()
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: not a COCO captions file (expected top-level 'images' and 'annotations' lists)")
    files: dict[Any, str] = {}
    order: list[Any] = []
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            problems.bad(f"{path}: images[{i}]: expected an object with 'id' and 'file_name'")
            continue
        files[image["id"]] = image["file_name"]
        order.append(image["id"])
    captions: dict[Any, list[str]] = {image_id: [] for image_id in order}
    for i, ann in enumerate(data["annotations"]):
        origin = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict) or "image_id" not in ann:
            problems.bad(f"{origin}: expected an object with 'image_id' and 'caption'")
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
    data = load_json(path)
    return sorted({image.get("split") for image in data.get("images", []) if isinstance(image, dict)} - {None})


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
    data = load_json(path)
    if not is_karpathy(data):
        raise DataError(f"{path}: not a Karpathy split file (expected 'images' with 'sentences')")
    wanted = KARPATHY_SPLITS.get(split, (split,))
    chosen = [(i, image) for i, image in enumerate(data["images"]) if isinstance(image, dict) and image.get("split") in wanted]
    if not chosen:
        raise DataError(f"{path}: no image in split '{split}' (splits: {', '.join(karpathy_splits(path))})")

    def name(image: dict) -> str:
        return str(Path(image.get("filepath") or "") / str(image.get("filename", "")))

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
        if not image.get("filename"):
            problems.bad(f"{origin}: no 'filename'")
            continue
        sentences = image.get("sentences") or []
        raw = [s.get("raw", "") if isinstance(s, dict) else s for s in sentences]
        captions = clean_captions(raw, origin, problems)
        if captions:
            samples.append(Sample(FileImage(root / name(image), origin), captions, key=name(image)))
    return samples
