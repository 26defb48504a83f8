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

Also here, shared by the command line (``vlcl run``) and the Python API
(:func:`vlcl.run`): the checks of a config before anything is loaded, the
config of a run to resume, the data fingerprint a resumed run must match, and
the files that make a directory a run directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from vlcl.config import ConfigError, RunConfig, build_config, config_to_dict, dump_config, load_config, read_yaml
from vlcl.engine.checkpoint import LATEST, atomic_write_json, atomic_write_text, read_json_file
from vlcl.engine.faults import fault_point

FINGERPRINT_FILE = "data_fingerprint.json"


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


def check_available(run_dir: Path, *, resume: bool, overwrite: bool, python: bool = False) -> bool:
    """Whether ``run_dir`` holds a run that ``--overwrite`` will replace; refuses a directory that may not be
    written into as asked. Reads only: the command line calls it before any work, :func:`prepare` again.
    ``python``: the messages name the Python API's ``resume=True`` / ``overwrite=True`` instead of the flags."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory")
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if not occupied or resume:
        return False
    if not overwrite:
        how = "resume=True to continue it or overwrite=True" if python else f"--resume {run_dir} to continue it or --overwrite"
        raise RunDirError(f"{run_dir}: run directory already exists; use {how} to replace it")
    if not (run_dir / "config.yaml").is_file():
        flag = "overwrite=True" if python else "--overwrite"
        raise RunDirError(f"{run_dir}: {flag} refuses to replace a directory that is not a vlcl run (no config.yaml)")
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


def recover_on_main(run_dir: Path) -> str | None:
    """:func:`recover`, by the main process only (under torchrun only rank 0 touches files)."""
    if int(os.environ.get("RANK", "0")) == 0:
        return recover(run_dir)
    return None


def check_config(config: RunConfig) -> None:
    """Before any file is written: the method and its options, the benchmark, the model path, the data config,
    the device and precision exist and fit together (one-line errors)."""
    import torch

    from vlcl.data.benchmark import benchmark_builder
    from vlcl.data.named import validate_data_config
    from vlcl.methods import create_method
    from vlcl.models.loading import resolve_model_path

    if config.train.precision == "fp16" and (config.device == "cpu" or not torch.cuda.is_available()):
        raise ConfigError("train.precision=fp16 needs CUDA (loss scaling); use train.precision=bf16 on the CPU")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but CUDA is not available here; use device=auto or device=cpu")
    if config.data.benchmark == "features" and not config.data.features:
        raise ConfigError("data.benchmark=features needs a data.features list of {name, modalities, train, test}")
    create_method(config.method.name, config.method.options())
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


def check_data_fingerprint(run_dir: Path, fingerprint: str, config: RunConfig, root_moved: bool) -> None:
    """A resumed run reads the data it started on: same fingerprint, wherever the data root now is."""
    path = run_dir / FINGERPRINT_FILE
    if not path.is_file():
        if root_moved:
            raise RunDirError(f"{path}: not found, so the data at data.root={config.data.root} cannot be checked against the run's; "
                              "resume with the original data.root")
        return
    stored: Any = read_json_file(path, "data fingerprint", RunDirError)
    if not isinstance(stored, dict) or stored.get("fingerprint") != fingerprint:
        where = f"data.root={config.data.root}" if config.data.root else f"data.benchmark={config.data.benchmark}"
        raise RunDirError(
            f"{where}: the data differs from the data this run started on ({path}); resume only on the same data"
        )


def write_run_files(run_dir: Path, fingerprint: str, config: RunConfig, *, resume: bool, root_moved: bool) -> None:
    """The data fingerprint and ``config.yaml`` of a new run (the config last: a run directory is one with a
    config.yaml); on resume, the config again only when the data root moved."""
    if not resume:
        atomic_write_json(run_dir / FINGERPRINT_FILE, {"fingerprint": fingerprint, "data_root": config.data.root})
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
    elif root_moved:
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
