"""Tokenizer coverage: data whose words the model's tokenizer cannot read stops a run before anything is written."""

from __future__ import annotations

import json

import pytest

from realdata import write_csv, write_image_folder, write_images
from vlcl.app.cli import main
from vlcl.data.registry import benchmark_builder
from vlcl.engine.loop import RunInputError, check_tokenizer_coverage
from vlcl.models import load_clip
from vlcl.models.coverage import coverage, unknown_words, words_of

FAST = ["train.epochs=1", "train.batch_size=4", "threads=1", "data.workers=0"]


@pytest.fixture(scope="module")
def embedded_tokenizer():
    return load_clip("embedded").tokenizer


def test_words_are_counted_without_end_punctuation():
    assert words_of(["a red circle.", "A red, circle!"]) == {"a": 1, "A": 1, "red": 2, "circle": 2}


def test_unknown_words_of_the_embedded_tokenizer(embedded_tokenizer):
    assert unknown_words(embedded_tokenizer, ["red", "Circle", "seven", "handwritten", "7"]) == {"seven", "handwritten", "7"}
    found = coverage(embedded_tokenizer, ["a handwritten digit seven", "a handwritten digit two", "a red circle"])
    assert (found.words, found.unknown) == (11, 5)
    assert found.examples == ("digit", "handwritten", "seven")


def test_silent_on_the_embedded_benchmark(embedded_tokenizer):
    benchmark = benchmark_builder("embedded")(train_scale=0.05, test_images=20, zeroshot_per_class=2)
    check_tokenizer_coverage(benchmark, embedded_tokenizer, 0.0)  # not one unknown word
    shares = benchmark.data_report["unknown_words"]
    assert set(shares) == {*benchmark.task_names, "base", "grainy", "zs_shape", "zs_colour", "zs_shape_colour"}
    assert set(shares.values()) == {0.0}


def digit_captions(root):
    items = [(f"img{i:03d}.png", [f"a handwritten digit {['seven', 'two', 'nine'][i % 3]}"]) for i in range(20)]
    write_images(root / "digits", items)
    write_csv(root / "digits" / "digits.csv", items)
    return root


def test_fires_for_the_embedded_model_on_captions_of_unknown_words(tmp_path, capsys):
    root = digit_captions(tmp_path / "mine")
    run_dir = tmp_path / "run"
    code = main(["run", "data.benchmark=folders", f"data.root={root}", *FAST, "-o", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "data set 'digits': 66.2% of its caption and prompt words are unknown" in err[0]
    assert "'digit', 'handwritten'" in err[0] and "--allow-unknown-words" in err[0]
    assert not run_dir.exists()


def test_allow_unknown_words_runs_and_records_the_share(tmp_path):
    root = digit_captions(tmp_path / "mine")
    run_dir = tmp_path / "run"
    assert main(["run", "data.benchmark=folders", f"data.root={root}", *FAST, "--allow-unknown-words", "-o", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data"]["unknown_words"] == {"digits": 0.6625}  # 53 of 80 words: handwritten, digit, seven, nine
    assert results["config"]["data"]["max_unknown_words"] == 1


def test_class_names_the_tokenizer_cannot_read(tmp_path, embedded_tokenizer):
    """Class folders 5..9: every prompt 'a photo of a 7.' has one unknown word in five."""
    root = tmp_path / "mine"
    write_image_folder(root / "digits" / "train", [0, 1, 2, 3, 4] * 2, ["5", "6", "7", "8", "9"])
    write_image_folder(root / "digits" / "test", [0, 1, 2, 3, 4], ["5", "6", "7", "8", "9"], offset=50)
    benchmark = benchmark_builder("folders")(root=str(root), image_size=32, workers=0)
    with pytest.raises(RunInputError, match=r"data set 'digits': 20\.0% .*e\.g\. '5', '6', '7'"):
        check_tokenizer_coverage(benchmark, embedded_tokenizer, 0.05)


def test_the_error_names_every_set_the_tokenizer_cannot_read(tmp_path, capsys):
    root = digit_captions(tmp_path / "mine")
    items = [(f"p{i:03d}.png", [f"a glyph of runes {['alpha', 'omega'][i % 2]}"]) for i in range(20)]
    write_images(root / "glyphs", items)
    write_csv(root / "glyphs" / "glyphs.csv", items)
    run_dir = tmp_path / "run"
    assert main(["run", "data.benchmark=folders", f"data.root={root}", *FAST, "-o", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data set 'digits': " in err[0] and "data set 'glyphs': " in err[0], err
    assert not run_dir.exists()


def test_data_check_with_a_model_reports_coverage_and_colliding_classes_of_every_set(tmp_path, capsys):
    root = digit_captions(tmp_path / "mine")
    write_image_folder(root / "numbers" / "train", [0, 1, 2] * 3, ["seven", "nine", "red"])  # seven, nine: [UNK]
    write_image_folder(root / "numbers" / "test", [0, 1, 2] * 2, ["seven", "nine", "red"], offset=50)
    code = main(["data", "check", "folders", "--data-root", str(root), "--model", "embedded"])
    out = capsys.readouterr().out
    assert code != 0
    assert "tokenizer: 66.2% of 80 caption and prompt words unknown" in out and "a run stops" in out
    assert "tokenizer: classes 'nine', 'seven' encode to the same tokens: a run stops" in out
    assert out.strip().splitlines()[-1].startswith("a run with this model stops on digits, numbers")
    without = main(["data", "check", "folders", "--data-root", str(root)])
    assert without == 0 and "tokenizer" not in capsys.readouterr().out
