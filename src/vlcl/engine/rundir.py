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

A run directory (and a comparison directory) is held by one process at a time: :func:`hold` takes an
exclusive ``flock`` on ``<parent>/.<name>.lock``, kept open for the life of the process, so the operating
system releases it when the process ends, however it ends. The lock file lives in the parent, not inside
the directory, because ``--overwrite`` renames the directory: a lock inside it would move with the old run
and let a second process lock a fresh file at the same path. The file names its holder (pid, host, start
time, command line) for the one-line refusal a second writer gets; a clean exit removes it.

Also here, shared by the command line (``vlcl run``) and the Python API
(:func:`vlcl.run`): the checks of a config before anything is loaded, the
config of a run to resume, the data fingerprint a resumed run must match, and
the files that make a directory a run directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vlcl.config import ConfigError, RunConfig, build_config, config_to_dict, dump_config, load_config, read_yaml
from vlcl.engine.checkpoint import LATEST, atomic_write_json, atomic_write_text, read_json_file
from vlcl.engine.faults import fault_point
from vlcl.errors import BadInputError

FINGERPRINT_FILE = "data_fingerprint.json"


class RunDirError(BadInputError, ValueError):
    """A run directory that cannot be used as asked: one line naming it."""


def lock_path(directory: Path) -> Path:
    """The lock file of ``directory``: in its parent, so that it stays put when ``--overwrite`` renames the directory."""
    resolved = Path(os.path.abspath(directory))
    return resolved.parent / f".{resolved.name or 'root'}.lock"


_held: dict[Path, int] = {}
"""Lock files this process holds -> how many :func:`hold` blocks hold each (a second one in the same process is
free: flock would refuse it, as it refuses another process)."""


def _holder_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


def _open_locked(path: Path, directory: Path) -> int:
    """An open, exclusively flocked descriptor of ``path`` (the same file as the path names now, not one a
    releasing holder has just unlinked), or RunDirError naming the holder."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(f"{directory}: in use by {_holder_text(path)}; wait for it or stop it") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released and removed it between our open and our lock: take the new one


@contextmanager
def hold(directory: Path) -> Iterator[None]:
    """Hold ``directory`` (a run or a comparison directory) for this block: a second process that asks for it is
    refused with one line naming this one. Under torchrun only rank 0 takes it (the others write nothing). Makes
    the parent if need be, so call it after the checks that only read and before anything else is written."""
    if int(os.environ.get("RANK", "0")) != 0 or os.name != "posix":
        yield
        return
    path = lock_path(directory)
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path, directory)
    except OSError as exc:
        raise RunDirError(f"{directory}: cannot lock it ({path}: {exc.strerror})") from None
    command = " ".join(["vlcl" if i == 0 and arg.endswith(("vlcl", "__main__.py")) else arg for i, arg in enumerate(sys.argv)])
    holder = f"pid {os.getpid()} on {socket.gethostname()} ({command}, since {time.strftime('%H:%M:%S')})"
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode(), 0)
    _held[path] = 1
    try:
        yield
    finally:
        del _held[path]
        try:
            path.unlink()  # while still locked: a process waiting on this file sees it is gone and opens anew
        except OSError:
            pass
        os.close(fd)


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


def nothing_to_resume(run_dir: Path) -> bool:
    """The run wrote no checkpoint and no results (a start refused at decode time, say): starting it again loses nothing."""
    return not has_progress(run_dir) and not any((run_dir / "checkpoints").glob("stage_*"))


def restartable(run_dir: Path, config: RunConfig | None) -> bool:
    """``run_dir`` holds a run with nothing to resume whose config.yaml is ``config``: the same command may start it again."""
    saved = run_dir / "config.yaml"
    if config is None or not saved.is_file() or not nothing_to_resume(run_dir):
        return False
    try:
        return not config_diff(config_to_dict(build_config(read_yaml(saved), str(saved))), config_to_dict(config))
    except BadInputError:  # a config key (ConfigError) or the method's options (UnknownMethodError) the saved config fails on
        return False


RESTART_NOTE = "{}: the run there stopped before its first checkpoint and has this run's config: starting it again"


def check_available(run_dir: Path, *, resume: bool, overwrite: bool, python: bool = False, config: RunConfig | None = None) -> bool:
    """Whether ``run_dir`` holds a run that ``--overwrite`` will replace; refuses a directory that may not be
    written into as asked. Reads only: the command line calls it before any work, :func:`prepare` again.
    ``python``: the messages name the Python API's ``resume=True`` / ``overwrite=True`` instead of the flags.
    ``config``: the new run's; a run directory that is :func:`restartable` with it is written into again."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory")
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if not occupied or resume or (not overwrite and restartable(run_dir, config)):
        return False
    if not overwrite:
        how = "resume=True to continue it or overwrite=True" if python else f"--resume {run_dir} to continue it or --overwrite"
        raise RunDirError(f"{run_dir}: run directory already exists; use {how} to replace it")
    if not (run_dir / "config.yaml").is_file():
        flag = "overwrite=True" if python else "--overwrite"
        raise RunDirError(f"{run_dir}: {flag} refuses to replace a directory that is not a vlcl run (no config.yaml)")
    return True


def prepare(run_dir: Path, *, resume: bool, overwrite: bool, config: RunConfig | None = None) -> None:
    """Make ``run_dir`` ready to write into; call only once every input has been validated."""
    if check_available(run_dir, resume=resume, overwrite=overwrite, config=config):
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


def recover_on_main(run_dir: Path) -> str | None:
    """:func:`recover`, by the main process only (under torchrun only rank 0 touches files)."""
    if int(os.environ.get("RANK", "0")) == 0:
        return recover(run_dir)
    return None


def check_config(config: RunConfig) -> None:
    """Before any file is written: the method and its options, the benchmark, the model path, the data config,
    the device and precision exist and fit together (one-line errors)."""
    import torch

    from vlcl.data.benchmarks.data_root import validate_data_config
    from vlcl.data.registry import benchmark_builder
    from vlcl.methods import create_method
    from vlcl.models.loading import resolve_model_path

    if config.train.precision == "fp16" and (config.device == "cpu" or not torch.cuda.is_available()):
        raise ConfigError("train.precision=fp16 needs CUDA (loss scaling); use train.precision=bf16 on the CPU")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but CUDA is not available here; use device=auto or device=cpu")
    if config.data.benchmark == "features" and not config.data.features:
        raise ConfigError("data.benchmark=features needs a data.features list of {name, modalities, train, test}")
    create_method(config.method.name, config.method.typed_options())
    benchmark_builder(config.data.benchmark)
    resolve_model_path(config.model.path)
    validate_data_config(config.data)


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += config_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            keys.append(f"{prefix}{key}")
    return keys


def resume_config(run_dir: Path, overrides: list[str]) -> tuple[RunConfig, bool]:
    """The saved config of ``run_dir``, and whether the overrides move its data root (the only change allowed)."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise RunDirError(f"{run_dir}: not a vlcl run directory (no config.yaml)")
    saved = build_config(read_yaml(saved_path), str(saved_path))
    if not overrides:
        return saved, False
    changed = load_config(saved_path, overrides)
    differing = config_diff(config_to_dict(saved), config_to_dict(changed))
    if [key for key in differing if key != "data.root"]:
        raise RunDirError(f"--resume {run_dir}: overrides change the run's config at {', '.join(differing)}; start a new run instead")
    return changed, bool(differing)


def check_data_fingerprint(run_dir: Path, fingerprint: str, config: RunConfig, root_moved: bool) -> bool:
    """A resumed run reads the data it started on: same fingerprint, wherever the data root now is. True: the
    data differs but the run has :func:`nothing_to_resume`, so it starts again on this data (the caller says so
    and writes the new fingerprint)."""
    path = run_dir / FINGERPRINT_FILE
    if not path.is_file():
        if root_moved:
            raise RunDirError(f"{path}: not found, so the data at data.root={config.data.root} cannot be checked against the run's; "
                              "resume with the original data.root")
        return False
    stored: Any = read_json_file(path, "data fingerprint", RunDirError)
    if not isinstance(stored, dict) or stored.get("fingerprint") != fingerprint:
        if nothing_to_resume(run_dir):
            return True
        where = f"data.root={config.data.root}" if config.data.root else f"data.benchmark={config.data.benchmark}"
        raise RunDirError(
            f"{where}: the data differs from the data this run started on ({path}); resume only on the same data"
        )
    return False


def write_run_files(run_dir: Path, fingerprint: str, config: RunConfig, *, resume: bool, root_moved: bool) -> None:
    """The data fingerprint and ``config.yaml`` of a new run (the config last: a run directory is one with a
    config.yaml); on resume, the config again only when the data root moved."""
    if not resume:
        atomic_write_json(run_dir / FINGERPRINT_FILE, {"fingerprint": fingerprint, "data_root": config.data.root})
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
    elif root_moved:
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
