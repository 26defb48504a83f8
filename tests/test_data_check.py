"""`vlcl data check` and `vlcl data prepare` on a tiny VLCL-8 data root, whole and deliberately broken."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest

from realdata import make_vlcl8_root
from vlcl.app.cli import main
from vlcl.data.benchmarks.catalogue import DATASETS, MTIL, VLCL8


@pytest.fixture(scope="module")
def vlcl8_root(tmp_path_factory):
    pytest.importorskip("datasets")
    return make_vlcl8_root(tmp_path_factory.mktemp("vlcl8"))


def run_check(root, capsys, *extra):
    code = main(["data", "check", "vlcl8", "--data-root", str(root), *extra])
    return code, capsys.readouterr().out


def test_a_complete_root_is_all_found(vlcl8_root, capsys):
    code, out = run_check(vlcl8_root, capsys)
    assert code == 0, out
    assert "15 found, 0 missing, 0 malformed" in out
    assert "flickr30k    found" in out and "train: 12 images, 24 captions <- karpathy" in out
    assert "simpsons     found" in out and "random 80% (seed 0)" in out
    assert "cars         found" in out and "vlcl's shipped OpenAI list for 'cars'" in out


def test_a_broken_root_prints_every_problem(vlcl8_root, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(vlcl8_root, root)
    # flickr30k: a corrupt image; coco: gone; pets: no test split
    (root / "flickr30k" / "flickr30k-images" / "img004.jpg").write_bytes(b"\xff\xd8 garbage")
    shutil.rmtree(root / "coco")
    (root / "pets" / "data" / "test-00000-of-00001.parquet").unlink()
    # lexica: an empty caption; wikiart: a malformed JSON line
    lines = (root / "lexica" / "test.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ',""'
    (root / "lexica" / "test.csv").write_text("\n".join(lines) + "\n")
    with (root / "wikiart" / "wikiart.jsonl").open("a") as handle:
        handle.write('{"image": "img000.png", "text": \n')
    # simpsons: a shard sample without its image; cifar100: fewer class names than class folders
    with tarfile.open(root / "simpsons" / "9.tar", "w") as tar:
        info = tarfile.TarInfo("lonely.caption.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"a cat"))
    (root / "cifar100" / "classnames.txt").write_text("apple\nbaby\n")
    code, out = run_check(root, capsys)
    assert code == 1
    report = {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if line and not line.startswith(" ") and len(line.split()) > 1
    }
    assert report["coco"] == "missing" and report["pets"] == "missing"
    assert {report[n] for n in ("flickr30k", "lexica", "wikiart", "simpsons", "cifar100")} == {"malformed"}
    assert report["kream"] == "found" and report["havg"] == "found"
    expected = [
        f"problem: {root / 'coco'}: not found",
        "pets: no test split (found: train",
        "dataset_flickr30k.json: images[4]: image",
        "img004.jpg is not an image Pillow can read",
        f"{root / 'lexica' / 'test.csv'}: line 4: empty caption",
        f"{root / 'wikiart' / 'wikiart.jsonl'}: line 19: malformed JSON",
        "9.tar: sample 'lonely': no image",
        "labels go up to 2 but there are 2 class names",
        "8 found, 2 missing, 5 malformed",
    ]
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out}"
    # every problem is one line, under its data set
    assert all(not line.startswith("    problem:") or "\n" not in line for line in out.splitlines())


def test_full_image_check_finds_truncated_images(vlcl8_root, tmp_path, capsys):
    root = tmp_path / "truncated"
    shutil.copytree(vlcl8_root, root)
    image = root / "lexica" / "timg001.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 3 // 4])  # the header survives, the pixels do not
    assert "lexica       found" in run_check(root, capsys, "--image-check", "header")[1]
    code, out = run_check(root, capsys, "--image-check", "full")
    assert code == 1 and "lexica       malformed" in out and "timg001.jpg cannot be decoded" in out


def test_prepare_names_every_source_and_layout(capsys):
    assert main(["data", "prepare", "vlcl8"]) == 0
    out = capsys.readouterr().out
    for name in VLCL8.all_sets():
        assert f"\n{name} (" in out
    for text in (
        "dataset_coco.json",
        "visual-layer/oxford-iiit-pet-vl-enriched",
        "caption field: caption_enriched",
        "random 50/50",
        "HausaNLP/HausaVG",
    ):
        assert text in out
    assert main(["data", "prepare", "mtil"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{name} (" in out for name in MTIL.tasks) and "clip-benchmark/wds_fgvc_aircraft" in out


def test_shipped_class_names_and_templates_cover_every_classification_set():
    from vlcl.data.benchmarks.catalogue import shipped

    names, templates = shipped("classnames"), shipped("templates")
    counts = {
        "imagenet": 1000,
        "cifar100": 100,
        "cars": 196,
        "flowers": 102,
        "dtd": 47,
        "food101": 101,
        "aircraft": 100,
        "caltech101": 102,
        "eurosat": 10,
        "mnist": 10,
        "pets": 37,
        "sun397": 397,
    }
    assert {k: len(v) for k, v in names.items()} == counts
    assert len(templates["imagenet"]) == 80 and all(t.count("{}") == 1 for ts in templates.values() for t in ts)
    assert all(DATASETS[n].classes in names for n in (*VLCL8.zeroshot, *MTIL.tasks))
    assert json.dumps(names["sun397"][:2]) == '["abbey", "airplane cabin"]'
