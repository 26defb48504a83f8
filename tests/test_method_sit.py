"""SIT: the symmetric loss over the batch's classes against hand computations, the 'all' baseline and the
authors' probability quirk, caption batches, the LoRA (init, trainable parameters, kept across tasks and
resumed exactly), the stream memory, and a tiny stream run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import vlcl.methods.sit  # noqa: F401  (registers 'sit')
from conftest import CAPTIONS, tiny_data
from test_run import quick_args
from vlcl.app.cli import main
from vlcl.data.benchmark import CaptionedImages
from vlcl.methods import Method, RunContext, Stage, create_method
from vlcl.models import load_clip
from vlcl.models.encode import image_embeddings, text_embeddings
from vlcl.settings import make_batch

STAGES = [Stage(0, "t0", (0,)), Stage(1, "t1", (1,))]
STREAM = Stage(0, "stream", (0, 1))


def class_data(n=8, labels=(3, 1, 3, 1, 0, 0, 1, 3)):
    """Four classes with two prompts each (template means are exercised); the batch holds classes 0, 1, 3."""
    data = tiny_data(n=n)
    prompts = [[CAPTIONS[c], CAPTIONS[(c + 1) % 4]] for c in range(4)]
    labels = torch.tensor(labels[:n], dtype=torch.long)
    return CaptionedImages("cls", data.images, [[prompts[int(y)][0]] for y in labels], labels, prompts)


def sit(path, stage=STAGES[0], smoothing=0.2, streaming=False, **options):
    bundle = load_clip(str(path))
    method = create_method("sit", options)
    context = RunContext(
        ["t0", "t1"], seed=0, bundle=bundle, pretrained_path=str(path), label_smoothing=smoothing, streaming=streaming
    )
    method.setup(bundle.model, context)
    return method, bundle


def batch_of(bundle, data):
    rows = torch.arange(len(data))
    return make_batch(bundle, data, rows, torch.zeros(len(data), dtype=torch.long))


def hand_logits(model, batch, classes):
    """s * cos(f(x_i), g(prompt_c)) for c in ``classes`` (each class's text: its prompts' normalised mean)."""
    images = F.normalize(image_embeddings(model, batch.pixel_values), dim=-1)
    prompts = F.normalize(text_embeddings(model, batch.input_ids, batch.attention_mask), dim=-1).view(4, 2, -1)
    texts = F.normalize(prompts.mean(1)[classes], dim=-1)
    return model.logit_scale.exp().clamp(max=100) * images @ texts.t()


def test_defaults():
    opts = create_method("sit").options
    assert (opts.rank, opts.lora_alpha, opts.lora_b_init, opts.visible_classes) == (4, 1.0, "zero", "batch")
    assert (opts.ce_on_probabilities, opts.memory_size) == (False, 0)
    assert create_method("sit").needs_task_boundaries is False


def test_batch_loss_is_cross_entropy_over_the_batch_classes_reindexed(tiny_clip_dir):
    method, bundle = sit(tiny_clip_dir)
    method.begin_task(STAGES[0], None)
    batch = batch_of(bundle, class_data())
    output = method.training_loss(batch, 0)
    with torch.no_grad():
        logits = hand_logits(method.model, batch, [0, 1, 3])  # C_B = {0, 1, 3}: class 2 is not in the loss
        reindexed = torch.tensor([2, 1, 2, 1, 0, 0, 1, 2])
        expected = F.cross_entropy(logits, reindexed, label_smoothing=0.2)
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert output.logs["classes"] == 3
    everything = F.cross_entropy(hand_logits(method.model, batch, [0, 1, 2, 3]), batch.labels, label_smoothing=0.2)
    assert abs(everything.item() - expected.item()) > 1e-4  # the batch's classes only: not the same loss


@pytest.mark.parametrize("visible", ["batch", "all"])
def test_an_absent_class_is_not_in_the_batch_loss(tiny_clip_dir, visible):
    """'batch': the prompts of class 2 (in the label space, absent from the batch) neither enter the loss nor get a
    gradient path: another text for it leaves loss and gradients unchanged; 'all' depends on it."""
    method, bundle = sit(tiny_clip_dir, visible_classes=visible)
    method.begin_task(STAGES[0], None)

    def loss_and_grads(prompts_of_2):
        data = class_data()
        data.class_prompts[2] = prompts_of_2
        method.model.zero_grad()
        loss = method.training_loss(batch_of(bundle, data), 0).loss
        loss.backward()
        grads = [p.grad.clone() for p in method.model.parameters() if p.requires_grad and p.grad is not None]
        return loss.detach(), grads

    first, first_grads = loss_and_grads([CAPTIONS[2], CAPTIONS[3]])
    other, other_grads = loss_and_grads([CAPTIONS[0], CAPTIONS[0]])
    same = torch.equal(first, other) and all(torch.equal(a, b) for a, b in zip(first_grads, other_grads))
    assert same == (visible == "batch")


def test_all_is_the_default_classification_loss(tiny_clip_dir):
    method, bundle = sit(tiny_clip_dir, visible_classes="all")
    method.begin_task(STAGES[0], None)
    batch = batch_of(bundle, class_data())
    default = Method.training_loss(method, batch, 0).loss
    assert method.training_loss(batch, 0).loss.item() == pytest.approx(default.item(), rel=1e-6)


@pytest.mark.parametrize("visible", ["batch", "all"])
def test_cross_entropy_on_probabilities(tiny_clip_dir, visible):
    method, bundle = sit(tiny_clip_dir, smoothing=0.0, visible_classes=visible, ce_on_probabilities=True)
    method.begin_task(STAGES[0], None)
    batch = batch_of(bundle, class_data())
    with torch.no_grad():
        classes, labels = ([0, 1, 3], torch.tensor([2, 1, 2, 1, 0, 0, 1, 2])) if visible == "batch" else ([0, 1, 2, 3], batch.labels)
        p = hand_logits(method.model, batch, classes).softmax(-1)
        expected = (torch.logsumexp(p, -1) - p[torch.arange(len(p)), labels]).mean()  # CE taken on the probabilities
    assert method.training_loss(batch, 0).loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_caption_batch_keeps_the_default_clip_loss(tiny_clip_dir):
    method, bundle = sit(tiny_clip_dir)
    method.begin_task(STAGES[0], None)
    batch = batch_of(bundle, tiny_data(n=8))
    assert method.training_loss(batch, 0).loss.item() == pytest.approx(Method.training_loss(method, batch, 0).loss.item(), rel=1e-6)


def embeddings(model, batch):
    with torch.no_grad():
        return image_embeddings(model, batch.pixel_values), text_embeddings(model, batch.input_ids, batch.attention_mask)


@pytest.mark.parametrize("init", ["zero", "xavier"])
def test_zero_b_leaves_the_model_unchanged_xavier_does_not(tiny_clip_dir, init):
    method, bundle = sit(tiny_clip_dir, lora_b_init=init)
    batch = batch_of(bundle, tiny_data(n=4))
    method.model.eval()
    before = embeddings(method.model, batch)
    method.begin_task(STAGES[0], None)
    method.model.eval()
    after = embeddings(method.model, batch)
    same = all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, after))
    assert same == (init == "zero")
    if init == "xavier":  # one A shared by q, k, v at the start, B split from one [3d, r] draw; out_proj B stays 0
        attn = method.model.vision_model.encoder.layers[0].self_attn
        a = [getattr(attn, n).lora_A["default"].weight for n in ("q_proj", "k_proj", "v_proj")]
        assert torch.equal(a[0], a[1]) and torch.equal(a[1], a[2])
        assert not torch.equal(attn.q_proj.lora_B["default"].weight, attn.k_proj.lora_B["default"].weight)
        assert not attn.out_proj.lora_B["default"].weight.any()


def test_only_the_attention_lora_trains(tiny_clip_dir):
    method, _ = sit(tiny_clip_dir)
    method.begin_task(STAGES[0], None)
    trainable = [n for n, p in method.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for tower in ("vision_model", "text_model"):
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            assert any(tower in n and f"{projection}.lora_A" in n for n in trainable), (tower, projection)
    assert not any("mlp" in n for n in trainable)
    assert {id(p) for g in method.parameter_groups() for p in g.params} == {id(p) for p in method.model.parameters() if p.requires_grad}


def lora_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_one_lora_across_tasks_merged_copies_and_an_exact_resume(tiny_clip_dir):
    method, bundle = sit(tiny_clip_dir, lora_b_init="xavier")
    method.begin_task(STAGES[0], None)
    with torch.no_grad():
        for n, p in method.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.01)  # as if trained
    lora = lora_state(method.model)
    method.end_task(STAGES[0])
    stage_model = method.evaluation_model()
    assert type(stage_model).__name__ == "CLIPModel" and not any("lora_" in k or "base_layer" in k for k in stage_model.state_dict())
    state = method.state_dict()
    assert set(state["lora"]) == set(lora) and all(torch.equal(state["lora"][k], lora[k]) for k in lora)
    method.begin_task(STAGES[1], None)  # the same LoRA goes on
    assert all(torch.equal(v, lora[k]) for k, v in lora_state(method.model).items())
    full = {k: v.clone() for k, v in method.model.state_dict().items()}

    resumed, _ = sit(tiny_clip_dir, lora_b_init="xavier")
    resumed.model.load_state_dict(stage_model.state_dict())  # the checkpoint's model: W0 + BA merged
    resumed.context.resuming = True
    resumed.load_state_dict(state)
    assert resumed.state_dict().keys() == state.keys()
    resumed.begin_task(STAGES[1], None)
    again = resumed.model.state_dict()
    assert again.keys() == full.keys() and all(torch.equal(again[k], full[k]) for k in full)  # W0 exactly, the LoRA exactly

    method.end_task(STAGES[1])  # the last task: merged in place, a plain CLIPModel, no state
    assert not any("lora_" in k for k in method.evaluation_model().state_dict()) and method.state_dict() == {}


def test_memory_is_a_reservoir_of_stream_positions_and_falls_back_to_all(tiny_clip_dir):
    method, bundle = sit(tiny_clip_dir, memory_size=3, streaming=True)
    data = class_data()
    method.begin_task(STREAM, data)
    assert method.step_state_dict()["memory"] == {"positions": [], "seen": 0}
    method.observe_batch(data, torch.arange(0, 2))
    assert method.memory.positions == [0, 1]
    method.observe_batch(data, torch.arange(2, 8))
    memory = method.memory
    assert len(memory) == 3 and memory.seen == 8 and set(memory.positions) <= set(range(8))
    batch = batch_of(bundle, class_data(n=4))  # classes 1, 3: with a memory, every class of the label space counts
    output = method.training_loss(batch, 0)
    assert output.logs["replayed"] == 2 and output.logs["classes"] == 4  # M = B - B // 2 = 2
    state = method.step_state_dict()
    fresh, _ = sit(tiny_clip_dir, memory_size=3, streaming=True)
    fresh.begin_task(STREAM, data)
    fresh.load_step_state_dict(state)
    assert fresh.memory.positions == method.memory.positions and fresh.memory.seen == 8
    assert torch.equal(fresh.generator.get_state(), method.generator.get_state())


def test_memory_one_task_at_a_time_is_refused(tiny_clip_dir):
    with pytest.raises(ValueError, match="data.stream=online"):  # at setup, before the run writes anything
        sit(tiny_clip_dir, memory_size=3)


@pytest.mark.parametrize("memory", [0, 40])
def test_tiny_stream_run(tmp_path, world_clip_dir, memory):
    run_dir = tmp_path / "run"
    args = quick_args(
        world_clip_dir, "method.name=sit", f"method.memory_size={memory}", "data.benchmark=embedded_cls",
        "data.stream=online", "train.online_iters=2", "eval.every_samples=40",
    )
    assert main(["run", *args, "-o", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert [s["name"] for s in results["stages"]] == ["pretrained", "stream"]
    assert results["stream"]["points"] and "A_auc" in results["stream"]["summary"]
    model = load_clip(str(run_dir / "checkpoints" / json.loads((run_dir / "checkpoints" / "latest.json").read_text())["path"] / "model"))
    assert not any("lora_" in k for k in model.model.state_dict())
    steps = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if '"replayed"' in line]
    assert bool(steps) == bool(memory)


@pytest.mark.slow
def test_stream_with_memory_killed_and_resumed_equals_the_uninterrupted_run(tmp_path, world_clip_dir):
    import os
    import subprocess
    import sys

    from test_run import metrics_of

    args = quick_args(
        world_clip_dir, "method.name=sit", "method.memory_size=40", "data.benchmark=embedded_cls", "data.stream=online",
        "train.online_iters=2", "eval.every_samples=40", "train.checkpoint_every_steps=4",
    )
    assert main(["run", *args, "-o", str(tmp_path / "reference")]) == 0
    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-m", "vlcl", "run", *args, "-o", str(run_dir)], env={**os.environ, "VLCL_FAULT": "step:14"},
        capture_output=True, text=True, timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "step" in json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert main(["run", "--resume", str(run_dir)]) == 0
    expected, resumed = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "reference", run_dir))
    assert resumed["stream"] == expected["stream"] and metrics_of(run_dir) == metrics_of(tmp_path / "reference")
