"""What a benchmark is: a sequence of tasks plus held-out evaluation sets.

Data sets hold images as uint8 arrays at the model's resolution (the embedded
benchmark) so that the training loop never decodes files; readers of real
formats (issue: real data) produce the same types.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class CaptionedImages:
    """Training pairs: image i has one or more captions; one is drawn per epoch."""

    name: str
    images: np.ndarray  # uint8 [N, H, W, 3]
    captions: list[list[str]]

    def __post_init__(self) -> None:
        if len(self.images) != len(self.captions):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.captions)} caption lists")
        empty = next((i for i, caps in enumerate(self.captions) if not caps), None)
        if empty is not None:
            raise ValueError(f"{self.name}: image {empty} has no caption")

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class RetrievalSet:
    """A retrieval test set: every caption points at its image (several captions per image)."""

    name: str
    images: np.ndarray  # uint8 [N, H, W, 3]
    captions: list[str]
    text_to_image: torch.Tensor  # long [M]

    @classmethod
    def from_caption_lists(cls, name: str, images: np.ndarray, captions: list[list[str]]) -> "RetrievalSet":
        flat = [c for caps in captions for c in caps]
        owner = [i for i, caps in enumerate(captions) for _ in caps]
        return cls(name, images, flat, torch.tensor(owner, dtype=torch.long))


@dataclass
class ClassificationSet:
    """A zero-shot classification set: class names and prompt templates containing ``{}``."""

    name: str
    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: torch.Tensor  # long [N]
    classnames: list[str]
    templates: list[str]

    def prompts(self) -> list[list[str]]:
        return [[t.format(c) for t in self.templates] for c in self.classnames]


@dataclass
class Task:
    name: str
    train: CaptionedImages
    test: RetrievalSet
    description: str = ""


@dataclass
class Benchmark:
    name: str
    tasks: list[Task]
    heldout_retrieval: list[RetrievalSet] = field(default_factory=list)
    zeroshot: list[ClassificationSet] = field(default_factory=list)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def retrieval_sets(self) -> list[RetrievalSet]:
        return [t.test for t in self.tasks] + list(self.heldout_retrieval)


BenchmarkBuilder = Callable[..., Benchmark]
_BENCHMARKS: dict[str, tuple[BenchmarkBuilder, str]] = {}


class UnknownBenchmarkError(ValueError):
    pass


def register_benchmark(name: str, description: str) -> Callable[[BenchmarkBuilder], BenchmarkBuilder]:
    def wrap(builder: BenchmarkBuilder) -> BenchmarkBuilder:
        _BENCHMARKS[name] = (builder, description)
        return builder

    return wrap


def list_benchmarks() -> dict[str, str]:
    return {name: desc for name, (_, desc) in sorted(_BENCHMARKS.items())}


def benchmark_builder(name: str) -> BenchmarkBuilder:
    if name not in _BENCHMARKS:
        close = difflib.get_close_matches(name, list(_BENCHMARKS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UnknownBenchmarkError(
            f"unknown benchmark '{name}'{hint}; valid choices for 'data.benchmark': {', '.join(sorted(_BENCHMARKS))}"
        )
    return _BENCHMARKS[name][0]


def resolve_task_names(benchmark: str, available: list[str], requested: list[str] | None, default: list[str]) -> list[str]:
    """The tasks a run uses, in order: ``data.tasks`` if given (validated), else the benchmark's default sequence."""
    if requested is None:
        return list(default)
    unknown = [n for n in requested if n not in available]
    if unknown:
        raise UnknownBenchmarkError(
            f"unknown task '{unknown[0]}' in 'data.tasks'; tasks of '{benchmark}': {', '.join(available)}"
        )
    if len(set(requested)) != len(requested):
        raise UnknownBenchmarkError("'data.tasks' names a task twice")
    if not requested:
        raise UnknownBenchmarkError("'data.tasks' is empty")
    return list(requested)
