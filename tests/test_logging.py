"""log.jsonl and TensorBoard: every step's losses and learning rates, every evaluation, kept across SIGKILL and
--resume (read_log), the same scalars in TensorBoard's event files."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_run import quick_args
from vlcl.app.cli import main
from vlcl.engine.logbook import LOG_FILE, read_log
from vlcl.engine.optim import warmup_cosine

# zscl logs its extra terms (distill, l2); step checkpoints every 5 steps; 2 tasks of 16 and 24 steps.
ARGS = ("method.name=zscl", "train.checkpoint_every_steps=5", "logging.tensorboard=true")
VOLATILE = ("time", "elapsed", "session", "seconds")


def strict_lines(path: Path) -> list[dict]:
    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def comparable(records: list[dict]) -> list[dict]:
    """The step, eval and end records without what differs between two identical runs (clock, session)."""
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records if r["event"] in ("step", "eval", "end")]


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, world_clip_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("logging") / "reference"
    assert main(["run", *quick_args(world_clip_dir, *ARGS), "-o", str(run_dir)]) == 0
    return run_dir


@pytest.mark.slow
def test_steps_match_results_and_the_schedule(reference):
    records = strict_lines(reference / LOG_FILE)
    assert [r["event"] for r in records][:2] == ["start", "eval"] and records[-1]["event"] == "end"
    assert records[0]["resume"] is False and {r["session"] for r in records} == {0}
    results = json.loads((reference / "results.json").read_text())
    config = results["config"]["train"]
    steps = [r for r in records if r["event"] == "step"]
    assert [r["global_step"] for r in steps] == list(range(1, len(steps) + 1))
    for stage in results["stages"][1:]:
        mine = [r for r in steps if r["stage"] == stage["index"]]
        assert [r["stage_name"] for r in mine] == [stage["name"]] * stage["train"]["steps"]
        assert [r["step"] for r in mine] == list(range(1, stage["train"]["steps"] + 1))
        assert [round(r["loss"], 6) for r in mine] == stage["train"]["losses"]
        total = stage["train"]["steps"]
        warmup = int(round(config["warmup_fraction"] * total))
        for r in mine:  # the rate each step used: warm-up, then cosine decay, every group (both towers at train.lr)
            expected = config["lr"] * warmup_cosine(r["step"] - 1, total, warmup, config["min_lr_ratio"])
            assert set(r["lr"]) == {"vision_decay", "vision_no_decay", "text_decay", "text_no_decay"}
            assert all(math.isclose(v, expected, rel_tol=1e-12) for v in r["lr"].values()), (r["step"], r["lr"], expected)
        assert set(mine[-1]["terms"]) == {"clip", "distill", "l2"}  # zscl's terms, from LossOutput.logs
    assert steps[3]["terms"]["distill"] > 0


def test_evaluations_match_metrics_csv(reference):
    evaluations = [r for r in strict_lines(reference / LOG_FILE) if r["event"] == "eval"]
    assert [(r["stage"], r["stage_name"]) for r in evaluations] == [(-1, "pretrained"), (0, "sketch"), (1, "counting")]
    steps = [s["train"]["steps"] for s in json.loads((reference / "results.json").read_text())["stages"][1:]]
    assert steps == [16, 24] and [r["global_step"] for r in evaluations] == [0, 16, 40]
    with open(reference / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for record in evaluations:
        expected = {f"{r['kind']}/{r['set']}/{r['metric']}": float(r["value"]) for r in rows if int(r["stage_index"]) == record["stage"]}
        assert record["metrics"] == expected
    assert {"retrieval/sketch/i2t_R@10", "zeroshot/zs_shape/top1", "alignment/sketch/modality_gap"} <= set(evaluations[0]["metrics"])
    end = strict_lines(reference / LOG_FILE)[-1]
    assert end["summary"] == json.loads((reference / "results.json").read_text())["summary"]


def test_tensorboard_holds_the_same_scalars(reference):
    scalars = tensorboard_scalars(reference / "tensorboard")
    records = strict_lines(reference / LOG_FILE)
    steps = [r for r in records if r["event"] == "step"]
    expected = {
        "train/loss": [(r["global_step"], r["loss"]) for r in steps],
        "train/lr/text_decay": [(r["global_step"], r["lr"]["text_decay"]) for r in steps],
        "train/terms/l2": [(r["global_step"], r["terms"]["l2"]) for r in steps],
    }
    for record in (r for r in records if r["event"] == "eval"):
        for key, value in record["metrics"].items():
            expected.setdefault(f"eval/{key}", []).append((record["global_step"], value))
    assert len(scalars) == 1 + 4 + 3 + len(records[1]["metrics"])  # loss, 4 groups' rates, 3 terms, the metrics
    for tag, points in expected.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in points], tag
        assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) for (_, a), (_, b) in zip(scalars[tag], points)), tag  # float32


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["step:24", "stage_checkpoint_write:1"])  # in task 2 past its step-5 checkpoint; after task 1's evaluation
def test_sigkill_and_resume_reads_as_the_uninterrupted_log(tmp_path, world_clip_dir, reference, fault):
    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-m", "vlcl", "run", *quick_args(world_clip_dir, *ARGS), "-o", str(run_dir)],
        env={**os.environ, "VLCL_FAULT": fault, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    before = (run_dir / LOG_FILE).read_bytes()
    assert main(["run", "--resume", str(run_dir)]) == 0
    after = (run_dir / LOG_FILE).read_bytes()
    assert after.startswith(before)  # appended, nothing rewritten
    records = strict_lines(run_dir / LOG_FILE)
    resumed = [r for r in records if r["event"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["session"] == 1
    point = {"step:24": (1, "counting", 5, 21), "stage_checkpoint_write:1": (0, "sketch", 15, 15)}[fault]
    assert (resumed[0]["stage"], resumed[0]["stage_name"], resumed[0]["step"], resumed[0]["global_step"]) == point
    redone = [r for r in records if r["event"] == "step" and (r["stage"], r["step"]) > point[::2]]
    assert {r["session"] for r in redone} == {0, 1}  # the raw file holds the redone steps twice ...
    assert comparable(read_log(run_dir)) == comparable(strict_lines(reference / LOG_FILE))  # ... read_log once
    assert [r["event"] for r in read_log(run_dir) if r["event"] in ("start", "resume")] == ["start", "start", "resume"]
    # TensorBoard drops the killed session's events past the resume point (purge_step): one value per step again.
    assert tensorboard_scalars(run_dir / "tensorboard")["train/loss"] == tensorboard_scalars(reference / "tensorboard")["train/loss"]


def test_closed_form_method_logs_evaluations_only(tmp_path, world_clip_dir):
    run_dir = tmp_path / "zs"
    assert main(["run", *quick_args(world_clip_dir, "method.name=zeroshot"), "-o", str(run_dir)]) == 0
    records = strict_lines(run_dir / LOG_FILE)
    assert [r["event"] for r in records] == ["start", "eval", "eval", "eval", "end"]
    assert [r["global_step"] for r in records[1:]] == [0, 0, 0, 0]
    assert not (run_dir / "tensorboard").exists()


def test_read_log_drops_what_a_resume_redoes(tmp_path):
    def rec(event, session, **fields):
        return json.dumps({"event": event, "session": session, **fields})

    lines = [
        rec("start", 0), rec("eval", 0, stage=-1), *(rec("step", 0, stage=0, step=s) for s in (1, 2, 3)),
        rec("eval", 0, stage=0), rec("step", 0, stage=1, step=1), '{"event": "step", "sess',  # cut by SIGKILL
        rec("start", 1), rec("resume", 1, stage=0, step=2), rec("step", 1, stage=0, step=3), rec("eval", 1, stage=0),
        rec("step", 1, stage=1, step=1), rec("end", 1),
        rec("start", 2), rec("resume", 2, stage=2, step=0), rec("end", 2),  # a finished run resumed: its end again
    ]
    path = tmp_path / LOG_FILE
    path.write_text("\n".join(lines) + "\n")
    kept = [(r["event"], r["session"], r.get("stage"), r.get("step")) for r in read_log(tmp_path)]
    assert kept == [
        ("start", 0, None, None), ("eval", 0, -1, None), ("step", 0, 0, 1), ("step", 0, 0, 2),
        ("start", 1, None, None), ("resume", 1, 0, 2), ("step", 1, 0, 3), ("eval", 1, 0, None), ("step", 1, 1, 1),
        ("start", 2, None, None), ("resume", 2, 2, 0), ("end", 2, None, None),
    ]
    path.write_text("\n".join([*lines[:3], rec("start", 1), rec("resume", 1, stage=-1, step=0)]) + "\n")  # no checkpoint: from scratch
    assert [r["event"] for r in read_log(path)] == ["start", "start", "resume"]


def test_a_failed_run_ends_its_log_with_a_stop_record(tmp_path, world_clip_dir):
    run_dir = tmp_path / "nan"
    assert main(["run", *quick_args(world_clip_dir, "train.lr=1e30", "train.warmup_fraction=0"), "-o", str(run_dir)]) == 1
    records = strict_lines(run_dir / LOG_FILE)
    assert records[-1]["event"] == "stop" and records[-1]["reason"].startswith("NonFiniteLossError: non-finite loss")
    assert all(math.isfinite(r["loss"]) for r in records if r["event"] == "step")


def test_a_new_kind_of_metric_reaches_metrics_csv_and_the_log_without_being_listed():
    from vlcl.engine.logbook import metric_scalars
    from vlcl.engine.results import flatten_metrics

    metrics = {
        "novel": {"set_a": {"score": 0.5, "label": "not a number"}},
        "retrieval": {"t": {"mean_R@1": 40.0}},
        "seen_classes": {"2": {"aircraft": {"top1": 25.0}}},
    }
    assert flatten_metrics(metrics) == [
        ("retrieval", "t", "mean_R@1", 40.0), ("novel", "set_a", "score", 0.5), ("seen_classes", "2/aircraft", "top1", 25.0),
    ]
    assert metric_scalars(metrics)["novel/set_a/score"] == 0.5


def test_a_session_resumed_within_the_killed_one_s_second_is_read_after_it(tmp_path):
    """TensorBoard orders event files by name (creation second, host, process id): the resumed session's file must
    come after the killed one's even when both were created in the same second by processes whose ids sort the
    other way (the killed session here gets a process id that sorts last)."""
    pytest.importorskip("tensorboard")
    from vlcl.engine.logbook import Logbook

    first = Logbook(tmp_path, append=False, tensorboard=True)
    log = first.step_logger(0, "a", 0)
    for step in (1, 2, 3):
        log(step, 3, float(step), {}, {"all": 0.1})
    first.close()
    (killed,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    parts = killed.name.split(".")
    parts[-2] = "99999999"  # the process id (the host name may hold dots): one that sorts after any other
    killed.rename(killed.with_name(".".join(parts)))

    second = Logbook(tmp_path, append=True, tensorboard=True)
    second.resume(stage=0, stage_name="a", step=2, global_step=2, checkpoint=None)
    log = second.step_logger(0, "a", 0)
    log(3, 3, 30.0, {}, {"all": 0.1})
    second.close()
    assert tensorboard_scalars(tmp_path / "tensorboard")["train/loss"] == [(1, 1.0), (2, 2.0), (3, 30.0)]
