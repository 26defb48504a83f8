"""The papers' benchmarks on real data, read from a data root: ``vlcl8`` (C-CLIP) and ``mtil`` (ZSCL).

Every data set lives in its own folder ``<data.root>/<name>/`` in any format
:mod:`vlcl.data.sources` recognises. ``vlcl data prepare BENCHMARK`` prints
where to get each one and the layout; ``vlcl data check BENCHMARK --data-root
DIR`` says what is found, missing or malformed. Class names and OpenAI's
prompt templates ship with vlcl (``vlcl/data/assets``); a data set folder's
own ``classnames.txt`` / ``zeroshot_classification_templates.txt`` take
precedence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vlcl.data.benchmark import Benchmark, Task, register_benchmark, resolve_task_names
from vlcl.data.formats import DataError, Problems, Sample, read_classnames, read_templates
from vlcl.data.formats.folder import folder_classname
from vlcl.data.images import DEFAULT_MAX_IMAGE_PIXELS
from vlcl.data.sources import (
    DEFAULT_CAPTION_FIELDS,
    MissingDataError,
    Source,
    captioned_images,
    check_images,
    classification_set,
    discover,
    per_class,
    prompted_training_set,
    random_split,
    read_source,
    retrieval_set,
    subsample,
)

if TYPE_CHECKING:
    from vlcl.models.preprocess import ImagePreprocessor

DEFAULT_TEMPLATES = ["a photo of a {}."]


@lru_cache(maxsize=None)
def shipped(kind: Literal["classnames", "templates"]) -> dict[str, list[str]]:
    """OpenAI's class names and prompt templates (CLIP's ``data/prompts.md`` via CLIP_benchmark), by set."""
    text = (resources.files("vlcl") / "data" / "assets" / f"{kind}.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class SetSpec:
    """One data set of a named benchmark: what it is, how its folder is read, where to get it."""

    name: str
    title: str
    kind: Literal["captions", "labels"]
    captions: tuple[str, ...] = ()
    """Caption fields (column, key, WebDataset extension), the paper's first; vlcl's defaults are tried after them."""
    test_fraction: float | None = None
    """A random split (fixed seed, ``data.seed``) when the folder has no test split; None = the official test split."""
    classes: str | None = None
    """Key of the shipped class names and templates."""
    test_splits: tuple[str, ...] = ("test", "val", "validation")
    """Which split is the test set, the first present (ImageNet: its validation images)."""
    splits: str = ""
    source: str = ""
    layout: str = ""


def _hf(repo: str, name: str, column: str | None = None) -> str:
    field_note = f" Caption column: {column}." if column else ""
    return (
        f"Hugging Face dataset {repo}.{field_note} In Python: "
        f"datasets.load_dataset('{repo}').save_to_disk('ROOT/{name}'); or download the repository's "
        f"parquet files: huggingface-cli download {repo} --repo-type dataset --local-dir ROOT/{name}"
    )


def _hf_layout(name: str) -> str:
    return f"ROOT/{name}/dataset_dict.json + one folder per split (save_to_disk), or ROOT/{name}/data/<split>-*.parquet"


def _zs(
    name: str, title: str, classes: str, wds: str, splits: str = "test (train too when used as an MTIL task)", test_splits=None
) -> SetSpec:
    return SetSpec(
        name,
        title,
        "labels",
        classes=classes,
        splits=splits,
        test_splits=test_splits or ("test", "val", "validation"),
        source=(
            f"CLIP_benchmark's WebDataset export clip-benchmark/{wds} on the Hugging Face hub "
            f"(huggingface-cli download clip-benchmark/{wds} --repo-type dataset --local-dir ROOT/{name}), "
            f"or your own copy as image folders"
        ),
        layout=(
            f"ROOT/{name}/test/*.tar (WebDataset: .jpg/.png/.webp + .cls) or ROOT/{name}/test/<class>/*.jpg "
            f"(class folders in label order); optional ROOT/{name}/classnames.txt and "
            f"zeroshot_classification_templates.txt (else vlcl's shipped OpenAI lists); the same for train/"
        ),
    )


DATASETS: dict[str, SetSpec] = {
    s.name: s
    for s in (
        # -- VLCL-8 (C-CLIP): image-caption tasks --------------------------------------
        SetSpec(
            "flickr30k",
            "Flickr30K",
            "captions",
            splits="Karpathy split: train (+restval) 29K images; test 1K images, 5 captions each",
            source=(
                "Images: the Flickr30K image archive (flickr30k-images/) from its authors (University of Illinois "
                "Flickr30K page) or a mirror. Split and captions: Karpathy's dataset_flickr30k.json (caption_datasets.zip)"
            ),
            layout="ROOT/flickr30k/dataset_flickr30k.json and ROOT/flickr30k/flickr30k-images/*.jpg (or images/)",
        ),
        SetSpec(
            "coco",
            "COCO",
            "captions",
            splits="Karpathy split: train+restval 113K images; test 5K images, 5 captions each",
            source="Images: train2014.zip and val2014.zip from cocodataset.org. Split and captions: Karpathy's dataset_coco.json (caption_datasets.zip)",
            layout="ROOT/coco/dataset_coco.json, ROOT/coco/train2014/*.jpg, ROOT/coco/val2014/*.jpg",
        ),
        SetSpec(
            "pets",
            "Oxford-IIIT Pet (captioned)",
            "captions",
            captions=("caption_enriched",),
            splits="official train / test",
            source=_hf("visual-layer/oxford-iiit-pet-vl-enriched", "pets", "caption_enriched"),
            layout=_hf_layout("pets"),
        ),
        SetSpec(
            "lexica",
            "Lexica",
            "captions",
            captions=("prompt",),
            splits="official train / test",
            source=_hf("vera365/lexica_dataset", "lexica", "prompt"),
            layout=_hf_layout("lexica"),
        ),
        SetSpec(
            "simpsons",
            "The Simpsons",
            "captions",
            captions=("caption.txt", "caption"),
            test_fraction=0.2,
            splits="random 80/20 split (seed data.seed) of all images",
            source=_hf("bigdata-pw/TheSimpsons", "simpsons", "caption.txt") + " (WebDataset shards are read as they are)",
            layout="ROOT/simpsons/*.tar (WebDataset, captions in .caption.txt), or a save_to_disk folder / parquet files",
        ),
        SetSpec(
            "wikiart",
            "WikiArt",
            "captions",
            captions=("text",),
            test_fraction=0.2,
            splits="random 80/20 split (seed data.seed) of all images",
            source=_hf("AterMors/wikiart_recaption", "wikiart", "text"),
            layout=_hf_layout("wikiart"),
        ),
        SetSpec(
            "kream",
            "Kream",
            "captions",
            captions=("text",),
            test_fraction=0.5,
            splits="random 50/50 split (seed data.seed) of all images",
            source=_hf("hahminlew/kream-product-blip-captions", "kream", "text"),
            layout=_hf_layout("kream"),
        ),
        SetSpec(
            "sketch",
            "Sketch",
            "captions",
            captions=("text",),
            test_fraction=0.2,
            splits="random 80/20 split (seed data.seed) of all images",
            source=_hf("zoheb/sketch-scene", "sketch", "text"),
            layout=_hf_layout("sketch"),
        ),
        SetSpec(
            "havg",
            "Hausa Visual Genome (English captions)",
            "captions",
            captions=("en_text",),
            splits="official test split (held out: never trained on)",
            source=_hf("HausaNLP/HausaVG", "havg", "en_text"),
            layout=_hf_layout("havg"),
        ),
        # -- classification sets: VLCL-8's zero-shot sets and the MTIL tasks ---------------
        _zs(
            "imagenet",
            "ImageNet-1k",
            "imagenet",
            "wds_imagenet1k",
            splits="the 50K validation images (val/, validation, or test/)",
            test_splits=("val", "validation", "test"),  # Hugging Face's imagenet-1k has an unlabelled test split
        ),
        _zs("cifar100", "CIFAR-100", "cifar100", "wds_vtab-cifar100"),
        _zs("cars", "Stanford Cars", "cars", "wds_cars"),
        _zs("flowers", "Oxford Flowers-102", "flowers", "wds_vtab-flowers"),
        _zs("dtd", "Describable Textures", "dtd", "wds_vtab-dtd"),
        _zs("food101", "Food-101", "food101", "wds_food101"),
        _zs("aircraft", "FGVC Aircraft", "aircraft", "wds_fgvc_aircraft"),
        _zs("caltech101", "Caltech-101", "caltech101", "wds_vtab-caltech101"),
        _zs("eurosat", "EuroSAT", "eurosat", "wds_vtab-eurosat"),
        _zs("mnist", "MNIST", "mnist", "wds_mnist"),
        _zs("oxford_pet", "Oxford-IIIT Pet (classification)", "pets", "wds_vtab-pets"),
        _zs("sun397", "SUN397", "sun397", "wds_sun397"),
    )
}


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    description: str
    tasks: tuple[str, ...]
    heldout: tuple[str, ...] = ()
    zeroshot: tuple[str, ...] = ()
    reference: str = ""

    def eval_sets(self) -> list[str]:
        return list(self.heldout) + list(self.zeroshot)

    def all_sets(self) -> list[str]:
        return list(self.tasks) + self.eval_sets()


VLCL8 = BenchmarkSpec(
    "vlcl8",
    "C-CLIP's VLCL benchmark: 8 image-caption tasks, HaVG held out, 6 zero-shot sets (real data from data.root)",
    tasks=("flickr30k", "coco", "pets", "lexica", "simpsons", "wikiart", "kream", "sketch"),
    heldout=("havg",),
    zeroshot=("imagenet", "cifar100", "cars", "flowers", "dtd", "food101"),
    reference="C-CLIP (Liu et al., ICLR 2025), Table 3",
)
MTIL_ORDER_1 = (
    "aircraft",
    "caltech101",
    "cifar100",
    "dtd",
    "eurosat",
    "flowers",
    "food101",
    "mnist",
    "oxford_pet",
    "cars",
    "sun397",
)
MTIL_ORDER_2 = (
    "cars",
    "food101",
    "mnist",
    "oxford_pet",
    "flowers",
    "sun397",
    "aircraft",
    "caltech101",
    "dtd",
    "eurosat",
    "cifar100",
)
MTIL = BenchmarkSpec(
    "mtil",
    "ZSCL's MTIL, order I: 11 classification tasks, each in its own label space (real data from data.root)",
    tasks=MTIL_ORDER_1,
    reference="ZSCL (Zheng et al., ICCV 2023), order I",
)
MTIL2 = BenchmarkSpec(
    "mtil_order2",
    "ZSCL's MTIL, order II (same data sets as mtil, another order)",
    tasks=MTIL_ORDER_2,
    reference="ZSCL (Zheng et al., ICCV 2023), order II",
)
NAMED: dict[str, BenchmarkSpec] = {b.name: b for b in (VLCL8, MTIL, MTIL2)}


def named_spec(name: str) -> BenchmarkSpec:
    if name not in NAMED:
        raise DataError(f"'{name}' is not a benchmark read from a data root; those are: {', '.join(NAMED)}")
    return NAMED[name]


# -- loading one data set --------------------------------------------------------------


@dataclass
class LoadedSet:
    spec: SetSpec
    folder: Path
    train: list[Sample] | None
    test: list[Sample]
    classnames: list[str] | None
    templates: list[str] | None
    sources: dict[str, str]
    problems: Problems
    notes: list[str] = field(default_factory=list)


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
    return LoadedSet(spec, folder, train, test, classnames, templates, sources, problems, notes)


# -- building a benchmark -----------------------------------------------------------------


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


def build_named(
    spec: BenchmarkSpec,
    *,
    root: str | None = None,
    tasks: list[str] | None = None,
    eval_sets: list[str] | None = None,
    seed: int = 0,
    train_scale: float = 1.0,
    test_images: int | None = None,
    zeroshot_per_class: int | None = None,
    on_bad_sample: str = "error",
    image_check: str = "header",
    workers: int = 4,
    image_size: int = 224,
    preprocess: ImagePreprocessor | None = None,
    sets: dict[str, SetSpec] | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    **_: Any,
) -> Benchmark:
    sets = sets or DATASETS
    data_root = data_root_dir(root, spec.name)
    if preprocess is None:
        from vlcl.models.preprocess import ImagePreprocessor

        preprocess = ImagePreprocessor(image_size)
    names = resolve_task_names(spec.name, list(spec.tasks), tasks, list(spec.tasks))
    evaluated = spec.eval_sets() if eval_sets is None else list(eval_sets)
    unknown = [n for n in evaluated if n not in spec.eval_sets()]
    if unknown:
        raise DataError(
            f"unknown set '{unknown[0]}' in 'data.eval_sets'; held-out sets of '{spec.name}': {', '.join(spec.eval_sets()) or 'none'}"
        )
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
    for name in names:
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
    for name in (n for n in spec.heldout if n in evaluated):
        loaded = load_set(sets[name], data_root, want_train=False, test_images=test_images, **common)
        note(loaded, name)
        heldout.append(retrieval_set(name, loaded.test, preprocess, workers, pixels))
    for name in (n for n in spec.zeroshot if n in evaluated):
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


# -- your own data: every sub-folder of the data root a data set --------------------------

FOLDERS = "folders"
FOLDERS_TEST_FRACTION = 0.2


def folder_set_spec(folder: Path) -> SetSpec:
    """A data set folder of the ``folders`` benchmark: classification if it has ``classnames.txt`` or class folders."""
    found = discover(folder)
    labels = (folder / "classnames.txt").is_file() or any(source.format == "folder" for source in found.values())
    return SetSpec(
        folder.name,
        folder.name,
        "labels" if labels else "captions",
        test_fraction=FOLDERS_TEST_FRACTION,
        splits="its train / test splits, else a random 80/20 split (seed data.seed)",
        layout="train and test splits (or one set of data) in any format vlcl reads (docs/data.md)",
    )


def folders_spec(
    root: Path, tasks: list[str] | None, eval_sets: list[str] | None, *, one_kind: bool = True
) -> tuple[BenchmarkSpec, dict[str, SetSpec]]:
    """Tasks = ``data.tasks`` (default: every sub-folder not in ``data.eval_sets``, sorted); evaluation-only sets = ``data.eval_sets``."""
    present = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    evaluated = list(eval_sets or [])
    names = list(tasks) if tasks is not None else [n for n in present if n not in evaluated]
    unknown = [n for n in (*names, *evaluated) if n not in present]
    if unknown:
        raise DataError(f"{root}: no data set folder '{unknown[0]}' (folders: {', '.join(present) or 'none'})")
    if not names:
        raise DataError(f"{root}: no data set folder to train on (data.tasks)")
    sets = {n: folder_set_spec(root / n) for n in (*names, *evaluated)}
    kinds = {sets[n].kind for n in names}
    if one_kind and len(kinds) > 1:
        raise DataError(f"{root}: tasks mix caption and classification data ({', '.join(f'{n}: {sets[n].kind}' for n in names)})")
    spec = BenchmarkSpec(
        FOLDERS,
        "your own data sets: every sub-folder of data.root, in any format vlcl reads (docs/data.md)",
        tuple(names),
        heldout=tuple(n for n in evaluated if sets[n].kind == "captions"),
        zeroshot=tuple(n for n in evaluated if sets[n].kind == "labels"),
        reference="your data",
    )
    return spec, sets


@register_benchmark(FOLDERS, "your own data sets: one sub-folder of data.root per task, any format (docs/data.md)")
def build_folders(
    *, root: str | None = None, tasks: list[str] | None = None, eval_sets: list[str] | None = None, **kwargs: Any
) -> Benchmark:
    spec, sets = folders_spec(data_root_dir(root, FOLDERS), tasks, eval_sets)
    return build_named(spec, root=root, sets=sets, **kwargs)


# -- vlcl data check / prepare ------------------------------------------------------------


@dataclass
class SetReport:
    name: str
    role: str
    status: Literal["found", "missing", "malformed"]
    lines: list[str]
    problems: list[str]


def _count(samples: list[Sample] | None, labels: bool) -> str:
    if samples is None:
        return "-"
    if labels:
        return f"{len(samples)} images, {len({s.label for s in samples})} classes"
    return f"{len(samples)} images, {sum(len(s.captions) for s in samples)} captions"


def check_set(
    spec: SetSpec,
    root: Path,
    role: str,
    *,
    want_train: bool,
    seed: int,
    image_check: str,
    workers: int,
    show: int = 5,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> SetReport:
    try:
        loaded = load_set(
            spec,
            root,
            want_train=want_train,
            seed=seed,
            on_bad_sample="skip",
            image_check=image_check,
            workers=workers,
            max_image_pixels=max_image_pixels,
        )
    except MissingDataError as exc:
        return SetReport(spec.name, role, "missing", [], [str(exc)])
    except DataError as exc:
        return SetReport(spec.name, role, "malformed", [], [str(exc)])
    labels = spec.kind == "labels"
    lines = []
    for split, samples in (("train", loaded.train), ("test", loaded.test)):
        if split in loaded.sources:
            lines.append(f"{split}: {_count(samples, labels)} <- {loaded.sources[split]}")
    lines += loaded.notes
    problems = list(loaded.problems.messages[:show])
    if loaded.problems.count > show:
        problems.append(f"... and {loaded.problems.count - show} more")
    status = "malformed" if loaded.problems.count else "found"
    return SetReport(spec.name, role, status, lines, problems)


def check_benchmark(
    name: str,
    root: str | Path,
    *,
    seed: int = 0,
    image_check: str = "header",
    workers: int = 4,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[SetReport]:
    root = data_root_dir(root, name)
    checks = dict(seed=seed, image_check=image_check, workers=workers, max_image_pixels=max_image_pixels)
    if name == FOLDERS:  # every sub-folder: a task if it has training data, else an evaluation set
        spec, sets = folders_spec(root, None, None, one_kind=False)
        reports = []
        for set_name in spec.tasks:
            found = discover(root / set_name)
            role = "data set" if {"train", "all"} & set(found) else "evaluation set"
            kind = "classification" if sets[set_name].kind == "labels" else "captions"
            check = check_set(sets[set_name], root, f"{role}, {kind}", want_train=role == "data set", **checks)
            reports.append(check)
        return reports
    spec = named_spec(name)
    reports = []
    for set_name in spec.all_sets():
        role = "task" if set_name in spec.tasks else "held-out retrieval" if set_name in spec.heldout else "zero-shot"
        reports.append(check_set(DATASETS[set_name], root, role, want_train=role == "task", **checks))
    return reports


def prepare_text(name: str) -> str:
    spec = named_spec(name)
    out = [
        f"{spec.name}: {spec.description}",
        f"reference: {spec.reference}",
        "",
        "Put every data set in its own folder under one data root (ROOT below) and run with data.root=ROOT",
        "(or --data-root ROOT). Any format `vlcl data check` recognises works; the layouts below are the usual ones.",
        f"Check with: vlcl data check {spec.name} --data-root ROOT",
        "",
    ]
    for set_name in spec.all_sets():
        s = DATASETS[set_name]
        role = (
            "task" if set_name in spec.tasks else "held-out retrieval" if set_name in spec.heldout else "zero-shot classification"
        )
        out += [f"{set_name} ({s.title}; {role})", f"  source: {s.source}", f"  layout: {s.layout}", f"  splits: {s.splits}"]
        if s.captions:
            out.append(f"  caption field: {s.captions[0]}")
        if s.classes:
            count = len(shipped("classnames")[s.classes])
            out.append(f"  class names and templates: shipped ({count} OpenAI class names), or the folder's own classnames.txt")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def validate_data_config(data: Any) -> None:
    """For ``vlcl run``: a named benchmark's data root and set names, checked before anything is written."""
    if data.benchmark == FOLDERS:
        folders_spec(data_root_dir(data.root, FOLDERS), data.tasks, data.eval_sets)
        return
    spec = NAMED.get(data.benchmark)
    if spec is None:
        return
    data_root_dir(data.root, spec.name)
    resolve_task_names(spec.name, list(spec.tasks), data.tasks, list(spec.tasks))
    unknown = [n for n in (data.eval_sets or []) if n not in spec.eval_sets()]
    if unknown:
        raise DataError(
            f"unknown set '{unknown[0]}' in 'data.eval_sets'; held-out sets of '{spec.name}': {', '.join(spec.eval_sets()) or 'none'}"
        )
