"""What a run writes is as readable as the user's umask allows (atomic writes go through mkstemp and mkdtemp,
which make private files: they are given the mode a plain open() or mkdir would)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from test_run import quick_args
from vlcl.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, directory_mode, file_mode


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
@pytest.mark.parametrize(("umask", "files", "folders"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_a_run_writes_with_the_modes_of_the_umask(tmp_path, world_clip_dir, umask, files, folders):
    run_dir = tmp_path / "run"
    process = subprocess.run(
        [sys.executable, "-m", "vlcl", "run", *quick_args(world_clip_dir, "data.tasks=[sketch]", "train.epochs=1"), "-o", str(run_dir)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=lambda: os.umask(umask),
    )
    assert process.returncode == 0, process.stderr[-2000:]
    written = [p for p in run_dir.rglob("*") if "report_plots" not in p.parts]
    expected_files = {"results.json", "config.yaml", "report.html", "log.jsonl", "metrics.csv", "model.safetensors",
                      "method_state.json", "progress.json", "latest.json", "data_fingerprint.json", "config.json"}
    assert expected_files <= {p.name for p in written}, sorted(p.name for p in written)
    wrong = {str(p.relative_to(run_dir)): oct(mode(p)) for p in written if mode(p) != (folders if p.is_dir() else files)}
    assert not wrong, wrong
    assert mode(run_dir) == folders


def test_the_atomic_helpers_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        assert (file_mode(), directory_mode()) == (0o640, 0o750)
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_bytes(tmp_path / "b.png", b"x")
        atomic_write_json(tmp_path / "c.json", {})
    finally:
        os.umask(previous)
    assert [mode(tmp_path / name) for name in ("a.txt", "b.png", "c.json")] == [0o640] * 3
