"""sit with ``tuning=adapter``: the authors' bottleneck adapter (vlcl.models.adapters) - where it sits and what it
computes, its init (the pre-trained model at the start), what trains, its state across a stage checkpoint, the
checkpoint's note, export refused, load_run scoring what the run scored, and a tiny stream run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import vlcl
import vlcl.methods.sit  # noqa: F401  (registers 'sit')
from conftest import tiny_data
from test_method_sit import STAGES, batch_of, class_data, embeddings, sit
from test_run import quick_args
from vlcl.app.cli import main
from vlcl.engine.checkpoint import NOT_EVALUATED_FIELD, check_state_round_trip
from vlcl.methods import create_method
from vlcl.models import load_clip
from vlcl.models.adapters import AdaptedOutput, BottleneckAdapter, adapter_parameters, encoder_layers, plain_state_dict
from vlcl.models.loading import save_clip

ADAPTER = ("method.name=sit", "method.tuning=adapter")
RUN = (*ADAPTER, "data.benchmark=embedded_cls", "checkpoint.keep=null", "train.checkpoint_every_steps=3")
"""The tiny two-task run (embedded_cls with quick_args: task 1 has 6 optimiser steps, task 2 has 12), every stage kept."""


def test_options_and_the_other_modules_options_refused():
    opts = create_method("sit", {"tuning": "adapter"}).options
    assert (opts.adapter_bottleneck, opts.adapter_scale, opts.adapter_dropout) == (64, 0.1, 0.1)
    assert create_method("sit").options.tuning == "lora"
    with pytest.raises(Exception, match="rank"):
        create_method("sit", {"tuning": "adapter", "rank": 8})
    with pytest.raises(Exception, match="adapter_scale"):
        create_method("sit", {"adapter_scale": 0.5})
    assert create_method("sit").evaluation_beyond_model() is None
    assert "adapter" in create_method("sit", {"tuning": "adapter"}).evaluation_beyond_model()


def test_one_adapter_per_block_of_both_towers_starting_as_the_pretrained_model(tiny_clip_dir):
    method, bundle = sit(tiny_clip_dir, tuning="adapter")
    batch = batch_of(bundle, tiny_data(n=4))
    method.model.eval()
    before = embeddings(method.model, batch)
    method.begin_task(STAGES[0], None)
    method.model.eval()
    after = embeddings(method.model, batch)
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # up_proj zero: exactly the pre-trained outputs
    layers = list(encoder_layers(method.model))
    assert {name.split(".")[0] for name, _ in layers} == {"text_model", "vision_model"}
    for _, layer in layers:
        adapter = layer.adapter
        assert isinstance(adapter, BottleneckAdapter) and adapter.down_proj.out_features == 64
        assert (adapter.scale, adapter.dropout) == (0.1, 0.1)
        assert isinstance(layer.self_attn, AdaptedOutput) and isinstance(layer.mlp, AdaptedOutput)
        assert layer.self_attn.adapter is adapter and layer.mlp.adapter is adapter  # one adapter, both outputs
        assert not adapter.up_proj.weight.any() and not adapter.up_proj.bias.any() and not adapter.down_proj.bias.any()
        assert adapter.down_proj.weight.abs().sum() > 0


def test_the_block_computes_x_plus_a_of_each_sublayer_output(tiny_clip_dir):
    """x' = x + a(attn(ln_1 x)), x'' = x' + a(mlp(ln_2 x')), a(h) = h + s * up(relu(down(h))) (eval: no dropout)."""
    method, _ = sit(tiny_clip_dir, tuning="adapter")
    method.begin_task(STAGES[0], None)
    layer = method.model.vision_model.encoder.layers[0]
    with torch.no_grad():
        for p in layer.adapter.parameters():
            p.normal_(0, 0.3)
    layer.eval()
    x = torch.randn(2, 5, layer.layer_norm1.weight.shape[0])
    a = layer.adapter

    def adapt(h):
        return h + 0.1 * a.up_proj(F.relu(a.down_proj(h)))

    with torch.no_grad():
        h = x + adapt(layer.self_attn.base(hidden_states=layer.layer_norm1(x), attention_mask=None)[0])
        expected = h + adapt(layer.mlp.base(layer.layer_norm2(h)))
        got = layer(x, None)
    got = got[0] if isinstance(got, tuple) else got
    assert torch.allclose(got, expected, atol=1e-6)


def test_only_the_adapters_train(tiny_clip_dir):
    method, _ = sit(tiny_clip_dir, tuning="adapter")
    method.begin_task(STAGES[0], None)
    trainable = [n for n, p in method.model.named_parameters() if p.requires_grad]
    assert trainable == [n for n, _ in adapter_parameters(method.model)]
    assert any(n.startswith("text_model") for n in trainable) and any(n.startswith("vision_model") for n in trainable)
    assert not method.model.logit_scale.requires_grad and not any("lora" in n for n in trainable)
    assert {id(p) for g in method.parameter_groups() for p in g.params} == {id(p) for _, p in adapter_parameters(method.model)}


def test_dropout_only_in_training(tiny_clip_dir):
    method, bundle = sit(tiny_clip_dir, tuning="adapter")
    method.begin_task(STAGES[0], None)
    with torch.no_grad():
        for _, p in adapter_parameters(method.model):
            p.normal_(0, 0.3)
    batch = batch_of(bundle, tiny_data(n=4))
    method.model.train()
    assert not torch.equal(embeddings(method.model, batch)[0], embeddings(method.model, batch)[0])
    method.model.eval()
    assert torch.equal(embeddings(method.model, batch)[0], embeddings(method.model, batch)[0])


def test_state_through_a_stage_checkpoint_resumes_exactly(tiny_clip_dir, tmp_path):
    method, bundle = sit(tiny_clip_dir, tuning="adapter")
    method.begin_task(STAGES[0], None)
    with torch.no_grad():
        for _, p in adapter_parameters(method.model):
            p.add_(0.05)  # as if trained
    method.end_task(STAGES[0])
    evaluated = method.evaluation_model()
    state = method.state_dict()
    assert set(state) == {"adapters"} and set(state["adapters"]) == {n for n, _ in adapter_parameters(evaluated)}
    check_state_round_trip(state)
    save_clip(bundle.__class__(evaluated, bundle.tokenizer, bundle.preprocess, bundle.source), tmp_path / "model")
    saved = load_clip(str(tmp_path / "model"))  # model/: a plain CLIP, the frozen weights under their own names
    assert saved.model.state_dict().keys() == plain_state_dict(evaluated).keys()
    assert all(torch.equal(saved.model.state_dict()[k], v) for k, v in plain_state_dict(evaluated).items())

    resumed, _ = sit(tiny_clip_dir, tuning="adapter")
    resumed.model.load_state_dict(saved.model.state_dict())
    resumed.context.resuming = True
    resumed.load_state_dict(state)
    batch = batch_of(bundle, class_data())
    resumed.model.eval(), evaluated.eval()
    assert all(torch.equal(a, b) for a, b in zip(embeddings(resumed.model, batch), embeddings(evaluated, batch)))
    for m in (method, resumed):
        m.begin_task(STAGES[1], None)
    full, again = method.model.state_dict(), resumed.model.state_dict()
    assert again.keys() == full.keys() and all(torch.equal(again[k], full[k]) for k in full)
    method.model.eval(), resumed.model.eval()
    assert method.training_loss(batch, 0).loss.item() == resumed.training_loss(batch, 0).loss.item()
    method.end_task(STAGES[1])  # the last task keeps its adapters: they are still the state
    assert set(method.state_dict()) == {"adapters"}
    assert isinstance(method.evaluation_model().text_model.encoder.layers[0].mlp, AdaptedOutput)


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory, world_clip_dir):
    run_dir = tmp_path_factory.mktemp("sit-adapter") / "run"
    assert main(["run", *quick_args(world_clip_dir, *RUN), "-o", str(run_dir)]) == 0
    return run_dir


def _recorded(run_dir, stage):
    return next(s for s in json.loads((run_dir / "results.json").read_text())["stages"] if s["index"] == stage)["metrics"]


@pytest.mark.slow
def test_task_run_checkpoint_note_export_refused_and_load_run_scores_the_run(adapter_run, tmp_path, capsys):
    model_dir = adapter_run / "checkpoints" / "stage_01" / "model"
    assert "NOT the model" in (model_dir / "README.md").read_text()
    plain = load_clip(str(model_dir)).model
    assert "'sit'" in getattr(plain.config, NOT_EVALUATED_FIELD)
    assert not any("adapter" in k or ".base." in k for k in plain.state_dict())
    capsys.readouterr()
    assert main(["export", str(adapter_run), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method 'sit'" in err and "vlcl.load_run(" in err and "adapter" in err
    assert not (tmp_path / "out").exists()
    for stage in (0, 1):
        loaded = vlcl.load_run(adapter_run, stage)
        assert loaded.method is not None and isinstance(loaded.model.vision_model.encoder.layers[0].mlp, AdaptedOutput)
        assert loaded.evaluate() == _recorded(adapter_run, stage)
    assert vlcl.load_run(adapter_run, "pretrained").evaluate() == _recorded(adapter_run, -1)


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory, world_clip_dir):
    run_dir = tmp_path_factory.mktemp("sit-adapter-stream") / "run"
    args = quick_args(
        world_clip_dir, *ADAPTER, "data.benchmark=embedded_cls", "data.stream=online", "train.online_iters=1",
        "eval.every_samples=80",
    )
    assert main(["run", *args, "-o", str(run_dir)]) == 0
    return run_dir


def test_tiny_stream_run_with_adapters(stream_run):
    results = json.loads((stream_run / "results.json").read_text())
    assert [s["name"] for s in results["stages"]] == ["pretrained", "stream"] and results["stream"]["points"]
    checkpoints = stream_run / "checkpoints"
    model_dir = checkpoints / json.loads((checkpoints / "latest.json").read_text())["path"] / "model"
    assert "NOT the model" in (model_dir / "README.md").read_text()
    plain = load_clip(str(model_dir)).model
    assert "'sit'" in getattr(plain.config, NOT_EVALUATED_FIELD)
    assert not any("adapter" in k or ".base." in k for k in plain.state_dict())


def test_stream_run_export_refused_load_run_scores_the_run(stream_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["export", str(stream_run), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method 'sit'" in err and "vlcl.load_run(" in err and "adapter" in err
    assert not (tmp_path / "out").exists()
    loaded = vlcl.load_run(stream_run)
    assert loaded.method is not None and isinstance(loaded.model.vision_model.encoder.layers[0].mlp, AdaptedOutput)
    assert loaded.evaluate() == _recorded(stream_run, 0)


@pytest.mark.slow
def test_adapter_run_killed_in_task_2_and_resumed_equals_the_uninterrupted_run(adapter_run, world_clip_dir, tmp_path):
    import os
    import subprocess
    import sys

    from test_run import metrics_of

    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-m", "vlcl", "run", *quick_args(world_clip_dir, *RUN), "-o", str(run_dir)],
        env={**os.environ, "VLCL_FAULT": "step:10"},
        capture_output=True, text=True, timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "step" in json.loads((run_dir / "checkpoints" / "latest.json").read_text())  # inside task 2, from stage_00
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert metrics_of(run_dir) == metrics_of(adapter_run)


def test_a_stream_refuses_only_methods_overriding_an_evaluation_hook():
    """A stream scores evaluation_model() alone: parts inside it (sit's adapters) are scored, hooks are not called."""
    from vlcl.engine.loop import RunInputError, _check_stream
    from vlcl.methods import Method

    class OwnHead(Method):
        name = "own_head"
        needs_task_boundaries = False

        def classification_logits(self, image_features, classifier, class_keys):
            return image_features @ classifier.T

    with pytest.raises(RunInputError, match="its evaluation also calls the method's classification_logits, which a stream"):
        _check_stream(OwnHead(), None)

    class Streams:
        def streams(self):
            return True

    _check_stream(create_method("sit", {"tuning": "adapter"}), Streams())  # beyond the model, yet scored on a stream
