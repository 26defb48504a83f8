"""A fingerprint of a benchmark's data: is the data a run resumes on the data it started on?

A run whose data root moved (another disk, another mount point) may resume
from the new place when the data is the same. "The same" is decided by a
SHA-256 over everything the run reads, with the data root's own path taken
out: task and set names, captions, caption-to-image indices, labels, class
names and prompt templates, and each image's identity. An in-memory image (the
embedded benchmark) is identified by its pixels; an image read from disk by
its path relative to the data root (or shard member and byte range, or row of
a Hugging Face table) and the file's size. Image bytes are not read: hashing
every image would read the whole data set, and a file replaced by another of
exactly the same size under the same name is not a case worth that cost.
"""

from __future__ import annotations

import dataclasses

import hashlib
from pathlib import Path

import numpy as np
import torch

from vlcl.data.benchmark import Benchmark, CaptionedImages, ClassificationSet, RetrievalSet
from vlcl.data.benchmarks.feature_pairs import ModalityPairs
from vlcl.data.images import ArrayImage, FileImage, ImageStore, TarMemberImage


def _image_identity(source, root: str) -> str:
    if isinstance(source, FileImage):
        try:
            size = source.path.stat().st_size
        except OSError:
            size = -1
        return f"file {_relative(source.path, root)} {size}"
    if isinstance(source, TarMemberImage):
        return f"tar {_relative(source.shard, root)} {source.member} {source.offset} {source.size}"
    if isinstance(source, ArrayImage):
        return "array " + hashlib.sha256(np.ascontiguousarray(source.array).tobytes()).hexdigest()
    return source.describe().replace(root, "<root>") if root else source.describe()


def _relative(path: Path, root: str) -> str:
    if root:
        try:
            return str(Path(path).resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return str(path)


def _update_images(digest, images, root: str) -> None:
    if isinstance(images, ImageStore):
        for source in images.sources:
            digest.update(_image_identity(source, root).encode())
            digest.update(b"\0")
    else:
        array = np.ascontiguousarray(images)
        digest.update(f"array {array.shape} {array.dtype}".encode())
        digest.update(array.tobytes())


def _update(digest, *parts) -> None:
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.tolist()
        digest.update(repr(part).encode())
        digest.update(b"\0")


def _update_set(digest, data, root: str) -> None:
    _update(digest, type(data).__name__, data.name)
    if isinstance(data, CaptionedImages):
        _update(digest, data.captions)
    elif isinstance(data, RetrievalSet):
        _update(digest, data.captions, data.text_to_image)
    elif isinstance(data, ClassificationSet):
        _update(digest, data.labels, data.classnames, data.templates)
    elif isinstance(data, ModalityPairs):  # pre-extracted features: the arrays are the data
        _update(digest, data.modalities)
        for modality in data.modalities:
            digest.update(np.ascontiguousarray(data.arrays[modality].numpy()).tobytes())
        return
    elif dataclasses.is_dataclass(data):  # a set of a setting registered outside vlcl: every field but its images
        _update(digest, *(getattr(data, f.name) for f in dataclasses.fields(data) if f.name not in ("name", "images")))
    _update_images(digest, data.images, root)


def benchmark_fingerprint(benchmark: Benchmark, root: str | None = None) -> str:
    """Hex SHA-256 of the benchmark's data, independent of where ``root`` lies; see the module docstring."""
    digest = hashlib.sha256()
    root_text = str(root) if root else ""
    _update(digest, benchmark.name)
    for task in benchmark.tasks:
        _update(digest, "task", task.name)
        _update_set(digest, task.train, root_text)
        _update_set(digest, task.test, root_text)
    for data in [*benchmark.heldout_retrieval, *benchmark.zeroshot]:
        _update_set(digest, data, root_text)
    return digest.hexdigest()


def evaluation_fingerprint(benchmark: Benchmark, root: str | None = None) -> str:
    """Hex SHA-256 of what an evaluation reads (every task's test set, the held-out and zero-shot sets), as
    :func:`benchmark_fingerprint` identifies data; training data plays no part."""
    digest = hashlib.sha256()
    root_text = str(root) if root else ""
    _update(digest, benchmark.name, "evaluation")
    for data in [*(task.test for task in benchmark.tasks), *benchmark.heldout_retrieval, *benchmark.zeroshot]:
        _update_set(digest, data, root_text)
    return digest.hexdigest()
