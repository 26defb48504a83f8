"""The benchmark registry: every benchmark by name (found without a hand-kept list), and building the one a run config names.

A module of :mod:`vlcl.data.benchmarks` registers its builder with :func:`register_benchmark` when it is
imported; :func:`list_benchmarks` and :func:`benchmark_builder` first import every module of that package, then
the ``vlcl.benchmarks`` entry points of installed packages (:func:`vlcl.plugins.discover`).
"""

from __future__ import annotations

from collections.abc import Callable

from vlcl.config import DataConfig
from vlcl.data.benchmark import Benchmark
from vlcl.errors import BadInputError

BenchmarkBuilder = Callable[..., Benchmark]
_BENCHMARKS: dict[str, tuple[BenchmarkBuilder, str]] = {}


class UnknownBenchmarkError(BadInputError, ValueError):
    pass


_MODEL_KINDS: dict[str, str] = {}
MODEL_KINDS = ("clip", "feature_maps")
"""What a benchmark trains: a CLIPModel (images and captions), or one linear map per modality over
pre-extracted features (CMCL's modality pairs)."""


def register_benchmark(name: str, description: str, model: str = "clip") -> Callable[[BenchmarkBuilder], BenchmarkBuilder]:
    """Register a builder under ``name``; ``model`` is the kind of model its tasks train (one of MODEL_KINDS)."""
    if model not in MODEL_KINDS:
        raise ValueError(f"benchmark '{name}': model kind '{model}' is not one of {MODEL_KINDS}")

    def wrap(builder: BenchmarkBuilder) -> BenchmarkBuilder:
        _BENCHMARKS[name] = (builder, description)
        _MODEL_KINDS[name] = model
        return builder

    return wrap


def benchmark_model_kind(name: str) -> str:
    """The kind of model the benchmark ``name`` trains (raises UnknownBenchmarkError for an unknown name)."""
    benchmark_builder(name)
    return _MODEL_KINDS.get(name, "clip")


def _adopt(name: str, obj: object) -> None:
    """An entry point that names a builder function registers it under the entry point's name."""
    if callable(obj) and not isinstance(obj, type) and name not in _BENCHMARKS:
        doc = (obj.__doc__ or "").strip().splitlines()
        _BENCHMARKS[name] = (obj, doc[0] if doc else f"from entry point {name}")


def _discover() -> None:
    """Every module of vlcl.data.benchmarks, then the ``vlcl.benchmarks`` entry points of installed packages."""
    from vlcl.plugins import discover

    discover("vlcl.data.benchmarks", "vlcl.benchmarks", _adopt)


def list_benchmarks() -> dict[str, str]:
    _discover()
    return {name: desc for name, (_, desc) in sorted(_BENCHMARKS.items())}


def benchmark_builder(name: str) -> BenchmarkBuilder:
    _discover()
    if name not in _BENCHMARKS:
        from vlcl.plugins import unknown_name

        raise UnknownBenchmarkError(unknown_name("benchmark", name, list(_BENCHMARKS), "data.benchmark"))
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


def build_benchmark(data: DataConfig, image_size: int, preprocess=None) -> Benchmark:
    """``preprocess`` (the checkpoint's :class:`~vlcl.data.preprocess.ImagePreprocessor`) resizes real images."""
    builder = benchmark_builder(data.benchmark)
    return builder(
        tasks=data.tasks,
        seed=data.seed,
        train_scale=data.train_scale,
        test_images=data.test_images,
        zeroshot_per_class=data.zeroshot_per_class,
        image_size=image_size,
        preprocess=preprocess,
        root=data.root,
        eval_sets=data.eval_sets,
        on_bad_sample=data.on_bad_sample,
        image_check=data.image_check,
        workers=data.workers,
        max_image_pixels=data.max_image_pixels,
        features=data.features,
    )
