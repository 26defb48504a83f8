"""What every reader yields, and how it reports a bad sample."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlcl.data.images import DataError, ImageSource

BadSamplePolicy = Literal["error", "skip"]


@dataclass
class Sample:
    """One image with its captions (caption data) or its label (classification data).

    Samples that share a ``key`` (the same image file named on several lines)
    are one image with several captions (see :func:`group_by_image`).
    """

    image: ImageSource
    captions: list[str] = field(default_factory=list)
    label: int | None = None
    key: str | None = None

    @property
    def origin(self) -> str:
        return self.image.origin


class Problems:
    """Bad samples met while reading one data set.

    ``policy="error"`` raises at the first one (a :class:`DataError` naming the
    file and the line or record); ``policy="skip"`` counts them, keeps the
    first messages, and the sample is left out.
    """

    def __init__(self, policy: BadSamplePolicy = "error", keep: int = 20):
        if policy not in ("error", "skip"):
            raise ValueError(f"unknown bad-sample policy {policy!r}; expected 'error' or 'skip'")
        self.policy = policy
        self.keep = keep
        self.count = 0
        self.messages: list[str] = []

    def bad(self, message: str) -> None:
        if self.policy == "error":
            raise DataError(f"{message} (set data.on_bad_sample=skip to skip and count such samples)")
        self.count += 1
        if len(self.messages) < self.keep:
            self.messages.append(message)


def clean_captions(value: Any, origin: str, problems: Problems) -> list[str]:
    """A caption field (a string, or a list of strings) -> its non-empty captions; empty ones are bad samples."""
    values = value if isinstance(value, (list, tuple)) else [value]
    captions = []
    for item in values:
        if not isinstance(item, str):
            problems.bad(f"{origin}: caption is not text (got {type(item).__name__}: {str(item)[:40]!r})")
        elif not item.strip():
            problems.bad(f"{origin}: empty caption")
        else:
            captions.append(" ".join(item.split()))
    if not values:
        problems.bad(f"{origin}: no caption")
    return captions


def group_by_image(samples: list[Sample]) -> list[Sample]:
    """Merge samples with the same ``key`` (first appearance keeps its place; captions in order)."""
    merged: dict[str, Sample] = {}
    out: list[Sample] = []
    for sample in samples:
        if sample.key is None:
            out.append(sample)
            continue
        first = merged.get(sample.key)
        if first is None:
            merged[sample.key] = sample
            out.append(sample)
        else:
            first.captions.extend(sample.captions)
    return out


def natural_key(path: Path) -> list:
    """Sort ``2.tar`` before ``10.tar``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def choose_image_root(base: Path, names: list[str], candidates: tuple[str, ...] = (".", "images")) -> Path:
    """The folder relative image paths are read from: the first candidate under ``base`` where they exist."""
    relative = [n for n in names[:20] if n and not Path(n).is_absolute()]
    if not relative:
        return base
    for candidate in candidates:
        root = Path(os.path.normpath(base / candidate))
        if sum((root / n).is_file() for n in relative) * 2 >= len(relative):
            return root
    return base


def need_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder where the {what} should be")
    return path


def unreadable(path: Path, exc: OSError, what: str = "file") -> DataError:
    """The one-line error for a file the operating system will not read (missing, a folder, no permission)."""
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{path}: {what} not found")
    if isinstance(exc, IsADirectoryError):
        return DataError(f"{path}: is a folder where the {what} should be")
    return DataError(f"{path}: cannot read the {what} ({exc.strerror or exc})")


def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 text (a leading byte-order mark dropped, as spreadsheets write one); otherwise an error naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None


def read_text(path: Path, what: str = "file") -> str:
    """The whole file as UTF-8 text; a missing, unreadable or non-UTF-8 file is a :class:`DataError` naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise unreadable(path, exc, what) from None
    return decode_text(data, path)


__all__ = [
    "BadSamplePolicy",
    "DataError",
    "Problems",
    "Sample",
    "choose_image_root",
    "clean_captions",
    "decode_text",
    "group_by_image",
    "natural_key",
    "need_file",
    "read_text",
    "unreadable",
]
