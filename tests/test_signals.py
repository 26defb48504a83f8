"""Signals: SIGINT and SIGTERM at any moment end in one line and a resumable state; SIGKILL of an
``--overwrite`` run at any moment leaves the old run or the new run's first checkpoint, never neither."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_faults import assert_checkpoints_sound
from test_run import metrics_of, quick_args
from vlcl.app.cli import main
from vlcl.engine import rundir

LONG = ("train.epochs=30",)  # long enough that a signal always arrives before the end


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vlcl", "run", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_one_line_interruption(process: subprocess.Popen, signum: int) -> str:
    _, err = process.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith(f"vlcl: error: interrupted by {name}"), lines[-3:]
    assert sum(line.startswith("vlcl: error:") for line in lines) == 1
    return lines[-1]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("delay", [0.3, 1.5, 4.0])
def test_signal_at_any_moment_is_one_line(tmp_path, world_clip_dir, signum, delay):
    """Early (importing torch), while loading, and while training: one line, exit 128 + signal number."""
    run_dir = tmp_path / "run"
    process = start([*quick_args(world_clip_dir, *LONG), "-o", str(run_dir)])
    time.sleep(delay)
    process.send_signal(signum)
    assert_one_line_interruption(process, signum)
    if run_dir.exists():  # what it wrote is resumable: complete checkpoints only, no temporary files left
        assert_checkpoints_sound(run_dir / "checkpoints") if (run_dir / "checkpoints").exists() else None
        assert not [p for p in run_dir.rglob(".*") if p.name != ".write-test"], sorted(run_dir.rglob(".*"))


@pytest.mark.slow
def test_sigterm_mid_run_resumes_to_the_uninterrupted_result(tmp_path, world_clip_dir):
    reference = tmp_path / "reference"
    args = quick_args(world_clip_dir, "train.checkpoint_every_steps=2")
    assert main(["run", *args, "-o", str(reference)]) == 0
    run_dir = tmp_path / "run"
    process = start([*args, "-o", str(run_dir)])
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "latest.json").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    line = assert_one_line_interruption(process, signal.SIGTERM)
    assert f"vlcl run --resume {run_dir}" in line
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert metrics_of(run_dir) == metrics_of(reference)


# -- SIGKILL of an --overwrite run ------------------------------------------------------------------

def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, world_clip_dir):
    run = tmp_path_factory.mktemp("old") / "run"
    assert main(["run", *quick_args(world_clip_dir), "-o", str(run)]) == 0
    return run


def new_run_has_its_first_checkpoint(run_dir: Path) -> bool:
    pointer = run_dir / "checkpoints" / "latest.json"
    if not pointer.is_file() or "seed: 1" not in (run_dir / "config.yaml").read_text():
        return False
    name = json.loads(pointer.read_text())["path"]
    return (run_dir / "checkpoints" / name / "COMPLETE").is_file()


def old_run_is_intact(run_dir: Path, expected: dict[str, str]) -> bool:
    return any(place.is_dir() and tree_digest(place) == expected for place in (run_dir, rundir.replaced_path(run_dir)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "survivor"),
    [
        ("overwrite_moved:1", "old"),  # the old run renamed aside, nothing new yet
        ("run_files_written:1", "old"),  # the new config.yaml written
        ("step:3", "old"),  # the new run is training its first task
        ("stage_checkpoint_write:1", "old"),  # inside the first checkpoint write
        ("stage_checkpoint_pointer:1", "old"),  # first checkpoint complete, not yet named by latest.json
        ("replaced_discard:1", "new"),  # first checkpoint named: the old run is about to be deleted
        ("evaluation:2", "new"),  # the new run is in its second task
        ("time:1.0", None),
        ("time:2.5", None),
        ("time:5.0", None),
    ],
)
def test_sigkill_of_an_overwrite_run_keeps_the_old_run_or_the_new_checkpoint(tmp_path, world_clip_dir, old_run, kill, survivor):
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(old_run, run_dir)
    expected = tree_digest(run_dir)
    args = [*quick_args(world_clip_dir, "seed=1"), "--overwrite", "-o", str(run_dir)]
    if kill.startswith("time:"):
        process = start(args)
        time.sleep(float(kill.split(":")[1]))
        process.kill()
        process.wait(timeout=60)
    else:
        process = start(args, {"VLCL_FAULT": kill})
        process.communicate(timeout=300)
        assert process.returncode == -9
    old, new = old_run_is_intact(run_dir, expected), new_run_has_its_first_checkpoint(run_dir)
    assert old or new, f"killed at {kill}: neither the old run nor the new run's first checkpoint survives"
    if survivor is not None:
        assert (old, new) == (survivor == "old", survivor == "new") or (survivor == "new" and new)
    # The next vlcl command on the directory finishes the job: the old run back in place, or the new run alone.
    rundir.recover(run_dir)
    assert not rundir.replaced_path(run_dir).exists()
    if new:
        assert main(["run", "--resume", str(run_dir)]) == 0
        assert json.loads((run_dir / "results.json").read_text())["summary"]["complete"]
    else:
        assert tree_digest(run_dir) == expected


def test_failed_overwrite_run_restores_the_old_run_at_once(tmp_path, world_clip_dir, old_run, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(old_run, run_dir)
    expected = tree_digest(run_dir)
    args = quick_args(world_clip_dir, "train.lr=1e30", "train.warmup_fraction=0")
    assert main(["run", *args, "--overwrite", "-o", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "restored the previous run" in err and err.strip().splitlines()[-1].startswith("vlcl: error: non-finite loss")
    assert tree_digest(run_dir) == expected and not rundir.replaced_path(run_dir).exists()


# -- a raise that Python drops ----------------------------------------------------------------------

SWALLOWED = """
import os, signal, sys, time
import vlcl.app.cli
from vlcl.app import entry

class Finaliser:
    def __del__(self):  # the signal's handler runs in here, where Python prints its raise and drops it
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100_000):
            pass

def command(argv):
    Finaliser()
    {after}
    return 0

vlcl.app.cli.main = command
sys.exit(entry.main([]))
"""


@pytest.mark.parametrize("after", ["pass", "time.sleep(0.2)"])
def test_a_signal_whose_raise_python_dropped_still_ends_the_command(after):
    """As SIGTERM during an import (the import lock's weakref callback): never 'Exception ignored' and exit 0."""
    process = subprocess.run(
        [sys.executable, "-c", SWALLOWED.format(after=after)], capture_output=True, text=True, timeout=60
    )
    assert process.returncode == 128 + signal.SIGTERM, process.stderr
    assert "Exception ignored" not in process.stderr and "Traceback" not in process.stderr, process.stderr
    assert process.stderr.strip().splitlines() == ["vlcl: error: interrupted by SIGTERM"]
