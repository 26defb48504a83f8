"""Images in every Pillow mode, the pixel limit, WebDataset shards that end early, and bad files named in one line."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realdata import image_bytes, pairs, write_csv, write_images, write_wds
from vlcl.data.formats import DataError, Problems, read_coco, read_csv, read_jsonl, read_karpathy, read_webdataset
from vlcl.data.formats.detect import discover, read_source
from vlcl.data.formats.folder import read_classnames
from vlcl.data.images import FileImage, ImageSource, ImageStore, check_image
from vlcl.data.preprocess import ImagePreprocessor, to_rgb
from vlcl.data.samples import check_images

PRE = ImagePreprocessor(16)
WIDTH = 64


def saved(image: Image.Image, fmt: str) -> Image.Image:
    """``image`` written in ``fmt`` and opened again: the mode a real file gives."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    buffer.seek(0)
    return Image.open(buffer)


def ramp(high: float, dtype) -> np.ndarray:
    """A horizontal ramp 0..high, 4 rows of WIDTH columns."""
    return np.tile(np.linspace(0, high, WIDTH), (4, 1)).astype(dtype)


def grey_of(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(to_rgb(image))
    assert rgb.dtype == np.uint8 and rgb.shape[-1] == 3
    return rgb[..., 0].astype(int)


# -- 1. image modes ---------------------------------------------------------------------


@pytest.mark.parametrize("mode,fmt", [("I;16", "PNG"), ("I;16B", "TIFF"), ("I;16L", "TIFF")])
def test_16_bit_greyscale_keeps_its_range(mode, fmt):
    values = ramp(65535, np.uint16)
    byte_order = ">u2" if mode == "I;16B" else "<u2"
    image = saved(Image.frombytes(mode, (WIDTH, 4), values.astype(byte_order).tobytes()), fmt)
    assert image.mode.startswith("I;16")
    grey = grey_of(image)
    assert grey.min() == 0 and grey.max() == 255  # Pillow's convert("RGB") clips: nearly all 255
    assert abs(grey.mean() - 127.5) < 2
    assert np.all(np.diff(grey[0]) >= 0)  # still a ramp
    assert np.abs(grey[0] - np.rint(values[0].astype(float) * 255 / 65535)).max() <= 1


def test_32_bit_integer_images_scale_by_their_maximum_above_255():
    wide = saved(Image.fromarray(ramp(1000, np.int32)), "TIFF")
    assert wide.mode == "I"
    grey = grey_of(wide)
    assert grey.min() == 0 and grey.max() == 255 and abs(grey.mean() - 127.5) < 2
    narrow = Image.fromarray(ramp(200, np.int32))
    assert grey_of(narrow).max() == 200  # 8-bit values stored as I stay as they are
    negative = Image.fromarray(np.array([[-50, 0, 510]], dtype=np.int32))
    assert grey_of(negative).tolist() == [[0, 0, 255]]


def test_float_images_clip_to_0_1_or_scale_by_their_maximum():
    unit = saved(Image.fromarray(ramp(1.0, np.float32)), "TIFF")
    assert unit.mode == "F"
    grey = grey_of(unit)
    assert grey.min() == 0 and grey.max() == 255 and abs(grey.mean() - 127.5) < 2
    large = Image.fromarray(ramp(40.0, np.float32))
    assert grey_of(large).max() == 255 and abs(grey_of(large).mean() - 127.5) < 2
    odd = Image.fromarray(np.array([[np.nan, -1.0, 0.5, np.inf]], dtype=np.float32))
    assert grey_of(odd).tolist() == [[0, 0, 128, 0]]


def colour_ramp() -> Image.Image:
    array = np.zeros((4, WIDTH, 3), dtype=np.uint8)
    array[..., 0] = np.linspace(0, 255, WIDTH).astype(np.uint8)
    array[..., 1] = 255 - array[..., 0]
    array[..., 2] = 90
    return Image.fromarray(array)


@pytest.mark.parametrize(
    "mode,fmt,tolerance",
    [("RGB", "PNG", 0), ("CMYK", "TIFF", 1), ("YCbCr", "TIFF", 2), ("LAB", "TIFF", 3), ("HSV", None, 3), ("P", "PNG", 3)],
)
def test_colour_modes_come_back_as_the_colours(mode, fmt, tolerance):
    """Mean error within Pillow's own round trip (8-bit LAB and HSV, a 256-colour palette quantise)."""
    original = colour_ramp()
    image = original.convert(mode, palette=Image.Palette.ADAPTIVE) if mode == "P" else original.convert(mode)
    if fmt:
        image = saved(image, fmt)
    assert image.mode == mode
    error = np.abs(np.asarray(to_rgb(image)).astype(int) - np.asarray(original))
    assert error.mean() <= tolerance and error.max() <= 40


@pytest.mark.parametrize("mode", ["1", "L"])
def test_greyscale_and_bilevel_images_span_black_to_white(mode):
    image = saved(Image.fromarray(ramp(255, np.uint8)).convert(mode), "PNG")
    grey = grey_of(image)
    assert grey.min() == 0 and grey.max() == 255
    assert (np.asarray(to_rgb(image)) == grey[..., None]).all()  # grey stays grey


def test_transparent_pixels_become_white():
    rgba = np.zeros((2, 4, 4), dtype=np.uint8)  # black strokes...
    rgba[:, :2, 3] = 255  # ... on the left half; the right half transparent
    image = Image.fromarray(rgba, "RGBA")
    cases = {
        "RGBA": saved(image, "PNG"),
        "LA": saved(image.convert("LA"), "PNG"),
        "PA": saved(image.convert("PA"), "TIFF"),
    }
    for mode, case in cases.items():
        assert case.mode == mode
        rgb = np.asarray(to_rgb(case))
        assert (rgb[:, :2] == 0).all(), mode
        assert (rgb[:, 2:] == 255).all(), mode  # not black: dropping alpha would give black on black
    half = Image.fromarray(np.array([[[0, 0, 0, 128]]], dtype=np.uint8), "RGBA")
    assert abs(int(np.asarray(to_rgb(half))[0, 0, 0]) - 127) <= 1  # half transparent: half way to white


def test_transparent_colours_of_palette_grey_and_16_bit_images_become_white():
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    assert np.asarray(to_rgb(saved(palette, "PNG"))).tolist() == [[[255, 255, 255], [200, 0, 0]]]
    grey = Image.fromarray(np.array([[0, 80]], dtype=np.uint8))
    buffer = io.BytesIO()
    grey.save(buffer, "PNG", transparency=0)
    assert np.asarray(to_rgb(Image.open(buffer))).tolist() == [[[255] * 3, [80] * 3]]
    deep = Image.frombytes("I;16", (2, 1), np.array([0, 65535], dtype="<u2").tobytes())
    buffer = io.BytesIO()
    deep.save(buffer, "PNG", transparency=0)
    opened = Image.open(buffer)
    assert opened.mode == "I;16" and "transparency" in opened.info
    assert np.asarray(to_rgb(opened)).tolist() == [[[255] * 3, [255] * 3]]


def test_image_store_decodes_a_16_bit_png_with_its_range(tmp_path):
    path = tmp_path / "deep.png"
    Image.frombytes("I;16", (WIDTH, WIDTH), np.tile(np.linspace(0, 65535, WIDTH), (WIDTH, 1)).astype("<u2").tobytes()).save(path)
    decoded = ImageStore([FileImage(path)], PRE)[0]
    assert decoded.min() < 20 and decoded.max() > 235 and 100 < decoded.mean() < 155


# -- 2. decompression bombs: data.max_image_pixels ----------------------------------------


@pytest.fixture
def big_png(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(image_bytes(0, size=(20, 20)))
    return path


def test_an_image_over_the_pixel_limit_is_named_with_both_numbers(big_png):
    source = FileImage(big_png, "list.csv: line 3")
    problem = check_image(source, "header", max_pixels=100)
    assert problem == "has 400 pixels (20x20), over data.max_image_pixels=100 (raise it for trusted data)"
    assert check_image(source, "header", max_pixels=400) is None
    with pytest.raises(
        DataError, match=r"^list.csv: line 3: image .*big.png: 400 pixels \(20x20\), over data.max_image_pixels=100"
    ):
        ImageStore([source], PRE, max_pixels=100)[0]
    assert ImageStore([source], PRE, max_pixels=100).subset([0]).max_pixels == 100


def test_over_the_pixel_limit_is_a_bad_sample_that_skip_counts(tmp_path, big_png):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("filepath,title\nbig.png,a red star\n", encoding="utf-8")
    write_images(tmp_path, pairs(2))
    with csv_path.open("a", encoding="utf-8") as handle:
        handle.write("img000.png,a blue circle\n")
    samples = read_csv(csv_path)
    with pytest.raises(DataError, match=r"line 2: image .*big.png has 400 pixels .* \(set data.on_bad_sample=skip"):
        check_images(samples, "header", Problems(), workers=0, max_pixels=350)
    problems = Problems("skip")
    kept = check_images(samples, "full", problems, workers=0, max_pixels=350)  # img000.png: 20x16
    assert [s.image.path.name for s in kept] == ["img000.png"] and problems.count == 1


def test_vlcl_pixel_limit_replaces_pillows_and_leaves_it_as_it_was(big_png, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # Pillow alone would refuse 400 pixels (over 2 x 50)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(big_png)
    for limit in (None, 1000):
        assert check_image(FileImage(big_png), "full", max_pixels=limit) is None
        assert ImageStore([FileImage(big_png)], PRE, max_pixels=limit)[0].shape == (16, 16, 3)
        assert Image.MAX_IMAGE_PIXELS == 50


class BombSource(ImageSource):
    origin = "shard 3"

    def open(self):
        raise Image.DecompressionBombError("Image size (999 pixels) exceeds limit")

    def describe(self):
        return "bomb.png"


def test_pillows_decompression_bomb_error_is_a_data_error():
    assert "cannot be decoded" in check_image(BombSource(), "header")
    with pytest.raises(DataError, match=r"shard 3: image bomb.png: cannot be decoded \(DecompressionBombError"):
        ImageStore([BombSource()], PRE)[0]


def test_the_limit_reaches_the_data_sets_a_benchmark_builds(tmp_path):
    from vlcl.config import DataConfig
    from vlcl.data.benchmarks.catalogue import SetSpec
    from vlcl.data.benchmarks.data_root import build_named, load_set
    from vlcl.data.benchmarks.folders import folders_spec

    assert DataConfig().max_image_pixels == 89_478_485 and DataConfig(max_image_pixels=None).max_image_pixels is None
    with pytest.raises(Exception):
        DataConfig(max_image_pixels=0)
    items = pairs(12)
    write_images(tmp_path / "mine", items)
    write_csv(tmp_path / "mine" / "data.csv", items)
    over = sum(Image.open(tmp_path / "mine" / name).size in ((24, 22), (28, 16), (28, 22)) for name, _ in items)
    spec = SetSpec("mine", "mine", "captions", test_fraction=0.5)
    loaded = load_set(spec, tmp_path, want_train=True, on_bad_sample="skip", max_image_pixels=440)
    assert 0 < over == loaded.problems.count and len(loaded.train) + len(loaded.test) == 12 - over
    assert "over data.max_image_pixels=440" in loaded.problems.messages[0]
    benchmark_spec, sets = folders_spec(tmp_path, None, None)
    benchmark = build_named(benchmark_spec, root=str(tmp_path), sets=sets, image_check="none", max_image_pixels=123, workers=0)
    assert benchmark.tasks[0].train.images.max_pixels == 123 and benchmark.tasks[0].test.images.max_pixels == 123


# -- 3. WebDataset shards --------------------------------------------------------------------


@pytest.fixture
def shard(tmp_path):
    return write_wds(tmp_path / "shards", pairs(4), per_shard=4) / "0.tar"


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as archive:
        return list(archive)


def test_a_complete_shard_reads_whoever_wrote_it(tmp_path, shard):
    assert len(read_webdataset(shard)) == 4
    if shutil.which("tar") is None:
        pytest.skip("no tar command")
    folder = tmp_path / "files"
    with tarfile.open(shard) as archive:
        archive.extractall(folder, filter="data")
    names = sorted(p.name for p in folder.iterdir())
    for flags in ([], ["-b", "1"], ["--format=posix"]):  # -b 1: no padding after the two zero blocks
        gnu = tmp_path / "gnu.tar"
        subprocess.run(["tar", *flags, "-cf", str(gnu), *names], cwd=folder, check=True)
        assert [s.captions for s in read_webdataset(gnu)] == [s.captions for s in read_webdataset(shard)]


def test_a_shard_cut_inside_a_member_is_an_error(tmp_path, shard):
    image = next(m for m in members(shard) if m.name.endswith((".png", ".jpg")))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[: image.offset_data + image.size // 2])
    with pytest.raises(DataError, match=rf"cut.tar: truncated: member '{image.name}' needs \d+ bytes but the shard has"):
        read_webdataset(cut)


def test_a_shard_cut_at_a_member_boundary_is_an_error(tmp_path, shard):
    second = members(shard)[2]  # tarfile stops at the missing header without a word
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[: second.offset])
    with tarfile.open(cut) as archive:
        assert len(list(archive)) == 2
    with pytest.raises(
        DataError, match=r"cut.tar: truncated: ends at byte \d+ after member .* without tar's end-of-archive marker"
    ):
        read_webdataset(cut)
    cut.write_bytes(shard.read_bytes()[: second.offset + 100])  # inside a header
    with pytest.raises(DataError, match=r"cut.tar: corrupt or truncated: unreadable tar header at byte"):
        read_webdataset(cut)


def test_a_damaged_header_and_joined_tars_are_errors(tmp_path, shard):
    data = bytearray(shard.read_bytes())
    second = members(shard)[2]
    data[second.offset : second.offset + 100] = b"x" * 100  # bad checksum: tarfile would stop there
    broken = tmp_path / "broken.tar"
    broken.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"broken.tar: corrupt or truncated: unreadable tar header"):
        read_webdataset(broken)
    joined = tmp_path / "joined.tar"
    joined.write_bytes(shard.read_bytes() * 2)
    with pytest.raises(DataError, match=r"joined.tar: data after tar's end-of-archive marker"):
        read_webdataset(joined)


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def test_a_member_twice_in_a_shard_is_a_bad_sample(tmp_path):
    path = tmp_path / "dup.tar"
    with tarfile.open(path, "w") as archive:
        add_member(archive, "a.png", image_bytes(0))
        add_member(archive, "a.txt", b"a red star")
        add_member(archive, "b.png", image_bytes(1))
        add_member(archive, "b.txt", b"a blue circle")
        add_member(archive, "a.png", image_bytes(2))  # tar -r appends; extraction would keep this one
    with pytest.raises(DataError, match=r"dup.tar: sample 'a': member 'a.png' appears more than once in the shard"):
        read_webdataset(path)
    problems = Problems("skip")
    assert [s.captions for s in read_webdataset(path, problems=problems)] == [["a blue circle"]] and problems.count == 1


def test_a_key_in_two_shards_is_a_bad_sample(tmp_path):
    folder = tmp_path / "shards"
    write_wds(folder, pairs(3), per_shard=3)
    shutil.copy(folder / "0.tar", folder / "1.tar")
    with pytest.raises(DataError, match=r"1.tar: sample 's000000': key already used by a sample in .*0.tar"):
        read_webdataset(folder)
    problems = Problems("skip")
    assert len(read_webdataset(folder, problems=problems)) == 3 and problems.count == 3


def test_compressed_shards_say_decompress_from_the_data_root(tmp_path):
    from vlcl.data.benchmarks.catalogue import SetSpec
    from vlcl.data.benchmarks.data_root import load_set

    shards = write_wds(tmp_path / "root" / "mine" / "train", pairs(4), per_shard=2)
    for tar in list(shards.glob("*.tar")):
        (shards / (tar.name + ".gz")).write_bytes(b"\x1f\x8b" + tar.read_bytes())
        tar.unlink()
    spec = SetSpec("mine", "mine", "captions", test_fraction=0.5)
    assert discover(tmp_path / "root" / "mine")["train"].format == "wds"
    with pytest.raises(DataError, match=r"2 compressed shards: decompress them \(gunzip\), vlcl reads uncompressed .tar"):
        load_set(spec, tmp_path / "root", want_train=True)
    flat = tmp_path / "root" / "flat"  # shards at the data set folder's top
    shutil.copytree(shards, flat)
    assert discover(flat)["all"].format == "wds"
    with pytest.raises(DataError, match=r"decompress them"):
        load_set(SetSpec("flat", "flat", "captions", test_fraction=0.5), tmp_path / "root", want_train=True)


def test_compressed_shards_beside_uncompressed_ones_are_not_skipped_without_a_word(tmp_path):
    shards = write_wds(tmp_path / "shards", pairs(4), per_shard=2)
    (shards / "1.tar").rename(shards / "1.tgz")
    with pytest.raises(DataError, match=r"1 compressed shards: decompress them .*\(1.tgz\)"):
        read_webdataset(shards)
    (shards / "1.tar").write_bytes((shards / "0.tar").read_bytes())  # decompressed beside it: the .tgz is a copy
    with pytest.raises(DataError, match=r"key already used"):  # and then its keys are the first shard's
        read_webdataset(shards)


def test_a_folder_named_like_a_shard_and_a_bad_label_are_named(tmp_path):
    folder = tmp_path / "shards"
    (folder / "0.tar").mkdir(parents=True)
    with pytest.raises(DataError, match=r"0.tar: is a folder where the tar shard should be"):
        read_webdataset(folder)
    path = tmp_path / "labels.tar"
    with tarfile.open(path, "w") as archive:
        add_member(archive, "a.png", image_bytes(0))
        add_member(archive, "a.json", json.dumps({"label": 1.7}).encode())  # int() would make it 1
        add_member(archive, "b.png", image_bytes(1))
        add_member(archive, "b.json", json.dumps({"label": [2]}).encode())
        add_member(archive, "c.png", image_bytes(2))
        add_member(archive, "c.cls", b"3\n")
    problems = Problems("skip")
    assert [s.label for s in read_webdataset(path, labels=True, problems=problems)] == [3]
    assert problems.count == 2 and "label is not a non-negative integer (1.7)" in problems.messages[0]


def test_a_caption_with_a_unicode_line_separator_stays_one_caption(tmp_path):
    path = tmp_path / "u.tar"
    with tarfile.open(path, "w") as archive:
        add_member(archive, "a.png", image_bytes(0))
        add_member(archive, "a.txt", "\ufeffa red\u2028star\r\na blue circle".encode())
    assert read_webdataset(path)[0].captions == ["a red star", "a blue circle"]  # not three captions


# -- 4. messages: the data root and bad files ------------------------------------------------


def test_a_data_root_that_is_set_but_missing_is_named_as_set(tmp_path):
    from vlcl.config import DataConfig
    from vlcl.data.benchmarks.catalogue import NAMED
    from vlcl.data.benchmarks.data_root import build_folders, build_named, validate_data_config

    missing = str(tmp_path / "nope")
    for build in (lambda: build_named(NAMED["vlcl8"], root=missing), lambda: build_folders(root=missing)):
        with pytest.raises(DataError, match=rf"^data.root={missing}: data root not found$"):
            build()
    for benchmark in ("vlcl8", "folders"):
        with pytest.raises(DataError, match=rf"^data.root={missing}: data root not found$"):
            validate_data_config(DataConfig(benchmark=benchmark, root=missing))
        with pytest.raises(DataError, match=r"set data.root=DIR \(or --data-root DIR\)"):
            validate_data_config(DataConfig(benchmark=benchmark))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError, match=rf"^data.root={a_file}: not a folder"):
        build_folders(root=str(a_file))


def test_non_utf8_text_files_name_the_line(tmp_path):
    write_images(tmp_path, pairs(2))
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes("filepath,title\nimg000.png,a red star\nimg001.jpg,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"d.csv: line 3: not UTF-8 text"):
        read_csv(csv_path)
    with pytest.raises(DataError, match=r"d.csv: line 3: not UTF-8 text"):
        read_source(discover_one(csv_path), labels=False, problems=Problems())
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b'{"image": "img000.png", "caption": "a"}\n{"image": "img001.jpg", "caption": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"d.jsonl: line 2: not UTF-8 text"):
        read_jsonl(jsonl)
    (tmp_path / "classnames.txt").write_bytes(b"cat\ndog\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"classnames.txt: line 3: not UTF-8 text"):
        read_classnames(tmp_path)


def discover_one(path: Path):
    from vlcl.data.formats.detect import Source

    return Source("csv", path)


def test_a_byte_order_mark_is_not_part_of_the_first_column_or_class_name(tmp_path):
    write_images(tmp_path, pairs(1))
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("\ufefffilepath,title\nimg000.png,a red star\n", encoding="utf-8")
    assert read_csv(csv_path)[0].captions == ["a red star"]
    assert read_source(discover_one(csv_path), labels=False, problems=Problems())[0][0].captions == ["a red star"]
    (tmp_path / "classnames.txt").write_text("\ufeffcat\ndog\n", encoding="utf-8")
    assert read_classnames(tmp_path)[0] == ["cat", "dog"]


def test_a_jsonl_caption_with_a_unicode_line_separator_is_one_record(tmp_path):
    write_images(tmp_path, pairs(1))
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"image": "img000.png", "caption": "a red\u2028star"}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    assert [s.captions for s in read_jsonl(path)] == [["a red star"]]  # splitlines() would cut the record in two


def test_json_that_python_refuses_is_a_bad_line_not_a_traceback(tmp_path):
    write_images(tmp_path, pairs(2))
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"image": "img000.png", "caption": "a", "n": ' + "9" * 5000 + "}\n" + '{"image": "img001.jpg", "caption": "b"}\n'
    )
    problems = Problems("skip")
    assert len(read_jsonl(path, problems=problems)) == 1 and "line 1: unreadable JSON" in problems.messages[0]
    coco = tmp_path / "captions.json"
    coco.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"captions.json: unreadable JSON \(RecursionError"):
        read_coco(coco)


def test_a_folder_or_unreadable_file_where_a_file_should_be(tmp_path, monkeypatch):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(DataError, match=r"d.csv: is a folder where the annotation file should be"):
        read_csv(tmp_path / "d.csv")
    (tmp_path / "img.png").mkdir()
    assert check_image(FileImage(tmp_path / "img.png"), "header") == "is a folder, not an image file"
    locked = write_csv(tmp_path / "locked.csv", pairs(1))

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)  # as an unreadable file (the tests may run as root)
    with pytest.raises(DataError, match=r"locked.csv: cannot read the annotation file \(Permission denied\)"):
        read_csv(locked)


def test_coco_ids_that_are_not_numbers_and_repeated_ids_are_bad_samples(tmp_path):
    write_images(tmp_path, pairs(2))
    path = tmp_path / "captions.json"
    data = {
        "images": [
            {"id": [1], "file_name": "img000.png"},
            {"id": 2, "file_name": "img001.jpg"},
            {"id": 2, "file_name": "img000.png"},
        ],
        "annotations": [{"image_id": {"a": 1}, "caption": "x"}, {"image_id": 2, "caption": "a red star"}],
    }
    path.write_text(json.dumps(data))
    problems = Problems("skip")
    samples = read_coco(path, problems=problems)
    assert [(s.image.path.name, s.captions) for s in samples] == [("img001.jpg", ["a red star"])]
    assert problems.count == 3 and "id 2 is used by an earlier image" in " ".join(problems.messages)
    path.write_text("[]")
    with pytest.raises(DataError, match=r"not a COCO captions file"):
        read_coco(path)


def test_karpathy_sentences_that_are_not_a_list_are_a_bad_sample(tmp_path):
    path = tmp_path / "dataset_tiny.json"
    images = [
        {"filename": "a.jpg", "split": "test", "sentences": "a red star"},  # would be one caption per letter
        {"filename": "b.jpg", "filepath": 7, "split": "test", "sentences": [{"raw": "x"}]},
        {"filename": "c.jpg", "split": "test", "sentences": [{"raw": "a blue circle"}]},
    ]
    path.write_text(json.dumps({"images": images}))
    problems = Problems("skip")
    assert [s.captions for s in read_karpathy(path, problems=problems)] == [["a blue circle"]]
    assert problems.count == 2 and "'sentences' is not a list" in problems.messages[0]


def test_a_dataset_dict_json_that_is_not_an_object_is_named(tmp_path):
    (tmp_path / "dataset_dict.json").write_text('["train", "test"]')
    with pytest.raises(DataError, match=r"dataset_dict.json: expected an object with a 'splits' list"):
        discover(tmp_path)
    (tmp_path / "dataset_dict.json").write_bytes(b'{"splits": ["caf\xe9"]}')
    with pytest.raises(DataError, match=r"dataset_dict.json: line 1: not UTF-8 text"):
        discover(tmp_path)


def test_a_damaged_hugging_face_folder_is_a_data_error(tmp_path):
    datasets = pytest.importorskip("datasets")
    from vlcl.data.formats import read_hf

    datasets.disable_progress_bars()
    table = datasets.Dataset.from_dict({"image": [{"bytes": image_bytes(0), "path": None}], "text": ["a red star"]})
    table.cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "hf"))
    (tmp_path / "hf" / "state.json").write_text("{}")
    with pytest.raises(DataError, match=r"hf: cannot read the Hugging Face dataset \(KeyError"):
        read_hf(tmp_path / "hf")


def test_an_image_path_under_an_unknown_users_home_is_not_found_not_a_traceback(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("filepath,title\n~no_such_user_vlcl/a.png,a red star\n", encoding="utf-8")
    (sample,) = read_csv(path)
    assert check_image(sample.image, "header") == "not found"
