"""Files written whole or not at all, with the modes the user's umask gives, and JSON read strictly: the standard
library only, so that what reads and writes a run's files (vlcl.report) needs neither torch nor transformers."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _refuse_constant(name: str) -> float:
    raise ValueError(f"holds {name}, which is not JSON (vlcl writes strict JSON; the file was made elsewhere)")


def read_json_file(path: Path, what: str, error: type[Exception] = ValueError, *, strict: bool = False) -> Any:
    """Parsed JSON of ``path``; any failure is ``error`` naming the file (and the line). ``strict`` refuses
    the bare ``NaN`` / ``Infinity`` that Python's json module writes and reads by default."""
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text, parse_constant=_refuse_constant) if strict else json.loads(text)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: {what} is a directory, expected a JSON file") from None
    except UnicodeDecodeError:
        raise error(f"{path}: {what} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: line {exc.lineno}: {what} is not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # a refused constant
        raise error(f"{path}: {exc}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror})") from None


def _process_umask() -> int:
    """The umask, read without changing it (``os.umask`` can only be read by setting it, which races with any
    thread creating files meanwhile): Linux's /proc/self/status; elsewhere set-and-restore, once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    global _UMASK_FALLBACK
    if _UMASK_FALLBACK is None:
        _UMASK_FALLBACK = os.umask(0o022)
        os.umask(_UMASK_FALLBACK)
    return _UMASK_FALLBACK


_UMASK_FALLBACK: int | None = None


def file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask); ``mkstemp`` makes its files 0o600."""
    return 0o666 & ~_process_umask()


def directory_mode() -> int:
    """The mode ``mkdir`` would give a new directory (0o777 less the umask); ``mkdtemp`` makes its 0o700."""
    return 0o777 & ~_process_umask()


def give_umask_modes(tree: Path) -> None:
    """Every file and folder under ``tree`` gets the umask's mode: safetensors (ours and transformers') writes its
    files private (0o600), as mkstemp does."""
    for path in [tree, *tree.rglob("*")]:
        path.chmod(directory_mode() if path.is_dir() else file_mode())


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a directory's entries are its data)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same directory (given the umask's mode: ``mkstemp`` makes it 0o600),
    fsync, then rename over ``path``: a reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Strict JSON (no bare NaN or Infinity, which other JSON readers refuse), written atomically."""
    try:
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
    except ValueError:
        raise ValueError(f"{path}: refusing to write NaN or inf into JSON (a metric or loss that is not a number)") from None
    atomic_write_text(path, text + "\n")
