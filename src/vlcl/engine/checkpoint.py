"""Atomic files and per-stage checkpoints (safetensors + JSON, never pickle).

A stage checkpoint is a directory written under a temporary name and renamed
into place, so a crash leaves either the previous complete checkpoint or the
new complete one - never a half-written directory that resume could trust.
``latest.json`` names the newest complete checkpoint and is itself replaced
atomically.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from vlcl.engine.faults import fault_point
from vlcl.errors import BadInputError
from vlcl.fileio import (  # noqa: F401 - the checkpoint's helpers, also reached from here
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    directory_mode,
    file_mode,
    fsync_dir,
    give_umask_modes,
    read_json_file,
)
from vlcl.models.loading import ClipBundle, save_clip

LATEST = "latest.json"
COMPLETE = "COMPLETE"
_CHECKPOINT_NAME = re.compile(r"stage_\d{2,}|step_\d{2,}_\d{7,}")


class CheckpointError(BadInputError, ValueError):
    """A checkpoint or its pointer that cannot be trusted: one line naming the file and what is wrong."""


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, read fully (not memory-mapped: a file replaced later cannot crash the process)."""
    try:
        return load_safetensors_bytes(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (an incomplete checkpoint)") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, expected a safetensors file") from None
    except Exception as exc:  # safetensors raises SafetensorError, a plain Exception
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _os_error_of(exc: Exception, path: Path) -> OSError | None:
    """The OSError inside a safetensors error (``... No space left on device (os error 28)``), naming ``path``;
    None when it holds none (the library reports I/O failures as its own exception type, not as OSError)."""
    found = re.search(r"\(os error (\d+)\)", str(exc))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code), str(path))


STATE_FORMAT = 2
"""Version of the method-state layout below, recorded in every checkpoint (1: dotted keys, before 2026-11-30)."""


class StateFormatError(ValueError):
    """A method state that a checkpoint cannot hold exactly: one line naming the key."""


def _escape(key: str) -> str:
    """One key as a path segment (RFC 6901): ``~`` -> ``~0``, ``/`` -> ``~1``, so any string key survives."""
    return key.replace("~", "~0").replace("/", "~1")


def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def _where(path: tuple[str, ...]) -> str:
    return "/".join(path) or "(top level)"


def _check_value(value: Any, path: tuple[str, ...]) -> None:
    """JSON values only, and only those that come back as they went: no tuples, NaN, numpy or tensors in lists."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StateFormatError(f"state key '{_where(path)}' is {value}: JSON holds finite numbers only")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, (*path, str(i)))
        return
    hint = " (a tensor inside a list: use a dict of tensors)" if isinstance(value, torch.Tensor) else ""
    raise StateFormatError(
        f"state key '{_where(path)}' holds a {type(value).__name__}{hint}; a state holds tensors, dicts with string keys, "
        "and JSON values (None, bool, int, float, str, list)"
    )


def split_state(state: dict[str, Any], path: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (for safetensors, under ``/``-joined escaped key paths) and JSON values (nested as given).

    Keys may be any strings - dotted parameter names included; nested dicts nest. :func:`merge_state`
    restores the state exactly. Anything else raises :class:`StateFormatError` naming the key.
    """
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise StateFormatError(f"state key {key!r} under '{_where(path)}' is a {type(key).__name__}; keys must be strings")
        full = (*path, key)
        if isinstance(value, torch.Tensor):
            tensors["/".join(map(_escape, full))] = value.detach().cpu().contiguous()
        elif isinstance(value, dict):
            sub_tensors, sub_values = split_state(value, full)
            tensors.update(sub_tensors)
            if sub_values or not sub_tensors:  # keep empty dicts, drop tensor-only ones
                values[key] = sub_values
        else:
            _check_value(value, full)
            values[key] = value
    return tensors, values


def merge_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> dict[str, Any]:
    """The state :func:`split_state` took apart."""
    state: dict[str, Any] = json.loads(json.dumps(values))
    for joined, tensor in tensors.items():
        node = state
        *parents, leaf = (_unescape(segment) for segment in joined.split("/"))
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = tensor
    return state


def state_difference(a: Any, b: Any, path: tuple[str, ...] = ()) -> str | None:
    """Where two states differ (key path and how), or None when they are equal: same keys, same types,
    tensors equal in dtype, shape and every value."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"'{_where((*path, str(key)))}' is {'missing' if key not in b else 'new'} after the round trip"
            found = state_difference(a[key], b[key], (*path, str(key)))
            if found:
                return found
        return None
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        a_cpu, b_cpu = a.detach().cpu(), b.detach().cpu()
        if a_cpu.dtype != b_cpu.dtype or a_cpu.shape != b_cpu.shape or not torch.equal(a_cpu, b_cpu):
            return f"tensor '{_where(path)}' differs after the round trip"
        return None
    if type(a) is not type(b) or a != b:
        return f"'{_where(path)}' is {a!r} before and {b!r} after the round trip"
    return None


def check_state_round_trip(state: dict[str, Any]) -> None:
    """Put ``state`` through the checkpoint format in memory and back; :class:`StateFormatError` if anything changes."""
    if not isinstance(state, dict):
        raise StateFormatError(f"the state is a {type(state).__name__}, expected a dict")
    tensors, values = split_state(state)
    restored = merge_state(tensors, json.loads(json.dumps(values, allow_nan=False)))
    found = state_difference(state, restored)
    if found:
        raise StateFormatError(found)


def check_state_format(recorded: Any, where: Path) -> None:
    """A checkpoint written with another method-state layout cannot be read back exactly."""
    if recorded != STATE_FORMAT:
        raise CheckpointError(
            f"{where}: written with method-state format {recorded or 1}, this vlcl reads format {STATE_FORMAT}; "
            "start the run again (or resume it with the vlcl that wrote it)"
        )


NOT_EVALUATED_FIELD = "vlcl_not_the_evaluated_model"
"""The config.json key of a stage checkpoint's ``model/`` that is not the model the run evaluated; its value says
why (``CLIPModel.from_pretrained`` keeps it as ``model.config.vlcl_not_the_evaluated_model``)."""
NOT_EVALUATED_README = """# Not the evaluated model

This folder is a plain Hugging Face CLIP that `CLIPModel.from_pretrained` loads, but it is NOT the model
this run evaluated after stage {stage}. Method '{method}': its evaluation {reason}.
Loaded alone, it does not score what results.json records for this stage.

The evaluated model: `vlcl.load_run(RUN_DIR, stage={stage})` (RUN_DIR: the folder that holds `checkpoints/`;
see docs/api.md) rebuilds the method from this checkpoint, as `vlcl run --resume` does. `vlcl export` refuses
this run for the same reason.
"""


def write_model_note(model_dir: Path, stage_index: int, method: str, reason: str) -> None:
    """Say in ``model_dir``'s own files that it is not the evaluated model: a README.md for whoever browses the
    folder, and :data:`NOT_EVALUATED_FIELD` in its config.json for whoever loads it. Written inside the checkpoint's
    temporary directory, which becomes visible whole."""
    config = model_dir / "config.json"
    if config.is_file():  # feature maps have none
        data = json.loads(config.read_text(encoding="utf-8"))
        data[NOT_EVALUATED_FIELD] = (
            f"method '{method}': its evaluation {reason}; vlcl.load_run(RUN_DIR, stage={stage_index}) gives the evaluated model"
        )
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (model_dir / "README.md").write_text(
        NOT_EVALUATED_README.format(stage=stage_index, method=method, reason=reason), encoding="utf-8"
    )


def write_stage_checkpoint(
    checkpoints_dir: Path,
    stage_index: int,
    model: ClipBundle | Callable[[Path], None],
    method_state: dict[str, Any],
    progress: dict[str, Any],
    keep: int | None = None,
    model_note: tuple[str, str] | None = None,
) -> Path:
    """Write ``stage_XX`` atomically and point ``latest.json`` at it, then keep only the newest ``keep`` stage
    checkpoints (None: all). ``model`` is a CLIP bundle (saved as a plain Hugging Face directory) or a function that
    writes the model into the directory it is given. ``model_note``: (method name, what its evaluation uses besides
    the model) when the saved model is not the evaluated one (:func:`write_model_note`)."""

    def fill(tmp: Path) -> None:
        if callable(model):
            model(tmp / "model")
        else:
            save_clip(model, tmp / "model")
        if model_note is not None:
            write_model_note(tmp / "model", stage_index, *model_note)
        tensors, values = split_state(method_state)
        save_file(tensors, str(tmp / "method_state.safetensors"))
        atomic_write_json(tmp / "method_state.json", values)
        atomic_write_json(tmp / "progress.json", {**progress, "state_format": STATE_FORMAT})
        fault_point("stage_checkpoint_write")

    final = _write_directory(checkpoints_dir, f"stage_{stage_index:02d}", fill)
    fault_point("stage_checkpoint_pointer")
    atomic_write_json(checkpoints_dir / LATEST, {"stage": stage_index, "path": final.name})
    remove_step_checkpoints(checkpoints_dir)
    if keep is not None:
        prune_stage_checkpoints(checkpoints_dir, keep)
    return final


def prune_stage_checkpoints(checkpoints_dir: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` ``stage_XX`` directories. Each is first renamed to a hidden name, so that
    a crash while deleting leaves no half-deleted checkpoint under a visible name (hidden leftovers are removed
    with the next checkpoint)."""
    stages = sorted((p for p in checkpoints_dir.glob("stage_*") if p.is_dir() and p.name[6:].isdigit()), key=lambda p: int(p.name[6:]))
    for old in stages[: max(0, len(stages) - keep)]:
        hidden = checkpoints_dir / f".{old.name}.removed"
        os.replace(old, hidden)
        fault_point("stage_checkpoint_prune")
        shutil.rmtree(hidden, ignore_errors=True)
    fsync_dir(checkpoints_dir)


def _write_directory(checkpoints_dir: Path, name: str, fill: Callable[[Path], None]) -> Path:
    """``fill`` a temporary directory, mark it ``COMPLETE`` and rename it to ``name``: a crash leaves no
    half-written checkpoint under a visible name (an older attempt at the same name is replaced)."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / name
    tmp = Path(tempfile.mkdtemp(dir=checkpoints_dir, prefix=f".{name}."))
    try:
        tmp.chmod(directory_mode())
        try:
            fill(tmp)
        except Exception as exc:  # a full disk inside safetensors (ours or transformers' save_pretrained)
            os_error = None if isinstance(exc, OSError) else _os_error_of(exc, final)
            if os_error is None:
                raise
            raise os_error from None
        (tmp / COMPLETE).write_text("ok\n")
        give_umask_modes(tmp)
        if final.exists():  # an older attempt that never became 'latest'
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(checkpoints_dir)
    return final


def remove_step_checkpoints(checkpoints_dir: Path, keep: str | None = None) -> None:
    """Delete in-stage checkpoints (and abandoned temporary directories) other than ``keep``."""
    for path in checkpoints_dir.iterdir():
        if path.is_dir() and path.name != keep and (path.name.startswith("step_") or path.name.startswith(".")):
            shutil.rmtree(path, ignore_errors=True)


def write_step_checkpoint(
    checkpoints_dir: Path, stage_index: int, step: int, base: str | None, tensors: dict[str, torch.Tensor], values: dict[str, Any]
) -> Path:
    """An in-stage checkpoint ``step_SS_NNNNNNN`` (safetensors + JSON), written atomically; ``latest.json``
    then points at it with ``base``, the stage checkpoint (or None: the initial model) the stage started from."""
    def fill(tmp: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        fault_point("step_checkpoint_write")
        atomic_write_json(tmp / "state.json", {**values, "state_format": STATE_FORMAT})

    final = _write_directory(checkpoints_dir, f"step_{stage_index:02d}_{step:07d}", fill)
    atomic_write_json(checkpoints_dir / LATEST, {"stage": stage_index, "step": step, "path": final.name, "base": base})
    remove_step_checkpoints(checkpoints_dir, keep=final.name)
    return final


def _checked_name(name: Any, pointer: Path) -> str:
    """A checkpoint named by the pointer must be a sibling directory written by vlcl, not a path elsewhere."""
    if not isinstance(name, str) or not _CHECKPOINT_NAME.fullmatch(name):
        raise CheckpointError(f"{pointer}: names {name!r}, expected a checkpoint of this run (stage_XX or step_XX_NNNNNNN)")
    return name


def read_pointer(checkpoints_dir: Path) -> dict[str, Any] | None:
    """The content of ``latest.json`` (None without one), after checking that what it names is complete."""
    pointer = checkpoints_dir / LATEST
    if not pointer.exists():
        return None
    content = read_json_file(pointer, "checkpoint pointer", CheckpointError)
    if not isinstance(content, dict) or "path" not in content or not isinstance(content.get("stage"), int):
        raise CheckpointError(f"{pointer}: expected {{\"stage\": N, \"path\": NAME}}, got {str(content)[:80]}")
    names = [_checked_name(content["path"], pointer)]
    if "step" in content:
        if content.get("base") is not None:
            names.append(_checked_name(content["base"], pointer))
    for name in names:
        if not (checkpoints_dir / name / COMPLETE).is_file():
            raise CheckpointError(f"{checkpoints_dir / name}: checkpoint named by {pointer} is incomplete or missing")
    return content


def newest_complete_stage(checkpoints_dir: Path) -> dict[str, Any] | None:
    """A pointer to the newest complete stage checkpoint, found by listing the directory (for a lost ``latest.json``)."""
    if not checkpoints_dir.is_dir():
        return None
    stages = sorted(
        (int(p.name.split("_")[1]), p.name)
        for p in checkpoints_dir.iterdir()
        if p.is_dir() and re.fullmatch(r"stage_\d{2,}", p.name) and (p / COMPLETE).is_file()
    )
    return {"stage": stages[-1][0], "path": stages[-1][1]} if stages else None


def read_step_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    values = read_json_file(path / "state.json", "in-task checkpoint state", CheckpointError)
    if not isinstance(values, dict) or not isinstance(values.get("records"), list):
        raise CheckpointError(f"{path / 'state.json'}: expected a JSON object with the run's 'records'")
    check_state_format(values.pop("state_format", None), path / "state.json")
    return read_tensors(path / "state.safetensors"), values


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete *stage* checkpoint: the one ``latest.json`` names, or the base of its step checkpoint."""
    content = read_pointer(checkpoints_dir)
    if content is None:
        return None
    name = content.get("base") if "step" in content else content["path"]
    return checkpoints_dir / name if name else None


def read_stage_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (method_state, progress) of a complete checkpoint directory."""
    tensors = read_tensors(path / "method_state.safetensors")
    values = read_json_file(path / "method_state.json", "method state", CheckpointError)
    progress = read_json_file(path / "progress.json", "progress record", CheckpointError)
    if not isinstance(values, dict):
        raise CheckpointError(f"{path / 'method_state.json'}: expected a JSON object")
    if not isinstance(progress, dict) or not isinstance(progress.get("next_stage"), int) or not isinstance(progress.get("stages"), list):
        raise CheckpointError(f"{path / 'progress.json'}: expected a JSON object with 'next_stage' and 'stages'")
    check_state_format(progress.pop("state_format", None), path / "progress.json")
    return merge_state(tensors, values), progress
