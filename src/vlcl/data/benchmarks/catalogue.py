"""The catalogue of the benchmarks read from a data root: what each data set is, where to get it, how its folder is laid out.

Data only: the papers' benchmarks ``vlcl8`` (C-CLIP) and ``mtil`` / ``mtil_order2``
(ZSCL), their data sets, and the class names and prompt templates that ship with
vlcl (``vlcl/data/assets``). Reading the data is :mod:`vlcl.data.benchmarks.data_root`; your own
data sets (the ``folders`` benchmark) are :mod:`vlcl.data.benchmarks.folders`; ``vlcl data
check`` / ``prepare`` are :mod:`vlcl.data.check`. Only the standard library is
imported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

FOLDERS = "folders"
"""The benchmark of your own data sets: every sub-folder of the data root (:mod:`vlcl.data.benchmarks.folders`)."""

DEFAULT_TEMPLATES = ["a photo of a {}."]
"""The prompt template of a classification set with neither its own nor shipped templates."""


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
