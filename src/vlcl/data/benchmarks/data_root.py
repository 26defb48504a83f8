"""Reading the benchmarks whose data lives in a data root, building and registering them: ``vlcl8`` (C-CLIP), ``mtil`` (ZSCL), ``folders``.

Every data set lives in its own folder ``<data.root>/<name>/`` in any format
:mod:`vlcl.data.formats.detect` recognises; what each one is and where to get it is
:mod:`vlcl.data.benchmarks.catalogue`, your own data sets (``folders``) are
:mod:`vlcl.data.benchmarks.folders`, and ``vlcl data check`` / ``prepare`` are
:mod:`vlcl.data.check`. Class names and OpenAI's prompt templates ship with
vlcl (``vlcl/data/assets``); a data set folder's own ``classnames.txt`` /
``zeroshot_classification_templates.txt`` take precedence.

:func:`validate_data_config` is the one check of a data root and of the tasks
and evaluation sets asked of it: ``vlcl run`` makes it before anything is
written, the builders and ``vlcl data check`` before they read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from vlcl.data.benchmark import Benchmark, Task
from vlcl.data.benchmarks.catalogue import DATASETS, DEFAULT_TEMPLATES, FOLDERS, NAMED, BenchmarkSpec, SetSpec, shipped
from vlcl.data.benchmarks.folders import folders_spec
from vlcl.data.formats import DataError, Problems, Sample, read_classnames, read_templates
from vlcl.data.formats.detect import DEFAULT_CAPTION_FIELDS, MissingDataError, Source, discover, read_source
from vlcl.data.formats.folder import folder_classname
from vlcl.data.images import DEFAULT_MAX_IMAGE_PIXELS
from vlcl.data.registry import register_benchmark, resolve_task_names
from vlcl.data.samples import (
    captioned_images,
    check_images,
    classification_set,
    per_class,
    prompted_training_set,
    random_split,
    retrieval_set,
    subsample,
)

if TYPE_CHECKING:
    from vlcl.data.preprocess import ImagePreprocessor

__all__ = [
    "DataRequest",
    "DataSelection",
    "LoadedSet",
    "build_folders",
    "build_named",
    "build_selection",
    "data_root_dir",
    "load_set",
    "resolve_classnames",
    "resolve_templates",
    "validate_data_config",
]


# -- loading one data set --------------------------------------------------------------


@dataclass
class LoadedSet:
    spec: SetSpec
    train: list[Sample] | None
    test: list[Sample]
    classnames: list[str] | None
    templates: list[str] | None
    sources: dict[str, str]
    problems: Problems
    notes: list[str]


def _normal(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", name)).strip().lower()


def resolve_classnames(spec: SetSpec, folder: Path, declared: list[str] | None, labels: set[int], notes: list[str]) -> list[str]:
    """The folder's classnames.txt; else the data's own names, written as the shipped OpenAI names where they match; else the shipped list."""
    own = read_classnames(folder)
    shipped_names = shipped("classnames").get(spec.classes or "", [])
    if own is not None:
        names, path = own
        notes.append(f"class names: {path}")
    elif declared and not all(d.isdigit() for d in declared):
        by_normal = {_normal(n): n for n in shipped_names}
        names = [by_normal.get(_normal(d), folder_classname(d)) for d in declared]
        matched = sum(_normal(d) in by_normal for d in declared)
        notes.append(f"class names: the data's own ({matched} of {len(declared)} written as OpenAI's)")
    elif shipped_names:
        names = list(shipped_names)
        notes.append(f"class names: vlcl's shipped OpenAI list for '{spec.classes}' (label i = i-th name)")
    elif declared:
        names = list(declared)
    else:
        raise DataError(f"{folder}: no class names (add classnames.txt, one name per line in label order)")
    if labels and max(labels) >= len(names):
        raise DataError(f"{folder}: labels go up to {max(labels)} but there are {len(names)} class names")
    return names


def resolve_templates(spec: SetSpec, folder: Path, notes: list[str]) -> list[str]:
    own = read_templates(folder)
    if own is not None:
        notes.append(f"templates: {own[1]}")
        return own[0]
    templates = shipped("templates").get(spec.classes or "")
    if templates:
        notes.append(f"templates: {len(templates)} shipped OpenAI templates")
        return list(templates)
    notes.append(f"templates: {DEFAULT_TEMPLATES[0]!r}")
    return list(DEFAULT_TEMPLATES)


def load_set(
    spec: SetSpec,
    root: Path,
    *,
    want_train: bool,
    seed: int = 0,
    on_bad_sample: str = "error",
    image_check: str = "header",
    workers: int = 4,
    train_scale: float = 1.0,
    test_images: int | None = None,
    test_per_class: int | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> LoadedSet:
    folder = root / spec.name
    if not folder.is_dir():
        raise MissingDataError(f"{folder}: not found")
    found = discover(folder)
    if not found:
        raise MissingDataError(f"{folder}: no data in a format vlcl reads (expected {spec.layout})")
    problems = Problems(on_bad_sample)
    labels = spec.kind == "labels"
    captions = tuple(dict.fromkeys((*spec.captions, *DEFAULT_CAPTION_FIELDS)))
    declared: list[str] | None = None

    def read(source: Source) -> list[Sample]:
        nonlocal declared
        samples, names = read_source(source, labels=labels, problems=problems, captions=captions)
        declared = declared or names
        return samples

    sources: dict[str, str] = {}
    train: list[Sample] | None = None
    if spec.test_fraction is not None and "test" not in found:
        base = found.get("train") or found.get("all")
        if base is None:
            raise MissingDataError(f"{folder}: no data for a random split (found splits: {', '.join(found)})")
        if want_train:
            train, test = random_split(read(base), spec.test_fraction, seed, spec.name)
            sources["train"] = f"{base.describe()}: random {1 - spec.test_fraction:.0%} (seed {seed})"
            sources["test"] = f"{base.describe()}: the other {spec.test_fraction:.0%}"
        else:  # an evaluation-only set: all of it
            test = read(base)
            sources["test"] = base.describe()
    else:
        test_split = next((split for split in spec.test_splits if split in found), None)
        if test_split is None:
            raise MissingDataError(f"{folder}: no test split (found: {', '.join(found)}; expected {spec.layout})")
        test = read(found[test_split])
        sources["test"] = found[test_split].describe()
        if want_train:
            if "train" not in found:
                raise MissingDataError(f"{folder}: no train split (found: {', '.join(found)})")
            train = read(found["train"])
            sources["train"] = found["train"].describe()
    if not want_train:
        train = None
    notes: list[str] = []
    classnames = templates = None
    if labels:
        seen = {s.label for s in test} | {s.label for s in (train or [])}
        classnames = resolve_classnames(spec, folder, declared, seen, notes)
        templates = resolve_templates(spec, folder, notes)
    if train is not None and train_scale != 1.0:
        train = subsample(train, max(1, round(len(train) * train_scale)), seed, spec.name, "train")
    test = (
        per_class(test, test_per_class, seed, spec.name)
        if test_per_class
        else subsample(test, test_images, seed, spec.name, "test")
    )
    test = check_images(test, image_check, problems, workers, max_image_pixels)
    if train is not None:
        train = check_images(train, image_check, problems, workers, max_image_pixels)
    skipped = f" ({problems.count} bad, first: {problems.messages[0]})" if problems.count else ""
    if not test:
        raise DataError(f"{folder}: no usable test sample{skipped}")
    if train is not None and not train:
        raise DataError(f"{folder}: no usable training sample{skipped}")
    return LoadedSet(spec, train, test, classnames, templates, sources, problems, notes)


# -- the data root, the tasks and the evaluation sets: checked once -------------------------


def data_root_dir(root: str | Path | None, benchmark: str) -> Path:
    """The folder ``data.root`` (``--data-root``) names.

    Unset, missing and not-a-folder are three different errors: "set data.root"
    is only said when it is really unset, and a root that is set is named as given.
    """
    if not root:
        if benchmark == FOLDERS:
            raise DataError(f"benchmark '{FOLDERS}' reads the sub-folders of data.root: set data.root=DIR (or --data-root DIR)")
        raise DataError(
            f"benchmark '{benchmark}' reads real data sets: set data.root=DIR (or --data-root DIR); "
            f"`vlcl data prepare {benchmark}` says what goes there"
        )
    path = Path(root).expanduser()
    shown = f"{root}" if str(path) == str(root) else f"{root} ({path})"
    if not path.exists():
        raise DataError(f"data.root={shown}: data root not found")
    if not path.is_dir():
        raise DataError(f"data.root={shown}: not a folder (the data root holds one folder per data set)")
    return path


class DataRequest(NamedTuple):
    """What a builder is asked to read: the fields of :class:`~vlcl.config.DataConfig` that :func:`validate_data_config` checks."""

    benchmark: str
    root: str | Path | None = None
    tasks: list[str] | None = None
    eval_sets: list[str] | None = None


@dataclass(frozen=True)
class DataSelection:
    """A benchmark read from a data root, checked: its data root, its data sets, the tasks and the evaluation sets, in order."""

    spec: BenchmarkSpec
    sets: dict[str, SetSpec]
    root: Path
    tasks: list[str]
    eval_sets: list[str]


def validate_data_config(
    data: Any, *, spec: BenchmarkSpec | None = None, sets: dict[str, SetSpec] | None = None, one_kind: bool = True
) -> DataSelection | None:
    """The data root (``data.root``: :func:`data_root_dir`), then ``data.tasks`` and ``data.eval_sets``.

    ``data`` is a run's :class:`~vlcl.config.DataConfig` (``vlcl run``, before anything is written) or a
    :class:`DataRequest` (the builders, ``vlcl data check``). ``spec`` and ``sets``: a benchmark that is not in
    the catalogue (:func:`build_named`'s); without them ``data.benchmark`` is looked up, and ``folders`` lists
    the data root's sub-folders (tasks of one kind unless ``one_kind`` is false). None for a benchmark that does
    not read a data root.
    """
    if spec is None and data.benchmark != FOLDERS and data.benchmark not in NAMED:
        return None
    root = data_root_dir(data.root, spec.name if spec is not None else data.benchmark)
    if spec is None and data.benchmark == FOLDERS:
        spec, sets = folders_spec(root, data.tasks, data.eval_sets, one_kind=one_kind)
        return DataSelection(spec, sets, root, list(spec.tasks), spec.eval_sets())
    spec = spec or NAMED[data.benchmark]
    tasks = resolve_task_names(spec.name, list(spec.tasks), data.tasks, list(spec.tasks))
    evaluated = spec.eval_sets() if data.eval_sets is None else list(data.eval_sets)
    unknown = [n for n in evaluated if n not in spec.eval_sets()]
    if unknown:
        raise DataError(
            f"unknown set '{unknown[0]}' in 'data.eval_sets'; held-out sets of '{spec.name}': {', '.join(spec.eval_sets()) or 'none'}"
        )
    return DataSelection(spec, sets or DATASETS, root, tasks, evaluated)


# -- building a benchmark -----------------------------------------------------------------


def build_named(
    spec: BenchmarkSpec,
    *,
    root: str | None = None,
    tasks: list[str] | None = None,
    eval_sets: list[str] | None = None,
    sets: dict[str, SetSpec] | None = None,
    **options: Any,
) -> Benchmark:
    """``spec``'s benchmark from the data root; ``sets``: its data sets (default: the catalogue's); ``options``: :func:`build_selection`'s."""
    return build_selection(validate_data_config(DataRequest(spec.name, root, tasks, eval_sets), spec=spec, sets=sets), **options)


def build_selection(
    selected: DataSelection,
    *,
    seed: int = 0,
    train_scale: float = 1.0,
    test_images: int | None = None,
    zeroshot_per_class: int | None = None,
    on_bad_sample: str = "error",
    image_check: str = "header",
    workers: int = 4,
    image_size: int = 224,
    preprocess: ImagePreprocessor | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    **_: Any,
) -> Benchmark:
    """The benchmark :func:`validate_data_config` selected: its data sets read, checked and made into tasks and evaluation sets."""
    spec, sets, data_root = selected.spec, selected.sets, selected.root
    if preprocess is None:
        from vlcl.data.preprocess import ImagePreprocessor

        preprocess = ImagePreprocessor(image_size)
    common = dict(
        seed=seed, on_bad_sample=on_bad_sample, image_check=image_check, workers=workers, max_image_pixels=max_image_pixels
    )
    report: dict[str, Any] = {
        "root": str(data_root),
        "on_bad_sample": on_bad_sample,
        "image_check": image_check,
        "max_image_pixels": max_image_pixels,
        "sets": {},
    }
    pixels = max_image_pixels  # every image store of the benchmark refuses larger images when it decodes

    def note(loaded: LoadedSet, used: str) -> None:
        report["sets"][used] = {
            "sources": loaded.sources,
            "train_images": len(loaded.train or []),
            "test_images": len(loaded.test),
            "skipped": loaded.problems.count,
            "problems": loaded.problems.messages[:5],
        }

    built_tasks = []
    for name in selected.tasks:
        loaded = load_set(sets[name], data_root, want_train=True, train_scale=train_scale, test_images=test_images, **common)
        note(loaded, name)
        if loaded.spec.kind == "labels":
            train = prompted_training_set(name, loaded.train, loaded.classnames, loaded.templates, preprocess, workers, pixels)
            test = classification_set(name, loaded.test, loaded.classnames, loaded.templates, preprocess, workers, pixels)
        else:
            train = captioned_images(name, loaded.train, preprocess, workers, pixels)
            test = retrieval_set(name, loaded.test, preprocess, workers, pixels)
        built_tasks.append(Task(name, train, test, loaded.spec.title))
    heldout, zeroshot = [], []
    for name in (n for n in spec.heldout if n in selected.eval_sets):
        loaded = load_set(sets[name], data_root, want_train=False, test_images=test_images, **common)
        note(loaded, name)
        heldout.append(retrieval_set(name, loaded.test, preprocess, workers, pixels))
    for name in (n for n in spec.zeroshot if n in selected.eval_sets):
        loaded = load_set(sets[name], data_root, want_train=False, test_per_class=zeroshot_per_class, **common)
        note(loaded, f"zs_{name}")
        zeroshot.append(
            classification_set(f"zs_{name}", loaded.test, loaded.classnames, loaded.templates, preprocess, workers, pixels)
        )
    report["skipped_samples"] = sum(s["skipped"] for s in report["sets"].values())
    return Benchmark(spec.name, built_tasks, heldout, zeroshot, data_report=report)


def _register(spec: BenchmarkSpec) -> None:
    @register_benchmark(spec.name, spec.description)
    def build(**kwargs: Any) -> Benchmark:
        return build_named(spec, **kwargs)


for _spec in NAMED.values():
    _register(_spec)


@register_benchmark(FOLDERS, "your own data sets: one sub-folder of data.root per task, any format (docs/data.md)")
def build_folders(
    *, root: str | None = None, tasks: list[str] | None = None, eval_sets: list[str] | None = None, **kwargs: Any
) -> Benchmark:
    return build_selection(validate_data_config(DataRequest(FOLDERS, root, tasks, eval_sets)), **kwargs)
