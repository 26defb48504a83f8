"""The pre-trained row a comparison's runs share (vlcl.engine.shared_eval)."""

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from vlcl.app.cli import main
from vlcl.engine.shared_eval import changes_evaluation, pretrained_key, read_shared, store_shared
from vlcl.methods import create_method

ROOT = Path(__file__).resolve().parent.parent


def test_the_key_follows_every_weight_the_data_and_the_settings():
    model = torch.nn.Linear(3, 2)
    settings = {"eval": {"batch_size": 8}}
    key = pretrained_key(model, "data-a", settings)
    assert key == pretrained_key(copy.deepcopy(model), "data-a", settings)
    nudged = copy.deepcopy(model)
    with torch.no_grad():  # one unit in the last place of one weight
        nudged.weight[1, 2] = torch.nextafter(nudged.weight[1, 2], torch.tensor(2.0))
    assert pretrained_key(nudged, "data-a", settings) != key
    assert pretrained_key(model, "data-b", settings) != key
    assert pretrained_key(model, "data-a", {"eval": {"batch_size": 16}}) != key
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert pretrained_key(model, "data-a", settings) != key  # threads change the last bits of sums
    finally:
        torch.set_num_threads(threads)


def test_methods_that_route_or_score_classes_themselves_do_not_share():
    assert not changes_evaluation(create_method("finetune", {}))
    assert not changes_evaluation(create_method("cclip", {}))
    assert changes_evaluation(create_method("rail", {}))  # its own classifier
    assert changes_evaluation(create_method("moe_adapters", {}))  # its router


def test_an_unreadable_stored_row_is_evaluated_again(tmp_path):
    row = {"retrieval": {"a": {"mean_R@1": 1.5}}, "alignment": {}, "zeroshot": {}}
    store_shared(tmp_path, "k1", row, "run-a")
    assert read_shared(tmp_path, "k1") == row
    assert read_shared(tmp_path, "k2") is None
    (tmp_path / "pretrained-k1.json").write_text('{"key": "k1", "metr')  # torn
    assert read_shared(tmp_path, "k1") is None


@pytest.mark.slow
def test_a_comparison_evaluates_the_pretrained_row_once_with_the_same_numbers(tmp_path, world_clip_dir, capsys, monkeypatch):
    from test_run import quick_args

    args = quick_args(world_clip_dir, "train.max_steps_per_task=2")
    out = tmp_path / "cmp"
    assert main(["compare", *args, "--methods", "zeroshot,finetune,lora", "-o", str(out)]) == 0
    assert "pretrained row: stored by an earlier run" in capsys.readouterr().err
    alone = tmp_path / "alone"
    assert main(["run", *args, "method.name=finetune", "-o", str(alone)]) == 0  # no comparison: evaluated

    def first_stage(run_dir):
        return json.loads((run_dir / "results.json").read_text())["stages"][0]

    expected = first_stage(alone)
    assert "shared" not in expected
    assert first_stage(out / "zeroshot")["metrics"] == expected["metrics"] and "shared" not in first_stage(out / "zeroshot")
    assert first_stage(out / "finetune")["metrics"] == expected["metrics"] and first_stage(out / "finetune")["shared"] is True
    # LoRA evaluates the model its adapters are integrated into: before the first task, the pre-trained one
    assert first_stage(out / "lora")["metrics"] == expected["metrics"] and first_stage(out / "lora")["shared"] is True
    assert len(list((out / ".shared").glob("pretrained-*.json"))) == 1
    timeline = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    assert [r["event"] for r in timeline] == ["session", "run", "run", "run", "end"]
    assert {r["run"] for r in timeline if r["event"] == "run"} == {"zeroshot", "finetune", "lora"}
    assert all(r["status"] == "done" and r["ended"] >= r["started"] for r in timeline if r["event"] == "run")

    # benchmarks/compare_profile.py reads the timeline and the runs' results
    spec = importlib.util.spec_from_file_location("compare_profile", ROOT / "benchmarks" / "compare_profile.py")
    profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile)
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["compare_profile.py", str(out)])
    profile.main()
    printed = capsys.readouterr().out
    assert "3 finished runs, 1 session(s), --jobs 1" in printed
    assert "1 evaluated" in printed and "2 read from the shared store" in printed
    assert "final training" in printed and "lora" in printed
