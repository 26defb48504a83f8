"""Task-agnostic classification: every task's classes in one label space, no task identity at test time."""

from __future__ import annotations

import json

import torch

from realdata import make_mtil_root
from vlcl.app.cli import main
from vlcl.metrics import union_label_space, zeroshot_accuracy

FAST = ["train.epochs=1", "train.batch_size=4", "train.lr=0.001", "threads=1", "data.workers=0"]


def test_union_merges_identical_classes_and_maps_each_tasks_labels():
    a, b = torch.eye(3)[:2], torch.eye(3)[1:]
    union, maps = union_label_space([a, b], [[("x",), ("y",)], [("y",), ("z",)]])
    assert torch.equal(union, torch.eye(3)) and [m.tolist() for m in maps] == [[0, 1], [1, 2]]


def test_a_task_perfect_in_its_own_space_is_confused_with_another_tasks_class():
    """Task A's images sit nearer task B's class than their own in the union: 100% per task, 0% task-agnostic."""
    a_classes = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    b_classes = torch.tensor([[0.9, 0.1, 0.3], [0.0, 0.0, 1.0]])
    images = torch.tensor([[0.9, 0.05, 0.35]])  # task A, class 0
    assert zeroshot_accuracy(images, a_classes, [0])["top1"] == 100.0
    union, maps = union_label_space([a_classes, b_classes], [[("a0",), ("a1",)], [("b0",), ("b1",)]])
    assert zeroshot_accuracy(images, union, maps[0][torch.tensor([0])])["top1"] == 0.0


def run(tmp_path, method):
    root = make_mtil_root(tmp_path / "mtil")
    run_dir = tmp_path / method
    tiny = str(tmp_path.parent / "tiny")
    from conftest import make_tiny_clip, shipped_words

    make_tiny_clip(tiny, words=shipped_words() + ["707", "727", "737", "200", "300", "320"])
    args = ["run", f"model.path={tiny}", "data.benchmark=mtil", "data.tasks=[aircraft,caltech101]", f"method.name={method}"]
    assert main([*args, *FAST, f"data.root={root}", "-o", str(run_dir)]) == 0
    return json.loads((run_dir / "results.json").read_text())


def test_results_hold_both_task_agnostic_matrices(tmp_path):
    results = run(tmp_path, "finetune")
    agnostic = results["task_agnostic"]
    assert len(agnostic["matrix"]) == 2 and all(len(row) == 2 for row in agnostic["matrix"])
    seen = agnostic["seen_classes"]["matrix"]
    assert seen[0][1] is None and None not in seen[1]
    # after the last task the seen classes are every class: both matrices agree on the last row
    assert seen[1] == agnostic["matrix"][1]
    summary = results["summary"]
    assert set(summary["task_agnostic"]) >= {"last", "avg", "transfer"} and set(summary["seen_classes"]) == {"last", "avg"}
    # 4 + 3 classes, no two alike: the union is never easier than a task's own label space
    for t, task in enumerate(results["tasks"]):
        own = results["matrices"]["top1"][1][t]
        assert agnostic["matrix"][1][t] <= own + 1e-9


def test_a_method_that_does_not_train_has_seen_classes_per_stage(tmp_path):
    results = run(tmp_path, "zeroshot")
    seen = results["task_agnostic"]["seen_classes"]["matrix"]
    assert seen[0][1] is None and seen[1][1] is not None
