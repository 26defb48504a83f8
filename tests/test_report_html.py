"""`vlcl report ... -o X.html`: a self-contained page with plots, the same plots as PNG files; the reports
`vlcl run` and `vlcl compare` write at their end; inputs that cannot be reported."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest

from vlcl.app.cli import main

pytestmark = pytest.mark.report  # every test here is about the report: the automatic one stays on

PLOTS_OF_A_RUN = ("heatmap", "tasks", "zeroshot", "alignment")
PLOTS_OF_AN_EMBEDDED_RUN = (*PLOTS_OF_A_RUN, "confusion_zs_shape", "confusion_zs_colour")  # its two zero-shot sets' matrices
LEADERBOARD_PLOTS = ("leaderboard_plasticity_forgetting", "leaderboard_last", "leaderboard_zeroshot_pd")


def fake_results(method="finetune", seed=0, shift=0.0, *, alignment=True, options=None):
    """A small but complete results.json of 2 tasks, one held-out retrieval set and one zero-shot set."""
    def metrics(a, b, zs):
        return {
            "retrieval": {"a": {"mean_R@1": a}, "b": {"mean_R@1": b}, "base": {"mean_R@1": 70.0 + zs / 10}},
            "alignment": {"a": {"matched_cosine": 0.3 + a / 200, "modality_gap": 0.9 - a / 300}, "base": {"matched_cosine": 0.5, "modality_gap": 0.6}} if alignment else {},
            "zeroshot": {"zs_shape": {"top1": zs}},
        }

    stages = [
        {"index": -1, "name": "pretrained", "trained_on": [], "metrics": metrics(10.0, 12.0, 95.0), "train": {}, "eval_seconds": 0.5},
        {"index": 0, "name": "a", "trained_on": ["a"], "metrics": metrics(60.0 + shift, 15.0, 90.0 - shift), "train": {"steps": 4, "samples": 64, "seconds": 1.5, "final_loss": 2.1}, "eval_seconds": 0.4},
        {"index": 1, "name": "b", "trained_on": ["b"], "metrics": metrics(40.0 + shift, 55.0 + shift, 85.0 - shift), "train": {"steps": 4, "samples": 64, "seconds": 1.4, "final_loss": 1.9}, "eval_seconds": 0.4},
    ]
    return {
        "config": {"seed": seed, "method": {"name": method, **(options or {})}, "train": {"lr": 0.001, "epochs": 1}},
        "method": method,
        "benchmark": "embedded",
        "tasks": ["a", "b"],
        "heldout_retrieval": ["base"],
        "zeroshot_sets": ["zs_shape"],
        "task_metric": "mean_R@1",
        "stage_names": ["a", "b"],
        "matrices": {"mean_R@1": [[60.0 + shift, 15.0], [40.0 + shift, 55.0 + shift]]},
        "summary": {
            "complete": True,
            "retrieval": {"mean_R@1": {"last": 47.5 + shift, "avg": 40.0, "transfer": 15.0, "bwt": -20.0, "forgetting": 20.0 - shift, "plasticity": 57.5 + shift}},
            "zeroshot_top1": {"zs_shape": {"pretrained": 95.0, "final": 85.0 - shift, "pd": 10.0 + shift}},
            "heldout_mean_R@1": {"base": {"pretrained": 79.5, "final": 78.5, "pd": 1.0}},
            "zeroshot_mean_pd": 10.0 + shift,
        },
        "stages": stages,
        "timings": {"wall_seconds_this_session": 5.0, "train_seconds": 2.9 + seed, "eval_seconds": 1.3},
        "versions": {"vlcl": "0.1.0"},
        "data": {"unknown_words": {"a": 0.0, "b": 0.0}},
    }


def write_run(run_dir: Path, results: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def seeded_compare_dir(root: Path) -> Path:
    """A `vlcl compare --seeds 0,1` directory of two methods (finetune ahead of lwf, as leaderboard.csv orders them)."""
    out = root / "cmp"
    for method, base in (("finetune", 0.0), ("lwf", 5.0)):
        for seed in (0, 1):
            write_run(out / method / f"seed-{seed}", fake_results(method, seed, base + seed))
    (out / "leaderboard.md").write_text("# Leaderboard\n\nMade with:\n\n```bash\nvlcl compare --methods 'finetune,lwf' --seeds 0,1\n```\n")
    (out / "leaderboard.csv").write_text("run,seeds\nfinetune,2\nlwf,2\n")
    (out / "tuning" / "lwf" / "lr=0.001").mkdir(parents=True)  # tuning runs are not the comparison's runs
    write_run(out / "tuning" / "lwf" / "lr=0.001", fake_results("lwf"))
    return out


def page_images(page: str) -> dict[str, bytes]:
    """data-plot file name -> the PNG bytes embedded in the page."""
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" data-plot="([^"]+)"', page)
    return {name: base64.b64decode(data) for data, name in found}


def assert_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I), "the page refers to something outside itself"
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page and "url(" not in page
    assert "Content-Security-Policy" in page


def assert_not_blank(png: bytes) -> None:
    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 100 and image.height > 80
    assert max(ImageStat.Stat(image.convert("RGB")).var) > 0, "a blank plot"


def assert_plots(page_path: Path, names: list[str]) -> dict[str, bytes]:
    """Every plot ``names`` is embedded, is a PNG file beside the page with the same bytes, and is not blank."""
    page = page_path.read_text(encoding="utf-8")
    images = page_images(page)
    folder = page_path.with_name(f"{page_path.stem}_plots")
    assert sorted(images) == sorted(f"{n}.png" for n in names)
    assert sorted(p.name for p in folder.iterdir()) == sorted(images)
    for name, png in images.items():
        assert (folder / name).read_bytes() == png
        assert_not_blank(png)
    return images


def test_html_report_of_one_run(tmp_path, capsys):
    run = write_run(tmp_path / "my-run", fake_results(options={"note": "<script>alert(1)</script>"}))
    out = tmp_path / "pages" / "one.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    assert "report: " in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert_plots(out, [f"my-run_{p}" for p in PLOTS_OF_A_RUN])
    assert 'id="leaderboard"' not in page  # one run: no comparison
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page  # every text escaped
    assert "<td>pretrained</td><td class=num>10.0</td><td class=num>12.0</td>" in page  # the numbers, as in the Markdown
    assert "Skipped samples: none." in page and "Unknown words: none." in page
    assert "wall seconds (this session)" in page and "train s" in page
    assert "seed: 0" in page  # the config, as YAML


def test_html_report_of_a_seeded_comparison(tmp_path):
    cmp = seeded_compare_dir(tmp_path)
    out = tmp_path / "cmp.html"
    assert main(["report", str(cmp), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    # per-run plots for the first seed of each method only, and the page says so
    assert_plots(out, [*LEADERBOARD_PLOTS, *(f"{m}_seed-0_{p}" for m in ("finetune", "lwf") for p in PLOTS_OF_A_RUN)])
    assert "drawn for the first seed of each method" in page
    board = page[page.index('id="leaderboard"'): page.index('id="runs"')]
    rows = re.findall(r"<tr><td>([^<]+)</td><td class=num>(\d)</td><td class=num>(.*?)</td>", board)
    assert rows == [("finetune lr=0.001", "2", "48.0 +- 0.7"), ("lwf lr=0.001", "2", "<strong>53.0 +- 0.7</strong>")]  # Last: mean +- std
    assert "vlcl compare --methods &#x27;finetune,lwf&#x27; --seeds 0,1" in page
    assert page.count("<details") == 4 and "tuning/" not in page


def test_runs_given_directly_group_by_label_and_plots_are_omitted_not_empty(tmp_path):
    a0 = write_run(tmp_path / "a0", fake_results("finetune", 0, alignment=False))
    a1 = write_run(tmp_path / "a1", fake_results("finetune", 1, 1.0, alignment=False))
    z = write_run(tmp_path / "z", fake_results("zeroshot", 0, alignment=False))
    out = tmp_path / "r.html"
    assert main(["report", str(a0), str(a1), str(z), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert_plots(out, [*LEADERBOARD_PLOTS, *(f"{r}_{p}" for r in ("a0", "z") for p in PLOTS_OF_A_RUN if p != "alignment")])
    assert page.count("<strong>Alignment</strong>: no plot, the run&#x27;s results hold no alignment diagnostics") == 2
    assert re.search(r"<tr><td>finetune lr=0.001</td><td class=num>2</td>", page) and re.search(r"<tr><td>zeroshot</td><td class=num>1</td>", page)


def test_rewriting_a_report_removes_plots_it_no_longer_has(tmp_path):
    run = write_run(tmp_path / "run", fake_results())
    out = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    write_run(run, fake_results(alignment=False))
    assert main(["report", str(run), "-o", str(out)]) == 0
    assert sorted(p.name for p in (tmp_path / "r_plots").iterdir()) == sorted(f"run_{p}.png" for p in PLOTS_OF_A_RUN if p != "alignment")


def test_markdown_stays_and_a_comparison_directory_expands(tmp_path, capsys):
    cmp = seeded_compare_dir(tmp_path)
    assert main(["report", str(cmp), "-o", str(tmp_path / "board.md")]) == 0
    text = (tmp_path / "board.md").read_text()
    assert "| finetune lr=0.001 seed=0 |" in text and "| finetune lr=0.001 seed=1 |" in text  # one row per run: the seed tells them apart
    assert text.count("### ") == 4 and "<" not in text
    capsys.readouterr()
    assert main(["report", str(cmp / "lwf" / "seed-1")]) == 0
    assert "| a | 66.0 | 15.0 | 78.4 | 84.0 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["stages"][1]["metrics"]["retrieval"].pop("b"), r"results.json: lacks what a report needs: stage 'a' \(stages\[1\]\) has no number at metrics.retrieval.b.mean_R@1$"),
        (lambda r: r["stages"][2]["metrics"]["zeroshot"]["zs_shape"].update(top1="high"), r"stage 'b' \(stages\[2\]\) has no number at metrics.zeroshot.zs_shape.top1$"),
        (lambda r: r["stages"][0].pop("metrics"), r"stage 'pretrained' \(stages\[0\]\) has no 'metrics'$"),
        (lambda r: r.update(summary={"retrieval": []}), r"results.json: lacks what a report needs \(AttributeError: "),
        (lambda r: r.pop("tasks"), r"results.json: no 'tasks' \(not a results.json written by vlcl run\)$"),
    ],
)
def test_bad_results_are_one_line_naming_the_file(tmp_path, capsys, edit, message):
    results = fake_results()
    edit(results)
    run = write_run(tmp_path / "run", results)
    out = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"vlcl: error: {run / 'results.json'}") and re.search(message, err), err
    assert not out.exists() and not (tmp_path / "r_plots").exists()  # nothing written


def test_bad_report_arguments(tmp_path, capsys):
    run = write_run(tmp_path / "run", fake_results())
    assert main(["report", str(run), "-o", str(tmp_path)]) == 2
    assert "is a directory; -o takes the Markdown file to write (X.md) or the HTML page (X.html)" in capsys.readouterr().err
    empty = tmp_path / "cmp"
    empty.mkdir()
    (empty / "leaderboard.md").write_text("# Leaderboard\n")
    assert main(["report", str(empty), "-o", str(tmp_path / "r.html")]) == 2
    assert "a comparison directory without finished runs" in capsys.readouterr().err
    unfinished = fake_results()
    unfinished["summary"]["complete"] = False
    write_run(empty / "finetune", unfinished)
    write_run(empty / "lwf", fake_results("lwf"))
    assert main(["report", str(empty), "-o", str(tmp_path / "r.html")]) == 0
    assert "left out 1 unfinished run(s): finetune" in (tmp_path / "r.html").read_text()


def test_a_failing_automatic_report_is_one_warning(tmp_path):
    from vlcl.report.html import auto_report, run_groups

    lines = []
    bad = fake_results()
    bad["stages"][1]["metrics"] = None
    target = tmp_path / "run" / "report.html"
    assert auto_report(target, run_groups([("run", tmp_path / "run", bad)]), lines.append) is None
    assert len(lines) == 1 and lines[0].startswith(f"vlcl: warning: {target} not written (") and not target.exists()


@pytest.mark.slow
def test_vlcl_run_and_compare_write_their_report(tmp_path, world_clip_dir, capsys):
    from test_run import quick_args

    run = tmp_path / "run"
    assert main(["run", *quick_args(world_clip_dir, "train.max_steps_per_task=2"), "-o", str(run)]) == 0
    assert f"report: {run / 'report.html'}" in capsys.readouterr().out
    assert_self_contained((run / "report.html").read_text(encoding="utf-8"))
    assert_plots(run / "report.html", [f"run_{p}" for p in PLOTS_OF_AN_EMBEDDED_RUN])

    # a comparison where one method fails: the report of the finished runs is written before the error
    out = tmp_path / "cmp"
    argv = ["compare", *quick_args(world_clip_dir, "train.max_steps_per_task=2"), "--methods", "zeroshot,finetune[train.lr=1e30]", "--seeds", "0,1", "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"report: {out / 'report.html'}" in err and "2 of 4 runs failed" in err
    page = (out / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert_plots(out / "report.html", [*LEADERBOARD_PLOTS, *(f"zeroshot_seed-0_{p}" for p in PLOTS_OF_AN_EMBEDDED_RUN)])
    assert re.search(r"<tr><td>zeroshot</td><td class=num>2</td><td class=num>(<strong>)?[\d.]+ \+- 0.0(</strong>)?</td>", page)
