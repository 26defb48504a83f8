"""Methods on a stream (data.stream=online): replay's memory of stream positions fills batch by batch and is
in-stream state,
WiSE-FT evaluates its interpolation along the stream, ZSCL refuses its weight ensemble, and the run seed
draws the stream (vlcl.seeds.stream_seed) unless stream.seed holds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlcl.methods.replay  # noqa: F401  (registers 'replay')
import vlcl.methods.wise_ft  # noqa: F401
import vlcl.methods.zscl  # noqa: F401
from conftest import tiny_data
from vlcl.methods import RunContext, Stage, create_method
from vlcl.methods.parts.memory import StreamMemory
from vlcl.models import load_clip
from vlcl.settings import make_batch
from vlcl.seeds import stream_seed

STREAM = Stage(0, "stream", (0, 1))


def on_stream(path, name, **options):
    bundle = load_clip(str(path))
    method = create_method(name, options)
    method.setup(bundle.model, RunContext(["t0", "t1"], seed=0, bundle=bundle, streaming=True))
    return method, bundle


def test_replay_keeps_stream_positions_as_the_stream_arrives(tiny_clip_dir):
    method, bundle = on_stream(tiny_clip_dir, "replay", buffer_size=6, replay_batch_size=4)
    data = tiny_data(n=16)
    method.begin_task(STREAM, data)
    method.observe_batch(data, torch.arange(0, 4))
    assert (method.memory.positions, method.memory.seen) == ([0, 1, 2, 3], 4)
    method.observe_batch(data, torch.arange(4, 16))
    assert (len(method.memory), method.memory.seen) == (6, 16) and set(method.memory.positions) <= set(range(16))
    assert len(method.buffer) == 0  # no image is copied: the memory is indices into the stream
    batch = make_batch(bundle, data, torch.arange(4), torch.zeros(4, dtype=torch.long))
    full, replayed = method.with_replay(batch)
    assert replayed.tolist() == [False] * 4 + [True] * 4
    stream_pixels = bundle.preprocess.normalize_uint8(torch.as_tensor(data.images[method.memory.positions]))
    assert all(any(torch.equal(row, p) for p in stream_pixels) for row in full.pixel_values[4:])
    method.end_task(STREAM)
    assert method.memory.seen == 16 and len(method.buffer) == 0  # the stream is not offered again at its end


def test_stream_memory_is_a_uniform_sample_of_the_stream():
    stream, capacity, runs = 20, 5, 2000
    counts = np.zeros(stream)
    for seed in range(runs):
        memory = StreamMemory(capacity)
        g = torch.Generator().manual_seed(seed)
        memory.offer(range(12), g)
        memory.offer(range(12, 20), g)
        counts[memory.positions] += 1
    assert np.abs(counts / runs - capacity / stream).max() < 0.05  # about 5 standard errors


def test_replay_memory_is_in_stream_step_state(tiny_clip_dir):
    method, _ = on_stream(tiny_clip_dir, "replay", buffer_size=6)
    data = tiny_data(n=16)
    method.begin_task(STREAM, data)
    method.observe_batch(data, torch.arange(0, 8))
    state = method.step_state_dict()
    assert set(state) == {"generator", "offer_generator", "memory"}
    assert all(isinstance(p, int) for p in state["memory"]["positions"])
    method.observe_batch(data, torch.arange(8, 16))
    resumed, _ = on_stream(tiny_clip_dir, "replay", buffer_size=6)
    resumed.begin_task(STREAM, data)
    resumed.load_step_state_dict(state)
    resumed.observe_batch(data, torch.arange(8, 16))
    assert resumed.memory.state_dict() == method.memory.state_dict()
    too_small, _ = on_stream(tiny_clip_dir, "replay", buffer_size=3)
    too_small.begin_task(STREAM, data)
    with pytest.raises(ValueError, match="more than its capacity"):
        too_small.load_step_state_dict(state)


def test_replay_in_task_mode_keeps_its_step_state(tiny_clip_dir):
    bundle = load_clip(str(tiny_clip_dir))
    method = create_method("replay", {})
    method.setup(bundle.model, RunContext(["t0"], seed=0, bundle=bundle))
    method.begin_task(Stage(0, "t0", (0,)), tiny_data())
    assert set(method.step_state_dict()) == {"generator"}


def test_wise_ft_evaluates_its_interpolation_along_a_stream(tiny_clip_dir):
    method, _ = on_stream(tiny_clip_dir, "wise_ft", coefficient=0.5)
    start = {k: v.clone() for k, v in method.model.state_dict().items()}
    method.begin_task(STREAM, tiny_data())
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(1.0)
    trained = {k: v.clone() for k, v in method.model.state_dict().items()}
    evaluated = method.evaluation_model()
    assert evaluated is not method.model
    name = next(n for n, p in method.model.named_parameters() if p.is_floating_point())
    expected = 0.5 * start[name] + 0.5 * trained[name]
    assert torch.allclose(evaluated.state_dict()[name], expected)
    assert torch.equal(method.model.state_dict()[name], trained[name])  # training goes on from theta_ft
    method.end_task(STREAM)
    assert method.evaluation_model() is method.model
    assert torch.allclose(method.model.state_dict()[name], expected)


def test_zscl_on_a_stream_refuses_its_weight_ensemble(tiny_clip_dir):
    with pytest.raises(ValueError, match="method.ensemble_every=0"):
        on_stream(tiny_clip_dir, "zscl", reference_images=8)
    method, _ = on_stream(tiny_clip_dir, "zscl", reference_images=8, ensemble_every=0)
    assert method.options.ensemble_every == 0


def test_stream_seed_differs_by_run_seed_and_data_seed():
    seeds = {stream_seed(s, d) for s in range(5) for d in range(3)}
    assert len(seeds) == 15
    assert stream_seed(0, 0) == 67_867_967


def test_lora_on_a_stream_needs_integration_one(tiny_clip_dir):
    with pytest.raises(ValueError, match="method.integration=1"):
        on_stream(tiny_clip_dir, "lora")
    assert on_stream(tiny_clip_dir, "lora", integration=1.0)[0].options.integration == 1.0
