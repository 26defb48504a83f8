"""CMCL (DNS): projectors, the null-space property on old pairs, feature mode, the method on a CLIPModel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_data
from vlcl.app.cli import main
from vlcl.config import build_config, config_to_dict, load_config
from vlcl.data.benchmarks.feature_pairs import FeatureDataError, build_features, load_feature_file
from vlcl.engine.checkpoint import read_stage_checkpoint
from vlcl.engine.loop import create_runner
from vlcl.methods import RunContext, Stage, create_method
from vlcl.methods.cmcl import CMCL, DualNullSpace, covariance_projector, dns_project, kept_directions
from vlcl.methods.cmcl_official import CMCLOfficial
from vlcl.models import load_clip
from vlcl.models.encode import tokenize
from vlcl.models.maps import ModalityMaps, augmented, joint_weight, load_maps, pair_loss

WIDTHS = {"text": 16, "image": 16, "audio": 16}


def low_rank_pairs(n: int, modalities, rank: int, seed: int, split_seed: int) -> dict[str, torch.Tensor]:
    """Row i of every modality comes from one latent z_i through a fixed per-modality basis: rank-``rank``
    features (the null space left for new tasks is what DNS may use) whose pairs are learnable."""
    g = torch.Generator().manual_seed(seed)
    bases = {m: torch.linalg.qr(torch.randn(WIDTHS[m], rank, generator=g))[0] for m in modalities}
    z = torch.randn(n, rank, generator=torch.Generator().manual_seed(split_seed)) * 2
    return {m: z @ bases[m].t() for m in modalities}


def write_pair(directory, name, modalities, n, seed, suffix=".npz"):
    paths = {}
    for split, split_seed in (("train", seed + 1), ("test", seed + 2)):
        arrays = low_rank_pairs(n, modalities, 5, seed, split_seed)
        path = directory / f"{name}_{split}{suffix}"
        if suffix == ".npz":
            np.savez(path, **{m: a.numpy() for m, a in arrays.items()})
        else:
            save_file({m: a.contiguous() for m, a in arrays.items()}, str(path))
        paths[split] = str(path)
    return {"name": name, "modalities": list(modalities), **paths}


def feature_config(tmp_path, method="cmcl", **options):
    pairs = [
        write_pair(tmp_path, "text_image", ("text", "image"), 96, 0),
        write_pair(tmp_path, "text_audio", ("text", "audio"), 96, 10, ".safetensors"),
    ]
    return build_config(
        {
            "data": {"benchmark": "features", "features": pairs},
            "method": {"name": method, **options},
            "train": {"epochs": 3, "batch_size": 32, "lr": 1e-2, "weight_decay": 1e-3, "warmup_fraction": 0.0},
            "threads": 1,
        },
        "test",
    )


def old_similarities(maps: ModalityMaps, x_text: torch.Tensor, x_image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return maps("text", x_text) @ maps("image", x_image).t()


# -- projectors --------------------------------------------------------------------------------------------


def test_projector_keeps_the_directions_above_the_threshold():
    basis = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    covariance = basis @ torch.diag(torch.tensor([5.0, 1.0, 0.2, 0.05, 0.0, 0.0], dtype=torch.float64)) @ basis.t()
    p = covariance_projector(covariance, 0.1)
    assert torch.allclose(p, p.t(), atol=1e-6) and torch.allclose(p @ p, p, atol=1e-5)
    assert torch.linalg.matrix_rank(p).item() == 3
    assert torch.allclose(p @ basis[:, :3], basis[:, :3], atol=1e-5)  # kept directions pass unchanged
    assert torch.allclose(p @ basis[:, 3:], torch.zeros(6, 3, dtype=torch.float64), atol=1e-5)


SPECTRUM = torch.tensor([5.0, 1.0, 0.2, 0.05, 0.0, 0.0], dtype=torch.float64)  # total 6.25


@pytest.mark.parametrize(
    "rule, threshold, kept",
    [
        ("absolute", 0.1, 3),  # 5, 1, 0.2 exceed 0.1
        ("absolute", 0.0, 4),  # CMCL's output side: every nonzero eigenvalue
        ("relative", 0.1, 2),  # above 0.5
        ("relative", 0.005, 4),  # above 0.025
        ("energy", 0.9, 2),  # 5 + 1 = 6.0 >= 0.9 x 6.25
        ("energy", 0.97, 3),  # 6.2 >= 6.06
        ("energy", 1.0, 4),  # the whole span, never a zero direction
        ("energy", 0.0, 0),
        ("relative", None, 4),  # None: the span, whatever the rule
    ],
)
def test_threshold_rules_count_the_kept_directions(rule, threshold, kept):
    assert kept_directions(SPECTRUM, threshold, rule) == kept


@pytest.mark.parametrize("rule, threshold", [("relative", 0.1), ("relative", 1e-3), ("energy", 0.9), ("energy", 0.99)])
def test_scale_free_rules_do_not_depend_on_the_features_scale(rule, threshold):
    basis = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    covariance = basis @ torch.diag(SPECTRUM) @ basis.t()
    projectors = [covariance_projector(scale * covariance, threshold, rule) for scale in (1e-3, 1.0, 1e3)]
    assert all(torch.allclose(p, projectors[0], atol=1e-8) for p in projectors)
    absolute = [int(covariance_projector(scale * covariance, 0.1).trace().round()) for scale in (1e-3, 1.0, 1e3)]
    assert absolute == [0, 3, 4]  # CMCL's absolute 0.1 protects more the larger the features


def test_shares_of_eigenvalues_above_one_are_refused():
    from vlcl.methods import UnknownMethodError, create_method

    with pytest.raises(UnknownMethodError, match="share of eigenvalues under threshold=energy: at most 1"):
        create_method("cmcl", {"input_threshold": 2.0})
    assert create_method("cmcl", {"threshold": "absolute", "input_threshold": 2.0}).options.input_threshold == 2.0


def test_dns_project_is_g_minus_p_out_g_p_in():
    g = torch.Generator().manual_seed(1)
    grad, p_in, p_out = torch.randn(4, 5, generator=g), torch.randn(5, 5, generator=g), torch.randn(4, 4, generator=g)
    assert torch.allclose(dns_project(grad, p_in, p_out), grad - p_out @ grad @ p_in)
    assert torch.allclose(dns_project(grad, p_in, None), grad - grad @ p_in)  # one-sided: P' = I
    assert torch.equal(dns_project(grad, None, p_out), grad)  # nothing protected yet


# -- the property: one projected step leaves the old pairs' similarities unchanged ------------------------


def run_engine(tmp_path, label, method="cmcl", tasks=2, **options):
    """A feature-mode run through the engine (the same ContinualRunner as every benchmark); the runner after it."""
    config = feature_config(tmp_path, method, **options)
    config.data.features = config.data.features[:tasks]
    config.checkpoint.keep = None  # every stage kept: the tests read the first task's checkpoint
    runner = create_runner(config, tmp_path / label).prepare()
    runner.run()
    return runner


def trained_first_task(tmp_path):
    """The maps and the null space after task 1 of a two-task run: its first stage checkpoint, read back."""
    run_engine(tmp_path, "first")
    checkpoint = tmp_path / "first" / "checkpoints" / "stage_00"
    state, _ = read_stage_checkpoint(checkpoint)
    space = DualNullSpace(0.1, 0.0)
    space.load_state_dict(state)
    old, new = build_features(features=feature_config(tmp_path).data.features).tasks
    return load_maps(checkpoint / "model"), space, (old.train, new.train)


@pytest.mark.parametrize("projected", [True, False])
def test_one_large_projected_step_keeps_old_similarities(tmp_path, projected):
    maps, space, (old, new) = trained_first_task(tmp_path)
    before = old_similarities(maps, old.arrays["text"], old.arrays["image"])
    loss = pair_loss(maps, new.modalities, new.arrays["text"], new.arrays["audio"])
    loss.backward()
    with torch.no_grad():
        for m in new.modalities:  # one plain SGD step of size 1 (10^4 x CMCL's lr) on [W | b]
            layer = maps.maps[m]
            grad = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], dim=1)
            if projected:
                grad = space.project(m, grad, dual=True)
            step = joint_weight(layer) - 1.0 * grad
            layer.weight.copy_(step[:, :-1])
            layer.bias.copy_(step[:, -1])
    change = (old_similarities(maps, old.arrays["text"], old.arrays["image"]) - before).abs().max().item()
    if projected:
        assert change <= 1e-4
    else:
        assert change > 0.1


def test_the_projected_step_still_learns(tmp_path):
    maps, space, (_, new) = trained_first_task(tmp_path)
    loss = pair_loss(maps, new.modalities, new.arrays["text"], new.arrays["audio"])
    loss.backward()
    grads = {m: torch.cat([maps.maps[m].weight.grad, maps.maps[m].bias.grad[:, None]], dim=1) for m in new.modalities}
    projected = {m: space.project(m, g, dual=True) for m, g in grads.items()}
    assert projected["text"].norm() > 0.05 * grads["text"].norm()  # room is left in the null space
    assert torch.equal(projected["audio"], grads["audio"])  # a modality never seen is free


def test_inputs_of_old_pairs_lie_in_the_protected_subspace(tmp_path):
    maps, space, (old, _) = trained_first_task(tmp_path)
    x = augmented(old.arrays["text"]).double()
    assert torch.allclose(x @ space.input_projectors["text"], x, atol=1e-4)


# -- feature mode end to end, through the engine ---------------------------------------------------------------


def test_feature_run_writes_a_matrix_per_pair_and_checkpoints(tmp_path):
    run_engine(tmp_path, "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["tasks"] == ["text_image", "text_audio"] and results["benchmark"] == "features"
    assert results["data"]["modality_pairs"] == {"text_image": ["text", "image"], "text_audio": ["text", "audio"]}
    assert len(results["matrices"]["mean_R@1"]) == 2
    stage = results["stages"][-1]["metrics"]["retrieval"]["text_audio"]
    assert {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mean_R@1"} <= set(stage)
    assert results["summary"]["retrieval"]["mean_R@1"]["forgetting"] is not None
    model = tmp_path / "run" / "checkpoints" / "stage_01" / "model"
    assert sorted(p.name for p in model.iterdir()) == ["maps.json", "maps.safetensors"]
    assert torch.equal(load_maps(model).maps["audio"].weight, load_maps(model).maps["audio"].weight)


def test_update_projection_keeps_old_pairs_through_a_whole_adamw_task(tmp_path):
    """project=update holds the guarantee under AdamW; CMCL's gradient rule only approximately; finetune not at all."""
    old = build_features(features=feature_config(tmp_path).data.features).tasks[0].train
    changes = {}
    cmcls = {"threshold": "absolute", "input_threshold": 0.1, "output_threshold": 0.0}  # CMCL's thresholds
    for label, method, options in (
        ("update", "cmcl", {"project": "update", **cmcls}),
        ("gradient", "cmcl", {"project": "gradient", **cmcls}),
        ("finetune", "finetune", {}),
    ):
        runner = run_engine(tmp_path, label, method, **options)
        after_first = load_maps(tmp_path / label / "checkpoints" / "stage_00" / "model")
        before = old_similarities(after_first, old.arrays["text"], old.arrays["image"])
        after = old_similarities(runner.state[0].model, old.arrays["text"], old.arrays["image"])
        changes[label] = (after - before).abs().max().item()
    assert changes["update"] <= 1e-3
    assert changes["finetune"] > 10 * max(changes["update"], 1e-4)


@pytest.mark.slow
def test_feature_run_killed_in_task_2_resumes_to_the_same_results(tmp_path):
    import os
    import subprocess
    import sys

    import yaml

    config = feature_config(tmp_path)
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main(["run", str(path), "train.checkpoint_every_steps=2", "-o", str(reference)]) == 0
    process = subprocess.run(
        [sys.executable, "-m", "vlcl", "run", str(path), "train.checkpoint_every_steps=2", "-o", str(killed)],
        env={**os.environ, "VLCL_FAULT": "step:13"},  # 9 steps per task: step 13 is inside task 2
        capture_output=True,
        timeout=300,
    )
    assert process.returncode == -9
    assert json.loads((killed / "checkpoints" / "latest.json").read_text())["stage"] == 1
    assert main(["run", "--resume", str(killed)]) == 0
    first, second = (json.loads((d / "results.json").read_text()) for d in (reference, killed))
    assert first["matrices"] == second["matrices"] and first["summary"] == second["summary"]
    assert [s["train"].get("losses") for s in first["stages"]] == [s["train"].get("losses") for s in second["stages"]]


def test_feature_mode_from_the_cli(tmp_path, capsys):
    config = feature_config(tmp_path)
    import yaml

    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    assert main(["run", str(path), "-o", str(tmp_path / "cli-run")]) == 0
    assert (tmp_path / "cli-run" / "results.json").is_file()
    assert main(["run", str(path), "method.name=lwf", "-o", str(tmp_path / "bad")]) == 2
    assert "method 'lwf' does not support setting 'modality_pairs'" in capsys.readouterr().err


def test_the_shipped_feature_config_has_the_official_settings():
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "features_cmcl.yaml")
    options = create_method(config.method.name, config.method.options()).options
    assert (options.threshold, options.input_threshold, options.output_threshold, options.project) == ("absolute", 0.1, 0.0, "gradient")
    train = config.train
    assert (train.lr, train.weight_decay, train.batch_size, train.epochs, tuple(train.betas), train.eps) == (1e-4, 1e-3, 64, 5, (0.9, 0.999), 1e-8)


def test_bad_feature_files_name_the_file_and_array(tmp_path):
    np.savez(tmp_path / "a.npz", text=np.zeros((4, 3), np.float32))
    with pytest.raises(FeatureDataError, match=r"a\.npz: no array 'image'; found: text"):
        load_feature_file(tmp_path / "a.npz", ("text", "image"))
    np.savez(tmp_path / "b.npz", text=np.zeros((4, 3), np.float32), image=np.zeros((5, 3), np.float32))
    with pytest.raises(FeatureDataError, match="row counts differ"):
        load_feature_file(tmp_path / "b.npz", ("text", "image"))
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(FeatureDataError, match=r"c\.npz: cannot read features"):
        load_feature_file(tmp_path / "c.npz", ("text", "image"))
    with pytest.raises(FeatureDataError, match="not found"):
        load_feature_file(tmp_path / "missing.npz", ("text",))


# -- the method on a CLIPModel ------------------------------------------------------------------------------------


def setup_clip(path, name="cmcl", **options):
    bundle = load_clip(str(path))
    method = create_method(name, options)
    method.setup(bundle.model, RunContext(["t0", "t1"], seed=0, bundle=bundle))
    return method, bundle


def trainable_names(method) -> set[str]:
    return {n for n, p in method.model.named_parameters() if p.requires_grad}


def test_default_trains_every_linear_weight_and_official_only_the_projections(tiny_clip_dir):
    method_all, _ = setup_clip(tiny_clip_dir)
    linear = {f"{n}.weight" for n, m in method_all.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert trainable_names(method_all) == linear and "logit_scale" not in trainable_names(method_all)
    assert (method_all.dns.project, method_all.dns.rule, method_all.dns.input_threshold) == ("gradient", "energy", 0.97)
    for name, options in (("cmcl", {"layers": "projections"}), ("cmcl_official", {})):
        method, _ = setup_clip(tiny_clip_dir, name, **options)
        assert trainable_names(method) == {"visual_projection.weight", "text_projection.weight"}


def test_official_is_cmcl_with_the_authors_settings(tiny_clip_dir):
    """cmcl_official = cmcl with projections only, gradient projection and absolute thresholds 0.1 / 0."""
    official, _ = setup_clip(tiny_clip_dir, "cmcl_official")
    assert isinstance(official, CMCL) and "modality_pairs" not in CMCLOfficial.settings
    same, _ = setup_clip(tiny_clip_dir, layers="projections", project="gradient", threshold="absolute", input_threshold=0.1, output_threshold=0.0)
    assert official.dns == same.dns
    for method in (official, same):
        method.begin_task(Stage(0, "t0", (0,)), tiny_data())
        method.end_task(Stage(0, "t0", (0,)))
    for side in ("input_projectors", "output_projectors"):
        mine, theirs = getattr(official.space, side), getattr(same.space, side)
        assert set(mine) == set(theirs) == {"image", "text"}
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_clip_mode_covariances_protect_the_old_inputs_and_round_trip(tiny_clip_dir):
    method, bundle = setup_clip(tiny_clip_dir, input_threshold=1.0)  # energy 1: the whole span of the inputs
    data = tiny_data()
    method.begin_task(Stage(0, "t0", (0,)), data)
    method.end_task(Stage(0, "t0", (0,)))
    space = method.space
    assert set(space.output_projectors) == {"image", "text"}
    assert len(space.input_projectors) > 2  # the inner Linear layers too
    # the pooled image features of the task lie in the protected input subspace of visual_projection
    pixels = bundle.preprocess.normalize_uint8(data.images)
    with torch.no_grad():
        pooled = method.model.vision_model(pixel_values=pixels).pooler_output
    assert torch.allclose(pooled.double() @ space.input_projectors["image"], pooled.double(), atol=1e-3)
    restored, _ = setup_clip(tiny_clip_dir, input_threshold=1.0)
    restored.load_state_dict(method.state_dict())
    for key, p in space.input_projectors.items():
        assert torch.allclose(restored.space.input_projectors[key], p, atol=1e-6)


def test_text_covariances_count_tokens_not_padding(tiny_clip_dir):
    method, bundle = setup_clip(tiny_clip_dir)
    data = tiny_data(n=4)
    moments = method.task_second_moments(data)
    captions = [c for caps in data.captions for c in caps]
    _, mask = tokenize(bundle.tokenizer, captions, bundle.context_length)
    assert moments["text_model.encoder.layers.0.self_attn.q_proj"][1] == int(mask.sum()) < mask.numel()
    assert moments["text"][1] == len(captions)  # the pooled feature: one per caption
    assert moments["vision_model.encoder.layers.0.mlp.fc1"][1] == 4 * 5  # every image token: 4 patches + CLS
    assert moments["image"][1] == 4


def pooled_features(model, bundle, data) -> tuple[torch.Tensor, torch.Tensor]:
    """The towers' pooled outputs (the projections' inputs) for every image and every caption of ``data``."""
    captions = [c for caps in data.captions for c in caps]
    ids, mask = tokenize(bundle.tokenizer, captions, bundle.context_length)
    images = model.vision_model(pixel_values=bundle.preprocess.normalize_uint8(data.images)).pooler_output
    return images, model.text_model(input_ids=ids, attention_mask=mask).pooler_output


def test_update_projection_on_every_layer_keeps_the_old_features_exactly(tiny_clip_dir):
    """project=update with the whole span protected (energy 1): every Linear layer's input on an old image or caption
    is unchanged, so is its output, layer after layer - the towers' old features stay put through AdamW steps of any
    size, not only to first order - while new ones move. (The projections on top are dual-sided: they may move old
    embeddings orthogonally to the partner's old features; the feature-mode tests check that.)"""
    method, bundle = setup_clip(tiny_clip_dir, input_threshold=1.0, project="update")
    old, new = tiny_data(n=4, seed=0), tiny_data(n=4, seed=1)
    new.captions = [["a sketch of a red star", "the blue triangle at the bottom"] for _ in range(4)]
    method.begin_task(Stage(0, "t0", (0,)), old)
    method.end_task(Stage(0, "t0", (0,)))
    with torch.no_grad():
        old_before, new_before = pooled_features(method.model, bundle, old), pooled_features(method.model, bundle, new)
    optimizer = torch.optim.AdamW([p for p in method.model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for step in range(3):
        images, texts = pooled_features(method.model, bundle, new)
        loss = -(method.model.visual_projection(images).mean(0) * method.model.text_projection(texts).mean(0)).sum()
        optimizer.zero_grad()
        loss.backward()
        method.before_optimizer_step(step)
        optimizer.step()
        method.after_optimizer_step(step)
    with torch.no_grad():
        old_after, new_after = pooled_features(method.model, bundle, old), pooled_features(method.model, bundle, new)
    for before, after in zip(old_before, old_after):
        assert (after - before).abs().max() <= 1e-4 * before.abs().max()
    for before, after in zip(new_before, new_after):
        assert (after - before).abs().max() > 1e-2 * before.abs().max()


@pytest.mark.parametrize("name", ["cmcl", "cmcl_official"])
def test_clip_run_end_to_end(tmp_path, world_clip_dir, name):
    from test_run import quick_args

    run_dir = tmp_path / name
    assert main(["run", *quick_args(world_clip_dir, f"method.name={name}"), "-o", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == name and len(results["matrices"]["mean_R@1"]) == 2
