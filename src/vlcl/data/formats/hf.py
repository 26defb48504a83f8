"""Hugging Face datasets on disk: a ``save_to_disk`` folder or parquet files (a hub download).

Needs the optional ``datasets`` package (``pip install 'vlcl[hf]'``), imported
only when such data is read. Images stay in the memory-mapped Arrow table
until a batch reads them; parquet files are converted once into the
``datasets`` cache, as ``datasets`` always does.

Found as a data set folder's ``dataset_dict.json`` (or ``state.json``: one split, the whole data set) or a split's
sub-folder with ``state.json`` (``hf``), and as ``<split>-*.parquet`` in the folder, ``data/`` or a split's
sub-folder (``parquet``, a hub download).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from vlcl.data.formats.base import DataError, Problems, Sample, clean_captions, natural_key, read_text
from vlcl.data.formats.registry import Finder, ReadRequest, Source, register_format
from vlcl.data.images import ArrowImage

IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp", "picture")
TEST_ALIASES = ("test", "validation", "val")


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError(
            "reading Hugging Face datasets (save_to_disk folders, parquet files) needs the 'datasets' package: "
            "pip install 'vlcl[hf]'"
        ) from None
    datasets.disable_progress_bars()
    return datasets


def parquet_files(folder: Path) -> list[Path]:
    """Parquet files where the hub puts them: ``folder``, ``folder/data``, and their split sub-folders.

    Bounded on purpose: walking every file below a folder of a million images to find none would be slow.
    """
    places = [folder, folder / "data"]
    places += [place / split for place in list(places) for split in ("train", "test", "validation", "val")]
    return [file for place in places if place.is_dir() for file in sorted(place.glob("*.parquet"), key=natural_key)]


def parquet_splits(folder: Path) -> dict[str, list[Path]]:
    """Parquet files of ``folder`` by split: ``train-00000-of-00002.parquet``, ``data/test/0.parquet``..."""
    splits: dict[str, list[Path]] = {}
    for file in parquet_files(folder):
        stem = file.name.split(".")[0]
        split = stem.split("-")[0].split("_")[0]
        if split not in ("train", "test", "validation", "val") and file.parent.name in ("train", "test", "validation", "val"):
            split = file.parent.name
        if split not in ("train", "test", "validation", "val"):
            split = "all"
        splits.setdefault(split, []).append(file)
    return splits


def load_table(path: Path, split: str | None, files: list[Path] | None = None):
    """A ``datasets.Dataset``: from parquet ``files``, or from a ``save_to_disk`` folder (``split`` of a DatasetDict)."""
    datasets = _datasets()
    # a damaged state.json or dataset_info.json surfaces as KeyError / AttributeError from inside datasets
    errors = (OSError, ValueError, TypeError, KeyError, AttributeError, getattr(datasets.exceptions, "DatasetsError", OSError))
    try:
        if files:
            return datasets.Dataset.from_parquet([str(f) for f in files])
        loaded = datasets.load_from_disk(str(path))
    except errors as exc:
        detail = " ".join(str(exc).split())  # datasets' messages run over several lines; ours is one
        raise DataError(f"{path}: cannot read the Hugging Face dataset ({exc.__class__.__name__}: {detail})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            raise DataError(f"{path}: a dataset with splits {', '.join(loaded)}; name one")
        if split not in loaded:
            raise DataError(f"{path}: no split '{split}' (splits: {', '.join(loaded)})")
        return loaded[split]
    return loaded


def _image_column(table, wanted: str | None, where: str) -> str:
    datasets = _datasets()
    columns = list(table.column_names)
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{where}: no image column '{wanted}' (columns: {', '.join(columns)})")
        return wanted
    typed = [c for c in columns if isinstance(table.features[c], datasets.Image)]
    named = [c for c in IMAGE_COLUMNS if c in columns]
    if not typed and not named:
        raise DataError(f"{where}: no image column (columns: {', '.join(columns)}); name it")
    return (typed or named)[0]


def first_present(columns: list[str], candidates: tuple[str, ...], what: str, where: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise DataError(f"{where}: no {what} column {' or '.join(repr(c) for c in candidates)} (columns: {', '.join(columns)})")


def read_hf(
    path: str | Path,
    *,
    split: str | None = None,
    files: list[Path] | None = None,
    image_column: str | None = None,
    caption_columns: tuple[str, ...] = ("caption", "text"),
    label_column: str | None = None,
    problems: Problems | None = None,
) -> tuple[list[Sample], list[str] | None]:
    """Samples of one split, and the class names of a ``ClassLabel`` label column (else None).

    ``caption_columns`` are tried in order; a caption cell may hold one string or a list of strings.
    """
    path = Path(path)
    problems = problems or Problems()
    where = f"{path}" + (f" (split '{split}')" if split else "")
    table = load_table(path, split, files)
    datasets = _datasets()
    column = _image_column(table, image_column, where)
    if isinstance(table.features[column], datasets.Image):
        table = table.cast_column(column, datasets.Image(decode=False))
    columns = list(table.column_names)
    base_dir = path if path.is_dir() else path.parent
    samples: list[Sample] = []
    classnames = None
    if label_column is not None:
        label_name = first_present(columns, (label_column, "label", "labels"), "label", where)
        feature = table.features[label_name]
        classnames = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        for row, label in enumerate(table[label_name]):
            origin = f"{where}: row {row}"
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                problems.bad(f"{origin}: label is not a non-negative integer ({label!r})")
                continue
            samples.append(Sample(ArrowImage(table, row, column, base_dir, origin), label=label))
        return samples, classnames
    caption_name = first_present(columns, caption_columns, "caption", where)
    for row, value in enumerate(table[caption_name]):
        origin = f"{where}: row {row}"
        captions = clean_captions(value if value is not None else "", origin, problems)
        if captions:
            samples.append(Sample(ArrowImage(table, row, column, base_dir, origin), captions))
    return samples, None


# -- as registered formats -----------------------------------------------------------------------------------


def _dataset_dict_splits(path: Path) -> list[str]:
    """The ``splits`` list of a Hugging Face ``dataset_dict.json``."""
    try:
        data = json.loads(read_text(path, "Hugging Face dataset_dict.json"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(f"{path}: malformed JSON ({exc})") from None
    splits = data.get("splits") if isinstance(data, dict) else None
    if not isinstance(splits, list) or not all(isinstance(split, str) for split in splits):
        raise DataError(f"{path}: expected an object with a 'splits' list of names (got {str(data)[:60]!r})")
    return splits


def _saved_dataset(folder: Path) -> Iterator[tuple[str, Source]]:
    if (folder / "dataset_dict.json").is_file():
        for split in _dataset_dict_splits(folder / "dataset_dict.json"):
            yield split, Source("hf", folder, split)
    elif (folder / "state.json").is_file():
        yield "all", Source("hf", folder)


def _saved_split(sub: Path) -> Source | None:
    return Source("hf", sub) if (sub / "state.json").is_file() else None


def _parquet_split(sub: Path) -> Source | None:
    return Source("parquet", sub, files=tuple(sorted(sub.glob("*.parquet")))) if any(sub.glob("*.parquet")) else None


def _parquet_files_by_split(folder: Path) -> Iterator[tuple[str, Source]]:
    for split, files in parquet_splits(folder).items():
        yield split, Source("parquet", folder, files=tuple(files))


def _read_table_source(source: Source, request: ReadRequest) -> tuple[list[Sample], list[str] | None]:
    return read_hf(
        source.path,
        split=source.split if source.format == "hf" else None,
        files=list(source.files) or None,
        image_column=request.image,
        caption_columns=request.captions,
        label_column=request.label if request.labels else None,
        problems=request.problems,
    )


register_format(
    "hf", read=_read_table_source, find=(Finder("folder", 10, _saved_dataset), Finder("split_folder", 20, _saved_split))
)
register_format(
    "parquet",
    read=_read_table_source,
    find=(Finder("split_folder", 30, _parquet_split), Finder("folder_splits", 20, _parquet_files_by_split)),
)
