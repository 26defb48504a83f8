"""Annotation files of one line per pair: CSV/TSV (open_clip's convention) and JSON Lines.

Found as ``<split>.csv`` / ``<split>.tsv`` / ``<split>.jsonl`` in a data set folder, or as the one
``*.csv`` / ``*.tsv`` / ``*.jsonl`` file without a split name (the whole data set).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

from vlcl.data.formats.base import (
    DataError,
    Problems,
    Sample,
    choose_image_root,
    clean_captions,
    group_by_image,
    need_file,
    read_text,
    unreadable,
)
from vlcl.data.formats.registry import SPLITS, Finder, ReadRequest, Source, register_format
from vlcl.data.images import FileImage

csv.field_size_limit(1 << 24)


def _image(root: Path, name: str) -> Path:
    try:
        path = Path(name).expanduser()
    except RuntimeError:  # ~user of no such user: kept as written, so the image check names it as not found
        path = Path(name)
    return path if path.is_absolute() else root / path


def read_csv(
    path: str | Path,
    *,
    image_column: str = "filepath",
    caption_column: str = "title",
    separator: str | None = None,
    image_root: str | Path | None = None,
    problems: Problems | None = None,
) -> list[Sample]:
    """One (image, caption) pair per row; rows naming the same image become one image with several captions.

    ``separator`` defaults to a tab for ``.tsv`` files and a comma otherwise.
    Relative image paths are read from ``image_root`` (default: the file's
    folder, or its ``images/`` subfolder if they are there).
    """
    path = need_file(Path(path), "annotation file")
    problems = problems or Problems()
    separator = separator or ("\t" if path.suffix.lower() == ".tsv" else ",")
    # decoded whole first: a non-UTF-8 byte is then reported at its own line, not at the CSV row read last
    reader = csv.DictReader(io.StringIO(read_text(path, "annotation file"), newline=""), delimiter=separator)
    try:
        header = reader.fieldnames or []
        missing = [c for c in (image_column, caption_column) if c not in header]
        if missing:
            raise DataError(f"{path}: no column '{missing[0]}' (columns: {', '.join(header) or 'none'})")
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    names = [(row.get(image_column) or "").strip() for _, row in rows]
    root = Path(image_root) if image_root is not None else choose_image_root(path.parent, names)
    samples = []
    for (line, row), name in zip(rows, names):
        origin = f"{path}: line {line}"
        if None in row or any(row.get(c) is None for c in (image_column, caption_column)):
            problems.bad(f"{origin}: expected {len(header)} fields separated by {separator!r}")
            continue
        if not name:
            problems.bad(f"{origin}: empty '{image_column}'")
            continue
        captions = clean_captions(row[caption_column], origin, problems)
        if captions:
            file = _image(root, name)
            samples.append(Sample(FileImage(file, origin), captions, key=str(file)))
    return group_by_image(samples)


def read_jsonl(
    path: str | Path,
    *,
    image_key: str = "image",
    caption_key: str = "caption",
    label_key: str | None = None,
    image_root: str | Path | None = None,
    problems: Problems | None = None,
) -> list[Sample]:
    """One JSON object per line: ``{"image": "a.jpg", "caption": "..."}``; the caption may be a list of captions.

    With ``label_key`` the records are classification samples (an integer label).
    """
    path = need_file(Path(path), "annotation file")
    problems = problems or Problems()
    records = []
    lines = read_text(path, "annotation file").split("\n")  # only \n ends a JSON Lines record: line numbers stay the file's
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        origin = f"{path}: line {number}"
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.bad(f"{origin}: malformed JSON ({exc.msg} at column {exc.colno})")
            continue
        except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits, nesting too deep
            problems.bad(f"{origin}: unreadable JSON ({exc.__class__.__name__}: {exc})")
            continue
        if not isinstance(record, dict):
            problems.bad(f"{origin}: expected a JSON object, got {type(record).__name__}")
            continue
        records.append((origin, record))
    names = [str(r.get(image_key) or "") for _, r in records]
    root = Path(image_root) if image_root is not None else choose_image_root(path.parent, names)
    samples = []
    for (origin, record), name in zip(records, names):
        if not isinstance(record.get(image_key), str) or not name.strip():
            problems.bad(f"{origin}: no image path under key '{image_key}'")
            continue
        file = _image(root, name.strip())
        if label_key is not None:
            label = record.get(label_key)
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                problems.bad(f"{origin}: label under key '{label_key}' is not a non-negative integer ({label!r})")
                continue
            samples.append(Sample(FileImage(file, origin), label=label))
            continue
        if caption_key not in record:
            problems.bad(f"{origin}: no caption under key '{caption_key}'")
            continue
        captions = clean_captions(record[caption_key], origin, problems)
        if captions:
            samples.append(Sample(FileImage(file, origin), captions, key=str(file)))
    return group_by_image(samples) if label_key is None else samples


# -- as registered formats: found in a data set folder, read with the fields a request names ---------------


def _csv_header(path: Path) -> list[str]:
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


def _read_csv_source(source: Source, request: ReadRequest) -> tuple[list[Sample], None]:
    path = source.path
    header = _csv_header(path)
    if request.labels:
        raise DataError(f"{path}: CSV files hold captions; classification data goes in image folders, JSONL or WebDataset")
    return read_csv(
        path,
        image_column=_pick(header, request.image_fields, "image", path),
        caption_column=_pick(header, request.captions, "caption", path),
        problems=request.problems,
    ), None


def _read_jsonl_source(source: Source, request: ReadRequest) -> tuple[list[Sample], None]:
    path, images, captions = source.path, request.image_fields, request.captions
    keys = _jsonl_keys(path)
    image_key = _pick(keys, images, "image", path) if keys else images[0]
    if request.labels:
        return read_jsonl(path, image_key=image_key, label_key=request.label, problems=request.problems), None
    caption_key = _pick(keys, captions, "caption", path) if keys else captions[0]
    return read_jsonl(path, image_key=image_key, caption_key=caption_key, problems=request.problems), None


def _split_files(fmt: str, suffixes: tuple[str, ...]):
    def find(folder: Path, split: str) -> Iterator[Source]:
        for suffix in suffixes:
            if (folder / f"{split}{suffix}").is_file():
                yield Source(fmt, folder / f"{split}{suffix}")

    return find


def _one_file(fmt: str, suffixes: tuple[str, ...]):
    """The whole data set: the one file of a suffix whose name is no split's."""

    def find(folder: Path) -> Iterator[tuple[str, Source]]:
        for suffix in suffixes:
            files = [f for f in sorted(folder.glob(f"*{suffix}")) if f.stem not in SPLITS]
            if len(files) == 1:
                yield "all", Source(fmt, files[0])

    return find


register_format(
    "csv",
    read=_read_csv_source,
    labels=False,
    find=(
        Finder("split_file", 10, _split_files("csv", (".csv", ".tsv"))),
        Finder("whole", 20, _one_file("csv", (".csv", ".tsv"))),
    ),
)
register_format(
    "jsonl",
    read=_read_jsonl_source,
    find=(Finder("split_file", 20, _split_files("jsonl", (".jsonl",))), Finder("whole", 30, _one_file("jsonl", (".jsonl",)))),
)
