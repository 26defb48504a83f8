"""Tiny real-format data sets written with Pillow into a temporary folder, for the data tests.

One small set of (image, captions) pairs is written in every caption format;
classification sets as image folders, WebDataset shards with ``.cls`` and a
Hugging Face dataset with a label column. ``make_vlcl8_root`` / ``make_mtil_root``
lay them out as the named benchmarks expect, each data set in another format.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle", "star"]


def pairs(n: int = 8, captions_per_image: int = 2) -> list[tuple[str, list[str]]]:
    """(file name, captions) of ``n`` images; words from the tiny CLIP's vocabulary."""
    out = []
    for i in range(n):
        caps = [
            f"a {WORDS[(i + k) % 4]} {SHAPES[(i // 4 + k) % 4]} on the {'left' if (i + k) % 2 else 'right'}"
            for k in range(captions_per_image)
        ]
        out.append((f"img{i:03d}.{'png' if i % 3 == 0 else 'jpg'}", caps))
    return out


def image_bytes(i: int, fmt: str = "PNG", size: tuple[int, int] | None = None) -> bytes:
    rng = np.random.default_rng(i)
    width, height = size or (20 + (i % 3) * 4, 16 + (i % 2) * 6)  # varied sizes: resize + centre crop at work
    array = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    array[: height // 2] = (i * 37 % 255, i * 91 % 255, i * 13 % 255)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _fmt(name: str) -> str:
    return "PNG" if name.endswith(".png") else "JPEG"


def write_images(folder: Path, items: list[tuple[str, list[str]]], offset: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, _) in enumerate(items):
        (folder / name).write_bytes(image_bytes(offset + i, _fmt(name)))


def write_csv(path: Path, items, *, image_col="filepath", caption_col="title", separator=",", prefix="") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=separator)
        writer.writerow([image_col, caption_col])
        for name, caps in items:
            for caption in caps:
                writer.writerow([prefix + name, caption])
    return path


def write_jsonl(path: Path, items, *, image_key="image", caption_key="caption", prefix="") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({image_key: prefix + name, caption_key: caps}) for name, caps in items]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_coco(path: Path, items, *, prefix="") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [{"id": 100 + i, "file_name": prefix + name} for i, (name, _) in enumerate(items)]
    annotations = [
        {"id": k, "image_id": 100 + i, "caption": c}
        for k, (i, c) in enumerate((i, c) for i, (_, caps) in enumerate(items) for c in caps)
    ]
    path.write_text(json.dumps({"images": images, "annotations": annotations}), encoding="utf-8")
    return path


def write_karpathy(path: Path, splits: dict[str, list], *, filepath: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = []
    for split, items in splits.items():
        for name, caps in items:
            entry = {"filename": name, "split": split, "sentences": [{"raw": c, "tokens": c.split()} for c in caps]}
            if filepath:
                entry["filepath"] = filepath
            images.append(entry)
    path.write_text(json.dumps({"dataset": "tiny", "images": images}), encoding="utf-8")
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_wds(
    folder: Path, items, *, per_shard: int = 5, caption_ext: str = "txt", offset: int = 0, labels: list[int] | None = None
) -> Path:
    """Shards ``0.tar``, ``1.tar``... (``per_shard`` samples each); image bytes identical to :func:`write_images`."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(0, len(items), per_shard):
        with tarfile.open(folder / f"{shard // per_shard}.tar", "w") as tar:
            for i in range(shard, min(shard + per_shard, len(items))):
                name, caps = items[i]
                key = f"s{i:06d}"
                ext = name.rsplit(".", 1)[1]
                _add(tar, f"{key}.{ext}", image_bytes(offset + i, _fmt(name)))
                if labels is not None:
                    _add(tar, f"{key}.cls", str(labels[i]).encode())
                else:
                    _add(tar, f"{key}.{caption_ext}", "\n".join(caps).encode())
    return folder


def write_image_folder(split_dir: Path, labels: list[int], classes: list[str], offset: int = 0) -> Path:
    for i, label in enumerate(labels):
        folder = split_dir / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.png").write_bytes(image_bytes(offset + i))
    return split_dir


def hf_dataset(items, *, caption_column: str = "text", offset: int = 0, labels: list[int] | None = None, class_names=None):
    import datasets

    rows = {"image": [{"bytes": image_bytes(offset + i, _fmt(name)), "path": None} for i, (name, _) in enumerate(items)]}
    features = {"image": datasets.Image()}
    if labels is not None:
        rows["label"] = labels
        features["label"] = datasets.ClassLabel(names=class_names) if class_names else datasets.Value("int64")
    else:
        rows[caption_column] = [caps[0] for _, caps in items]
        features[caption_column] = datasets.Value("string")
    return datasets.Dataset.from_dict(rows, features=datasets.Features(features))


def quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    return datasets


def make_vlcl8_root(root: Path) -> Path:
    """A tiny VLCL-8 data root, every data set in a different format."""
    datasets = quiet_datasets()
    train, test = pairs(12), pairs(6)
    test = [(f"t{name}", caps) for name, caps in test]
    # flickr30k: Karpathy split file + images/ ; coco: COCO captions JSON per split
    write_images(root / "flickr30k" / "flickr30k-images", train + test)
    write_karpathy(root / "flickr30k" / "dataset_flickr30k.json", {"train": train[:8], "restval": train[8:], "test": test})
    write_images(root / "coco" / "images", train + test)
    write_coco(root / "coco" / "train.json", train)
    write_coco(root / "coco" / "test.json", test)
    # pets: parquet files as a hub download lays them out (data/<split>-*.parquet)
    (root / "pets" / "data").mkdir(parents=True)
    hf_dataset(train, caption_column="caption_enriched").to_parquet(str(root / "pets" / "data" / "train-00000-of-00001.parquet"))
    hf_dataset(test, caption_column="caption_enriched", offset=50).to_parquet(
        str(root / "pets" / "data" / "test-00000-of-00001.parquet")
    )
    # lexica: CSV per split (open_clip's columns); simpsons: WebDataset shards with .caption.txt (random split)
    write_images(root / "lexica", train + test)
    write_csv(root / "lexica" / "train.csv", train)
    write_csv(root / "lexica" / "test.csv", test)
    write_wds(root / "simpsons", train + test, caption_ext="caption.txt")
    # wikiart: one JSONL (random split); kream: one TSV (random 50/50); sketch: save_to_disk Dataset (random split)
    write_images(root / "wikiart" / "images", train + test)
    write_jsonl(root / "wikiart" / "wikiart.jsonl", train + test, caption_key="text")
    write_images(root / "kream", train + test)
    write_csv(root / "kream" / "kream.tsv", train + test, caption_col="text", separator="\t")
    hf_dataset(train + test, caption_column="text").save_to_disk(str(root / "sketch"))
    # havg: save_to_disk DatasetDict with a test split
    datasets.DatasetDict({"test": hf_dataset(test, caption_column="en_text", offset=70)}).save_to_disk(str(root / "havg"))
    # zero-shot sets: image folders (cifar100, dtd), WebDataset with .cls (cars, flowers), HF with ClassLabel (imagenet, food101)
    write_image_folder(root / "cifar100" / "test", [0, 1, 2, 0, 1, 2], ["apple", "aquarium_fish", "baby"])
    write_image_folder(root / "dtd" / "test", [0, 1, 0, 1], ["banded", "blotchy"])
    write_wds(root / "cars" / "test", [(f"c{i}.png", []) for i in range(6)], labels=[0, 1, 2, 3, 4, 5], offset=30)
    write_wds(root / "flowers" / "test", [(f"f{i}.png", []) for i in range(4)], labels=[3, 2, 1, 0], offset=40)
    for name, classes in (
        ("imagenet", ["tench", "goldfish", "great white shark"]),
        ("food101", ["apple_pie", "baby_back_ribs", "baklava"]),
    ):
        dd = datasets.DatasetDict(
            {
                "validation": hf_dataset(
                    [(f"x{i}.png", []) for i in range(6)], labels=[0, 1, 2, 2, 1, 0], class_names=classes, offset=80
                )
            }
        )
        dd.save_to_disk(str(root / name))
    return root


def make_mtil_root(root: Path, names: tuple[str, ...] = ("aircraft", "caltech101")) -> Path:
    """Tiny classification tasks with train and test splits: image folders for the first, WebDataset for the others."""
    for n, name in enumerate(names):
        if n == 0:
            write_image_folder(
                root / name / "train", [0, 1, 2, 3] * 4, ["707-320", "727-200", "737-200", "737-300"], offset=10 * n
            )
            write_image_folder(
                root / name / "test", [0, 1, 2, 3] * 2, ["707-320", "727-200", "737-200", "737-300"], offset=100 + 10 * n
            )
        else:
            write_wds(
                root / name / "train", [(f"a{i}.png", []) for i in range(16)], labels=[i % 3 for i in range(16)], offset=200
            )
            write_wds(root / name / "test", [(f"b{i}.png", []) for i in range(9)], labels=[i % 3 for i in range(9)], offset=300)
            (root / name / "classnames.txt").write_text("red circle\nblue square\ngreen star\n", encoding="utf-8")
            (root / name / "zeroshot_classification_templates.txt").write_text(
                "a photo of a {c}.\na sketch of a {c}.\n", encoding="utf-8"
            )
    return root
