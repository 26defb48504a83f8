"""The Python API (vlcl.api, docs/api.md): runs from Python with the command line's checks, a run's model loaded
for inference that reproduces the numbers of results.json exactly, stage selection, the methods whose evaluation
uses hooks (moe_adapters' routes, rail's head), one-line errors naming the path, methods registered from user code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vlcl
from vlcl.api import build_run_config
from vlcl.config import ConfigError
from vlcl.data.images import DataError
from vlcl.methods import registry
from vlcl.models import load_clip

TASKS = ["sketch", "counting"]


def tiny(model_dir: Path, *extra: str) -> list[str]:
    return [
        f"model.path={model_dir}", "data.tasks=[sketch,counting]", "data.train_scale=0.04", "data.test_images=24",
        "data.zeroshot_per_class=4", "train.epochs=1", "train.batch_size=16", "train.lr=0.001", "threads=1", *extra,
    ]


METHOD_ARGS = {
    "finetune": ["checkpoint.keep=null"],  # every stage kept: test_stage_selection loads them all
    "lora": ["method.name=lora", "method.rank=4"],
    "cclip": ["method.name=cclip", "method.rank=4"],
    "moe_adapters": ["method.name=moe_adapters", "method.num_experts=4", "method.ddas_iterations=30",
                     "method.ddas_reference_iterations=50", "method.reference_images=64"],
    "rail": ["method.name=rail", "data.benchmark=embedded_cls", "method.form=primal", "method.hidden_dim=64"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, world_clip_dir):
    """Runs made through vlcl.run, once per method."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            run_dir = tmp_path_factory.mktemp(f"api-{name}") / "run"
            results = vlcl.run(overrides=tiny(world_clip_dir, *METHOD_ARGS[name]), run_dir=run_dir, progress=False)
            assert results == json.loads((run_dir / "results.json").read_text())
            made[name] = run_dir
        return made[name]

    return get


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def recall_of(run: vlcl.LoadedRun, name: str) -> dict[str, float]:
    dataset = run.data_set(name)
    with run.route(dataset.images):
        images, texts = run.encode_images(dataset.images), run.encode_texts(dataset.captions)
    evaluation = run.config.eval
    return vlcl.retrieval_recall(
        images, texts, dataset.text_to_image, ks=evaluation.ks, convention=evaluation.recall_convention,
        chunk_size=evaluation.chunk_size, text_groups=vlcl.caption_groups(dataset.captions),
    )


def test_import_vlcl_imports_neither_torch_nor_transformers():
    code = "import sys, vlcl\nprint(sorted({'torch', 'transformers', 'vlcl.api'} & set(sys.modules)), vlcl.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == ["[]", vlcl.__version__], result.stdout + result.stderr
    assert vlcl.run is vlcl.api.run and vlcl.Method is vlcl.methods.Method  # loaded on first use
    with pytest.raises(AttributeError, match="module 'vlcl' has no attribute 'nothing'"):
        vlcl.nothing  # noqa: B018
    assert set(vlcl.__all__) - {"__version__"} <= set(dir(vlcl))


@pytest.mark.parametrize("name", ["finetune", "lora", "cclip"])
def test_loaded_features_reproduce_the_recorded_recall_and_accuracy(name, runs):
    run_dir = runs(name)
    final = results_of(run_dir)["stages"][-1]
    run = vlcl.load_run(run_dir)
    assert (run.stage, run.stage_name, run.method) == (1, "counting", None)  # the weights are all it evaluated with
    for task in TASKS:
        recall = recall_of(run, task)
        recorded = final["metrics"]["retrieval"][task]
        assert recall == {k: v for k, v in recorded.items() if k != "mean_R@1"}, task
    for zeroshot in ("zs_shape", "zs_colour"):
        dataset = run.data_set(zeroshot)
        scores = run.classify(dataset.images, dataset.classnames, dataset.templates)
        assert vlcl.logit_accuracy(scores, dataset.labels) == final["metrics"]["zeroshot"][zeroshot]
        features = run.encode_images(dataset.images)
        classes = run.class_embeddings(dataset.classnames, dataset.templates)
        assert vlcl.zeroshot_accuracy(features, classes, dataset.labels) == final["metrics"]["zeroshot"][zeroshot]
    assert run.metrics == final["metrics"]
    assert run.evaluate() == final["metrics"]


def test_stage_selection(runs, tmp_path, world_clip_dir):
    run_dir = runs("finetune")
    stages = results_of(run_dir)["stages"]
    newest = vlcl.load_run(run_dir)
    assert newest.stages == ["pretrained", "sketch", "counting"]
    for key, index in [("counting", 1), (1, 1), ("sketch", 0), (0, 0), ("pretrained", -1), (-1, -1)]:
        run = vlcl.load_run(run_dir, key)
        assert run.stage == index and run.stage_name == stages[index + 1]["name"]
        assert run.metrics == stages[index + 1]["metrics"], key
    assert vlcl.load_run(run_dir, "sketch").evaluate() == stages[1]["metrics"]
    pretrained = vlcl.load_run(run_dir, "pretrained")
    assert pretrained.evaluate() == stages[0]["metrics"]
    assert all(torch.equal(a, b) for a, b in zip(pretrained.model.state_dict().values(), load_clip(str(world_clip_dir)).model.state_dict().values()))
    texts = ["a red circle", "two blue squares"]
    assert not torch.equal(vlcl.load_run(run_dir, 0).encode_texts(texts), newest.encode_texts(texts))

    pruned = tmp_path / "pruned"  # the default checkpoint.keep=1: only the newest stage is on disk
    shutil.copytree(run_dir, pruned)
    shutil.rmtree(pruned / "checkpoints" / "stage_00")
    assert vlcl.load_run(pruned).stages == ["pretrained", "counting"]
    with pytest.raises(vlcl.RunDirError, match="'sketch' was evaluated but its checkpoint was not kept"):
        vlcl.load_run(pruned, "sketch")

    stopped = tmp_path / "stopped"  # a run stopped in task 2: its newest complete stage is the first
    shutil.copytree(run_dir, stopped)
    shutil.rmtree(stopped / "checkpoints" / "stage_01")
    (stopped / "checkpoints" / "latest.json").unlink()
    run = vlcl.load_run(stopped)
    assert (run.stage, run.stages) == (0, ["pretrained", "sketch"])
    with pytest.raises(vlcl.RunDirError) as error:
        vlcl.load_run(stopped, "counting")
    assert str(error.value) == f"{stopped}: no complete stage 'counting'; stages that can be loaded: -1 (pretrained), 0 (sketch)"
    with pytest.raises(vlcl.RunDirError, match=r"no complete stage 5;"):
        vlcl.load_run(run_dir, 5)
    with pytest.raises(TypeError):
        vlcl.load_run(run_dir, True)


def test_a_bad_run_directory_is_one_line_naming_it(tmp_path, runs):
    missing, a_file, not_a_run, no_checkpoint = tmp_path / "missing", tmp_path / "file", tmp_path / "empty", tmp_path / "fresh"
    a_file.write_text("")
    not_a_run.mkdir()
    no_checkpoint.mkdir()
    shutil.copy(runs("finetune") / "config.yaml", no_checkpoint / "config.yaml")
    features = tmp_path / "features"
    features.mkdir()
    (features / "config.yaml").write_text("data:\n  benchmark: features\n")
    expected = {
        missing: "run directory not found",
        a_file: "not a directory, expected a vlcl run directory",
        not_a_run: "not a vlcl run directory (no config.yaml)",
        no_checkpoint: "no complete stage checkpoint yet (the run stopped in its first task)",
        features: "the run trained per-modality feature maps (data.benchmark=features), not a CLIP model",
    }
    for path, message in expected.items():
        with pytest.raises(vlcl.RunDirError) as error:
            vlcl.load_run(path)
        text = str(error.value)
        assert text.startswith(f"{path}: {message}") and "\n" not in text, text


def test_moe_adapters_is_rebuilt_and_routes_each_set_as_its_evaluation_did(runs):
    run_dir = runs("moe_adapters")
    final = results_of(run_dir)["stages"][-1]["metrics"]
    run = vlcl.load_run(run_dir)
    assert run.routes and run.method is not None
    with pytest.raises(ValueError) as error:
        run.encode_texts(["a red circle"])
    assert str(error.value).startswith("method 'moe_adapters' evaluates each set through a route it picks from the set's images")
    with pytest.raises(ValueError):
        run.class_embeddings(["circle", "square"])
    routed = []
    for task in TASKS:
        dataset = run.data_set(task)
        with run.route(dataset.images) as shares:
            assert shares == final["routes"][task]
        routed += [task] if shares != {"frozen": 1.0} else []
        assert recall_of(run, task) == {k: v for k, v in final["retrieval"][task].items() if k != "mean_R@1"}
    dataset = run.data_set("zs_shape")
    assert vlcl.logit_accuracy(run.classify(dataset.images, dataset.classnames, dataset.templates), dataset.labels) == final["zeroshot"]["zs_shape"]
    assert run.evaluate() == final
    assert routed, "no set took a router: the test would not show that routing matters"
    dataset = run.data_set(routed[0])  # the saved CLIP weights alone are the frozen model: other features
    plain = load_clip(str(run_dir / "checkpoints" / "stage_01" / "model")).model
    from vlcl.models.encode import encode_images

    assert not torch.allclose(run.encode_images(dataset.images), encode_images(plain, run.preprocess.normalize_uint8(dataset.images)))
    assert vlcl.load_run(run_dir, "pretrained").evaluate() == results_of(run_dir)["stages"][0]["metrics"]


def test_rail_classifies_with_its_own_head(runs):
    run_dir = runs("rail")
    final = results_of(run_dir)["stages"][-1]["metrics"]
    run = vlcl.load_run(run_dir)
    assert run.method is not None and not run.routes
    for task in TASKS:
        dataset = run.data_set(task)
        scores = run.classify(dataset.images, dataset.classnames, dataset.templates)
        assert vlcl.logit_accuracy(scores, dataset.labels) == final["zeroshot"][task]
    assert run.encode_texts(["a photo of a circle"]).shape == (1, run.model.config.projection_dim)
    assert run.evaluate() == final


def test_images_in_every_form_give_the_same_features(runs, tmp_path):
    run = vlcl.load_run(runs("finetune"))
    size = run.preprocess.image_size
    array = run.data_set("sketch").images[:5]
    pictures = [Image.fromarray(a) for a in array]
    paths = []
    for i, picture in enumerate(pictures):
        paths.append(tmp_path / f"{i}.png")
        picture.save(paths[-1])
    expected = run.encode_images(array)
    assert expected.shape == (5, run.model.config.projection_dim)
    assert torch.allclose(expected.norm(dim=1), torch.ones(5))
    assert torch.equal(run.encode_images(pictures), expected)
    assert torch.equal(run.encode_images([str(p) for p in paths]), expected)
    assert torch.equal(run.encode_images(torch.from_numpy(array)), expected)
    assert torch.equal(run.encode_images(run.preprocess.normalize_uint8(array)), expected)
    assert torch.allclose(run.encode_images(paths[0]), expected[:1], atol=1e-6)  # one image: another batch, last bits
    big = np.stack([np.asarray(p.resize((size * 3, size * 3), Image.NEAREST)) for p in pictures])
    assert run.encode_images(big).shape == expected.shape  # resized and cropped by the checkpoint's preprocessing
    with pytest.raises(DataError, match=str(tmp_path / "nope.png")):
        run.encode_images(tmp_path / "nope.png")
    with pytest.raises(TypeError):
        run.encode_images(array.astype(np.float32))
    with pytest.raises(ValueError, match="has no"):
        run.classify(pictures, ["circle"], ["a circle"])


def test_run_has_the_command_lines_checks(runs, tmp_path, world_clip_dir):
    run_dir = runs("finetune")
    before = (run_dir / "results.json").read_bytes()
    with pytest.raises(vlcl.RunDirError) as error:
        vlcl.run(overrides=tiny(world_clip_dir), run_dir=run_dir, progress=False)
    assert str(error.value) == f"{run_dir}: run directory already exists; use resume=True to continue it or overwrite=True to replace it"
    assert (run_dir / "results.json").read_bytes() == before
    with pytest.raises(TypeError, match="takes the config from run_dir"):
        vlcl.run({"seed": 1}, run_dir=run_dir, resume=True)
    with pytest.raises(vlcl.RunDirError, match="overrides change the run's config at train.epochs"):
        vlcl.run(run_dir=run_dir, resume=True, overrides={"train.epochs": 3})
    again = vlcl.run(run_dir=run_dir, resume=True, progress=False)  # finished: nothing left to do
    assert again["matrices"] == json.loads(before)["matrices"]
    with pytest.raises(ValueError, match=r"unknown method 'fintune' \(did you mean 'finetune'\?\)"):
        vlcl.run({"method": {"name": "fintune"}}, tiny(world_clip_dir), run_dir=tmp_path / "typo", progress=False)
    assert not (tmp_path / "typo").exists()

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    replaced = vlcl.run({"train": {"epochs": 1}, "seed": 1}, tiny(world_clip_dir), run_dir=copy, overwrite=True, progress=False)
    assert replaced["config"]["seed"] == 1 and not (tmp_path / ".copy.replaced").exists()

    yaml_file = tmp_path / "config.yaml"
    yaml_file.write_text("train:\n  epochs: 2\nmethod:\n  name: lora\n  rank: 4\n")
    from_yaml = build_run_config(yaml_file, ["seed=3"])
    from_dict = build_run_config({"train": {"epochs": 2}, "method": {"name": "lora", "rank": 4}}, {"seed": 3})
    assert from_yaml == from_dict == build_run_config(from_dict) == build_run_config(from_yaml.model_copy(update={"seed": 0}), ["seed=3"])
    assert from_dict.method.options() == {"rank": 4}
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        build_run_config(None, ["train.epoch=2"])


@pytest.fixture
def clean_registry():
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_a_method_registered_from_user_code_runs_and_loads(clean_registry, tmp_path, world_clip_dir):
    @vlcl.register_method
    class HeadsOnly(vlcl.Method):
        name = "api_test_heads_only"
        description = "the two projections only"

        def setup(self, model, context):
            super().setup(model, context)
            model.requires_grad_(False)
            model.visual_projection.requires_grad_(True)
            model.text_projection.requires_grad_(True)

    assert "api_test_heads_only" in registry.list_methods()
    run_dir = tmp_path / "run"
    results = vlcl.run({"method": {"name": "api_test_heads_only"}}, tiny(world_clip_dir), run_dir=run_dir, progress=False)
    pretrained = load_clip(str(world_clip_dir)).model.state_dict()
    trained = vlcl.load_run(run_dir).model.state_dict()
    changed = {k for k in pretrained if not torch.equal(pretrained[k], trained[k])}
    assert changed == {"visual_projection.weight", "text_projection.weight"}
    assert vlcl.load_run(run_dir).evaluate() == results["stages"][-1]["metrics"]

    class Again(vlcl.Method):  # the same definition run again (a notebook cell): replaces it
        name = "api_test_heads_only"

    Again.__qualname__ = HeadsOnly.__qualname__
    assert vlcl.register_method(Again) is Again and registry.method_class("api_test_heads_only") is Again

    class Clash(vlcl.Method):
        name = "finetune"

    with pytest.raises(ValueError) as error:
        vlcl.register_method(Clash)
    assert str(error.value) == "method name 'finetune' is taken by vlcl.methods.finetune.FineTune; give Clash another name"
    with pytest.raises(TypeError, match="has no name"):
        vlcl.register_method(type("Nameless", (vlcl.Method,), {}))
    with pytest.raises(TypeError, match="expected a subclass of vlcl.Method"):
        vlcl.register_method(dict)

    del registry._REGISTRY["api_test_heads_only"]  # another process: the method is not registered there
    with pytest.raises(vlcl.RunDirError) as error:
        vlcl.load_run(run_dir)
    assert str(error.value) == (
        f"{run_dir}: the run's method 'api_test_heads_only' is not registered in this process; "
        "import or register it (vlcl.register_method) before load_run"
    )
