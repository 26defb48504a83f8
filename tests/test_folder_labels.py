"""Image-folder label spaces: exactly the class folders present; folders named by integers are class names."""

from __future__ import annotations

from realdata import image_bytes, write_image_folder
from vlcl.data.benchmarks.data_root import load_set
from vlcl.data.benchmarks.folders import folders_spec
from vlcl.data.formats import read_image_folder
from vlcl.data.formats.folder import class_order

DIGITS = ["5", "6", "7", "8", "9"]


def labels_by_folder(samples) -> dict[str, set[int]]:
    """Class folder name -> the labels its images got."""
    out: dict[str, set[int]] = {}
    for sample in samples:
        out.setdefault(sample.image.path.parent.name, set()).add(sample.label)
    return out


def test_folders_5_to_9_are_five_classes_named_5_to_9(tmp_path):
    write_image_folder(tmp_path / "test", [0, 1, 2, 3, 4, 4, 0], DIGITS)
    samples, names = read_image_folder(tmp_path / "test")
    assert names == DIGITS  # no phantom classes "0".."4"
    assert sorted({s.label for s in samples}) == [0, 1, 2, 3, 4]
    assert labels_by_folder(samples) == {"5": {0}, "6": {1}, "7": {2}, "8": {3}, "9": {4}}


def test_integer_names_sort_by_value_other_names_as_strings():
    assert class_order(["10", "9", "2", "007", "1", "01"]) == ["01", "1", "2", "007", "9", "10"]
    assert class_order(["10", "9", "b", "a"]) == ["10", "9", "a", "b"]  # not all integers: string order
    assert class_order(["\u00b2", "1"]) == ["1", "\u00b2"]  # a superscript two is a digit to str.isdigit, not an integer


def test_twelve_numbered_folders_keep_labels_0_to_11(tmp_path):
    names = [str(i) for i in range(12)]
    write_image_folder(tmp_path / "train", list(range(12)), names)
    samples, got = read_image_folder(tmp_path / "train")
    assert got == names  # 0, 1, 2, ..., 11, not 0, 1, 10, 11, 2, ...
    assert labels_by_folder(samples) == {n: {i} for i, n in enumerate(names)}


def test_the_splits_of_a_data_set_share_one_label_space(tmp_path):
    # train has 5..9; test has no class 6. Label i means the same class in both splits.
    write_image_folder(tmp_path / "train", [0, 1, 2, 3, 4], DIGITS)
    write_image_folder(tmp_path / "test", [0, 2, 3, 4], DIGITS, offset=10)
    train, train_names = read_image_folder(tmp_path / "train")
    test, test_names = read_image_folder(tmp_path / "test")
    assert train_names == test_names == DIGITS
    assert labels_by_folder(test) == {"5": {0}, "7": {2}, "8": {3}, "9": {4}}
    assert labels_by_folder(train)["7"] == {2}
    (tmp_path / "other").mkdir()  # not a split name: read on its own
    (tmp_path / "other" / "5").mkdir()
    (tmp_path / "other" / "5" / "a.png").write_bytes(image_bytes(0))
    assert read_image_folder(tmp_path / "other")[1] == ["5"]


def test_a_folders_task_with_numbered_class_folders(tmp_path):
    write_image_folder(tmp_path / "digits" / "train", [0, 1, 2, 3, 4] * 2, DIGITS)
    write_image_folder(tmp_path / "digits" / "test", [0, 1, 2, 3, 4], DIGITS, offset=20)
    spec, sets = folders_spec(tmp_path, None, None)
    assert spec.tasks == ("digits",) and sets["digits"].kind == "labels"
    loaded = load_set(sets["digits"], tmp_path, want_train=True, workers=1)
    assert loaded.classnames == DIGITS
    assert sorted({s.label for s in loaded.train}) == sorted({s.label for s in loaded.test}) == [0, 1, 2, 3, 4]
    assert labels_by_folder(loaded.test) == {"5": {0}, "6": {1}, "7": {2}, "8": {3}, "9": {4}}
