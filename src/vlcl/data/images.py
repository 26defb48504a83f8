"""Images that stay where they are (files, tar shards, Arrow tables) until a batch needs them.

:class:`ImageStore` behaves like the uint8 array ``[N, H, W, 3]`` that the
embedded benchmark keeps in memory: ``len``, integer, slice and index-array
indexing return uint8 images at the model's resolution. Each image is decoded
with Pillow and resized and centre-cropped with the checkpoint's own
preprocessing (:class:`vlcl.data.preprocess.ImagePreprocessor`) when it is
indexed, so a data set of any size costs memory only for the batch in hand.
The engine, the teacher cache and the evaluation index it exactly like the
array, unchanged.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from vlcl.errors import BadInputError

if TYPE_CHECKING:  # importing vlcl.models loads transformers: not needed to hold images
    from vlcl.data.preprocess import ImagePreprocessor

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")

DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
"""``data.max_image_pixels``'s default: Pillow's own decompression-bomb threshold (``PIL.Image.MAX_IMAGE_PIXELS``)."""

DECODE_ERRORS = (
    OSError,  # includes UnidentifiedImageError, truncated files, unreadable files
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    Image.DecompressionBombError,
)
"""What Pillow raises on corrupt or hostile files: not all of it is an OSError (plugins leak struct.error, EOFError...)."""


class DataError(BadInputError, ValueError):
    """A data set that cannot be read as asked: one line naming the file and the line or record."""


class ImageSource:
    """Where one image's encoded bytes are; ``origin`` says which record named it (for messages)."""

    origin: str

    def read_bytes(self) -> bytes:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover
        raise NotImplementedError

    def open(self) -> Image.Image:
        return Image.open(io.BytesIO(self.read_bytes()))


@dataclass(frozen=True)
class FileImage(ImageSource):
    path: Path
    origin: str = ""

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def open(self) -> Image.Image:
        return Image.open(self.path)

    def describe(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class TarMemberImage(ImageSource):
    """A member of an uncompressed tar shard, read at its offset without unpacking the shard."""

    shard: Path
    member: str
    offset: int
    size: int
    origin: str = ""

    def read_bytes(self) -> bytes:
        fd = os.open(self.shard, os.O_RDONLY)
        try:
            data = os.pread(fd, self.size, self.offset)
        finally:
            os.close(fd)
        if len(data) != self.size:
            raise OSError(f"shard is truncated ({len(data)} of {self.size} bytes)")
        return data

    def describe(self) -> str:
        return f"{self.shard}:{self.member}"


@dataclass(frozen=True, eq=False)
class ArrowImage(ImageSource):
    """Row ``row`` of the image column of a Hugging Face dataset (read with ``decode=False``)."""

    table: Any  # datasets.Dataset with the image column cast to Image(decode=False)
    row: int
    column: str
    base_dir: Path | None = None
    origin: str = ""

    def read_bytes(self) -> bytes:
        value = self.table[self.row][self.column]
        if isinstance(value, dict):
            if value.get("bytes"):
                return value["bytes"]
            if value.get("path"):
                path = Path(value["path"])
                if not path.is_absolute() and self.base_dir is not None:
                    path = self.base_dir / path
                return path.read_bytes()
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise OSError(f"column '{self.column}' holds no image bytes (got {type(value).__name__})")

    def describe(self) -> str:
        return f"column '{self.column}' of row {self.row}"


@dataclass(frozen=True, eq=False)
class ArrayImage(ImageSource):
    """An image already decoded (uint8 [H, W, 3]); lets in-memory sets join a store."""

    array: np.ndarray
    origin: str = ""

    def open(self) -> Image.Image:
        return Image.fromarray(self.array)

    def read_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.open().save(buffer, format="PNG")
        return buffer.getvalue()

    def describe(self) -> str:
        return "in-memory image"


def _where(source: ImageSource) -> str:
    origin = f"{source.origin}: " if source.origin else ""
    return f"{origin}image {source.describe()}"


class TooManyPixels(Exception):
    """An image over ``data.max_image_pixels``, found from its header before anything is decoded."""


def pixel_problem(size: tuple[int, int], max_pixels: int | None) -> str | None:
    """None if an image of ``size`` is within ``max_pixels`` (None: no limit), else both numbers."""
    width, height = size
    if max_pixels is None or width * height <= max_pixels:
        return None
    return f"{width * height} pixels ({width}x{height}), over data.max_image_pixels={max_pixels} (raise it for trusted data)"


_PILLOW_LIMIT_LOCK = threading.Lock()
_pillow_limit_users = 0
_pillow_saved_limit: int | None = None


@contextmanager
def _vlcl_counts_pixels() -> Iterator[None]:
    """Pillow's global decompression-bomb check off while vlcl opens and decodes, restored after.

    vlcl checks ``data.max_image_pixels`` itself, per image and before decoding; Pillow's
    check would refuse (or warn about) images a raised limit lets through. Decoding threads
    share one switch: the first in turns it off, the last out restores Pillow's value.
    """
    global _pillow_limit_users, _pillow_saved_limit
    with _PILLOW_LIMIT_LOCK:
        if _pillow_limit_users == 0:
            _pillow_saved_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        _pillow_limit_users += 1
    try:
        yield
    finally:
        with _PILLOW_LIMIT_LOCK:
            _pillow_limit_users -= 1
            if _pillow_limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _pillow_saved_limit


@contextmanager
def open_image(source: ImageSource, max_pixels: int | None) -> Iterator[Image.Image]:
    """The image with only its header read; over ``max_pixels`` it raises :class:`TooManyPixels` before decoding."""
    with _vlcl_counts_pixels(), source.open() as image:
        problem = pixel_problem(image.size, max_pixels)
        if problem is not None:
            raise TooManyPixels(problem)
        yield image


def check_image(source: ImageSource, level: str, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> str | None:
    """None if the image is usable at ``level`` (``none``, ``header``, ``full``), else the problem in a few words.

    ``header`` reads the header (and refuses an image over ``max_pixels``), ``full`` also decodes it.
    """
    if level == "none":
        return None
    if isinstance(source, FileImage) and source.path.is_dir():
        return "is a folder, not an image file"
    if isinstance(source, FileImage) and not source.path.is_file():
        return "not found"
    try:
        with open_image(source, max_pixels) as image:
            if level == "full":
                image.load()
            width, height = image.size
        if width < 1 or height < 1:
            return "has no pixels"
    except TooManyPixels as exc:
        return f"has {exc}"
    except FileNotFoundError:
        return "not found"
    except UnidentifiedImageError:
        return "is not an image Pillow can read"
    except DECODE_ERRORS as exc:  # truncated or corrupt data
        return f"cannot be decoded ({exc})"
    return None


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlcl-decode")
        return _POOLS[workers]


def thread_map(function, items: Sequence, workers: int) -> list:
    """``[function(x) for x in items]``, on ``workers`` threads when that helps (Pillow releases the GIL)."""
    if workers <= 1 or len(items) < 4:
        return [function(item) for item in items]
    return list(_pool(workers).map(function, items))


class ImageStore:
    """A lazy uint8 image array ``[N, H, W, 3]`` at the model's resolution.

    ``store[i]`` is one image ``[H, W, 3]``; ``store[a:b]`` and ``store[index_array]``
    a batch ``[n, H, W, 3]``. Decoding failures, and images over ``max_pixels``
    (``data.max_image_pixels``, checked from the header before decoding; None: no
    limit), raise :class:`DataError` naming the record and the image (run ``vlcl
    data check --image-check full`` to find them all before a long run).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(
        self,
        sources: Sequence[ImageSource],
        preprocess: ImagePreprocessor,
        workers: int = 0,
        max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        self.sources = list(sources)
        self.preprocess = preprocess
        self.workers = workers
        self.max_pixels = max_pixels

    @property
    def image_size(self) -> int:
        return self.preprocess.image_size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.sources), self.image_size, self.image_size, 3)

    def __len__(self) -> int:
        return len(self.sources)

    def __repr__(self) -> str:
        return f"ImageStore({len(self)} images at {self.image_size}x{self.image_size})"

    def decode(self, i: int) -> np.ndarray:
        source = self.sources[i]
        try:
            with open_image(source, self.max_pixels) as image:
                image = self.preprocess._resize_and_crop(image)
                array = np.asarray(image, dtype=np.uint8)
        except TooManyPixels as exc:
            raise DataError(f"{_where(source)}: {exc}") from None
        except DECODE_ERRORS as exc:
            raise DataError(f"{_where(source)}: cannot be decoded ({exc.__class__.__name__}: {exc})") from None
        if array.shape != (self.image_size, self.image_size, 3):
            raise DataError(f"{_where(source)}: decoded to shape {array.shape}, expected {self.shape[1:]}")
        return array

    def _rows(self, key: Any) -> list[int] | int:
        if isinstance(key, (int, np.integer)):
            index = int(key)
            if not -len(self) <= index < len(self):
                raise IndexError(f"image index {index} out of range for {len(self)} images")
            return index % len(self)
        if isinstance(key, slice):
            return list(range(*key.indices(len(self))))
        if hasattr(key, "tolist"):  # numpy array or torch tensor
            key = key.tolist()
        if isinstance(key, (list, tuple)):
            rows = [int(k) for k in key]
            bad = next((r for r in rows if not -len(self) <= r < len(self)), None)
            if bad is not None:
                raise IndexError(f"image index {bad} out of range for {len(self)} images")
            return [r % len(self) for r in rows]
        raise TypeError(f"ImageStore indices must be integers, slices or integer arrays, not {type(key).__name__}")

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = self._rows(key)
        if isinstance(rows, int):
            return self.decode(rows)
        if not rows:
            return np.empty((0, *self.shape[1:]), dtype=np.uint8)
        return np.stack(thread_map(self.decode, rows, self.workers))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every image decoded (memory N x H x W x 3 bytes): for code that needs a real array."""
        array = self[:]
        return array.astype(dtype) if dtype is not None and np.dtype(dtype) != array.dtype else array

    def __iter__(self):
        for i in range(len(self)):
            yield self.decode(i)

    def subset(self, indices: Sequence[int]) -> "ImageStore":
        return ImageStore([self.sources[i] for i in indices], self.preprocess, self.workers, self.max_pixels)


def concat_images(parts: Sequence[np.ndarray | ImageStore]) -> np.ndarray | ImageStore:
    """Concatenate image arrays or stores; stores stay lazy."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    stores = [p for p in parts if isinstance(p, ImageStore)]
    sources: list[ImageSource] = []
    for part in parts:
        sources += part.sources if isinstance(part, ImageStore) else [ArrayImage(row) for row in part]
    return ImageStore(sources, stores[0].preprocess, stores[0].workers, stores[0].max_pixels)
