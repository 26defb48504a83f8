"""A full disk while writing: one line naming the file and the reason, exit 1, and the last complete
checkpoint kept (a resume gives the uninterrupted run's numbers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_run import metrics_of, quick_args
from vlcl.app.cli import main
from vlcl.engine import checkpoint

FULL = "Error while serializing: I/O error: No space left on device (os error 28)"  # safetensors' own words


class SafetensorError(Exception):
    """Stands for safetensors' exception type, a plain Exception subclass."""


def fail_in(checkpoint_name: str, real):
    """safetensors' save_file, failing as on a full disk for the files of one checkpoint directory."""

    def save_file(tensors, filename, *args, **kwargs):
        if f".{checkpoint_name}." in str(filename):
            raise SafetensorError(FULL)
        return real(tensors, filename, *args, **kwargs)

    return save_file


def last_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.strip()][-1]


@pytest.mark.slow
def test_disk_full_in_a_stage_checkpoint_is_one_line_and_resumes_exactly(tmp_path, world_clip_dir, capsys, monkeypatch):
    reference = tmp_path / "reference"
    assert main(["run", *quick_args(world_clip_dir), "-o", str(reference)]) == 0
    run_dir = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "save_file", fail_in("stage_01", checkpoint.save_file))  # the second task's checkpoint
    capsys.readouterr()
    assert main(["run", *quick_args(world_clip_dir), "-o", str(run_dir)]) == 1
    line = last_error_line(capsys)
    assert line.startswith("vlcl: error: ") and line.endswith(": No space left on device"), line
    assert "checkpoints/stage_01" in line, line
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporary left
    monkeypatch.undo()
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert metrics_of(run_dir) == metrics_of(reference)


def test_an_error_of_safetensors_that_is_not_the_disk_is_not_disguised(tmp_path):
    def fill(tmp: Path) -> None:
        raise SafetensorError("Error while serializing: tensor is not contiguous")

    with pytest.raises(SafetensorError, match="not contiguous"):
        checkpoint._write_directory(tmp_path, "stage_01", fill)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_in_the_log_names_the_log(tmp_path):
    from vlcl.engine.logbook import Logbook

    class FullFile:
        def write(self, text):
            raise OSError(28, os.strerror(28))

        def flush(self):
            pass

    book = Logbook.__new__(Logbook)  # no file opened: the write itself fails
    book.path, book._held, book._file = tmp_path / "log.jsonl", None, FullFile()
    book._line = lambda event, fields: "{}\n"
    with pytest.raises(OSError) as caught:
        book._write("step", {})
    assert caught.value.filename == str(tmp_path / "log.jsonl") and caught.value.errno == 28


@pytest.fixture
def full_filesystem(tmp_path):
    """A real 128 KB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_really_full_disk_is_one_line(full_filesystem, world_clip_dir):
    """On a 128 KB file system the run's first checkpoint (the tiny model alone is about 170 KB) cannot be written."""
    process = subprocess.run(
        [sys.executable, "-m", "vlcl", "run", *quick_args(world_clip_dir), "-o", str(full_filesystem / "run")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert process.returncode == 1, process.stderr[-2000:]
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("vlcl: error: ") and lines[-1].endswith("No space left on device"), lines[-3:]
