import json

import pytest

from vlcl.cli import main
from vlcl.compare import CompareError, parse_methods


def test_parse_methods_with_per_method_overrides():
    specs = parse_methods("zeroshot, cclip[train.lr=5e-4;method.integration=0.3],cclip[data.tasks=[sketch,counting]]")
    assert [(s.name, s.label) for s in specs] == [("zeroshot", "zeroshot"), ("cclip", "cclip"), ("cclip", "cclip-2")]
    assert specs[1].overrides == ["train.lr=5e-4", "method.integration=0.3"]
    assert specs[2].overrides == ["data.tasks=[sketch,counting]"]
    with pytest.raises(CompareError, match="unbalanced"):
        parse_methods("cclip[train.lr=1")
    with pytest.raises(CompareError, match="empty"):
        parse_methods("finetune,,lora")


def test_compare_writes_a_leaderboard_and_resumes_per_method(tmp_path, world_clip_dir, capsys):
    from test_run import quick_args

    out = tmp_path / "cmp"
    argv = ["compare", *quick_args(world_clip_dir, "train.max_steps_per_task=2"), "--methods", "zeroshot,finetune[train.lr=0.002]", "-o", str(out)]
    assert main(argv) == 0
    board = (out / "leaderboard.md").read_text()
    assert "| zeroshot |" in board and "| finetune lr=0.002 |" in board and "finetune/results.json" in board
    rows = (out / "leaderboard.csv").read_text().splitlines()
    assert rows[0].startswith("run,Last,Avg,Transfer,BWT,forgetting") and len(rows) == 3
    assert json.loads((out / "finetune" / "results.json").read_text())["config"]["train"]["lr"] == 0.002
    stamp = (out / "finetune" / "results.json").stat().st_mtime_ns
    assert main(argv) == 0  # everything finished: kept, not recomputed
    assert (out / "finetune" / "results.json").stat().st_mtime_ns == stamp
    assert "finished earlier, kept" in capsys.readouterr().err


def test_compare_rejects_unknown_method_before_running(tmp_path, capsys):
    assert main(["compare", "--methods", "finetune,lorra", "-o", str(tmp_path / "c")]) == 2
    assert "unknown method 'lorra'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_compare_jobs_runs_methods_in_parallel_with_the_same_results(tmp_path, world_clip_dir, capsys):
    from test_run import metrics_of, quick_args

    methods = "zeroshot,finetune,lwf"
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert main(["compare", *quick_args(world_clip_dir, "train.max_steps_per_task=3"), "--methods", methods, "-o", str(serial)]) == 0
    argv = ["compare", *quick_args(world_clip_dir, "train.max_steps_per_task=3"), "--methods", methods, "-o", str(parallel), "--jobs", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "3 methods, 2 at a time" in err and "lwf: done" in err
    for name in methods.split(","):  # threads=1 in both: the same numbers, whichever process ran them
        assert metrics_of(parallel / name) == metrics_of(serial / name)
        assert (parallel / name / "compare.log").is_file()
    assert "--jobs 2" in (parallel / "leaderboard.md").read_text()
    assert len((parallel / "leaderboard.csv").read_text().splitlines()) == 4


def test_compare_keeps_going_when_one_method_fails(tmp_path, world_clip_dir, capsys):
    from test_run import quick_args

    out = tmp_path / "cmp"
    argv = ["compare", *quick_args(world_clip_dir, "train.max_steps_per_task=2"), "--methods", "finetune[train.lr=1e30],zeroshot", "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "1 of 2 methods failed" in err and "finetune: NonFiniteLossError" in err
    assert (out / "zeroshot" / "results.json").is_file()
    rows = (out / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("zeroshot,")
