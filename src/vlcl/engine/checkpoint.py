"""Atomic files and per-stage checkpoints (safetensors + JSON, never pickle).

A stage checkpoint is a directory written under a temporary name and renamed
into place, so a crash leaves either the previous complete checkpoint or the
new complete one - never a half-written directory that resume could trust.
``latest.json`` names the newest complete checkpoint and is itself replaced
atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vlcl.engine.faults import fault_point
from vlcl.models.loading import ClipBundle, save_clip

LATEST = "latest.json"
COMPLETE = "COMPLETE"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def split_state(state: dict[str, Any], prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Separate tensors (for safetensors) from JSON values in a nested dict, keys dotted."""
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, Any] = {}
    for key, value in state.items():
        if "." in key:
            raise ValueError(f"method state key '{key}' must not contain '.'")
        full = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            tensors[full] = value.detach().cpu().contiguous()
        elif isinstance(value, dict):
            sub_tensors, sub_values = split_state(value, f"{full}.")
            tensors.update(sub_tensors)
            if sub_values or not sub_tensors:  # keep empty dicts, drop tensor-only ones
                values[key] = sub_values
        else:
            values[key] = value
    return tensors, values


def merge_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(json.dumps(values))
    for dotted, tensor in tensors.items():
        node = state
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = tensor
    return state


def write_stage_checkpoint(
    checkpoints_dir: Path, stage_index: int, bundle: ClipBundle, method_state: dict[str, Any], progress: dict[str, Any]
) -> Path:
    """Write ``stage_XX`` atomically and point ``latest.json`` at it."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / f"stage_{stage_index:02d}"
    tmp = Path(tempfile.mkdtemp(dir=checkpoints_dir, prefix=f".stage_{stage_index:02d}."))
    try:
        save_clip(bundle, tmp / "model")
        tensors, values = split_state(method_state)
        save_file(tensors, str(tmp / "method_state.safetensors"))
        atomic_write_json(tmp / "method_state.json", values)
        atomic_write_json(tmp / "progress.json", progress)
        fault_point("stage_checkpoint_write")
        (tmp / COMPLETE).write_text("ok\n")
        if final.exists():  # an older attempt at this stage that never became 'latest'
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(checkpoints_dir)
    fault_point("stage_checkpoint_pointer")
    atomic_write_json(checkpoints_dir / LATEST, {"stage": stage_index, "path": final.name})
    remove_step_checkpoints(checkpoints_dir)
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
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / f"step_{stage_index:02d}_{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=checkpoints_dir, prefix=f".{final.name}."))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        fault_point("step_checkpoint_write")
        atomic_write_json(tmp / "state.json", values)
        (tmp / COMPLETE).write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(checkpoints_dir)
    atomic_write_json(checkpoints_dir / LATEST, {"stage": stage_index, "step": step, "path": final.name, "base": base})
    remove_step_checkpoints(checkpoints_dir, keep=final.name)
    return final


def read_pointer(checkpoints_dir: Path) -> dict[str, Any] | None:
    """The content of ``latest.json`` (None without one), after checking that what it names is complete."""
    pointer = checkpoints_dir / LATEST
    if not pointer.is_file():
        return None
    try:
        content = json.loads(pointer.read_text(encoding="utf-8"))
        name = content["path"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{pointer}: unreadable checkpoint pointer") from None
    for part in filter(None, (name, content.get("base"))):
        if not (checkpoints_dir / part / COMPLETE).is_file():
            raise ValueError(f"{checkpoints_dir / part}: checkpoint named by {pointer} is incomplete")
    return content


def read_step_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return load_file(str(path / "state.safetensors")), json.loads((path / "state.json").read_text(encoding="utf-8"))


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete *stage* checkpoint: the one ``latest.json`` names, or the base of its step checkpoint."""
    content = read_pointer(checkpoints_dir)
    if content is None:
        return None
    name = content.get("base") if "step" in content else content["path"]
    return checkpoints_dir / name if name else None


def read_stage_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (method_state, progress) of a complete checkpoint directory."""
    tensors = load_file(str(path / "method_state.safetensors"))
    values = json.loads((path / "method_state.json").read_text(encoding="utf-8"))
    progress = json.loads((path / "progress.json").read_text(encoding="utf-8"))
    return merge_state(tensors, values), progress
