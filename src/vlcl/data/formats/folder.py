"""Classification data as image folders, with class names and prompt templates (the CLIP_benchmark layout).

::

    cars/
      classnames.txt                          one class name per line, in label order
      zeroshot_classification_templates.txt   one template per line, {c} (or {}) for the class name
      test/<class>/*.jpg                      a folder per class (or WebDataset shards with .cls)
      train/<class>/*.jpg

Class folders are sorted by name, as torchvision's ``ImageFolder`` does, and
the i-th folder is label i; folders named by integers (``0``, ``1``, ... or
``000``...) are that label.
"""

from __future__ import annotations

from pathlib import Path

from vlcl.data.formats.base import DataError, Problems, Sample, natural_key, read_text, unreadable
from vlcl.data.images import IMAGE_EXTENSIONS, FileImage

CLASSNAME_FILES = ("classnames.txt",)
TEMPLATE_FILES = ("zeroshot_classification_templates.txt", "templates.txt")


def class_folders(split_dir: Path) -> list[Path]:
    return sorted((p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def is_image_folder(path: Path) -> bool:
    """A folder of class folders holding images."""
    if not path.is_dir():
        return False
    for folder in class_folders(path)[:3]:
        if any(f.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS for f in folder.rglob("*")):
            return True
    return False


def read_image_folder(split_dir: str | Path, *, problems: Problems | None = None) -> tuple[list[Sample], list[str]]:
    """Samples with labels from the class folder, and the class folder names in label order."""
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
    numeric = all(f.name.isdigit() for f in folders)
    samples = []
    for rank, folder in enumerate(folders):
        label = int(folder.name) if numeric else rank
        files = sorted((f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")), key=natural_key)
        for file in files:
            if file.suffix.lower().lstrip(".") not in IMAGE_EXTENSIONS:
                problems.bad(f"{file}: not an image file (extensions: {', '.join(IMAGE_EXTENSIONS)})")
                continue
            samples.append(Sample(FileImage(file, str(file.relative_to(split_dir))), label=label))
    names = [f.name for f in folders]
    if numeric:
        names = [str(i) for i in range(max(int(n) for n in names) + 1)]
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
