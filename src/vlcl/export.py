"""``vlcl export``: the model a run scored after one stage, as a plain Hugging Face CLIP directory.

What is written is what :func:`vlcl.load_run` loads for that stage - the CLIPModel the run's evaluation encoded
with - saved with its tokenizer and image processor (``preprocessor_config.json``, the preprocessing the run used),
so that ``CLIPModel.from_pretrained``, ``AutoTokenizer.from_pretrained`` and ``CLIPImageProcessor.from_pretrained``
load it with transformers alone and score what results.json records for the stage. ``vlcl_export.json`` beside
it says where it came from (run, method, stage) and holds the stage's metrics.

A method whose evaluation is more than that CLIPModel (its ``evaluation_beyond_model()``, asked with the run's
options, is not None: MoE-Adapters' routes and adapters, RAIL's regression head, sit's bottleneck adapters) is
refused in one line that says why and points to :func:`vlcl.load_run`, which rebuilds such a method. So are a path
that is not a run, a stage that does not exist or whose checkpoint was not kept, and an output that exists and is
not an empty directory or cannot be written. Nothing appears at the output before every check has passed: the
directory is filled under a hidden temporary name next to it (its creation is the test that the output can be
written; a failure removes it) and renamed into place, with the modes the umask allows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vlcl.api import LoadedRun, load_run, read_run_config
from vlcl.engine.rundir import RunDirError

EXPORT_RECORD = "vlcl_export.json"
"""The file of an exported directory that says which run, method and stage it is, with the stage's metrics."""


class ExportError(RunDirError):
    """A run (or stage, or output) that cannot be exported: one line saying why."""


def export_run(run_dir: str | Path, output: str | Path, stage: int | str | None = None) -> LoadedRun:
    """Write the model the run in ``run_dir`` scored after ``stage`` to the new directory ``output``.

    ``stage`` as in :func:`vlcl.load_run`: None (the newest complete stage), a stage's name or its index in
    results.json (``-1`` = the pre-trained model as the run evaluated it). Returns the :class:`LoadedRun` that was
    written. Raises :class:`ExportError` (or another one-line run, checkpoint or model error) before anything
    appears at ``output`` when the run cannot be exported."""
    path, target = Path(run_dir), Path(output)
    refuse_beyond_model(path)
    check_output(target)
    with staged_directory(target) as directory:  # made first: it proves that the output can be written
        loaded = load_run(path, _stage_argument(stage), device="cpu")
        _fill(directory, loaded)
    return loaded


def refuse_beyond_model(path: Path) -> None:
    """Refuse a run whose method's evaluation uses more than its CLIPModel (the method contract says so)."""
    from vlcl.methods import UnknownMethodError, create_method

    method = read_run_config(path).method
    name = method.name
    try:  # the method with the run's options: an option can put parts beyond a plain CLIP (sit's tuning=adapter)
        reason = create_method(name, method.typed_options()).evaluation_beyond_model()
    except UnknownMethodError:
        return  # load_run names the unregistered method
    if reason:
        raise ExportError(
            f"{path}: method '{name}' cannot be exported as a plain CLIP model: its evaluation {reason}; "
            f"use vlcl.load_run('{path}') to score with the model the run evaluated (docs/api.md)"
        )


def check_output(target: Path) -> None:
    """``target`` is absent or an empty directory, and its parent directory (or the nearest existing ancestor)
    can be written: the export is staged next to it and renamed over it."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ExportError(f"{target}: exists and is not a directory; -o names a new (or empty) directory")
    if target.is_dir():
        if any(target.iterdir()):
            raise ExportError(f"{target}: exists and is not empty; export into a new or empty directory")
        anchor = target.absolute().parent
    else:
        anchor = next(p for p in target.absolute().parents if p.exists())
        if not anchor.is_dir():
            raise ExportError(f"{target}: {anchor} is a file, not a directory")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ExportError(f"{target}: cannot write it, {anchor} is not writable")


def _stage_argument(stage: int | str | None) -> int | str | None:
    """A stage given on the command line: an index (``2``, ``-1``) or a stage's name."""
    if isinstance(stage, str) and re.fullmatch(r"-?\d+", stage.strip()):
        return int(stage)
    return stage


def _fill(directory: Path, loaded: LoadedRun) -> None:
    from vlcl.models.loading import ClipBundle, load_clip, save_clip

    bundle = ClipBundle(loaded.model, loaded.tokenizer, loaded.preprocess, str(loaded.run_dir))
    save_clip(bundle, directory)
    (directory / EXPORT_RECORD).write_text(json.dumps(_record(loaded), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    load_clip(str(directory))  # never leave a directory that does not load back


def _record(loaded: LoadedRun) -> dict[str, Any]:
    from vlcl import __version__

    return {
        "vlcl_version": __version__,
        "run_dir": str(loaded.run_dir.absolute()),
        "method": loaded.method_name,
        "stage": loaded.stage,
        "stage_name": loaded.stage_name,
        "pretrained_model": loaded.config.model.path,
        "benchmark": loaded.config.data.benchmark,
        "metrics": loaded.metrics,
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """A temporary directory next to ``target`` (absent or empty), renamed to ``target`` when the block ends well
    and removed, with any parent it created, when it does not: a failure leaves nothing under the name. Files and
    folders get the modes the umask allows (``mkdtemp`` makes the folder private, safetensors its file)."""
    target = Path(os.path.abspath(target))
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".export"))
    except OSError as exc:
        _remove_empty(created)
        raise ExportError(f"{target}: cannot write it ({exc.strerror or exc})") from None
    try:
        yield tmp
        _open_modes(tmp, _umask())
        os.replace(tmp, target)  # onto an empty directory too: rename(2) replaces it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_modes(directory: Path, umask: int) -> None:
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _remove_empty(directories: list[Path]) -> None:
    """Remove the parents :func:`staged_directory` created (deepest first), if still empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return
