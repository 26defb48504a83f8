"""WebDataset tar shards: members ``KEY.jpg`` + ``KEY.txt`` (or ``.json``, ``.cls``) form one sample.

Read with the standard library's ``tarfile``: only the member headers are
scanned, and an image is later read at its offset in the shard, so shards are
neither unpacked nor held in memory and any sample can be read in any order
(the training loop shuffles). Shards must be uncompressed ``.tar`` files, the
WebDataset convention. A ``.txt`` holds one caption per line (open_clip writes
one, CLIP_benchmark's retrieval shards several).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

from vlcl.data.formats.base import DataError, Problems, Sample, clean_captions, natural_key
from vlcl.data.images import IMAGE_EXTENSIONS, TarMemberImage

TEXT_LIMIT = 1 << 20


def list_shards(path: str | Path) -> list[Path]:
    """A shard, or every ``*.tar`` of a folder in natural order (``2.tar`` before ``10.tar``)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: WebDataset shards not found")
    shards = sorted(path.glob("*.tar"), key=natural_key)
    if not shards:
        compressed = sorted(path.glob("*.tar.gz")) + sorted(path.glob("*.tgz"))
        hint = " (compressed shards: decompress them, vlcl reads uncompressed .tar)" if compressed else ""
        raise DataError(f"{path}: no .tar shards{hint}")
    return shards


def _split_name(member: str) -> tuple[str, str]:
    """``dir/abc.caption.txt`` -> (``dir/abc``, ``caption.txt``): the key ends at the basename's first dot."""
    folder, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def _scan(shard: Path) -> list[tuple[str, dict[str, tarfile.TarInfo], dict[str, bytes]]]:
    """(key, image and other members by extension, contents of the small non-image members) per sample."""
    try:
        archive = tarfile.open(shard, mode="r:")
    except tarfile.ReadError as exc:
        hint = "; vlcl reads uncompressed .tar shards" if shard.suffix in (".gz", ".tgz") else ""
        raise DataError(f"{shard}: not a readable tar shard ({exc}{hint})") from None
    groups: dict[str, tuple[dict[str, tarfile.TarInfo], dict[str, bytes]]] = {}
    with archive:
        try:
            for info in archive:
                if not info.isfile():
                    continue
                key, ext = _split_name(info.name)
                if key.rsplit("/", 1)[-1].startswith("__") or not ext:
                    continue
                members, texts = groups.setdefault(key, ({}, {}))
                members[ext] = info
                if ext not in IMAGE_EXTENSIONS and info.size <= TEXT_LIMIT:
                    texts[ext] = archive.extractfile(info).read()
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{shard}: corrupt tar shard ({exc})") from None
    return [(key, members, texts) for key, (members, texts) in groups.items()]


def _text(texts: dict[str, bytes], ext: str) -> str:
    if ext not in texts:
        raise ValueError(f".{ext} member is larger than {TEXT_LIMIT} bytes")
    return texts[ext].decode("utf-8")


def read_webdataset(
    shards: str | Path | Sequence[str | Path],
    *,
    caption_ext: str | Sequence[str] = "txt",
    json_caption_key: str | Sequence[str] = "caption",
    labels: bool = False,
    label_ext: str = "cls",
    problems: Problems | None = None,
) -> list[Sample]:
    """Samples of every shard (a path to a folder of ``*.tar``, one shard, or a list of shards).

    Captions come from the member with extension ``caption_ext`` (one caption
    per line), else from ``json_caption_key`` of a ``.json`` member (either may
    be a list of names, the first present is used); labels
    (``labels=True``) from ``.cls`` (an integer) or the ``.json`` key ``label``.
    """
    problems = problems or Problems()
    caption_exts = (caption_ext,) if isinstance(caption_ext, str) else tuple(caption_ext)
    json_keys = (json_caption_key,) if isinstance(json_caption_key, str) else tuple(json_caption_key)
    paths = list_shards(shards) if isinstance(shards, (str, Path)) else [Path(s) for s in shards]
    samples = []
    for shard in paths:
        for key, members, texts in _scan(shard):
            origin = f"{shard}: sample '{key}'"
            image_ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
            if image_ext is None:
                problems.bad(f"{origin}: no image ({', '.join(IMAGE_EXTENSIONS[:4])}) among {', '.join(sorted(members))}")
                continue
            info = members[image_ext]
            image = TarMemberImage(shard, info.name, info.offset_data, info.size, origin)
            try:
                meta = json.loads(_text(texts, "json")) if "json" in members else {}
                if not isinstance(meta, dict):
                    meta = {}
                if labels:
                    raw = _text(texts, label_ext).strip() if label_ext in members else meta.get("label")
                    if raw is None:
                        problems.bad(f"{origin}: no label (.{label_ext})")
                        continue
                    label = int(raw)
                    if label < 0:
                        raise ValueError(f"negative label {label}")
                    samples.append(Sample(image, label=label))
                    continue
                ext = next((e for e in caption_exts if e in members), None)
                key_in_json = next((k for k in json_keys if k in meta), None)
                if ext is not None:
                    value: object = [line for line in _text(texts, ext).splitlines() if line.strip()] or [""]
                elif key_in_json is not None:
                    value = meta[key_in_json]
                else:
                    problems.bad(f"{origin}: no caption (.{caption_exts[0]} or '{json_keys[0]}' in .json)")
                    continue
            except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
                problems.bad(f"{origin}: unreadable text member ({exc})")
                continue
            captions = clean_captions(value, origin, problems)
            if captions:
                samples.append(Sample(image, captions))
    return samples
