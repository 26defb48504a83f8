"""Replay: the reservoir (bound, uniformity), its state, and batches of current plus replayed pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlcl.methods.replay  # noqa: F401  (registers 'replay')
from conftest import tiny_data
from vlcl.engine.checkpoint import read_stage_checkpoint, write_stage_checkpoint
from vlcl.methods import RunContext, Stage, create_method
from vlcl.methods.replay import ReservoirBuffer
from vlcl.models import load_clip
from vlcl.settings import make_batch
from vlcl.models.loading import ClipBundle

STAGES = [Stage(0, "t0", (0,)), Stage(1, "t1", (1,))]


def setup_method(path, **options):
    bundle = load_clip(str(path))
    method = create_method("replay", options)
    method.setup(bundle.model, RunContext(["t0", "t1"], seed=0, bundle=bundle))
    return method, bundle


def numbered(start, count):
    """Images whose pixels hold their stream position, captions that name it."""
    images = np.broadcast_to(np.arange(start, start + count, dtype=np.uint8)[:, None, None, None], (count, 1, 1, 3)).copy()
    return images, [str(i) for i in range(start, start + count)]


def test_defaults():
    opts = create_method("replay").options
    assert (opts.buffer_size, opts.replay_batch_size) == (1000, 32)
    assert "only method that keeps old data" in create_method("replay").description


def test_buffer_is_bounded_and_aligned():
    buffer = ReservoirBuffer(7)
    g = torch.Generator().manual_seed(0)
    for start, count in [(0, 3), (3, 10), (13, 20)]:
        buffer.offer(*numbered(start, count), g)
        assert len(buffer) == min(7, start + count)
    assert buffer.seen == 33
    kept = [int(v) for v in buffer.images[: len(buffer), 0, 0, 0]]
    assert [str(v) for v in kept] == buffer.captions
    assert len(set(kept)) == 7


def test_reservoir_is_a_uniform_sample_of_the_stream():
    stream, capacity, runs = 20, 5, 2000
    counts = np.zeros(stream)
    for seed in range(runs):
        buffer = ReservoirBuffer(capacity)
        g = torch.Generator().manual_seed(seed)
        buffer.offer(*numbered(0, 12), g)  # two offers: positions carry over between tasks
        buffer.offer(*numbered(12, 8), g)
        counts[[int(c) for c in buffer.captions]] += 1
    frequency = counts / runs
    assert np.abs(frequency - capacity / stream).max() < 0.05  # about 5 standard errors


def test_end_task_offers_every_pair_once_with_one_of_its_captions(tiny_clip_dir):
    method, _ = setup_method(tiny_clip_dir, buffer_size=10)
    data = tiny_data(n=16)
    method.begin_task(STAGES[0], data)
    method.end_task(STAGES[0])
    buffer = method.buffer
    assert (len(buffer), buffer.seen) == (10, 16)
    for row in range(len(buffer)):
        image = buffer.images[row].numpy()
        owner = next(i for i in range(16) if np.array_equal(data.images[i], image))
        assert buffer.captions[row] in data.captions[owner]


def test_state_round_trips_through_a_checkpoint(tmp_path, tiny_clip_dir):
    method, bundle = setup_method(tiny_clip_dir, buffer_size=10)
    method.begin_task(STAGES[0], tiny_data())
    method.end_task(STAGES[0])
    path = write_stage_checkpoint(
        tmp_path, 0, ClipBundle(method.evaluation_model(), bundle.tokenizer, bundle.preprocess, bundle.source), method.state_dict(), {"next_stage": 1, "stages": []}
    )
    state, _ = read_stage_checkpoint(path)
    resumed, _ = setup_method(path / "model", buffer_size=10)
    resumed.load_state_dict(state)
    assert resumed.buffer.captions == method.buffer.captions and resumed.buffer.seen == method.buffer.seen
    assert torch.equal(resumed.buffer.images[:10], method.buffer.images[:10])
    with pytest.raises(ValueError):
        setup_method(path / "model", buffer_size=5)[0].load_state_dict(state)


def test_training_batch_is_current_plus_replayed_rows_deterministically(tiny_clip_dir):
    batches = []
    for _ in range(2):
        method, bundle = setup_method(tiny_clip_dir, buffer_size=10, replay_batch_size=4)
        old, new = tiny_data(seed=0), tiny_data(seed=1)
        method.begin_task(STAGES[0], old)
        batch = make_batch(bundle, old, torch.arange(8), torch.zeros(8, dtype=torch.long))
        assert method.training_loss(batch, 0).logs["replayed"] == 0.0  # empty buffer during the first task
        method.end_task(STAGES[0])
        method.begin_task(STAGES[1], new)
        batch = make_batch(bundle, new, torch.arange(8), torch.zeros(8, dtype=torch.long))
        full, replayed = method.with_replay(batch)
        assert len(full.pixel_values) == len(full.input_ids) == len(full.attention_mask) == 12
        assert torch.equal(full.pixel_values[:8], batch.pixel_values)
        assert replayed.tolist() == [False] * 8 + [True] * 4
        assert (full.sample_index[8:] == -1).all()
        buffered = bundle.preprocess.normalize_uint8(method.buffer.images[:10])
        assert all(any(torch.equal(row, b) for b in buffered) for row in full.pixel_values[8:])
        output = method.training_loss(batch, 0)
        assert output.logs["replayed"] == 4.0
        output.loss.backward()
        batches.append(full)
    for key in ("pixel_values", "input_ids", "attention_mask"):
        assert torch.equal(getattr(batches[0], key), getattr(batches[1], key))


def test_trains_under_the_engine(tiny_clip_dir):
    from rich.console import Console

    from vlcl.config import TrainConfig
    from vlcl.engine.train import train_on

    method, bundle = setup_method(tiny_clip_dir, buffer_size=10, replay_batch_size=4)
    for stage, seed in zip(STAGES, (0, 1)):
        data = tiny_data(seed=seed)
        method.begin_task(stage, data)
        stats = train_on(method, bundle, data, stage.name, TrainConfig(epochs=1, batch_size=8, lr=1e-3), seed=0, console=Console(quiet=True))
        method.end_task(stage)
        assert stats["steps"] == 2 and all(np.isfinite(stats["losses"]))
    assert (len(method.buffer), method.buffer.seen) == (10, 32)
