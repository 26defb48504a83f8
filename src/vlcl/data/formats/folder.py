"""Classification data as image folders, with class names and prompt templates (the CLIP_benchmark layout).

::

    cars/
      classnames.txt                          one class name per line, in label order
      zeroshot_classification_templates.txt   one template per line, {c} (or {}) for the class name
      test/<class>/*.jpg                      a folder per class (or WebDataset shards with .cls)
      train/<class>/*.jpg

The label space is exactly the class folders present: label i is the i-th class
folder name, and the class names are the folder names. Names are sorted as
strings, as torchvision's ``ImageFolder`` does, except when every name is an
integer (ASCII digits: ``5``, ``12``, ``007``), then by their value (ties, ``1``
and ``01``, by name), so ``0`` ... ``99`` keep labels 0 ... 99 rather than
``0``, ``1``, ``10``, ``11``, ... . A folder named by an integer is a class
NAME, never a label index: folders ``5`` ... ``9`` are the 5 classes "5" ... "9",
labels 0 ... 4 (a ``classnames.txt`` then lists 5 names, for "5" ... "9" in that
order).

The splits of one data set share one label space: for a split folder named
``train``, ``test``, ``val`` or ``validation``, the class folders of its sibling
split folders of those names that are image folders count too, so a class with
no images in one split keeps the same label in every split (an empty class
folder also keeps a class in the label space).

Found as a split's sub-folder ``<split>/<class>/*.jpg`` of a data set folder.
"""

from __future__ import annotations

from pathlib import Path

from vlcl.data.formats.base import DataError, Problems, Sample, natural_key, read_text, unreadable
from vlcl.data.formats.registry import SPLITS, Finder, ReadRequest, Source, register_format
from vlcl.data.images import IMAGE_EXTENSIONS, FileImage

CLASSNAME_FILES = ("classnames.txt",)
TEMPLATE_FILES = ("zeroshot_classification_templates.txt", "templates.txt")


SPLIT_FOLDERS = SPLITS  # the split folder names


def class_order(names: list[str]) -> list[str]:
    """Class folder names in label order: by integer value when every name is an integer, else as strings."""
    if names and all(n.isascii() and n.isdigit() for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def class_folders(split_dir: Path) -> list[Path]:
    """The class folders of a split, in label order (:func:`class_order`)."""
    folders = {p.name: p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return [folders[n] for n in class_order(list(folders))]


def class_names(split_dir: Path) -> list[str]:
    """The label space of a split: its class folder names and those of its sibling image-folder splits, in label order."""
    names: set[str] = set()
    siblings = [split_dir.parent / s for s in SPLIT_FOLDERS if s != split_dir.name] if split_dir.name in SPLIT_FOLDERS else []
    for folder in [split_dir, *siblings]:
        try:
            if folder == split_dir or is_image_folder(folder):
                names.update(p.name for p in class_folders(folder))
        except OSError as exc:
            raise unreadable(folder, exc, "image folder") from None
    return class_order(list(names))


def is_image_folder(path: Path) -> bool:
    """A folder of class folders holding images."""
    if not path.is_dir():
        return False
    for folder in class_folders(path)[:3]:
        if any(f.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS for f in folder.rglob("*")):
            return True
    return False


def read_image_folder(split_dir: str | Path, *, problems: Problems | None = None) -> tuple[list[Sample], list[str]]:
    """Samples with labels from the class folder, and the label space: the class folder names in label order
    (this split's and its sibling image-folder splits', see the module docstring)."""
    split_dir = Path(split_dir)
    problems = problems or Problems()
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: image folder not found")
    try:
        folders = class_folders(split_dir)
    except OSError as exc:
        raise unreadable(split_dir, exc, "image folder") from None
    if not folders:
        raise DataError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    names = class_names(split_dir)
    label_of = {name: label for label, name in enumerate(names)}
    samples = []
    for folder in folders:
        label = label_of[folder.name]
        files = sorted((f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")), key=natural_key)
        for file in files:
            if file.suffix.lower().lstrip(".") not in IMAGE_EXTENSIONS:
                problems.bad(f"{file}: not an image file (extensions: {', '.join(IMAGE_EXTENSIONS)})")
                continue
            samples.append(Sample(FileImage(file, str(file.relative_to(split_dir))), label=label))
    return samples, names


def _find(folders: list[Path], names: tuple[str, ...]) -> Path | None:
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped (a missing, unreadable or non-UTF-8 file is a DataError)."""
    return [line.strip() for line in read_text(path, "text file").splitlines() if line.strip()]


def read_classnames(*folders: Path) -> tuple[list[str], Path] | None:
    """``classnames.txt`` of the first folder that has one, or None."""
    path = _find(list(folders), CLASSNAME_FILES)
    return (read_lines(path), path) if path else None


def read_templates(*folders: Path) -> tuple[list[str], Path] | None:
    """The prompt templates of the first folder that has a templates file, with ``{c}`` written as ``{}``."""
    path = _find(list(folders), TEMPLATE_FILES)
    if path is None:
        return None
    templates = []
    for number, line in enumerate(read_lines(path), start=1):
        template = line.replace("{c}", "{}")
        if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.count("}") != 1:
            raise DataError(f"{path}: line {number}: a template needs exactly one {{c}} (or {{}}) for the class name: {line!r}")
        templates.append(template)
    if not templates:
        raise DataError(f"{path}: no template")
    return templates, path


def folder_classname(name: str) -> str:
    return name.replace("_", " ").strip()


# -- as a registered format ----------------------------------------------------------------------------------


def _read_folder_source(source: Source, request: ReadRequest) -> tuple[list[Sample], list[str]]:
    if not request.labels:
        raise DataError(f"{source.path}: an image folder holds classification data, not captions")
    return read_image_folder(source.path, problems=request.problems)


def _class_folders_of(sub: Path) -> Source | None:
    return Source("folder", sub) if is_image_folder(sub) else None


register_format("folder", read=_read_folder_source, captions=False, find=(Finder("split_folder", 40, _class_folders_of),))
