"""Annotation files of one line per pair: CSV/TSV (open_clip's convention) and JSON Lines."""

from __future__ import annotations

import csv
import io
import json
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
)
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
