"""The harness of the bad-input suite (tests/test_bad_inputs.py).

A case is a setup function that builds its bad input in a temporary folder and
returns the ``vlcl`` arguments; the harness runs ``vlcl`` in-process and asserts
what every bad input must give: the expected exit status, exactly one line
``vlcl: error: ...`` (the last line of stderr) matching the expected message,
no Python traceback, and nothing already written lost or changed (every file
under the folders the case protects keeps its bytes, and a run directory that
did not exist was not created).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vlcl.app.cli import main


@dataclass
class Case:
    id: str
    family: str
    setup: Callable[["Context"], list[str]]
    code: int
    message: str
    """A regular expression the error line must match."""


@dataclass
class Context:
    """What a case may use: a temporary folder, the tiny CLIP, a finished run and a data root to copy."""

    tmp: Path
    clip: Path
    finished_run: Path
    folders_root: Path
    protected: list[Path] = field(default_factory=list)
    """Folders whose files must come through the failure unchanged."""
    absent: list[Path] = field(default_factory=list)
    """Paths that must still not exist afterwards (the run directory of a refused run)."""

    def copy(self, source: Path, name: str) -> Path:
        target = self.tmp / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return target

    def model(self) -> Path:
        """A private copy of the tiny CLIP to break."""
        return self.copy(self.clip, "model")

    def run(self) -> Path:
        """A private copy of the finished run, protected."""
        run = self.copy(self.finished_run, "run")
        self.protected.append(run)
        return run

    def data(self) -> Path:
        """A private copy of the folders data root."""
        return self.copy(self.folders_root, "data")

    def new_run_dir(self) -> Path:
        """Where a refused fresh run would have written: must stay absent."""
        path = self.tmp / "new-run"
        self.absent.append(path)
        return path


def snapshot(folders: list[Path]) -> dict[str, str]:
    files = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else [folder]:
            if path.is_file():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def check_case(case: Case, context: Context, capsys) -> str:
    argv = case.setup(context)
    before = snapshot(context.protected)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err, err
    assert "\x1b[" not in err and "weights_only=False" not in err, err  # no terminal colours, no advice to unpickle
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("vlcl: error:")]
    assert code == case.code, f"exit {code}, expected {case.code}; stderr: {err[-1500:]}"
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one final 'vlcl: error:' line, got: {lines[-5:]}"
    assert re.search(case.message, errors[0]), f"{errors[0]!r} does not match {case.message!r}"
    after = snapshot(context.protected)
    lost = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert not lost and not changed, f"lost {lost[:3]}, changed {changed[:3]}"
    for path in context.absent:
        assert not path.exists(), f"{path} was created by a refused run"
    return errors[0]
