"""The data sets of the ``folders`` benchmark: your own, every sub-folder of the data root one, in any format vlcl reads (docs/data.md).

What each sub-folder is (:func:`folder_set_spec`) and the benchmark they make (:func:`folders_spec`); the benchmark
is read and registered with the papers' benchmarks by :mod:`vlcl.data.benchmarks.data_root`.
"""

from __future__ import annotations

from pathlib import Path

from vlcl.data.benchmarks.catalogue import FOLDERS, BenchmarkSpec, SetSpec
from vlcl.data.formats import DataError
from vlcl.data.formats.detect import discover
from vlcl.data.formats.registry import get_format

FOLDERS_TEST_FRACTION = 0.2


def folder_set_spec(folder: Path) -> SetSpec:
    """A data set folder of the ``folders`` benchmark: classification if it has ``classnames.txt`` or data of a format that holds no captions (class folders)."""
    found = discover(folder)
    labels = (folder / "classnames.txt").is_file() or any(not get_format(source.format).captions for source in found.values())
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

