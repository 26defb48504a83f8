"""Runs that cannot collide or leave orphans: one process per run or comparison directory (a second is refused
in one line naming the holder), compare -o never a run's directory, compare's workers die with their parent, a
start refused before its first checkpoint can be run again by the same command; and the smaller refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from test_run import quick_args
from vlcl.app.cli import main
from vlcl.engine import rundir

LONG = ("train.epochs=30",)


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vlcl", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.strip()][-1]


@pytest.mark.slow
def test_a_second_run_into_a_directory_in_use_is_refused_naming_the_holder(tmp_path, world_clip_dir, capsys):
    run_dir = tmp_path / "run"
    first = spawn("run", *quick_args(world_clip_dir, *LONG), "-o", str(run_dir))
    try:
        wait_for(lambda: (run_dir / "log.jsonl").is_file(), first)
        before = sorted(p.name for p in run_dir.iterdir())
        assert main(["run", *quick_args(world_clip_dir), "-o", str(run_dir), "--overwrite"]) == 2
        line = error_line(capsys)
        assert f"in use by pid {first.pid}" in line and "wait for it or stop it" in line, line
        assert main(["run", "--resume", str(run_dir)]) == 2
        assert f"in use by pid {first.pid}" in error_line(capsys)
        assert sorted(p.name for p in run_dir.iterdir()) == before  # the running run is untouched
    finally:
        stop(first)
    assert not rundir.lock_path(run_dir).exists()  # released and removed when its holder ended


@pytest.mark.slow
def test_a_second_comparison_into_one_directory_is_refused(tmp_path, world_clip_dir, capsys):
    out = tmp_path / "cmp"
    first = spawn("compare", *quick_args(world_clip_dir, *LONG), "--methods", "finetune", "-o", str(out))
    try:
        wait_for(lambda: rundir.lock_path(out).exists() and (out / "finetune" / "log.jsonl").exists(), first)
        assert main(["compare", *quick_args(world_clip_dir), "--methods", "finetune", "-o", str(out)]) == 2
        assert f"in use by pid {first.pid}" in error_line(capsys)
    finally:
        stop(first)


@pytest.mark.slow
def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    directory = tmp_path / "run"
    code = f"from pathlib import Path; from vlcl.engine.rundir import hold; import time\nwith hold(Path({str(directory)!r})):\n    print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(rundir.RunDirError, match=f"in use by pid {holder.pid}"):
        with rundir.hold(directory):
            pass
    holder.kill()
    holder.wait()
    with rundir.hold(directory):  # the OS released the flock of the dead process
        pass


@pytest.mark.slow
def test_compare_workers_die_with_their_parent(tmp_path, world_clip_dir):
    out = tmp_path / "cmp"
    parent = spawn("compare", *quick_args(world_clip_dir, *LONG), "--methods", "finetune,lwf", "--jobs", "2", "-o", str(out))
    try:
        wait_for(lambda: (out / "finetune" / "log.jsonl").exists() and (out / "lwf" / "log.jsonl").exists(), parent, 180)
        workers = [p for p in psutil.Process(parent.pid).children(recursive=True)]
        assert len(workers) >= 2
        parent.kill()
        parent.wait()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        for p in psutil.Process().children(recursive=True):
            p.kill()


def test_compare_refuses_a_run_directory(world_clip_dir, capsys, tmp_path):
    finished_run = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir, "data.tasks=[sketch]", "train.epochs=1"), "-o", str(finished_run)]) == 0
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    assert main(["compare", "--methods", "finetune", "-o", str(finished_run)]) == 2
    assert "is the directory of a vlcl run, not a comparison directory" in error_line(capsys)
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before


def test_a_start_stopped_before_its_first_checkpoint_runs_again_with_the_same_command(tmp_path, world_clip_dir, capsys):
    run_dir = tmp_path / "run"
    args = ["run", *quick_args(world_clip_dir, "data.tasks=[sketch]", "train.epochs=1"), "-o", str(run_dir)]
    assert main(args) == 0
    for path in [run_dir / "results.json", run_dir / "metrics.csv"]:  # as a start refused at decode time leaves it
        path.unlink()
    import shutil

    shutil.rmtree(run_dir / "checkpoints")
    capsys.readouterr()
    assert main(args) == 0
    assert "starting it again" in capsys.readouterr().err
    assert (run_dir / "results.json").is_file()


def test_a_different_command_on_a_stopped_start_is_still_refused(tmp_path, world_clip_dir, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir, "data.tasks=[sketch]", "train.epochs=1"), "-o", str(run_dir)]) == 0
    (run_dir / "results.json").unlink()
    import shutil

    shutil.rmtree(run_dir / "checkpoints")
    assert main(["run", *quick_args(world_clip_dir, "data.tasks=[sketch]", "train.epochs=2"), "-o", str(run_dir)]) == 2
    assert "already exists" in error_line(capsys)


@pytest.mark.parametrize(("argv", "message"), [
    (["compare", "--methods", "finetune[method.name=lora]"], r"sets method.name inside its brackets"),
    (["compare", "--methods", "finetune[train.lr=1e-3;method.name=lora]"], r"sets method.name inside its brackets"),
    (["run", "train.lr=[1e-4,0]"], r"train\.lr\[1\]"),
    (["run", "train.lr=[1e-4,-1]"], r"train\.lr\[1\]"),
    (["run", "train.betas=[0.9,1.5]"], r"element 1 is 1\.5"),
])
def test_bad_values_are_refused_naming_the_element(argv, message, tmp_path, capsys):
    assert main([*argv, "-o", str(tmp_path / "out")]) == 2
    line = error_line(capsys)
    assert __import__("re").search(message, line), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stored", [{"metrics": {}}, {"metrics": {"retrieval": {"x": {}}, "alignment": {}, "zeroshot": {}}},
                                    {"metrics": {"retrieval": {}, "alignment": {}, "zeroshot": {"z": {"top1": "high"}}}}, [1, 2]])
def test_an_invalid_stored_pretrained_row_is_evaluated_again(stored, tmp_path):
    from vlcl.engine.shared_eval import read_shared

    key = "k" * 64
    said: list[str] = []
    (tmp_path / f"pretrained-{key}.json").write_text(json.dumps({"key": key, **stored} if isinstance(stored, dict) else stored))
    paths = list(tmp_path.iterdir())
    assert read_shared(tmp_path, key, said.append) is None
    assert len(said) == 1 and str(paths[0]) in said[0], said


@pytest.mark.parametrize("again", ["same-command", "resume"])
def test_a_start_stopped_by_an_undecodable_image_runs_again_once_the_image_is_fixed(again, tmp_path, world_clip_dir, capsys):
    """The issue's case itself: an image whose header reads but whose pixels do not (found only at decode time)
    stops the run after config.yaml, data_fingerprint.json and log.jsonl are written. Once the user fixes the
    image, the same command starts the run again (not 'already exists'), and so does --resume (not 'the data
    differs'): the run had nothing to resume."""
    from test_degenerate import class_folders, folders_run

    root = class_folders(tmp_path / "data", ["circle", "square"])
    image = root / "digits" / "train" / "circle" / "0.png"
    intact = image.read_bytes()
    image.write_bytes(intact[:60])  # the PNG header and the start of its pixels
    run_dir = tmp_path / "run"
    args = folders_run(world_clip_dir, root, run_dir)
    assert main(args) != 0
    assert "0.png" in error_line(capsys)
    assert (run_dir / "config.yaml").is_file() and (run_dir / "data_fingerprint.json").is_file()
    assert rundir.nothing_to_resume(run_dir)
    image.write_bytes(intact)
    if again == "same-command":
        assert main(args) == 0
        assert "starting it again" in capsys.readouterr().err
    else:
        assert main(["run", "--resume", str(run_dir)]) == 0
        assert "starting it again on this data" in capsys.readouterr().err
    assert (run_dir / "results.json").is_file()
