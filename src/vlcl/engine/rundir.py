"""The life of a run directory: created only after every check, replaced without ever being lost.

``--overwrite`` does not delete the old run. It renames it to a hidden sibling,
``.<name>.replaced`` (same parent, so the rename is atomic), and deletes that
only once the new run has made progress of its own: its first checkpoint
(``checkpoints/latest.json``) or its
results. Until then the old run is the one that counts:

* a new run that fails or is interrupted puts the old run back before it exits;
* a new run killed outright (SIGKILL, power loss) leaves both; the next vlcl
  command on that run directory finds the sibling and finishes the job -
  restoring the old run when the new one has no progress, deleting the old one
  when it has.

So at any moment one of the two is complete: the old run, or the new run's
first checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vlcl.engine.checkpoint import LATEST
from vlcl.engine.faults import fault_point


class RunDirError(ValueError):
    """A run directory that cannot be used as asked: one line naming it."""


def replaced_path(run_dir: Path) -> Path:
    """Where ``--overwrite`` keeps the previous run until the new one has progress."""
    return run_dir.parent / f".{run_dir.name}.replaced"


def has_progress(run_dir: Path) -> bool:
    """The run wrote something worth keeping: a checkpoint pointer or results."""
    return (run_dir / "checkpoints" / LATEST).is_file() or (run_dir / "results.json").is_file()


def recover(run_dir: Path) -> str | None:
    """Finish an ``--overwrite`` that was killed; returns what was done, or None when there was nothing to do."""
    old = replaced_path(run_dir)
    if not old.exists():
        return None
    if run_dir.is_dir() and has_progress(run_dir):
        shutil.rmtree(old)
        return f"removed the run that {run_dir} replaced (the new run had written its first checkpoint)"
    if run_dir.exists():  # the new run never got as far as a checkpoint: it is worth nothing
        shutil.rmtree(run_dir)
    os.replace(old, run_dir)
    return f"restored the previous run in {run_dir} (an --overwrite run stopped before its first checkpoint)"


def restore_if_no_progress(run_dir: Path) -> str | None:
    """After a failed or interrupted new run: put the replaced run back unless the new run has progress."""
    if replaced_path(run_dir).exists() and not has_progress(run_dir):
        return recover(run_dir)
    return None


def discard_replaced(run_dir: Path) -> None:
    """The new run has progress of its own: the run it replaced can go."""
    if replaced_path(run_dir).exists():
        fault_point("replaced_discard")
    shutil.rmtree(replaced_path(run_dir), ignore_errors=True)


def check_available(run_dir: Path, *, resume: bool, overwrite: bool) -> bool:
    """Whether ``run_dir`` holds a run that ``--overwrite`` will replace; refuses a directory that may not be
    written into as asked. Reads only: the command line calls it before any work, :func:`prepare` again."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory")
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if not occupied or resume:
        return False
    if not overwrite:
        raise RunDirError(f"{run_dir}: run directory already exists; use --resume {run_dir} to continue it or --overwrite to replace it")
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir}: --overwrite refuses to replace a directory that is not a vlcl run (no config.yaml)")
    return True


def prepare(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Make ``run_dir`` ready to write into; call only once every input has been validated."""
    if check_available(run_dir, resume=resume, overwrite=overwrite):
        os.replace(run_dir, replaced_path(run_dir))
        fault_point("overwrite_moved")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        restore_if_no_progress(run_dir)
        raise RunDirError(f"{run_dir}: output directory is not writable ({exc.strerror})") from None


def check_writable_parent(run_dir: Path) -> None:
    """Before any work: the run directory can be created where it is asked for."""
    if run_dir.exists():
        if not run_dir.is_dir():
            raise RunDirError(f"{run_dir}: exists and is not a directory")
        return
    parent = next((p for p in run_dir.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise RunDirError(f"{run_dir}: {parent} is a file, not a directory")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"{run_dir}: cannot create it, {parent} is not writable")
