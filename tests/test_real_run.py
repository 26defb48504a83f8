"""End to end on real-format data: continual runs of `vlcl8` and `mtil` over tiny data roots, bad data, checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny_clip, shipped_words
from realdata import make_mtil_root, make_vlcl8_root
from vlcl.app.cli import main
from vlcl.config import load_config
from vlcl.data.images import ImageStore
from vlcl.data.registry import build_benchmark
from vlcl.models.loading import load_clip

FAST = ["train.epochs=2", "train.batch_size=4", "train.lr=0.001", "threads=1", "data.workers=0"]


@pytest.fixture(scope="module")
def vlcl8_root(tmp_path_factory):
    pytest.importorskip("datasets")
    return make_vlcl8_root(tmp_path_factory.mktemp("vlcl8"))


@pytest.fixture(scope="module")
def openai_style_clip(tmp_path_factory):
    """A tiny CLIP whose preprocessor_config.json is written as OpenAI's checkpoints on the hub write it
    (integer sizes, resize 20 then crop 16, its own mean/std)."""
    directory = make_tiny_clip(tmp_path_factory.mktemp("openai_style"), words=shipped_words())
    config = {
        "crop_size": 16,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.5, 0.4, 0.3],
        "image_std": [0.2, 0.25, 0.3],
        "resample": 3,
        "size": 20,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(config))
    return directory


def test_checkpoint_decides_image_size_statistics_and_context_length(openai_style_clip, vlcl8_root):
    bundle = load_clip(str(openai_style_clip))
    pre = bundle.preprocess
    assert (pre.image_size, pre.resize_shortest_edge, pre.mean, pre.std) == (16, 20, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert bundle.context_length == 16
    config = load_config(None, ["data.benchmark=vlcl8", f"data.root={vlcl8_root}", "data.tasks=[lexica]", "data.eval_sets=[]"])
    benchmark = build_benchmark(config.data, image_size=pre.image_size, preprocess=pre)
    store = benchmark.tasks[0].train.images
    assert isinstance(store, ImageStore) and store.shape == (12, 16, 16, 3)
    with Image.open(vlcl8_root / "lexica" / "img001.jpg") as image:
        image = image.convert("RGB").resize(
            (round(20 * image.width / image.height), 20)
            if image.width > image.height
            else (20, round(20 * image.height / image.width)),
            Image.BICUBIC,
        )
        left, top = (image.width - 16) // 2, (image.height - 16) // 2
        assert np.array_equal(store[1], np.asarray(image.crop((left, top, left + 16, top + 16))))


def test_vlcl8_two_task_run_over_real_formats(tmp_path, openai_style_clip, vlcl8_root, capsys):
    """Karpathy JSON and WebDataset tasks, a Hugging Face held-out set, zero-shot sets as folders, shards and ClassLabel."""
    run_dir = tmp_path / "run"
    args = [
        "run",
        f"model.path={openai_style_clip}",
        "data.benchmark=vlcl8",
        "data.tasks=[flickr30k,simpsons]",
        "data.eval_sets=[havg,cifar100,cars,imagenet]",
        *FAST,
        "--data-root",
        str(vlcl8_root),
        "-o",
        str(run_dir),
    ]
    assert main(args) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == ["flickr30k", "simpsons"] and results["heldout_retrieval"] == ["havg"]
    assert results["zeroshot_sets"] == ["zs_imagenet", "zs_cifar100", "zs_cars"]  # the benchmark's order
    assert len(results["matrices"]["mean_R@1"]) == 2 and results["stages"][1]["train"]["steps"] == 6  # 12 images / 4, 2 epochs
    assert set(results["summary"]["retrieval"]["mean_R@1"]) >= {"last", "avg", "transfer", "bwt"}
    assert results["data"]["skipped_samples"] == 0 and results["data"]["sets"]["simpsons"]["test_images"] == 4
    assert "karpathy" in results["data"]["sets"]["flickr30k"]["sources"]["test"]
    assert results["config"]["data"]["root"] == str(vlcl8_root)
    assert "R@1" in capsys.readouterr().out


@pytest.mark.parametrize("tasks", [["coco", "lexica"], ["pets", "wikiart"], ["kream", "sketch"]])
def test_every_vlcl8_format_builds_tasks_the_engine_can_index(vlcl8_root, tasks):
    """COCO JSON, CSV, parquet, JSONL, TSV and save_to_disk tasks: images index like the in-memory arrays."""
    config = load_config(
        None,
        [
            "data.benchmark=vlcl8",
            f"data.root={vlcl8_root}",
            f"data.tasks=[{','.join(tasks)}]",
            "data.eval_sets=[dtd,food101]",
            "data.workers=2",
        ],
    )
    benchmark = build_benchmark(config.data, image_size=16)
    for task in benchmark.tasks:
        assert task.train.images[[0, 2]].shape == (2, 16, 16, 3) and len(task.train.captions) == len(task.train.images)
        assert task.test.images[0:3].dtype == np.uint8 and len(task.test.text_to_image) == len(task.test.captions)
    assert [z.name for z in benchmark.zeroshot] == ["zs_dtd", "zs_food101"]
    assert benchmark.zeroshot[1].classnames == ["apple pie", "baby back ribs", "baklava"]  # ClassLabel names, OpenAI's spelling


def test_mtil_two_task_run_scores_top1_in_each_label_space(tmp_path, reading_clip_dir, capsys):
    root = make_mtil_root(tmp_path / "mtil")
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "run",
                f"model.path={reading_clip_dir}",
                "data.benchmark=mtil",
                "data.tasks=[aircraft,caltech101]",
                *FAST,
                f"data.root={root}",
                "-o",
                str(run_dir),
            ]
        )
        == 0
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data"]["unknown_words"]["aircraft"] == 0.0  # the tokenizer reads every class name
    assert results["task_metric"] == "top1" and list(results["matrices"]) == ["top1"]
    assert len(results["matrices"]["top1"]) == 2 and results["zeroshot_sets"] == []
    assert set(results["summary"]["classification"]["top1"]) >= {"last", "avg", "transfer"}
    metrics = results["stages"][0]["metrics"]["zeroshot"]
    assert set(metrics) == {"aircraft", "caltech101"} and "top5" not in metrics["caltech101"]  # 3 classes: no top-5
    assert "top-1 accuracy" in capsys.readouterr().out


def test_bad_sample_stops_the_run_or_is_skipped_and_counted(tmp_path, tiny_clip_dir, vlcl8_root, capsys):
    root = tmp_path / "root"
    shutil.copytree(vlcl8_root / "lexica", root / "lexica")
    (root / "lexica" / "img004.jpg").write_bytes(b"corrupt")
    common = [
        "run",
        f"model.path={tiny_clip_dir}",
        "data.benchmark=vlcl8",
        "data.tasks=[lexica]",
        "data.eval_sets=[]",
        *FAST,
        f"data.root={root}",
    ]
    assert main([*common, "-o", str(tmp_path / "strict")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vlcl: error: ")]
    assert len(errors) == 1  # one line naming the file and the line
    assert (
        "train.csv: line 10: image" in errors[0]
        and "img004.jpg is not an image" in errors[0]
        and "data.on_bad_sample=skip" in errors[0]
    )
    assert not (tmp_path / "strict" / "results.json").exists()
    assert main([*common, "data.on_bad_sample=skip", "-o", str(tmp_path / "skip")]) == 0
    results = json.loads((tmp_path / "skip" / "results.json").read_text())
    assert results["data"]["skipped_samples"] == 1 and results["data"]["sets"]["lexica"]["train_images"] == 11
    assert "img004.jpg" in results["data"]["sets"]["lexica"]["problems"][0]
    assert "skipped 1 bad samples" in capsys.readouterr().err


def test_named_benchmark_without_data_root_fails_before_writing(tmp_path, tiny_clip_dir, capsys):
    run_dir = tmp_path / "never"
    assert main(["run", f"model.path={tiny_clip_dir}", "data.benchmark=vlcl8", "-o", str(run_dir)]) == 2
    assert "set data.root=DIR (or --data-root DIR)" in capsys.readouterr().err
    assert not run_dir.exists()
    assert (
        main(
            [
                "run",
                f"model.path={tiny_clip_dir}",
                "data.benchmark=mtil",
                f"data.root={tmp_path}",
                "data.tasks=[nope]",
                "-o",
                str(run_dir),
            ]
        )
        == 2
    )
    assert "unknown task 'nope'" in capsys.readouterr().err and not run_dir.exists()


def test_shipped_paper_configs_validate():
    from pathlib import Path

    from vlcl.methods import create_method

    configs = Path(__file__).resolve().parent.parent / "configs"
    for name, benchmark in (("vlcl8_cclip.yaml", "vlcl8"), ("mtil_zscl.yaml", "mtil")):
        config = load_config(configs / name, ["data.root=/data"])
        assert config.data.benchmark == benchmark and config.model.path == "openai/clip-vit-base-patch16"
        create_method(config.method.name, config.method.options())


def test_folders_benchmark_runs_your_own_data(tmp_path, tiny_clip_dir, capsys):
    """Every sub-folder of the data root a data set: tasks in any format, evaluation-only sets by data.eval_sets."""
    from realdata import pairs, write_csv, write_image_folder, write_images, write_jsonl, write_wds

    root = tmp_path / "mine"
    items = pairs(10)
    write_images(root / "photos", items)
    write_csv(root / "photos" / "photos.csv", items)  # one file: a random 80/20 split
    write_images(root / "drawings" / "images", items, offset=20)
    write_jsonl(root / "drawings" / "train.jsonl", items[:8])
    write_jsonl(root / "drawings" / "test.jsonl", items[8:])
    write_wds(root / "street", items[:6], offset=40)  # evaluation only: all of it
    write_image_folder(root / "shapes" / "test", [0, 1, 0, 1], ["red circle", "blue square"])
    assert main(["data", "check", "folders", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "photos       found      data set, captions" in out and "shapes       found      evaluation set, classification" in out
    run_dir = tmp_path / "run"
    args = [
        "run",
        f"model.path={tiny_clip_dir}",
        "data.benchmark=folders",
        "data.tasks=[photos,drawings]",
        "data.eval_sets=[street,shapes]",
    ]
    assert main([*args, *FAST, f"data.root={root}", "-o", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == ["photos", "drawings"] and results["heldout_retrieval"] == ["street"]
    assert results["zeroshot_sets"] == ["zs_shapes"] and results["data"]["sets"]["street"]["test_images"] == 6
    assert results["data"]["sets"]["photos"]["test_images"] == 2
    assert main([*args[:3], "data.tasks=[photos,nope]", f"data.root={root}", "-o", str(tmp_path / "x")]) == 2
    assert "no data set folder 'nope'" in capsys.readouterr().err


def test_hub_id_reads_the_cached_checkpoint_and_its_preprocessing(tmp_path, openai_style_clip, monkeypatch):
    """A hub id (offline here, so from the Hugging Face cache) loads, with the checkpoint's own preprocessing."""
    import huggingface_hub

    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-clip" / "snapshots" / "0123abcd"
    shutil.copytree(openai_style_clip, snapshot)
    (tmp_path / "hub" / "models--tiny-org--tiny-clip" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny-org--tiny-clip" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    bundle = load_clip("tiny-org/tiny-clip", local_files_only=False)
    assert (bundle.preprocess.image_size, bundle.preprocess.resize_shortest_edge, bundle.preprocess.mean) == (
        16,
        20,
        (0.5, 0.4, 0.3),
    )
