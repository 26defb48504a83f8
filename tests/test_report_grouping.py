"""Reports never mix what cannot be compared (issue 26): unfinished runs marked wherever their numbers appear,
one table per benchmark and task metric, labels that tell runs apart, warnings shown, per-class top-1 and the
confusion matrix, and `-o` targets that cannot be written refused in one line before anything is written."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest
from rich.console import Console

from test_report_html import assert_plots, fake_results, page_images, write_run
from vlcl.app.cli import main
from vlcl.report import comparison_markdown, markdown_report, render_console
from vlcl.report import plots as report_plots

pytestmark = pytest.mark.report

MARK = "(incomplete: 1 of 2 stages)"


def incomplete_results(method="finetune"):
    """A run of 2 tasks stopped after the first: its last row is the row after task a (mean of 60.0 and 15.0)."""
    results = fake_results(method)
    results["stages"] = results["stages"][:2]
    results["matrices"]["mean_R@1"] = results["matrices"]["mean_R@1"][:1]
    results["summary"].update(complete=False, retrieval={"mean_R@1": {"last": 37.5}})
    return results


def classification_results(method="finetune", benchmark="digits"):
    """A classification run (task_metric top1): each task's top-1 under metrics.zeroshot, Last 33.3."""
    results = fake_results(method)
    results.update(benchmark=benchmark, task_metric="top1", heldout_retrieval=[])
    for stage, (a, b) in zip(results["stages"], ((10.0, 10.0), (50.0, 12.0), (30.0, 36.6))):
        stage["metrics"]["zeroshot"].update(a={"top1": a}, b={"top1": b})
        stage["metrics"]["retrieval"] = {}
    results["matrices"] = {"top1": [[50.0, 12.0], [30.0, 36.6]]}
    results["summary"].pop("retrieval")
    results["summary"].pop("heldout_mean_R@1")
    results["summary"]["classification"] = {"top1": {"last": 33.3, "avg": 30.0, "transfer": 10.0, "bwt": -20.0, "forgetting": 20.0, "plasticity": 43.3}}
    return results


def with_model(results, path):
    results = copy.deepcopy(results)
    results["config"]["model"] = {"path": path}
    results["config"]["train"]["lr"] = 0.0001
    return results


WARNING = {"kind": "loss_flat", "message": "the training loss stayed within 1% of ln 5 for 66 steps", "stage": 0, "set": "a"}


def console_text(results) -> str:
    console = Console(record=True, width=220, color_system=None)
    render_console(results, console)
    return console.export_text()


# -- 1. unfinished runs are marked ----------------------------------------------------------------------------


def test_an_incomplete_run_is_marked_in_the_markdown(tmp_path, capsys):
    run = write_run(tmp_path / "stopped", incomplete_results())
    assert main(["report", str(run)]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("| finetune"))
    assert MARK in row and "| 37.5 |" in row  # the leaderboard's Last of an unfinished run carries the mark
    assert f"### finetune lr=0.001 on embedded {MARK}" in text
    assert "| b (not run) | - | - | - | - |" in text  # the stage it never reached
    assert "**Incomplete run**: 1 of 2 stages trained" in text
    summary = [line for line in text.splitlines() if line.startswith(("| retrieval R@1", "| zs_shape", "| base R@1"))]
    assert summary and all(MARK in line for line in summary)
    assert not any("final" in line for line in summary)  # "latest", never "final", for a run that did not finish
    finished = markdown_report(fake_results())
    assert "incomplete" not in finished and "not run" not in finished and "| retrieval R@1 last | 47.5 |" in finished


def test_an_incomplete_run_is_marked_in_the_console():
    text = console_text(incomplete_results())
    assert f"finetune on embedded {MARK}" in text
    assert "incomplete run: 1 of 2 stages trained" in text
    assert "b (not run)" in text
    assert "pretrained -> latest (PD) (incomplete" in text and "-> final" not in text


def test_an_incomplete_run_is_marked_in_the_html_report_and_its_plots(tmp_path, monkeypatch):
    drawn: list[list[str]] = []
    real_bars = report_plots.bars_png
    monkeypatch.setattr(report_plots, "bars_png", lambda points, axis: drawn.append([p.label for p in points]) or real_bars(points, axis))
    stopped = write_run(tmp_path / "stopped", incomplete_results())
    done = write_run(tmp_path / "done", fake_results("lwf"))
    out = tmp_path / "r.html"
    assert main(["report", str(stopped), str(done), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    board = page[page.index('id="leaderboard"'): page.index('id="runs"')]
    assert re.search(rf"<tr><td>finetune lr=0.001 {re.escape(MARK)}</td>", board)
    assert re.search(r"<tr><td>lwf lr=0.001</td>", board)
    assert f"finetune lr=0.001 on embedded, seed 0 {MARK}</h3>" in page
    assert f"<strong>Stage x task {MARK}.</strong>" in page
    assert drawn and all(MARK in labels[0] and "incomplete" not in labels[1] for labels in drawn if len(labels) == 2)
    assert report_plots.stage_table(incomplete_results()).rows == ["pretrained", "a", "b (not run)"]  # the heatmap's rows


def test_an_unfinished_run_is_never_averaged_with_a_finished_one(tmp_path):
    stopped = write_run(tmp_path / "stopped", incomplete_results())
    done = write_run(tmp_path / "done", fake_results())  # the same config and seed, finished
    again = write_run(tmp_path / "again", fake_results(shift=1.0))  # the same seed again: another row, not a second seed
    out = tmp_path / "r.html"
    assert main(["report", str(stopped), str(done), str(again), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    rows = re.findall(r"<tr><td>([^<]+)</td><td class=num>(\d)</td>", page)
    assert rows == [(f"finetune lr=0.001 [stopped] {MARK}", "1"), ("finetune lr=0.001 [done]", "1"), ("finetune lr=0.001 [again]", "1")]


# -- 2. one table per benchmark and task metric -----------------------------------------------------------------


def test_retrieval_and_classification_runs_never_share_a_column(tmp_path, capsys):
    retrieval = write_run(tmp_path / "ret", fake_results())
    classification = write_run(tmp_path / "cls", classification_results())
    assert main(["report", str(retrieval), str(classification)]) == 0
    text = capsys.readouterr().out
    tables = re.split(r"^## ", text, flags=re.M)[1:]
    assert [t.splitlines()[0] for t in tables] == ["embedded: mean R@1 (%, image->text and text->image)",
                                                  "digits: top-1 accuracy (%, each task in its own label space)"]
    rows = [[line for line in t.split("### ")[0].splitlines() if line.startswith("| finetune")] for t in tables]
    assert [len(r) for r in rows] == [1, 1]
    assert "| 47.5 |" in rows[0][0] and "| 33.3 |" in rows[1][0]


def test_different_task_lists_get_their_own_table():
    other = fake_results("lwf")
    other["tasks"] = ["a"]
    for stage in other["stages"]:
        stage["metrics"]["retrieval"].pop("b")
    text = comparison_markdown([fake_results(), other])
    assert "## embedded: mean R@1 (%, image->text and text->image), tasks a, b" in text
    assert "## embedded: mean R@1 (%, image->text and text->image), tasks a\n" in text


def test_html_has_a_leaderboard_and_plots_per_group(tmp_path, monkeypatch):
    drawn: list[list[str]] = []
    real_bars = report_plots.bars_png
    monkeypatch.setattr(report_plots, "bars_png", lambda points, axis: drawn.append([p.label for p in points]) or real_bars(points, axis))
    runs = [write_run(tmp_path / "ret-ft", fake_results()), write_run(tmp_path / "ret-lwf", fake_results("lwf", shift=2.0)),
            write_run(tmp_path / "cls-ft", classification_results()), write_run(tmp_path / "cls-lwf", classification_results("lwf"))]
    out = tmp_path / "r.html"
    assert main(["report", *map(str, runs), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "<h2>Leaderboard: embedded: mean R@1" in page and "<h2>Leaderboard: digits: top-1 accuracy" in page
    first = page[page.index('id="leaderboard"'): page.index('id="leaderboard-2"')].split("</table>")[0]
    second = page[page.index('id="leaderboard-2"'): page.index('id="runs"')].split("</table>")[0]
    assert first.count("<tr><td>") == 2 and second.count("<tr><td>") == 2
    cell = r"<td class=num>(<strong>)?{}(</strong>)?</td>"
    assert re.search(cell.format("47.5"), first) and "33.3" not in first and re.search(cell.format("33.3"), second) and "47.5" not in second
    assert len(drawn) == 4 and all(len(labels) == 2 for labels in drawn)  # Last and PD bars per group, never mixed
    names = sorted(page_images(page))
    assert "leaderboard_embedded_1_last.png" in names and "leaderboard_digits_2_last.png" in names


# -- 3. labels that tell runs apart ---------------------------------------------------------------------------


def test_runs_of_different_models_get_different_labels(tmp_path, capsys):
    a = write_run(tmp_path / "a", with_model(fake_results(), "/models/clip-a"))
    b = write_run(tmp_path / "b", with_model(fake_results(shift=3.0), "/models/clip-b"))
    assert main(["report", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "| finetune lr=0.0001 model.path=clip-a |" in text and "| finetune lr=0.0001 model.path=clip-b |" in text
    out = tmp_path / "r.html"
    assert main(["report", str(a), str(b), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")  # two methods, not two seeds of one
    assert re.search(r"<tr><td>finetune lr=0.0001 model.path=clip-a</td><td class=num>1</td>", page)
    assert re.search(r"<tr><td>finetune lr=0.0001 model.path=clip-b</td><td class=num>1</td>", page)


def test_labels_show_what_differs_and_fall_back_to_the_directory():
    from vlcl.report.tables import run_labels

    one, two = fake_results(), fake_results()
    two["config"]["train"]["epochs"] = 10
    two["config"]["seed"] = 3
    assert run_labels([one, two]) == ["finetune lr=0.001 seed=0 train.epochs=1", "finetune lr=0.001 seed=3 train.epochs=10"]
    assert run_labels([one, two], seeds_apart=False) == ["finetune lr=0.001 train.epochs=1", "finetune lr=0.001 train.epochs=10"]
    same = fake_results()
    same["config"]["logging"] = {"tensorboard": True}  # does not change the numbers: not a difference
    assert run_labels([one, same], ["runs/x", "runs/y"]) == ["finetune lr=0.001 [x]", "finetune lr=0.001 [y]"]
    assert run_labels([one, same], ["a/x/seed-0", "b/x/seed-0"]) == ["finetune lr=0.001 [a/x/seed-0]", "finetune lr=0.001 [b/x/seed-0]"]


# -- 4. warnings ------------------------------------------------------------------------------------------------


def warned():
    results = fake_results()
    results["warnings"] = [WARNING, {"kind": "routing", "message": "100% of b's test images went to router a", "stage": None, "set": None}]
    return results


def test_warnings_in_markdown_with_a_marked_row_and_a_footnote(tmp_path, capsys):
    run = write_run(tmp_path / "w", warned())
    other = write_run(tmp_path / "o", fake_results("lwf"))
    assert main(["report", str(run), str(other)]) == 0
    text = capsys.readouterr().out
    assert "| finetune lr=0.001 ! |" in text and "| lwf lr=0.001 |" in text
    assert f"- ! finetune lr=0.001: loss_flat, stage 0 (a), set a: {WARNING['message']}; routing: 100% of b" in text
    assert "**Warnings** (2):" in text and f"- loss_flat, stage 0 (a), set a: {WARNING['message']}" in text


def test_warnings_in_the_console_after_the_table():
    text = console_text(warned())
    assert text.index("warning: loss_flat, stage 0 (a), set a: the training loss") > text.index("summary")
    assert "warning: routing: 100% of b's test images went to router a" in text


def test_warnings_are_prominent_in_the_html(tmp_path):
    run = write_run(tmp_path / "w", warned())
    other = write_run(tmp_path / "o", fake_results("lwf"))
    out = tmp_path / "r.html"
    assert main(["report", str(run), str(other), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.index('id="warnings"') < page.index('id="leaderboard"')  # above everything else
    top = page[page.index('id="warnings"'): page.index('id="leaderboard"')]
    assert "loss_flat, stage 0 (a), set a: the training loss stayed within 1% of ln 5" in top and "routing: 100% of b&#x27;s" in top
    assert re.search(r"<tr><td>finetune lr=0.001 !</td>", page) and re.search(r"<tr><td>lwf lr=0.001</td>", page)
    assert '<div class="warnbox"><strong>Warnings (2)</strong>' in page  # and in the run's own section


# -- 5. per-class top-1 and the confusion matrix ---------------------------------------------------------------


def with_per_class(results, classes=3, confusion=True):
    names = [f"digit{i}" for i in range(classes)]
    support = [10] * classes
    matrix = [[10 if r == c else 0 for c in range(classes)] for r in range(classes)]
    matrix[0] = [0] + [10 if c == 1 else 0 for c in range(1, classes)]  # digit0 is always read as digit1
    top1 = [100.0 * matrix[i][i] / 10 for i in range(classes)]
    entry = {"classes": names, "support": support, "top1": top1, **({"confusion": matrix} if confusion else {})}
    results["stages"][-1]["per_class"] = {"a": entry}
    return results


def test_per_class_top1_in_markdown_lowest_first():
    text = markdown_report(with_per_class(fake_results(), classes=12))
    assert "Per-class top-1 of a after b (%, lowest first, 12 classes; 2 more in the HTML report):" in text
    table = text[text.index("| class | test images | top-1 |"):]
    assert table.splitlines()[2] == "| digit0 | 10 | 0.0 |" and table.count("| digit") == 10


def test_per_class_table_and_confusion_plot_in_html(tmp_path):
    run = write_run(tmp_path / "cls", with_per_class(fake_results()))
    out = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "<h4>Per-class top-1 after b</h4>" in page
    assert "<tr><td>digit0</td><td class=num>10</td><td class=num>0.0</td></tr><tr><td>digit1</td>" in page
    assert_plots(out, [f"cls_{p}" for p in ("heatmap", "tasks", "zeroshot", "alignment", "confusion_a")])


@pytest.mark.parametrize("classes, confusion, why", [
    (31, True, "31 classes, more than the 30 a readable matrix has"),
    (4, False, "the results hold no confusion matrix for this set"),
])
def test_no_confusion_plot_says_why(tmp_path, classes, confusion, why):
    run = write_run(tmp_path / "cls", with_per_class(fake_results(), classes, confusion))
    out = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert f"<strong>Confusion matrix of a</strong>: no plot, {why}." in page and not any("confusion" in n for n in page_images(page))
    assert page.count("<tr><td>digit") == classes  # the per-class table has every class


# -- 6. bad inputs: one line, exit 2, nothing written ---------------------------------------------------------


def _blocked_plots(tmp):
    (tmp / "blk_plots").write_text("a file where the plot folder goes")
    return ["-o", str(tmp / "blk.html")]


def _parent_is_a_file(suffix):
    def make(tmp):
        (tmp / "afile").write_text("x")
        return ["-o", str(tmp / "afile" / f"r{suffix}")]
    return make


def _over_results(tmp):
    return ["-o", str(tmp / "run" / "results.json")]


def _over_leaderboard(tmp):
    write_run(tmp / "cmp" / "finetune", fake_results())
    (tmp / "cmp" / "leaderboard.md").write_text("# Leaderboard\n")
    return [str(tmp / "cmp"), "-o", str(tmp / "cmp" / "leaderboard.md")]


def _read_only_plots(tmp):
    (tmp / "ro_plots").mkdir()
    os.chmod(tmp / "ro_plots", 0o500)
    return ["-o", str(tmp / "ro.html")]


def _read_only_folder(tmp):
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", 0o500)
    return ["-o", str(tmp / "ro" / "r.md")]


def _results_edit(edit):
    def make(tmp):
        results = json.loads((tmp / "run" / "results.json").read_text())
        edit(results)
        (tmp / "run" / "results.json").write_text(json.dumps(results))
        return ["-o", str(tmp / "r.html")]
    return make


def _set_per_class(**fields):
    def edit(results):
        entry = {"classes": ["x", "y"], "support": [3, 4], "top1": [50.0, 25.0], "confusion": [[1, 2], [3, 1]]}
        entry.update(fields)
        results["stages"][2]["per_class"] = {"a": entry}
    return edit


needs_permissions = pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")

BAD_OUTPUTS = [
    pytest.param(_blocked_plots, r"blk_plots: exists and is not a directory; the plots of blk.html go there", id="plot-folder-is-a-file"),
    pytest.param(_parent_is_a_file(".html"), r"afile/r.html: cannot be written, .*afile is not a directory", id="html-parent-is-a-file"),
    pytest.param(_parent_is_a_file(".md"), r"afile/r.md: cannot be written, .*afile is not a directory", id="md-parent-is-a-file"),
    pytest.param(_over_results, r"results.json: is a file of the run .*run that vlcl wrote; -o takes a new file", id="over-the-results"),
    pytest.param(_over_leaderboard, r"cmp/leaderboard.md: is a file of the comparison .*cmp that vlcl wrote", id="over-a-leaderboard"),
    pytest.param(_read_only_plots, r"ro_plots: the plot folder of ro.html is not writable", id="plot-folder-read-only", marks=needs_permissions),
    pytest.param(_read_only_folder, r"ro/r.md: cannot be written, the folder .*ro is not writable", id="folder-read-only", marks=needs_permissions),
    pytest.param(_results_edit(lambda r: r.update(warnings={"kind": "loss_flat"})), r"results.json: 'warnings' is a dict, expected a list", id="warnings-not-a-list"),
    pytest.param(_results_edit(lambda r: r.update(warnings=[{"kind": "loss_flat", "stage": 0, "set": None}])), r"warnings\[0\].message is missing, expected str",
                 id="warning-without-message"),
    pytest.param(_results_edit(lambda r: r.update(warnings=[{**WARNING, "stage": "zero"}])), r"warnings\[0\].stage is a str, expected int or null",
                 id="warning-stage-not-a-number"),
    pytest.param(_results_edit(_set_per_class(top1=[50.0])), r"stage 'b' \(stages\[2\]\): per_class.a.top1 is not a list of 2 numbers", id="per-class-short"),
    pytest.param(_results_edit(_set_per_class(confusion=[[1, 2, 0], [3, 1, 0]])), r"per_class.a.confusion is not a 2 x 2 matrix of counts", id="confusion-not-square"),
    pytest.param(_results_edit(_set_per_class(classes=[])), r"per_class.a.classes is not a non-empty list of class names", id="per-class-no-classes"),
    pytest.param(_results_edit(_set_per_class(support=[3, -1])), r"per_class.a.support is not a list of 2 counts", id="per-class-negative-support"),
]


def _tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("make, message", BAD_OUTPUTS)
def test_bad_report_input_is_one_line_and_writes_nothing(tmp_path, capsys, make, message):
    write_run(tmp_path / "run", fake_results())
    argv = make(tmp_path)
    before = _tree(tmp_path)
    try:
        assert main(["report", str(tmp_path / "run"), *argv]) == 2
    finally:
        for path in tmp_path.rglob("*"):
            if path.is_dir():
                os.chmod(path, 0o700)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vlcl: error: ") and re.search(message, err), err
    assert _tree(tmp_path) == before  # nothing written, nothing lost
