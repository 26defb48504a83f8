"""Stream mode at the engine level (``data.stream=online``; vlcl.engine.stream, vlcl.data.online): `vlcl run` on the
tiny CLIP, with a spy method registered from this file (finetune that records every call the engine makes).

* every training sample is trained on in exactly one incoming batch, ``train.online_iters`` steps in a row, then
  shown to ``observe_batch`` once; the batches are the stream's, and what is not in the stream is exactly what the
  Si-Blurry split dropped (sharp and Si-Blurry streams of the classification benchmark);
* ``begin_task`` and ``end_task`` once for the whole stream (stage ``stream``), never per hidden task;
* a method that needs task boundaries is refused in one line before anything is written;
* the evaluation points: the first batch at or past every ``eval.every_samples`` and each hidden task's last batch;
  A_auc/A_avg/A_last/F_last recomputed from the recorded points with vlcl.metrics.stream; the classes (or, for a
  caption stream, the tasks) scored grow along the stream;
* the optimiser is rebuilt at each hidden task's start when ``stream.reset_optimizer`` (AdamW's step count restarts),
  built once when not;
* killed with SIGKILL mid-stream after an in-stream checkpoint and resumed: the stream's points, A_auc and the final
  model equal the uninterrupted run's (slow; finetune, lora, replay and wise_ft);
* which seed decides the stream's order: vlcl.seeds.stream_seed(seed, data.seed), so the run seeds of a comparison
  are different streams of the same data, unless ``stream.seed`` holds one stream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from statistics import fmean

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vlcl.engine.loop as engine_loop
import vlcl.engine.stream as engine_stream
import vlcl.methods.registry as method_registry
from vlcl.app.cli import main
from vlcl.config import StreamConfig, load_config
from vlcl.data.benchmarks.embedded_cls import build_embedded_cls
from vlcl.data.online import build_stream
from vlcl.engine.loop import ContinualRunner
from vlcl.methods import list_methods, method_class, register_method
from vlcl.methods.finetune import FineTune
from vlcl.metrics.stream import stream_summary
from vlcl.seeds import stream_seed

CLS_TASKS = "data.tasks=[new_shapes,sketch,counting]"  # 4 + 7 + 4 = 15 classes, 110 training images at this scale
CAPTION_TASKS = "data.tasks=[sketch,counting,new_shapes]"
ITERS = 2
EVERY = 24


def stream_args(clip_dir: Path, *extra: str) -> list[str]:
    """A tiny classification stream: 3 tasks, batches of 8, 2 steps per batch, a point every 24 samples."""
    return [
        f"model.path={clip_dir}", "data.benchmark=embedded_cls", CLS_TASKS, "data.stream=online", "data.train_scale=0.02",
        "data.test_images=12", "data.zeroshot_per_class=2", "train.batch_size=8", f"train.online_iters={ITERS}",
        f"eval.every_samples={EVERY}", "train.lr=0.001", "threads=1", *extra,
    ]


# -- the spy ---------------------------------------------------------------------------

CALLS: list[tuple] = []
"""What the spy saw, in order: ("begin_task", stage, data), ("step", step, positions, labels), ("after_step", step),
("observe", positions), ("end_task", stage)."""


class StreamSpy(FineTune):
    name = "stream_spy"
    description = "finetune recording the engine's calls on a stream (tests/test_stream_engine.py)"
    needs_task_boundaries = False

    def begin_task(self, stage, data):
        CALLS.append(("begin_task", stage, data))
        super().begin_task(stage, data)

    def training_loss(self, batch, step):
        labels = batch.labels.tolist() if getattr(batch, "labels", None) is not None else None
        CALLS.append(("step", step, batch.sample_index.tolist(), labels))
        return super().training_loss(batch, step)

    def after_optimizer_step(self, step):
        CALLS.append(("after_step", step))

    def observe_batch(self, data, indices):
        CALLS.append(("observe", indices.tolist()))

    def end_task(self, stage):
        CALLS.append(("end_task", stage))
        super().end_task(stage)


@dataclasses.dataclass
class StreamRun:
    run_dir: Path
    results: dict
    stream: object  # the OnlineStream the engine built
    trains: list  # the tasks' training data it was built from
    calls: list


@pytest.fixture
def spy_registered(monkeypatch):
    list_methods()  # the built-in methods found first: the copy holds them
    monkeypatch.setattr(method_registry, "_REGISTRY", dict(method_registry._REGISTRY))
    register_method(StreamSpy)


@pytest.fixture
def captured(monkeypatch):
    """The streams the engine builds in this test (with the training data each was built from)."""
    built: list[tuple] = []

    def spying_build_stream(benchmark, stream, batch_size, seed, trains=None):
        result = build_stream(benchmark, stream, batch_size, seed, trains=trains)
        built.append((result, trains))
        return result

    monkeypatch.setattr(engine_loop, "build_stream", spying_build_stream)
    return built


def run_stream(run_dir: Path, clip_dir: Path, captured: list, *extra: str) -> StreamRun:
    CALLS.clear()
    assert main(["run", *stream_args(clip_dir, *extra), "-o", str(run_dir)]) == 0
    (stream, trains), = captured[-1:]
    return StreamRun(run_dir, json.loads((run_dir / "results.json").read_text()), stream, trains, list(CALLS))


_SPIED: dict[str, StreamRun] = {}

SPIED_STREAMS = {
    "sharp": ["stream.boundaries=sharp"],
    "si_blurry": ["stream.boundaries=si_blurry", "stream.tasks=4"],  # 4 hidden tasks of 15 classes: 3 classes dropped
    "si_blurry_fixed": ["stream.boundaries=si_blurry", "stream.tasks=4", "stream.random_sizes=false"],  # + moved samples dropped
}


@pytest.fixture
def spied(tmp_path_factory, world_clip_dir, spy_registered, captured):
    """The spy's run of a stream of :data:`SPIED_STREAMS`, made once per stream for the tests that read it."""

    def run(kind: str) -> StreamRun:
        if kind not in _SPIED:
            _SPIED[kind] = run_stream(tmp_path_factory.mktemp(f"spy-{kind}") / "run", world_clip_dir, captured,
                                      "method.name=stream_spy", *SPIED_STREAMS[kind])
        return _SPIED[kind]

    return run


def _image_key(images, row: int) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(images[[row]])).tobytes()).hexdigest()


def _sample_keys(data, rows) -> Counter:
    """A multiset of samples by content (image bytes and captions), to match stream rows with training rows."""
    return Counter((_image_key(data.images, r), tuple(data.captions[r])) for r in rows)


# -- 1. every sample once, online_iters steps, observe_batch after -----------------------------------


@pytest.mark.parametrize("kind", list(SPIED_STREAMS))
def test_every_training_sample_is_trained_once_in_one_batch(kind, spied):
    run = spied(kind)
    stream, calls = run.stream, run.calls
    inner = [c for c in calls if c[0] in ("step", "after_step", "observe")]
    # the engine's exact call sequence: per incoming batch, online_iters x (loss, optimiser step), then observe_batch
    expected, step = [], 0
    for batch in stream.batches:
        for _ in range(ITERS):
            expected += [("step", step, batch), ("after_step", step)]
            step += 1
        expected.append(("observe", batch))
    assert [c[:3] for c in inner] == expected
    # each batch's labels are the stream's labels of its positions
    labels = stream.data.labels
    assert all(c[3] == labels[c[2]].tolist() for c in inner if c[0] == "step")
    # each stream position in exactly one incoming batch; every position of the stream is trained on
    positions = [p for batch in stream.batches for p in batch]
    assert sorted(positions) == list(range(len(stream.data))) and len(set(positions)) == len(positions)
    assert positions == list(range(len(stream.data)))  # the batches are consecutive runs of the stream
    # what is not in the stream is what the split dropped (describe() and results.json agree)
    shape = stream.describe()
    total = sum(len(t) for t in run.trains)
    assert len(stream.data) + shape["dropped_samples"] == total
    recorded = run.results["stream"]
    assert {k: recorded[k] for k in shape} == shape
    assert recorded["samples"] == len(stream.data) and recorded["batches"] == len(stream.batches)
    assert sum(recorded["task_sizes"]) == len(stream.data)
    # by content: the stream's samples are the training samples, each once, less exactly dropped_samples of them
    source = np.asarray(stream.source_tasks)
    for k, train in enumerate(run.trains):
        in_stream = _sample_keys(stream.data, np.flatnonzero(source == k).tolist())
        in_task = _sample_keys(train, range(len(train)))
        assert not in_stream - in_task, f"task {k}: stream samples that are not its training samples"
    dropped = sum((_sample_keys(t, range(len(t))) for t in run.trains), Counter()) - _sample_keys(stream.data, range(len(stream.data)))
    assert sum(dropped.values()) == shape["dropped_samples"]
    if kind == "sharp":
        assert shape["dropped_samples"] == 0
        assert all(set(source[b]) == {stream.batch_tasks[i]} for i, b in enumerate(stream.batches))  # task k = task k
    else:
        assert shape["dropped_samples"] > 0  # the case is meant to exercise the drops
    task_of = np.repeat(np.arange(len(shape["task_sizes"])), shape["task_sizes"])  # each position's hidden task
    assert all(set(task_of[b]) == {stream.batch_tasks[i]} for i, b in enumerate(stream.batches))  # never straddling


# -- 2. one begin_task / end_task for the whole stream ------------------------------------------------


@pytest.mark.parametrize("kind", ["sharp", "si_blurry"])
def test_no_begin_or_end_task_per_hidden_task(kind, spied):
    run = spied(kind)
    stream, calls = run.stream, run.calls
    assert len({t for t in stream.batch_tasks}) >= 3  # >= 3 hidden tasks with samples
    begins = [c for c in calls if c[0] == "begin_task"]
    ends = [c for c in calls if c[0] == "end_task"]
    assert len(begins) == 1 and len(ends) == 1
    stage, data = begins[0][1], begins[0][2]
    assert stage.name == "stream" and stage.index == 0 and stage.task_indices == (0, 1, 2)
    assert data is stream.data
    assert ends[0][1] == stage
    assert calls[0][0] == "begin_task" and calls[-1][0] == "end_task" and calls[-2][0] == "observe"
    assert [s["name"] for s in run.results["stages"]] == ["pretrained", "stream"]


# -- 3. a method that needs task boundaries is refused ------------------------------------------------


@pytest.mark.parametrize("name", ["ewc", "lwf"])
def test_a_method_that_needs_task_boundaries_is_refused_before_writing(name, tmp_path, world_clip_dir, capsys):
    assert method_class(name).needs_task_boundaries
    run_dir = tmp_path / "run"
    assert main(["run", *stream_args(world_clip_dir, f"method.name={name}"), "-o", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"method '{name}' needs task boundaries" in err and "data.stream=online" in err, err
    able = [m for m in list_methods() if not method_class(m).needs_task_boundaries]
    assert {"finetune", "lora"} <= set(able)
    assert err.endswith("methods that work without them: " + ", ".join(able)), err
    assert not run_dir.exists() or not any(run_dir.iterdir())


# -- 4. evaluation points and the stream's summary ------------------------------------------------------


def expected_points(batches: list[list[int]], batch_tasks: list[int], every: int) -> dict[int, tuple[bool, bool]]:
    """batch -> (periodic, task_end), written out from the definition: the first batch at or past each multiple
    of ``every`` samples; the last batch of each hidden task."""
    cumulative = np.cumsum([len(b) for b in batches])
    periodic = {int(np.argmax(cumulative >= k * every)) for k in range(1, int(cumulative[-1]) // every + 1)}
    ends = {b for b in range(len(batches)) if b + 1 == len(batches) or batch_tasks[b + 1] != batch_tasks[b]}
    return {b: (b in periodic, b in ends) for b in sorted(periodic | ends)}


def recomputed_summary(points: list[dict]) -> dict:
    ends = [p for p in points if p["task_end"]]
    units = list(dict.fromkeys(u for p in ends for u in p["per_unit"]))
    rows = [[p["per_unit"].get(u) for u in units] for p in ends]
    return stream_summary([p["score"] for p in points if p["periodic"]], [p["score"] for p in ends], rows)


@pytest.mark.parametrize("kind", ["sharp", "si_blurry"])
def test_evaluation_points_and_summary_of_a_classification_stream(kind, spied):
    run = spied(kind)
    stream, section = run.stream, run.results["stream"]
    points = section["points"]
    want = expected_points(stream.batches, stream.batch_tasks, EVERY)
    assert [p["batch"] for p in points] == list(want)
    assert [(p["periodic"], p["task_end"]) for p in points] == list(want.values())
    assert sum(p["task_end"] for p in points) == len(set(stream.batch_tasks))
    for p in points:
        assert p["samples"] == sum(len(b) for b in stream.batches[: p["batch"] + 1])
        assert p["task"] == stream.batch_tasks[p["batch"]]
        assert 0.0 <= p["score"] <= 100.0
    assert section["online_iters"] == ITERS and section["every_samples"] == EVERY
    # A_auc, A_avg, A_last, F_last: vlcl.metrics.stream on the recorded points
    summary = recomputed_summary(points)
    assert section["summary"] == summary and run.results["summary"]["stream"] == summary
    assert summary["A_auc"] == pytest.approx(fmean(p["score"] for p in points if p["periodic"]))
    assert summary["A_last"] == [p["score"] for p in points if p["task_end"]][-1]
    # the classes seen so far: the distinct labels of the stream up to the point's batch, growing to all
    seen = [len(set(stream.data.labels[: p["samples"]].tolist())) for p in points]
    assert [len(p["per_unit"]) for p in points] == seen
    assert [sorted(map(int, p["per_unit"])) for p in points] == [list(range(n)) for n in seen]
    assert seen == sorted(seen) and seen[0] < seen[-1] == section["classes"] == len(stream.class_keys)


def test_evaluation_points_of_a_caption_stream(tmp_path, world_clip_dir, captured):
    args = [a for a in stream_args(world_clip_dir, "data.benchmark=embedded", CAPTION_TASKS, "stream.boundaries=sharp")
            if a not in ("data.benchmark=embedded_cls", CLS_TASKS)]
    args = [a.replace("data.train_scale=0.02", "data.train_scale=0.01") for a in args]
    assert main(["run", *args, "-o", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    (stream, _), = captured
    section = results["stream"]
    assert section["boundaries"] == "sharp" and section["classes"] is None and not stream.classification
    assert section["hidden_tasks"] == ["sketch", "counting", "new_shapes"] and section["metric"] == "mean_R@1"
    points = section["points"]
    want = expected_points(stream.batches, stream.batch_tasks, EVERY)
    assert [(p["batch"], p["periodic"], p["task_end"]) for p in points] == [(b, *kind) for b, kind in want.items()]
    names = section["hidden_tasks"]
    for p in points:  # retrieval on the tasks whose pairs the stream has shown so far (sharp: tasks 0..p's task)
        assert list(p["per_unit"]) == names[: p["task"] + 1]
        assert all(0.0 <= v <= 100.0 for v in p["per_unit"].values())
        assert p["score"] == pytest.approx(fmean(p["per_unit"].values()))
    scored = [len(p["per_unit"]) for p in points]
    assert scored == sorted(scored) and scored[0] == 1 and scored[-1] == 3
    assert section["summary"] == recomputed_summary(points)


# -- 5. the optimiser at hidden task boundaries ------------------------------------------------------------


@pytest.mark.parametrize("reset", [True, False])
def test_the_optimiser_is_reset_at_hidden_task_boundaries(reset, tmp_path, world_clip_dir, captured, monkeypatch):
    built, real = [], engine_stream.build_optimizer

    def counting_build_optimizer(groups, train):
        built.append(real(groups, train))
        return built[-1]

    monkeypatch.setattr(engine_stream, "build_optimizer", counting_build_optimizer)
    run = run_stream(tmp_path / "run", world_clip_dir, captured, "stream.boundaries=si_blurry", f"stream.reset_optimizer={str(reset).lower()}")
    stream = run.stream
    tasks = list(dict.fromkeys(stream.batch_tasks))
    assert len(tasks) >= 3
    per_task = [ITERS * stream.batch_tasks.count(t) for t in tasks]  # steps each hidden task takes

    def steps_of(optimizer):
        counts = {int(state["step"]) for state in optimizer.state.values()}
        assert len(counts) == 1, counts  # every parameter stepped alike
        return counts.pop()

    if reset:
        assert len(built) == len(tasks)  # one AdamW per hidden task: moments and step count start again
        assert [steps_of(o) for o in built] == per_task
    else:
        assert len(built) == 1
        assert steps_of(built[0]) == sum(per_task) == run.results["stages"][1]["train"]["steps"]


# -- 6. resumable mid-stream ---------------------------------------------------------------------------------

KILL_STEP = 19  # of 30 steps (15 batches x 2): after the in-stream checkpoint at step 16, in the middle of the second hidden task


def _final_model(run_dir: Path) -> dict[str, torch.Tensor]:
    pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    return load_file(run_dir / "checkpoints" / pointer["path"] / "model" / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, options",
    [("finetune", ()), ("lora", ("method.integration=1",)), ("replay", ("method.buffer_size=20", "method.replay_batch_size=4")),
     ("wise_ft", ())],
)
def test_sigkill_mid_stream_then_resume_equals_the_uninterrupted_run(name, options, tmp_path, world_clip_dir):
    args = stream_args(world_clip_dir, f"method.name={name}", *options, "stream.boundaries=si_blurry", "stream.seed=0", "train.checkpoint_every_steps=4")
    reference = tmp_path / "reference"
    assert main(["run", *args, "-o", str(reference)]) == 0
    expected = json.loads((reference / "results.json").read_text())
    assert expected["stream"]["batches"] * ITERS == 30
    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-m", "vlcl", "run", *args, "-o", str(run_dir)],
        env={**os.environ, "VLCL_FAULT": f"step:{KILL_STEP}"}, capture_output=True, text=True, timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert pointer.get("step") == 16, pointer  # killed inside the stream, after an in-stream checkpoint
    assert not (run_dir / "results.json").exists() or "stream" not in json.loads((run_dir / "results.json").read_text())
    assert main(["run", "--resume", str(run_dir)]) == 0
    resumed = json.loads((run_dir / "results.json").read_text())
    assert resumed["stream"] == expected["stream"]  # every point, its scores, the shape, A_auc/A_avg/A_last/F_last
    assert resumed["summary"] == expected["summary"]
    assert resumed["stages"][1]["train"]["losses"] == expected["stages"][1]["train"]["losses"]
    assert resumed["matrices"] == expected["matrices"]
    want, got = _final_model(reference), _final_model(run_dir)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


# -- 7. the stream's seed --------------------------------------------------------------------------------------


def _prepared_stream(tmp_path: Path, clip_dir: Path, *extra: str):
    config = load_config(None, [*stream_args(clip_dir, *extra), "stream.boundaries=si_blurry"])
    return ContinualRunner(config, tmp_path / "unused").prepare().stream


def _order(stream) -> tuple:
    """The stream's samples in order, by content, and its cut into hidden tasks and batches."""
    images = np.asarray(stream.data.images[list(range(len(stream.data)))])
    return (hashlib.sha1(images.tobytes()).hexdigest(), stream.source_tasks, stream.batches, stream.batch_tasks)


def test_build_streams_seed_decides_the_order():
    """The order is drawn from build_stream's ``seed`` (the engine passes vlcl.seeds.stream_seed(seed, data.seed), or stream.seed); the same seed, the same stream."""
    benchmark = build_embedded_cls(tasks=["new_shapes", "sketch", "counting"], train_scale=0.02, test_images=12, zeroshot_per_class=2)
    for boundaries in ("sharp", "si_blurry"):
        options = StreamConfig(boundaries=boundaries)
        first, again, other = (build_stream(benchmark, options, 8, seed) for seed in (0, 0, 1))
        assert _order(first) == _order(again)
        assert _order(first)[0] != _order(other)[0]  # another order
        if boundaries == "sharp":  # of the same samples, in the same tasks
            assert _sample_keys(first.data, range(len(first.data))) == _sample_keys(other.data, range(len(other.data)))
            assert first.source_tasks == other.source_tasks


def test_the_engine_draws_the_stream_from_the_run_seed_and_data_seed(tmp_path, world_clip_dir, captured):
    stream = _prepared_stream(tmp_path, world_clip_dir, "data.seed=3", "seed=2")
    (built, trains), = captured
    assert built is stream
    benchmark = build_embedded_cls(tasks=["new_shapes", "sketch", "counting"], seed=3, train_scale=0.02, test_images=12, zeroshot_per_class=2)
    rebuilt = build_stream(benchmark, StreamConfig(boundaries="si_blurry"), 8, stream_seed(2, 3), trains=trains)
    assert _order(rebuilt) == _order(stream)


def test_run_seed_changes_the_stream(tmp_path, world_clip_dir):
    """The seeds of a comparison are different streams of the same data, as the authors' seeds 1-5 are."""
    first = _prepared_stream(tmp_path, world_clip_dir, "seed=0")
    second = _prepared_stream(tmp_path, world_clip_dir, "seed=1")
    assert _order(first) != _order(second)


def test_stream_seed_holds_one_stream_across_run_seeds(tmp_path, world_clip_dir):
    first = _prepared_stream(tmp_path, world_clip_dir, "seed=0", "stream.seed=7")
    second = _prepared_stream(tmp_path, world_clip_dir, "seed=1", "stream.seed=7")
    assert _order(first) == _order(second)


# -- benchmarks/stream_properties.py -----------------------------------------------------------------------------


def test_stream_properties_script_checks_tiny_streams(capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "stream_properties.py"
    spec = importlib.util.spec_from_file_location("stream_properties", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--train-scale", "0.01", "--seeds", "0", "1", "--tasks", "default", "3", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "embedded_cls as a Si-Blurry stream" in out and "embedded (captions) as a sharp stream" in out
    assert "every check passed" in out and "FAIL" not in out
