import io
import json

import pytest

from vlcl.app.cli import main
from vlcl.app.compare import CompareError, parse_methods


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


@pytest.mark.slow
def test_compare_jobs_runs_methods_in_parallel_with_the_same_results(tmp_path, world_clip_dir, capsys):
    from test_run import metrics_of, quick_args

    methods = "zeroshot,finetune,lwf"
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert main(["compare", *quick_args(world_clip_dir, "train.max_steps_per_task=3"), "--methods", methods, "-o", str(serial)]) == 0
    argv = ["compare", *quick_args(world_clip_dir, "train.max_steps_per_task=3"), "--methods", methods, "-o", str(parallel), "--jobs", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "3 runs" in err and "2 runs at a time" in err and "lwf: done" in err
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


@pytest.mark.slow
def test_compare_tunes_on_validation_then_runs_every_seed(tmp_path, world_clip_dir, capsys):
    import csv
    import statistics

    from test_run import quick_args
    from vlcl.app.compare import tuning_score
    from vlcl.report.tables import COMPARISON_COLUMNS, comparison_values

    out = tmp_path / "cmp"
    argv = [
        "compare", *quick_args(world_clip_dir, "train.max_steps_per_task=2"), "--methods", "zeroshot,finetune,lwf", "-o", str(out),
        "--tune", "--tune-lrs", "1e-4,1e-3", "--tune-tasks", "1", "--tune-scale", "2", "--seeds", "0,1",
    ]
    assert main(argv) == 0
    tuning = json.loads((out / "tuning.json").read_text())
    assert tuning["proxy"]["first_tasks"] == 1 and tuning["proxy"]["seed"] == 0 and "Last" in tuning["objective"]
    assert tuning["methods"]["zeroshot"]["points"] == [] and "does not train" in tuning["methods"]["zeroshot"]["note"]
    assert len(tuning["methods"]["finetune"]["points"]) == 2 and len(tuning["methods"]["lwf"]["points"]) == 4
    for label in ("finetune", "lwf"):
        entry = tuning["methods"][label]
        scores = []
        for point in entry["points"]:  # every grid point ran on the proxy's validation split, never on test data
            results = json.loads((out / point["run"] / "results.json").read_text())
            assert results["tasks"] == ["sketch"] and results["heldout_retrieval"] == [] and results["zeroshot_sets"] == []
            assert results["data"]["validation"]["fraction"] == 0.2 and results["config"]["seed"] == 0
            assert results["config"]["data"]["train_scale"] == 0.08
            assert point["score"] == tuning_score(results)[0] and point["objective"] == "Last"
            assert not (out / point["run"] / "checkpoints").exists()  # scored: its checkpoints are removed
            scores.append((point["score"], -point["values"]["train.lr"]))
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        assert entry["chosen"] == entry["points"][best]["values"]
        for seed in (0, 1):  # the final runs: the chosen values, the test data, each seed
            final = json.loads((out / label / f"seed-{seed}" / "results.json").read_text())
            assert final["config"]["seed"] == seed and final["config"]["train"]["lr"] == entry["chosen"]["train.lr"]
            assert "validation" not in final.get("data", {}) and final["heldout_retrieval"] == ["base", "grainy"]
            if label == "lwf":
                assert final["config"]["method"]["weight"] == entry["chosen"]["method.weight"]
    md = (out / "tuning.md").read_text()
    assert "**chosen**" in md and "### lwf" in md and "validation score" in md
    board = (out / "leaderboard.md").read_text()
    assert "--tune --tune-lrs 1e-4,1e-3" in board and "--seeds 0,1" in board and "+-" in board and "tuned on validation" in board
    rows = {row["run"]: row for row in csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text()))}
    assert set(rows) == {"zeroshot", "finetune", "lwf"} and all(row["seeds"] == "2" for row in rows.values())
    per_seed = {label: [json.loads((out / label / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)] for label in rows}
    for j, (name, higher) in enumerate(COMPARISON_COLUMNS):
        stats = {}
        for label, runs in per_seed.items():
            values = [comparison_values(r)[j] for r in runs]
            if values[0] is None:
                assert rows[label][f"{name} mean"] == ""
                continue
            mean, std = statistics.mean(values), statistics.stdev(values)  # sample std (n - 1)
            assert float(rows[label][f"{name} mean"]) == pytest.approx(mean) and float(rows[label][f"{name} std"]) == pytest.approx(std)
            stats[label] = (mean, std)
        if not stats:  # a column no run defines (task-agnostic Last on caption tasks)
            continue
        best = (max if higher else min)(m for m, _ in stats.values())
        for label, (mean, std) in stats.items():
            expected = "best" if mean == best else (
                "within" if any(abs(mean - m) <= std + s for m, s in stats.values() if m == best) else ""
            )
            assert rows[label][f"{name} mark"] == expected, (name, label)
    assert rows["lwf"]["tuned"].startswith("lr=") and "weight=" in rows["lwf"]["tuned"] and rows["zeroshot"]["tuned"] == ""
    capsys.readouterr()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    assert main(argv) == 0  # everything finished: grid points and final runs kept, not recomputed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == stamps
    assert "finished earlier, kept" in capsys.readouterr().err


def test_compare_tuning_flags_need_tune(tmp_path, capsys):
    assert main(["compare", "--methods", "finetune", "--tune-lrs", "1e-4", "-o", str(tmp_path / "c")]) == 2
    assert "--tune-lrs sets how methods are tuned: add --tune" in capsys.readouterr().err
    assert main(["compare", "--methods", "finetune", "--seeds", "0,0", "-o", str(tmp_path / "c")]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
