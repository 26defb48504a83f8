"""Readers of every format, the lazy image store, discovery of a data set folder, bad-data errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from realdata import (
    hf_dataset,
    image_bytes,
    pairs,
    quiet_datasets,
    write_coco,
    write_csv,
    write_image_folder,
    write_images,
    write_jsonl,
    write_karpathy,
    write_wds,
)
from vlcl.data.formats import (
    DataError,
    Problems,
    read_coco,
    read_csv,
    read_hf,
    read_image_folder,
    read_jsonl,
    read_karpathy,
    read_templates,
    read_webdataset,
)
from vlcl.data.formats.detect import discover, read_source
from vlcl.data.images import ImageStore, concat_images
from vlcl.data.preprocess import ImagePreprocessor
from vlcl.data.samples import random_split

PRE = ImagePreprocessor(16)


def captions_of(samples):
    return [s.captions for s in samples]


def decoded(samples, preprocess=PRE):
    return ImageStore([s.image for s in samples], preprocess)[:]


@pytest.fixture
def items():
    return pairs(8)


@pytest.fixture
def three_copies(tmp_path, items):
    """The same 8 images with 2 captions each as CSV, JSONL and WebDataset."""
    write_images(tmp_path / "files", items)
    csv_path = write_csv(tmp_path / "files" / "data.csv", items)
    jsonl_path = write_jsonl(tmp_path / "files" / "data.jsonl", items)
    shards = write_wds(tmp_path / "shards", items, per_shard=3)
    return csv_path, jsonl_path, shards


def test_csv_jsonl_and_webdataset_copies_yield_identical_samples(three_copies, items):
    csv_path, jsonl_path, shards = three_copies
    from_csv = read_csv(csv_path)
    from_jsonl = read_jsonl(jsonl_path)
    from_wds = read_webdataset(shards)
    expected = [caps for _, caps in items]
    assert captions_of(from_csv) == captions_of(from_jsonl) == captions_of(from_wds) == expected
    images = [decoded(s) for s in (from_csv, from_jsonl, from_wds)]
    assert images[0].shape == (8, 16, 16, 3) and images[0].dtype == np.uint8
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[0], images[2])
    # and what the checkpoint's preprocessing makes of the original image
    with Image.open(csv_path.parent / items[1][0]) as original:
        assert np.array_equal(images[0][1], np.asarray(PRE._resize_and_crop(original)))


def test_image_store_indexes_like_a_uint8_array(three_copies):
    samples = read_csv(three_copies[0])
    store = ImageStore([s.image for s in samples], PRE, workers=2)
    full = np.asarray(store)
    assert len(store) == 8 and store.shape == full.shape == (8, 16, 16, 3) and full.dtype == np.uint8
    assert np.array_equal(store[3], full[3]) and np.array_equal(store[-1], full[7])
    assert np.array_equal(store[2:5], full[2:5]) and np.array_equal(store[[6, 0, 6]], full[[6, 0, 6]])
    assert np.array_equal(store[np.array([1, 4])], full[[1, 4]]) and np.array_equal(store[torch.tensor([5])], full[[5]])
    assert store[5:5].shape == (0, 16, 16, 3)
    with pytest.raises(IndexError):
        store[8]
    assert np.array_equal(store.subset([7, 1])[:], full[[7, 1]])
    joined = concat_images([store, full[:2]])
    assert len(joined) == 10 and np.array_equal(joined[8:], full[:2])
    assert np.array_equal(PRE.normalize_uint8(store[0:2]), PRE.normalize_uint8(full[0:2]))


def test_tsv_with_configured_columns_and_grouping(tmp_path, items):
    write_images(tmp_path / "images", items)  # found in images/ next to the file
    path = write_csv(tmp_path / "pairs.tsv", items, image_col="img", caption_col="caption", separator="\t")
    samples = read_csv(path, image_column="img", caption_column="caption")
    assert len(samples) == 8 and all(len(s.captions) == 2 for s in samples)
    assert samples[0].image.path == tmp_path / "images" / items[0][0]
    with pytest.raises(DataError, match=r"pairs.tsv: no column 'filepath' \(columns: img, caption\)"):
        read_csv(path)


def test_coco_and_karpathy(tmp_path, items):
    write_images(tmp_path / "val2014", items)
    coco = read_coco(write_coco(tmp_path / "annotations" / "captions_val2014.json", items))
    assert captions_of(coco) == [caps for _, caps in items]
    assert coco[0].image.path == tmp_path / "val2014" / items[0][0]
    path = write_karpathy(
        tmp_path / "dataset_coco.json", {"train": items[:3], "restval": items[3:5], "test": items[5:]}, filepath="val2014"
    )
    assert len(read_karpathy(path, split="train")) == 5  # train includes restval
    test = read_karpathy(path, split="test")
    assert captions_of(test) == [caps for _, caps in items[5:]] and test[0].image.path.is_file()
    with pytest.raises(DataError, match="no image in split 'val'"):
        read_karpathy(path, split="val")


def test_webdataset_captions_labels_and_json(tmp_path, items):
    write_wds(tmp_path / "cap", items, caption_ext="caption.txt")
    assert captions_of(read_webdataset(tmp_path / "cap", caption_ext=("caption.txt", "txt"))) == [caps for _, caps in items]
    labelled = read_webdataset(write_wds(tmp_path / "cls", items[:4], labels=[3, 1, 0, 2]), labels=True)
    assert [s.label for s in labelled] == [3, 1, 0, 2]
    import tarfile

    with tarfile.open(tmp_path / "j.tar", "w") as tar:
        for name, data in (
            ("a.png", image_bytes(0)),
            ("a.json", json.dumps({"caption": ["one red circle", "a circle"]}).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert captions_of(read_webdataset(tmp_path / "j.tar")) == [["one red circle", "a circle"]]


def test_image_folders_classnames_and_templates(tmp_path):
    write_image_folder(tmp_path / "test", [0, 1, 1, 2], ["b_class", "a_class", "c_class"])
    samples, names = read_image_folder(tmp_path / "test")
    assert names == ["a_class", "b_class", "c_class"]  # sorted, as torchvision's ImageFolder
    assert sorted(s.label for s in samples) == [0, 0, 1, 2]  # a_class holds the two images of label 1 above
    (tmp_path / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\nart of the {c}.\n")
    assert read_templates(tmp_path)[0] == ["a photo of a {}.", "art of the {}."]
    (tmp_path / "zeroshot_classification_templates.txt").write_text("no placeholder\n")
    with pytest.raises(DataError, match="templates.txt: line 1"):
        read_templates(tmp_path)


def test_hugging_face_save_to_disk_and_parquet(tmp_path, items):
    pytest.importorskip("datasets")
    datasets = quiet_datasets()
    datasets.DatasetDict({"train": hf_dataset(items, caption_column="prompt")}).save_to_disk(str(tmp_path / "dd"))
    samples, _ = read_hf(tmp_path / "dd", split="train", caption_columns=("prompt",))
    assert captions_of(samples) == [caps[:1] for _, caps in items]
    write_images(tmp_path / "files", items)
    assert np.array_equal(decoded(samples), decoded(read_csv(write_csv(tmp_path / "files" / "x.csv", items))))
    hf_dataset(items, labels=[0, 1] * 4, class_names=["red circle", "blue square"]).to_parquet(str(tmp_path / "test-0.parquet"))
    found = discover(tmp_path)
    assert found["test"].format == "parquet"
    labelled, names = read_source(found["test"], labels=True, problems=Problems())
    assert [s.label for s in labelled] == [0, 1] * 4 and names == ["red circle", "blue square"]
    with pytest.raises(DataError, match="no caption column 'text'"):
        read_hf(tmp_path / "dd", split="train", caption_columns=("text",))


def test_discover_recognises_every_layout(tmp_path, items):
    (tmp_path / "a").mkdir()
    write_csv(tmp_path / "a" / "train.csv", items)
    write_jsonl(tmp_path / "a" / "test.jsonl", items)
    write_karpathy(tmp_path / "b" / "dataset_flickr30k.json", {"train": items})
    write_wds(tmp_path / "c" / "train", items)
    write_image_folder(tmp_path / "c" / "val", [0, 1], ["x", "y"])
    write_wds(tmp_path / "d", items)
    assert {k: v.format for k, v in discover(tmp_path / "a").items()} == {"train": "csv", "test": "jsonl"}
    assert discover(tmp_path / "b")["train"].split == "train"
    found = discover(tmp_path / "c")
    assert found["train"].format == "wds" and found["test"].format == "folder"  # val stands in for test
    assert discover(tmp_path / "d")["all"].format == "wds"
    assert discover(tmp_path / "nothing") == {}



def test_a_registered_format_is_found_and_read_without_a_list_of_formats(tmp_path, monkeypatch):
    """A new format is one module that calls register_format: discover and read_source ask the registry."""
    from vlcl.data.formats import Sample, registry
    from vlcl.data.images import FileImage

    registry.get_format("csv")  # the shipped formats first, then a toy one beside them (removed after the test)
    monkeypatch.setattr(registry, "_FORMATS", dict(registry._FORMATS))

    def find(folder, split):
        if (folder / f"{split}.toy").is_file():
            yield registry.Source("toy", folder / f"{split}.toy")

    def read(source, request):
        lines = source.path.read_text().split()
        return [Sample(FileImage(source.path.parent / line), [f"a {line}"]) for line in lines], None

    registry.register_format("toy", read=read, labels=False, find=(registry.Finder("split_file", 15, find),))
    (tmp_path / "train.toy").write_text("a.png b.png")
    (tmp_path / "train.tsv").write_text("filepath\ttitle\n")  # csv (rank 10) is asked first: its file wins
    (tmp_path / "test.toy").write_text("c.png")
    found = discover(tmp_path)
    assert {k: v.format for k, v in found.items()} == {"train": "csv", "test": "toy"}
    samples, _ = read_source(found["test"], labels=False, problems=Problems())
    assert [s.captions for s in samples] == [["a c.png"]]
    assert not registry.get_format("toy").labels and registry.get_format("folder").captions is False
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_format("toy", read=read)

def test_random_split_is_fixed_by_the_seed(items):
    from vlcl.data.formats import Sample
    from vlcl.data.images import FileImage

    samples = [Sample(FileImage(name), caps) for name, caps in pairs(20)]
    train, test = random_split(samples, 0.2, seed=0, name="x")
    assert len(test) == 4 and len(train) == 16 and not {id(s) for s in train} & {id(s) for s in test}
    assert random_split(samples, 0.2, seed=0, name="x")[1] == test
    assert random_split(samples, 0.2, seed=1, name="x")[1] != test


# -- bad data ----------------------------------------------------------------------------


def test_corrupt_and_missing_images_name_the_file_and_line(tmp_path, items):
    write_images(tmp_path, items)
    (tmp_path / items[2][0]).write_bytes(b"not an image")
    path = write_csv(tmp_path / "data.csv", items + [("gone.jpg", ["a red star"])])
    samples = read_csv(path)
    store = ImageStore([s.image for s in samples], PRE)
    with pytest.raises(DataError, match=rf"data.csv: line 6: image .*{items[2][0]}: cannot be decoded"):
        store[2]
    from vlcl.data.samples import check_images

    with pytest.raises(DataError, match=r"data.csv: line 6: image .*img002.jpg is not an image"):
        check_images(samples, "header", Problems(), workers=0)
    with pytest.raises(DataError, match=r"data.csv: line 18: image .*gone.jpg not found"):
        check_images(samples[3:], "header", Problems(), workers=0)
    problems = Problems("skip")
    kept = check_images(samples, "header", problems, workers=2)
    assert len(kept) == 7 and problems.count == 2
    assert any("gone.jpg not found" in m for m in problems.messages)


def test_truncated_image_is_found_by_a_full_check(tmp_path, items):
    write_images(tmp_path, items)
    data = (tmp_path / items[1][0]).read_bytes()
    (tmp_path / items[1][0]).write_bytes(data[: len(data) // 2])
    samples = read_csv(write_csv(tmp_path / "d.csv", items))
    from vlcl.data.samples import check_images

    problems = Problems("skip")
    check_images(samples, "full", problems, workers=0)
    assert problems.count == 1 and items[1][0] in problems.messages[0]


def test_bad_json_line_and_empty_caption(tmp_path, items):
    write_images(tmp_path, items)
    path = write_jsonl(tmp_path / "d.jsonl", items)
    lines = path.read_text().splitlines()
    lines[2] = '{"image": "img002.jpg", "caption": '
    lines[4] = json.dumps({"image": items[4][0], "caption": "  "})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl: line 3: malformed JSON .*data.on_bad_sample=skip"):
        read_jsonl(path)
    problems = Problems("skip")
    samples = read_jsonl(path, problems=problems)
    assert len(samples) == 6 and problems.count == 2
    assert "d.jsonl: line 5: empty caption" in problems.messages[1]
    csv_path = write_csv(tmp_path / "e.csv", [(items[0][0], ["a red circle", ""])])
    with pytest.raises(DataError, match=r"e.csv: line 3: empty caption"):
        read_csv(csv_path)
