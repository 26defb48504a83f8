"""Per-class top-1 and the confusion matrix of every classification set, per stage, in results.json and the report."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_clip, shipped_words
from realdata import make_mtil_root
from vlcl.app.cli import main

AIRCRAFT = ["707", "727", "737", "200", "300", "320"]


def test_per_class_scores_by_hand():
    """Three classes, five images: class 0 right twice, class 1 taken for class 2 once and right once, class 2 has
    no test image; a tie between the true class and another counts as the other (the tie rule)."""
    from vlcl.metrics import per_class_scores, zeroshot_accuracy, zeroshot_predictions

    classifier = torch.eye(3)
    images = torch.tensor([[1.0, 0, 0], [1.0, 0.1, 0], [0, 0.2, 1.0], [0, 1.0, 0], [1.0, 1.0, 0]])
    labels = [0, 0, 1, 1, 1]
    predicted = zeroshot_predictions(images, classifier, labels)
    assert predicted.tolist() == [0, 0, 2, 1, 0]  # image 4 ties classes 0 and 1: predicted 0, a miss
    scores = per_class_scores(predicted, labels, 3)
    assert scores == {"support": [2, 3, 0], "top1": [100.0, 100 / 3, None], "confusion": [[2, 0, 0], [1, 1, 1], [0, 0, 0]]}
    assert sum(scores["confusion"][c][c] for c in range(3)) / 5 * 100 == zeroshot_accuracy(images, classifier, labels)["top1"]
    assert "confusion" not in per_class_scores(predicted, labels, 3, confusion=False)


def test_logit_predictions_follow_the_same_rule():
    from vlcl.metrics import logit_predictions, per_class_scores

    logits = torch.tensor([[2.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    assert logit_predictions(logits, [0, 2]).tolist() == [1, 2]
    with pytest.raises(ValueError, match="class indices"):
        per_class_scores(torch.tensor([0, 3]), [0, 1], 3)


@pytest.fixture(scope="module")
def mtil_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("per_class")
    root, clip = make_mtil_root(base / "mtil"), make_tiny_clip(base / "clip", words=shipped_words() + AIRCRAFT)

    def run(name, *extra):
        args = ["run", f"model.path={clip}", "data.benchmark=mtil", "data.tasks=[aircraft,caltech101]", "train.epochs=2",
                "train.batch_size=4", "train.lr=0.001", "threads=1", "data.workers=0", f"data.root={root}", *extra,
                "-o", str(base / name)]
        assert main(args) == 0
        return base / name, json.loads((base / name / "results.json").read_text())

    return run


def test_every_stage_records_per_class_top1_and_confusion(mtil_run):
    _, results = mtil_run("finetune")
    assert [s["name"] for s in results["stages"]] == ["pretrained", "aircraft", "caltech101"]
    for stage in results["stages"]:
        per_class = stage["per_class"]
        assert set(per_class) == {"aircraft", "caltech101"} and "per_class" not in stage["metrics"]
        for name, entry in per_class.items():
            top1 = stage["metrics"]["zeroshot"][name]["top1"]
            n = len(entry["classes"])
            assert len(entry["support"]) == len(entry["top1"]) == len(entry["confusion"]) == n
            assert [sum(row) for row in entry["confusion"]] == entry["support"]
            assert 100 * sum(entry["confusion"][c][c] for c in range(n)) / sum(entry["support"]) == pytest.approx(top1)
    assert results["stages"][0]["per_class"]["aircraft"]["classes"] == ["707-320", "727-200", "737-200", "737-300"]


def test_large_label_spaces_keep_top1_without_the_matrix_and_a_static_method_keeps_its_rows(mtil_run):
    _, results = mtil_run("zeroshot_bounded", "method.name=zeroshot", "eval.confusion_max_classes=3")
    for stage in results["stages"]:
        assert "confusion" not in stage["per_class"]["aircraft"]  # 4 classes > 3
        assert "confusion" in stage["per_class"]["caltech101"]  # 3 classes
        assert stage["per_class"] == results["stages"][0]["per_class"]  # zeroshot does not train: one evaluation


def test_the_report_shows_the_lowest_classes(mtil_run, tmp_path):
    run_dir, results = mtil_run("reported")
    out = tmp_path / "report.md"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    text = out.read_text()
    assert "Per-class top-1 of aircraft after caltech101" in text and "| 707-320 |" in text


def test_the_html_report_draws_each_small_sets_confusion_matrix(mtil_run, tmp_path):
    run_dir, _ = mtil_run("drawn")
    out = tmp_path / "page.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    drawn = sorted(p.name for p in (tmp_path / "page_plots").glob("*confusion*.png"))
    assert len(drawn) == 2 and any("aircraft" in name for name in drawn), drawn
    assert "Confusion matrix of aircraft" in out.read_text()


def test_a_loaded_run_recomputes_the_recorded_per_class_scores(mtil_run):
    import vlcl

    run_dir, results = mtil_run("loaded")
    run = vlcl.load_run(run_dir)
    assert run.evaluate(per_class=True)["per_class"] == results["stages"][-1]["per_class"]
    assert "per_class" not in run.evaluate()
