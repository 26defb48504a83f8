"""Find a data set's files in its folder, whatever format they are in, and read them.

A data set folder holds its splits in any registered format (:mod:`vlcl.data.formats.registry`: each format's
module says where it is found); :func:`discover` asks every format's finders, stage by stage, for each split
``train`` / ``test`` (``val`` and ``validation`` stand in for a missing ``test``) and for the whole data set
(``all``), and :func:`read_source` reads a source with its format's reader. docs/data.md lists the layouts.
"""

from __future__ import annotations

from pathlib import Path

from vlcl.data.formats.base import DataError, Problems, Sample
from vlcl.data.formats.registry import DEFAULT_CAPTION_FIELDS, SPLITS, ReadRequest, Source, finders, get_format

TEST_ALIASES = ("val", "validation")


class MissingDataError(DataError):
    """No data where a data set should be."""


def discover(folder: str | Path) -> dict[str, Source]:
    """The sources of a data set folder by split (``train``, ``test``, ``val``, ``validation``, ``all``)."""
    folder = Path(folder)
    found: dict[str, Source] = {}

    def add(split: str, source: Source) -> None:
        found.setdefault(split, source)

    if not folder.is_dir():
        return found
    for finder in finders("folder"):
        for split, source in finder.find(folder):
            add(split, source)
    split_files, split_folders = finders("split_file"), finders("split_folder")
    for split in SPLITS:
        for finder in split_files:
            for source in finder.find(folder, split):
                add(split, source)
        sub = folder / split
        if sub.is_dir():
            for finder in split_folders:  # the first format found in the sub-folder is the one read
                source = finder.find(sub)
                if source is not None:
                    add(split, source)
                    break
    for stage in ("folder_splits", "whole"):
        for finder in finders(stage):
            for split, source in finder.find(folder):
                add(split, source)
    if not found:
        for finder in finders("fallback"):
            for split, source in finder.find(folder):
                add(split, source)
    if "test" not in found:
        alias = next((a for a in TEST_ALIASES if a in found), None)
        if alias:
            found["test"] = found[alias]
    return found


def read_source(
    source: Source,
    *,
    labels: bool,
    problems: Problems,
    captions: tuple[str, ...] = DEFAULT_CAPTION_FIELDS,
    image: str | None = None,
    label: str = "label",
) -> tuple[list[Sample], list[str] | None]:
    """Samples of one source, and class names the data itself declares (folder names, ``ClassLabel``), if any.

    ``captions`` are candidate caption fields (column, key, WebDataset extension), the first present is used.
    """
    fmt = get_format(source.format)
    if fmt is None:
        raise DataError(f"{source.path}: unknown format '{source.format}'")
    return fmt.read(source, ReadRequest(labels, problems, captions, image, label))


__all__ = ["DEFAULT_CAPTION_FIELDS", "MissingDataError", "Source", "TEST_ALIASES", "discover", "read_source"]
