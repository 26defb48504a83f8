"""Progress that can be followed from a file: plain, timestamped lines when the console is not a terminal, and the
estimate of the whole run (vlcl.engine.progress, docs/logging.md "Progress on the console")."""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from vlcl.app.cli import main
from vlcl.engine.progress import RunProgress, StagePlan, duration, run_eta

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] ")
RUN_ETA = re.compile(r"run ETA >?(\d+h\d\dm|\d+m\d\ds|\d+(\.\d)?s)$")


def vlcl(args: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """``vlcl ARGS > log 2>&1``, as a user follows a run from a file."""
    with open(log, "wb") as out:
        return subprocess.run(
            [sys.executable, "-m", "vlcl", *args], stdout=out, stderr=subprocess.STDOUT, timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **(env or {})},
        ).returncode


def assert_plain(text: str) -> None:
    assert "\x1b" not in text, "an ANSI escape code in a file"
    assert "\r" not in text
    assert not any(line.strip() == "" for line in text.rstrip("\n").split("\n")), "a blank line in a file"


def task_lines(text: str, task: str) -> list[str]:
    return [line for line in text.splitlines() if LINE.match(line) and f"] {task} " in line]


@pytest.mark.slow
def test_a_run_piped_to_a_file_prints_plain_progress_lines_and_the_table(tmp_path, world_clip_dir):
    from test_run import quick_args

    log = tmp_path / "run.log"
    assert vlcl(["run", *quick_args(world_clip_dir), "-o", str(tmp_path / "run")], log) == 0
    text = log.read_text(encoding="utf-8")
    assert_plain(text)
    for task, steps in (("task 1/2 sketch", 16), ("task 2/2 counting", 24)):
        lines = task_lines(text, task)
        assert any(f"started: {steps} steps" in line for line in lines), lines
        finished = [line for line in lines if f"trained: {steps} steps in " in line]
        assert len(finished) == 1 and RUN_ETA.search(finished[0]), lines
    evaluations = [line for line in text.splitlines() if LINE.match(line) and "] eval " in line]
    assert len(evaluations) == 3 and evaluations[-1].endswith("eval after task 2/2 counting  7 sets in " + evaluations[-1].split(" in ")[1])
    assert evaluations[-1].endswith("run ETA 0.0s")  # nothing left
    assert "finetune on embedded" in text and "┏" in text and "results: " in text  # the final table, after the lines
    assert text.index("finetune on embedded") > text.index("eval after task 2/2 counting")


@pytest.mark.slow
def test_the_interval_setting_is_honoured(tmp_path, world_clip_dir, capsys):
    from test_run import quick_args

    run_dir = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir, "logging.progress_interval_s=0"), "-o", str(run_dir)]) == 0
    err = capsys.readouterr().err  # captured: not a terminal
    assert_plain(err)
    stages = json.loads((run_dir / "results.json").read_text())["stages"][1:]
    for index, stage in enumerate(stages):
        steps = stage["train"]["steps"]
        lines = [line for line in task_lines(err, f"task {index + 1}/2 {stage['name']}") if " step " in line]
        # 0 s: a line after every step but the last (the task's end line says it)
        assert [int(re.search(r" step (\d+)/", line).group(1)) for line in lines] == list(range(1, steps))
        assert all(f"/{steps} (" in line and " loss " in line and "task ETA " in line and RUN_ETA.search(line) for line in lines)
    assert main(["run", *quick_args(world_clip_dir, "logging.progress_interval_s=3600"), "-o", str(tmp_path / "hour")]) == 0
    assert " step " not in capsys.readouterr().err  # an hour: only the start and end lines of these short tasks


def test_a_negative_interval_is_refused(tmp_path, capsys):
    assert main(["run", "logging.progress_interval_s=-1", "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "'logging.progress_interval_s': Input should be greater than or equal to 0 (got -1)" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_run_eta_is_the_remaining_steps_at_the_measured_rate_plus_the_remaining_evaluations():
    # 10 steps in 5 s: 0.5 s a step; 30 steps left and 2 evaluations of 1.5 s
    assert run_eta(steps_done=10, step_seconds=5.0, steps_left=30, evaluations_left=2, evaluation_seconds=1.5) == 18.0
    assert run_eta(steps_done=4, step_seconds=2.0, steps_left=0, evaluations_left=1, evaluation_seconds=3.0) == 3.0
    assert run_eta(steps_done=0, step_seconds=0.0, steps_left=0, evaluations_left=0, evaluation_seconds=None) == 0.0
    assert run_eta(steps_done=0, step_seconds=0.0, steps_left=5, evaluations_left=1, evaluation_seconds=2.0) is None  # no step timed
    assert run_eta(steps_done=3, step_seconds=1.0, steps_left=5, evaluations_left=1, evaluation_seconds=None) is None  # no evaluation timed
    assert run_eta(steps_done=3, step_seconds=1.5, steps_left=6, evaluations_left=0, evaluation_seconds=None) == 3.0
    assert [duration(s) for s in (None, 0.04, 3.44, 42.4, 465, 3720)] == ["?", "0.0s", "3.4s", "42s", "7m45s", "1h02m"]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_follow_the_clock_and_carry_the_run_estimate():
    """Two tasks of 10 steps, 7 s a step, evaluations of 4 s, lines every 28 s: the line at step 4 (28 s in) says
    6 steps x 7 s left in the task, and 16 steps x 7 s + 2 evaluations x 4 s in the run."""
    out, clock = io.StringIO(), FakeClock()
    progress = RunProgress(Console(file=out, width=80), interval_s=28, clock=clock)
    progress.plan([StagePlan(0, "sketch", 10, True), StagePlan(1, "counting", 10, True)], stage_count=2)
    with progress.evaluation("pretrained", 3):
        clock.now += 4
    progress.begin_stage(0)
    with progress.training("sketch", total=10, done=0, steps_per_epoch=4) as bar:
        for step in range(10):
            clock.now += 7
            bar.step(2.0 - step / 10)
    text = out.getvalue()
    assert_plain(text)
    lines = [line[11:] for line in text.splitlines()]
    assert lines == [
        "eval pretrained  3 sets in 4.0s  run ETA ?",
        "task 1/2 sketch  started: 10 steps (4 per epoch)  run ETA ?",
        "task 1/2 sketch  epoch 1/3  step 4/10 (40%)  loss 1.7  task ETA 42s  run ETA 2m00s",  # 16 x 7 + 2 x 4 = 120
        "task 1/2 sketch  epoch 2/3  step 8/10 (80%)  loss 1.3  task ETA 14s  run ETA 1m32s",  # 12 x 7 + 2 x 4 (28 s later)
        "task 1/2 sketch  trained: 10 steps in 1m10s  loss 1.1  run ETA 1m18s",  # 10 x 7 + 2 x 4
    ]
    with progress.evaluation("sketch", 3):
        clock.now += 6  # the estimate takes the last evaluation's time
    assert text.count("\n") + 1 == out.getvalue().count("\n")
    assert out.getvalue().splitlines()[-1][11:] == "eval after task 1/2 sketch  3 sets in 6.0s  run ETA 1m16s"  # 10 x 7 + 6


def test_before_any_evaluation_is_timed_the_estimate_is_the_steps_alone_marked_as_a_lower_bound():
    """A comparison's run that read its pre-trained row from the shared store has timed no evaluation yet."""
    out, clock = io.StringIO(), FakeClock()
    progress = RunProgress(Console(file=out, width=80), interval_s=0, clock=clock)
    progress.plan([StagePlan(0, "sketch", 4, True), StagePlan(1, "counting", 4, True)], stage_count=2)
    progress.begin_stage(0)
    with progress.training("sketch", total=4, done=0, steps_per_epoch=4) as bar:
        for _ in range(4):
            clock.now += 5
            bar.step(1.0)
    with progress.evaluation("sketch", 2):
        clock.now += 3
    lines = out.getvalue().splitlines()
    assert lines[1].endswith("step 1/4 (25%)  loss 1  task ETA 15s  run ETA >35s")  # 7 steps x 5 s, evaluations unknown
    assert lines[-2].endswith("trained: 4 steps in 20s  loss 1  run ETA >20s")
    assert lines[-1].endswith("eval after task 1/2 sketch  2 sets in 3.0s  run ETA 23s")  # 4 x 5 s + 3 s: timed now


@pytest.mark.slow
def test_a_resumed_run_estimates_from_the_resumed_task(tmp_path, world_clip_dir, capsys, monkeypatch):
    from test_run import quick_args

    run_dir = tmp_path / "run"
    args = quick_args(world_clip_dir, "train.checkpoint_every_steps=5")
    # killed at the 11th step of counting (16 steps of sketch before it): resumed from its step 10
    assert vlcl(["run", *args, "-o", str(run_dir)], tmp_path / "killed.log", env={"VLCL_FAULT": "step:27"}) == -9
    plans = []
    original = RunProgress.plan
    monkeypatch.setattr(RunProgress, "plan", lambda self, *a, **k: (plans.append((a, k)), original(self, *a, **k))[1])
    assert main(["run", "--resume", str(run_dir)]) == 0
    (stages, count, measured), _ = plans[0]
    assert stages == [StagePlan(1, "counting", 14, True)] and count == 2  # 24 planned, 10 done before the kill
    records = json.loads((run_dir / "results.json").read_text())["stages"]
    assert measured == records[1]["eval_seconds"] > 0  # the earlier session's evaluation time, until one is measured
    err = capsys.readouterr().err
    assert_plain(err)
    assert "task 1/2" not in err and "task 2/2 counting  started: 24 steps (12 per epoch), from step 10" in err
    assert RUN_ETA.search(task_lines(err, "task 2/2 counting")[-1])


@pytest.mark.slow
def test_compare_logs_get_plain_lines_and_the_parent_says_which_runs_are_going(tmp_path, world_clip_dir, capsys):
    from test_run import quick_args

    out = tmp_path / "cmp"
    argv = ["compare", *quick_args(world_clip_dir, "train.max_steps_per_task=3"), "--methods", "zeroshot,finetune", "-o", str(out), "--jobs", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"finetune: started \(running: [a-z, ]*finetune[a-z, ]*; progress: .*compare\.log\)", err)
    log = (out / "finetune" / "compare.log").read_text(encoding="utf-8")
    assert_plain(log)
    for task in ("task 1/2 sketch", "task 2/2 counting"):
        assert any("trained: 3 steps" in line and RUN_ETA.search(line) for line in task_lines(log, task))
    assert (out / "finetune" / "results.json").is_file()
