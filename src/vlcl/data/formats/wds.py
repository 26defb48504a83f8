"""WebDataset tar shards: members ``KEY.jpg`` + ``KEY.txt`` (or ``.json``, ``.cls``) form one sample.

Read with the standard library's ``tarfile``: only the member headers are
scanned, and an image is later read at its offset in the shard, so shards are
neither unpacked nor held in memory and any sample can be read in any order
(the training loop shuffles). Shards must be uncompressed ``.tar`` files, the
WebDataset convention. A ``.txt`` holds one caption per line (open_clip writes
one, CLIP_benchmark's retrieval shards several).

Found as a split's sub-folder of ``*.tar`` shards, or ``*.tar`` in the data set folder (the whole data set).
Compressed shards (``*.tar.gz``, ``*.tgz``) where nothing else is found are taken as WebDataset too, so that
reading them says to decompress them rather than that the folder holds nothing vlcl reads.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlcl.data.formats.base import DataError, Problems, Sample, clean_captions, natural_key, unreadable
from vlcl.data.formats.registry import Finder, ReadRequest, Source, register_format
from vlcl.data.images import IMAGE_EXTENSIONS, TarMemberImage

TEXT_LIMIT = 1 << 20
END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE
"""Tar's end-of-archive marker: two zero blocks after the last member (Python's tarfile and GNU tar write it,
then pad with zeros to their record size, 10240 bytes by default)."""
COMPRESSED_SHARDS = ("*.tar.gz", "*.tgz")
DECOMPRESS_HINT = "compressed shards: decompress them (gunzip), vlcl reads uncompressed .tar"


def _decompressed(file: Path) -> Path:
    """``0.tar.gz`` -> ``0.tar``, ``0.tgz`` -> ``0.tar``."""
    name = file.name
    return file.with_name(name[: -len(".gz")] if name.endswith(".tar.gz") else name[: -len(".tgz")] + ".tar")


def compressed_shards(folder: Path) -> list[Path]:
    """``*.tar.gz`` / ``*.tgz`` of ``folder`` that have no decompressed ``.tar`` beside them."""
    found = [file for pattern in COMPRESSED_SHARDS for file in folder.glob(pattern)]
    return sorted((file for file in found if not _decompressed(file).exists()), key=natural_key)


def list_shards(path: str | Path) -> list[Path]:
    """A shard, or every ``*.tar`` of a folder in natural order (``2.tar`` before ``10.tar``).

    A folder holding compressed shards without their ``.tar`` is an error, even beside
    other ``.tar`` shards: reading only the uncompressed ones would drop data without a word.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: WebDataset shards not found")
    shards = sorted(path.glob("*.tar"), key=natural_key)
    compressed = compressed_shards(path)
    if compressed:
        names = ", ".join(f.name for f in compressed[:3]) + (" ..." if len(compressed) > 3 else "")
        raise DataError(f"{path}: {len(compressed)} {DECOMPRESS_HINT} ({names})")
    if not shards:
        raise DataError(f"{path}: no .tar shards")
    return shards


def _split_name(member: str) -> tuple[str, str]:
    """``dir/abc.caption.txt`` -> (``dir/abc``, ``caption.txt``): the key ends at the basename's first dot."""
    folder, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


@dataclass
class _Group:
    """The members of one sample key in one shard."""

    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)
    texts: dict[str, bytes] = field(default_factory=dict)
    repeated: list[str] = field(default_factory=list)
    """Extensions met more than once: which copy is meant is unknown (``tar -r`` appends, extraction keeps the last)."""


def _open_shard(shard: Path) -> tarfile.TarFile:
    hint = f"; {DECOMPRESS_HINT}" if shard.name.endswith((".gz", ".tgz")) else ""
    try:
        return tarfile.open(shard, mode="r:")
    except tarfile.ReadError as exc:
        raise DataError(f"{shard}: not a readable tar shard ({exc}{hint})") from None
    except OSError as exc:
        raise unreadable(shard, exc, "tar shard") from None


def _check_member_inside(shard: Path, info: tarfile.TarInfo, size: int) -> None:
    end = info.offset_data + info.size
    if end > size:
        raise DataError(
            f"{shard}: truncated: member '{info.name}' needs {end} bytes but the shard has {size} (a partial download or copy?)"
        )


def _check_archive_end(shard: Path, end: int, size: int, last: str | None) -> None:
    """Where tarfile stopped reading must be tar's end-of-archive marker followed by nothing but zero padding.

    Python's tarfile stops without a word at a missing, short or corrupt header, so a shard
    cut at a member boundary (or damaged in the middle) would otherwise read as a shorter one.
    """
    after = f"after member '{last}'" if last else "at its start"
    with shard.open("rb") as handle:
        handle.seek(end)
        marker = handle.read(END_OF_ARCHIVE)
        if len(marker) < END_OF_ARCHIVE and not any(marker):
            raise DataError(
                f"{shard}: truncated: ends at byte {size} {after} without tar's end-of-archive marker "
                "(a partial download or copy?)"
            )
        if any(marker):
            raise DataError(f"{shard}: corrupt or truncated: unreadable tar header at byte {end} {after}")
        while chunk := handle.read(1 << 20):
            if chunk.count(0) != len(chunk):
                raise DataError(
                    f"{shard}: data after tar's end-of-archive marker at byte {end} (tar files joined with cat? "
                    "vlcl reads one archive per shard)"
                )


def _scan(shard: Path) -> list[tuple[str, _Group]]:
    """(key, its members by extension with the contents of the small non-image ones) per sample, in shard order.

    The whole shard is validated: every member lies inside the file and the archive ends with
    tar's end-of-archive marker, so a truncated shard is an error rather than fewer samples.
    """
    archive = _open_shard(shard)
    size = shard.stat().st_size
    groups: dict[str, _Group] = {}
    last = None
    with archive:
        try:
            for info in archive:
                _check_member_inside(shard, info, size)
                last = info.name
                if not info.isfile():
                    continue
                key, ext = _split_name(info.name)
                if key.rsplit("/", 1)[-1].startswith("__") or not ext:
                    continue
                group = groups.setdefault(key, _Group())
                if ext in group.members:
                    group.repeated.append(ext)
                group.members[ext] = info
                if ext not in IMAGE_EXTENSIONS and info.size <= TEXT_LIMIT:
                    group.texts[ext] = archive.extractfile(info).read()
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{shard}: corrupt tar shard ({exc})") from None
        _check_archive_end(shard, archive.offset, size, last)
    return list(groups.items())


def _text(texts: dict[str, bytes], ext: str) -> str:
    if ext not in texts:
        raise ValueError(f".{ext} member is larger than {TEXT_LIMIT} bytes")
    return texts[ext].decode("utf-8-sig")  # a byte-order mark is not part of the caption


def _caption_lines(text: str) -> list[str]:
    """Lines end at \\n, \\r\\n or \\r only: ``str.splitlines`` would also cut a caption at U+2028 or U+0085."""
    return re.split(r"\r\n|\r|\n", text)


def _label(raw: object) -> int:
    """A ``.cls`` text or a ``.json`` ``label``: a non-negative integer, not a float, bool or list that ``int()`` would bend."""
    if isinstance(raw, str) and raw.strip().lstrip("+").isdigit():
        return int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    raise ValueError(f"label is not a non-negative integer ({raw!r})")


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
    first_shard: dict[str, Path] = {}  # sample key -> the shard it came from: a key is one sample per data set
    for shard in paths:
        for key, group in _scan(shard):
            origin = f"{shard}: sample '{key}'"
            members, texts = group.members, group.texts
            if group.repeated:
                problems.bad(f"{origin}: member '{key}.{group.repeated[0]}' appears more than once in the shard")
                continue
            if key in first_shard:
                problems.bad(
                    f"{origin}: key already used by a sample in {first_shard[key]} (a key names one sample per data set)"
                )
                continue
            first_shard[key] = shard
            image_ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
            if image_ext is None:
                problems.bad(f"{origin}: no image ({', '.join(IMAGE_EXTENSIONS[:4])}) among {', '.join(sorted(members))}")
                continue
            info = members[image_ext]
            image = TarMemberImage(shard, info.name, info.offset_data, info.size, origin)
            try:
                meta = json.loads(_text(texts, "json")) if "json" in members else {}
                # a .json that is not an object holds no caption or label; said where one was looked for
                unusable = f"; its .json holds a {type(meta).__name__}, not an object" if not isinstance(meta, dict) else ""
                meta = meta if isinstance(meta, dict) else {}
                if labels:
                    raw = _text(texts, label_ext).strip() if label_ext in members else meta.get("label")
                    if raw is None:
                        problems.bad(f"{origin}: no label (.{label_ext} or 'label' in .json{unusable})")
                        continue
                    samples.append(Sample(image, label=_label(raw)))
                    continue
                ext = next((e for e in caption_exts if e in members), None)
                key_in_json = next((k for k in json_keys if k in meta), None)
                if ext is not None:
                    value: object = [line for line in _caption_lines(_text(texts, ext)) if line.strip()] or [""]
                elif key_in_json is not None:
                    value = meta[key_in_json]
                else:
                    problems.bad(f"{origin}: no caption (.{caption_exts[0]} or '{json_keys[0]}' in .json{unusable})")
                    continue
            except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                problems.bad(f"{origin}: unreadable text member ({exc})")
                continue
            captions = clean_captions(value, origin, problems)
            if captions:
                samples.append(Sample(image, captions))
    return samples


# -- as a registered format ----------------------------------------------------------------------------------


def _read_wds_source(source: Source, request: ReadRequest) -> tuple[list[Sample], None]:
    captions = request.captions
    exts = tuple(dict.fromkeys(c for c in (*captions, "txt") if "." in c or c.isalnum()))
    return read_webdataset(
        source.path, caption_ext=exts, json_caption_key=captions, labels=request.labels, problems=request.problems
    ), None


def _shard_folder(sub: Path) -> Source | None:
    return Source("wds", sub) if any(sub.glob("*.tar")) else None


def _compressed_shard_folder(sub: Path) -> Source | None:
    return Source("wds", sub) if compressed_shards(sub) else None


def _shards(folder: Path) -> Iterator[tuple[str, Source]]:
    if any(folder.glob("*.tar")):
        yield "all", Source("wds", folder)


def _compressed(folder: Path) -> Iterator[tuple[str, Source]]:
    if compressed_shards(folder):
        yield "all", Source("wds", folder)


register_format(
    "wds",
    read=_read_wds_source,
    find=(
        Finder("split_folder", 10, _shard_folder),
        Finder("split_folder", 50, _compressed_shard_folder),
        Finder("whole", 10, _shards),
        Finder("fallback", 10, _compressed),
    ),
)
