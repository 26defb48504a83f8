"""moe_adapters: the frozen CLIP with every router off, frozen experts that stay frozen, DDAS routes, quick runs."""

from __future__ import annotations

import json

import pytest
import torch

from test_run import quick_args
from vlcl.app.cli import main
from vlcl.data.benchmark import CaptionedImages
from vlcl.data.benchmarks import world
from vlcl.engine.checkpoint import read_stage_checkpoint
from vlcl.methods import RunContext, Stage, create_method
from vlcl.models import load_clip
from vlcl.models.encode import image_embeddings, text_embeddings


def setup_method(model_path, task_names=("sketch", "counting"), **options):
    bundle = load_clip(str(model_path))
    method = create_method("moe_adapters", options)
    method.setup(bundle.model, RunContext(task_names=list(task_names), seed=0, bundle=bundle))
    return method, bundle


def test_every_router_off_is_the_frozen_model_exactly(tiny_clip_dir):
    method, bundle = setup_method(tiny_clip_dir)
    plain = load_clip(str(tiny_clip_dir)).model.eval()
    with torch.no_grad():  # experts that add something when routed
        for param in method.adapters.parameters():
            param.add_(0.1 * torch.randn_like(param))
    model = method.evaluation_model().eval()
    assert all(not p.requires_grad for p in model.parameters())
    pixels = torch.randn(4, 3, 16, 16)
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        expected = image_embeddings(plain, pixels), text_embeddings(plain, ids, mask)
        with method.adapters.routing(None):
            assert torch.equal(image_embeddings(model, pixels), expected[0])
            assert torch.equal(text_embeddings(model, ids, mask), expected[1])
        with method.adapters.routing(0):  # a router on: the mixture changes the embeddings
            assert not torch.allclose(image_embeddings(model, pixels), expected[0])


def test_trains_only_the_current_router_and_unfrozen_experts(tiny_clip_dir):
    method, _ = setup_method(tiny_clip_dir, num_experts=4, freeze_top=1)
    method.begin_task(Stage(0, "sketch", (0,)), None)
    params = {id(p) for g in method.parameter_groups() for p in g.params}
    names = {name for name, p in method.adapters.named_parameters() if id(p) in params}
    assert names and all(".routers.0." in n or ".experts." in n for n in names)
    assert {g.tower for g in method.parameter_groups()} == {"vision", "text"}
    assert all(id(p) not in params for p in method.model.parameters())


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory, world_clip_dir):
    run_dir = tmp_path_factory.mktemp("moe") / "run"
    options = ["method.num_experts=4", "method.ddas_reference_iterations=50", "method.reference_images=64", "checkpoint.keep=null"]
    assert main(["run", *quick_args(world_clip_dir, "method.name=moe_adapters", *options), "-o", str(run_dir)]) == 0
    return run_dir


@pytest.mark.slow
def test_a_caption_run_records_routes_and_keeps_frozen_experts_bit_identical(caption_run):
    results = json.loads((caption_run / "results.json").read_text())
    sets = {"sketch", "counting", "base", "grainy", "zs_shape", "zs_colour", "zs_shape_colour"}
    for stage in results["stages"]:
        routes = stage["metrics"]["routes"]
        assert set(routes) == sets
        assert all(abs(sum(shares.values()) - 1) < 1e-9 and set(shares) <= {"frozen", "sketch", "counting"} for shares in routes.values())
    assert all(shares == {"frozen": 1.0} for shares in results["stages"][0]["metrics"]["routes"].values())
    rows = (caption_run / "metrics.csv").read_text().splitlines()
    assert any(",routes," in row for row in rows)
    first, _ = read_stage_checkpoint(caption_run / "checkpoints" / "stage_00")
    second, _ = read_stage_checkpoint(caption_run / "checkpoints" / "stage_01")
    before, after = first["adapters"], second["adapters"]
    moved = 0
    for key, tensor in before.items():
        if key.count(".") < 4:  # the usage and frozen buffers
            continue
        tower, layer, kind, number = key.split(".")[:4]
        if kind == "experts" and bool(before[f"{tower}.{layer}.frozen"][int(number)]):
            assert torch.equal(tensor, after[key]), key  # frozen after task 1: untouched by task 2 (weight decay included)
        elif kind == "routers" and number == "0":
            assert torch.equal(tensor, after[key]), key  # task 1's router does not move in task 2
        elif kind == "experts":
            moved += not torch.equal(tensor, after[key])
    assert moved > 0  # the unfrozen experts did train
    frozen = [int(tensor.sum()) for key, tensor in before.items() if key.endswith(".frozen")]
    assert frozen and set(frozen) == {2}  # freeze_top=2 per layer and tower after task 1
    assert set(second["thresholds"]) == {"0", "1"} and second["reference_autoencoder"] is not None


def test_a_classification_run_records_routes(tmp_path, world_clip_dir):
    run_dir = tmp_path / "run"
    args = [
        "run", "data.benchmark=embedded_cls", "data.tasks=[new_shapes,counting]", "data.train_scale=0.02", "data.test_images=12",
        "data.zeroshot_per_class=2", "train.epochs=1", "train.batch_size=8", "threads=1", f"model.path={world_clip_dir}",
        "method.name=moe_adapters", "method.num_experts=4", "method.ddas_reference_iterations=50", "method.reference_images=64",
        "-o", str(run_dir),
    ]
    assert main(args) == 0
    results = json.loads((run_dir / "results.json").read_text())
    routes = results["stages"][-1]["metrics"]["routes"]
    assert {"new_shapes", "counting", "zs_shape"} <= set(routes)
    assert all(abs(sum(shares.values()) - 1) < 1e-9 for shares in routes.values())


def test_without_ddas_every_set_takes_the_newest_router(tmp_path, world_clip_dir):
    run_dir = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir, "method.name=moe_adapters", "method.num_experts=4", "method.ddas=false"), "-o", str(run_dir)]) == 0
    stages = json.loads((run_dir / "results.json").read_text())["stages"]
    assert [set(map(json.dumps, s["metrics"]["routes"].values())) for s in stages] == [
        {'{"frozen": 1.0}'}, {'{"sketch": 1.0}'}, {'{"counting": 1.0}'}
    ]


def split(domain: str, n: int, split_name: str, size: int) -> CaptionedImages:
    s = world.generate_split(domain, n, seed=0, split=split_name, captions_per_image=1, size=size)
    return CaptionedImages(domain, s.images, s.captions)


@pytest.mark.slow
@pytest.mark.parametrize("decision", ["mean", "vote"])
def test_ddas_sends_a_trained_domain_to_its_router_and_held_out_ones_to_the_frozen_model(decision):
    """The shipped CLIP; one task (sketch) learnt: its test images take its router, base-world and pixel-art
    images (never trained) the frozen model; the previous route comes back after each set."""
    method, bundle = setup_method(
        "embedded", task_names=("sketch", "pixel_art"), num_experts=4, reference_images=300, ddas_reference_iterations=150,
        ddas_iterations=150, ddas_decision=decision,
    )
    size = bundle.preprocess.image_size
    stage = Stage(0, "sketch", (0,))
    method.begin_task(stage, split("sketch", 400, "train", size))
    method.end_task(stage)
    assert method.adapters.active_task == 0 and method.thresholds[0] > 0
    for domain, expected, active in [("sketch", {"sketch": 1.0}, 0), ("base", {"frozen": 1.0}, None), ("pixel_art", {"frozen": 1.0}, None)]:
        images = split(domain, 100, "test", size).images
        with method.evaluation_route(domain, images) as shares:
            if decision == "mean":
                assert shares == expected, domain
            else:
                assert max(shares, key=shares.get) == next(iter(expected)) and shares[next(iter(expected))] > 0.8, (domain, shares)
            assert method.adapters.active_task == active
        assert method.adapters.active_task == 0


def test_state_round_trip_restores_routes(tiny_clip_dir):
    method, bundle = setup_method(tiny_clip_dir, num_experts=4, reference_images=32, ddas_reference_iterations=20, ddas_iterations=20)
    data = CaptionedImages("tiny", torch.randint(0, 255, (40, 16, 16, 3), dtype=torch.uint8).numpy(), [["a red circle"]] * 40)
    for index, name in enumerate(["sketch", "counting"]):
        method.begin_task(Stage(index, name, (index,)), data)
        method.end_task(Stage(index, name, (index,)))
    state = method.state_dict()
    fresh, _ = setup_method(tiny_clip_dir, num_experts=4)
    fresh.load_state_dict(state)
    images = data.images[:10]
    assert fresh.route_of(images) == method.route_of(images)
    assert fresh.adapters.frozen_experts() == method.adapters.frozen_experts()
