"""`vlcl report` of stream runs (data.stream=online): the stream's A_auc, A_avg, A_last and F_last in the summary,
its shape, a table of its own (never a column shared with a task-mode run's Last), mean +- std over seeds, the
plot of accuracy along the stream, the one-stage matrix's summaries cut to 'last', and an incomplete stream said so.

The results are built by hand in the structure of a real stream run's results.json (`vlcl run
data.benchmark=embedded_cls data.stream=online ...`: vlcl.engine.results.stream_results), two tasks, top-1."""

from __future__ import annotations

import copy
import re

import pytest
from rich.console import Console

from test_report_grouping import classification_results
from test_report_html import assert_plots, assert_self_contained, page_images, write_run
from vlcl.app.cli import main
from vlcl.report import comparison_markdown, markdown_report, render_console
from vlcl.report import plots as report_plots
from vlcl.report.tables import STREAM_COLUMNS, format_mean_std, seeded_comparison, stream_shape, table_columns
from vlcl.schema import TASK_AGNOSTIC_ROWS, TOP1_METRIC

pytestmark = pytest.mark.report

SHAPE = {"boundaries": "si_blurry", "samples": 200, "batches": 13, "hidden_tasks": ["task 1", "task 2"], "task_sizes": [80, 120],
         "dropped_samples": 16, "classes": 4, "online_iters": 3, "every_samples": 50}
SUMMARY = {"A_auc": 41.5, "A_avg": 46.9, "A_last": 31.0, "F_last": 45.0}
"""The stream's numbers of :func:`stream_results` (shift 0), as vlcl.metrics.stream_summary gives them for its points:
A_auc = mean(60, 40, 35, 31), A_avg = mean(62.8, 31), F_last = mean(75 - 25, 50 - 10)."""


def _points(shift: float) -> list[dict]:
    point = lambda batch, samples, task, periodic, end, score, units=None: {  # noqa: E731
        "batch": batch, "samples": samples, "task": task, "periodic": periodic, "task_end": end, "score": score, "per_unit": units or {}}
    return [
        point(3, 64, 0, True, False, 60.0 + shift, {"0": 75.0, "1": 50.0}),
        point(4, 80, 0, False, True, 62.8 + shift, {"0": 75.0, "1": 50.0}),
        point(7, 128, 1, True, False, 40.0 + shift, {"0": 50.0, "1": 25.0, "2": 30.0, "3": 40.0}),
        point(10, 176, 1, True, False, 35.0 + shift, {"0": 30.0, "1": 20.0, "2": 35.0, "3": 45.0}),
        point(12, 200, 1, True, True, 31.0 + shift, {"0": 25.0, "1": 10.0, "2": 40.0, "3": 45.0}),
    ]


def stream_results(method="finetune", seed=0, shift=0.0):
    """A finished stream run of two classification tasks a and b, one held-out set and one zero-shot set."""
    def metrics(a, b, zs):
        return {
            "retrieval": {"base": {"mean_R@1": 70.0 + zs / 10}},
            "alignment": {},
            "zeroshot": {"zs_shape": {"top1": zs}, "a": {"top1": a}, "b": {"top1": b}},
            "task_agnostic": {"a": {"top1": a - 5}, "b": {"top1": b - 5}},
        }

    summary = {k: v + shift for k, v in SUMMARY.items()}
    stream = {**SHAPE, "points": _points(shift)}
    return {
        "format": 3,
        "config": {"seed": seed, "method": {"name": method}, "train": {"lr": 0.001, "online_iters": 3},
                   "data": {"benchmark": "digits", "stream": "online"}, "eval": {"every_samples": 50}},
        "benchmark": "digits",
        "method": method,
        "setting": {"name": "classification", "metric": TOP1_METRIC, "summary_rows": TASK_AGNOSTIC_ROWS},
        "tasks": ["a", "b"],
        "heldout_retrieval": ["base"],
        "zeroshot_sets": ["zs_shape"],
        "task_metric": "top1",
        "stage_names": ["stream"],
        "matrices": {"top1": [[57.7, 38.3]]},
        "stream": {"definition": "a stream ...", "metric": "top1", **stream, "summary": summary},
        "summary": {
            "complete": True,
            "classification": {"top1": {"last": 48.0}},
            "zeroshot_top1": {"zs_shape": {"pretrained": 95.0, "final": 85.0 - shift, "pd": 10.0 + shift}},
            "heldout_mean_R@1": {"base": {"pretrained": 79.5, "final": 78.5, "pd": 1.0}},
            "zeroshot_mean_pd": 10.0 + shift,
            "task_agnostic": {"last": 43.0},
            "seen_classes": {"last": 44.4, "avg": 44.4},  # over the one stage: its last, not the stream's A_avg
            "stream": summary,
        },
        "stages": [
            {"index": -1, "name": "pretrained", "trained_on": [], "metrics": metrics(10.0, 12.0, 95.0), "train": {}, "eval_seconds": 0.5},
            {"index": 0, "name": "stream", "trained_on": ["a", "b"], "metrics": metrics(57.7, 38.3, 85.0 - shift),
             "train": {"steps": 39, "samples": 200, "seconds": 2.0 + seed, "final_loss": 1.5, "stream": stream}, "eval_seconds": 0.4},
        ],
        "timings": {"wall_seconds_this_session": 5.0, "train_seconds": 2.0 + seed, "eval_seconds": 0.9},
        "versions": {"vlcl": "0.1.0"},
    }


def incomplete_stream():
    """A stream whose points stop at sample 128 of 200: no summary (as vlcl.engine.results.stream_results leaves it)."""
    results = stream_results()
    results["stream"]["points"] = results["stream"]["points"][:3]
    results["stream"].pop("summary")
    results["summary"].pop("stream")
    return results


def stopped_stream():
    """A stream run stopped before its one stage ended: only the pre-trained evaluation, no stream section."""
    results = stream_results()
    results.pop("stream")
    results["stages"] = results["stages"][:1]
    results["matrices"] = {"top1": []}
    results["summary"] = {"complete": False}
    return results


def console_text(results) -> str:
    console = Console(record=True, width=240, color_system=None)
    render_console(results, console)
    return console.export_text()


STREAM_ROWS = ["| stream top-1 A_auc | 41.5 |", "| stream top-1 A_avg | 46.9 |", "| stream top-1 A_last | 31.0 |", "| stream top-1 F_last | 45.0 |"]
SHAPE_LINE = ("si_blurry boundaries, 2 hidden tasks of 80, 120 samples, 200 samples in 13 batches (16 dropped), 4 classes, "
              "online_iters 3, evaluated every 50 samples (5 points, 2 at hidden-task ends)")


# -- one run: the summary and the stream's shape ----------------------------------------------------------------


def test_markdown_summary_has_the_stream_numbers_and_shape():
    text = markdown_report(stream_results())
    for row in STREAM_ROWS:
        assert row in text
    assert "### finetune lr=0.001 on digits, stream\n" in text
    assert f"**Stream**: {SHAPE_LINE}." in text
    assert "| stream | 57.7 | 38.3 |" in text  # the one stage of the matrix, after the whole stream
    assert "| accuracy top1 last | 48.0 |" in text and "| seen-classes top1 last | 44.4 |" in text
    # over one stage an "avg" is the stage itself, not the stream's A_avg: left out, and the report says why
    assert "seen-classes top1 avg" not in text and "an avg over one row is that row, not the stream's A_avg" in text
    assert "incomplete" not in text


def test_console_summary_has_the_stream_numbers_and_shape():
    text = console_text(stream_results())
    for name, value in (("A_auc", "41.5"), ("A_avg", "46.9"), ("A_last", "31.0"), ("F_last", "45.0")):
        assert re.search(rf"stream top-1 {name}\s+│\s+{value} │", text), name
    assert "finetune on digits, stream: top-1" in text
    assert f"stream: {SHAPE_LINE}" in text and "seen-classes top1 avg" not in text


def test_a_caption_streams_shape_names_no_classes():
    results = stream_results()
    results["stream"] = {**results["stream"], "boundaries": "sharp", "classes": None, "dropped_samples": 0}
    line = stream_shape(results)
    assert "classes" not in line and line.startswith("stream: sharp boundaries, 2 hidden tasks of 80, 120 samples")


def test_an_undefined_f_last_is_a_dash():
    results = stream_results()
    results["stream"]["summary"]["F_last"] = None  # one task end, or no class scored above 0 before the last
    assert "| stream top-1 F_last | - |" in markdown_report(results)


# -- several runs: stream runs get their own table ------------------------------------------------------------


def test_stream_and_task_mode_runs_never_share_a_column(tmp_path, capsys):
    stream = write_run(tmp_path / "stream", stream_results())
    task = write_run(tmp_path / "task", classification_results())  # the same benchmark, tasks and metric, task mode
    assert main(["report", str(stream), str(task)]) == 0
    text = capsys.readouterr().out
    tables = re.split(r"^## ", text, flags=re.M)[1:]
    assert [t.splitlines()[0] for t in tables] == [
        "digits: stream (data.stream=online), top-1 (%, on what the stream has shown so far)",
        "digits: top-1 accuracy (%, each task in its own label space)",
    ]
    boards = [t.split("### ")[0] for t in tables]
    assert "| method | A_auc | A_avg | A_last | F_last | zero-shot PD (mean) | base R@1 final |" in boards[0]
    assert "| finetune lr=0.001 | 41.5 | 46.9 | 31.0 | 45.0 | 10.0 | 78.5 |" in boards[0]
    assert "| method | Last | Avg | Transfer | BWT | forgetting |" in boards[1] and "A_auc" not in boards[1].split("\n- ")[0]
    assert [len([row for row in b.splitlines() if row.startswith("| finetune")]) for b in boards] == [1, 1]
    assert "41.5" not in boards[1] and "33.3" not in boards[0]  # each table holds its own protocol's numbers only
    assert "Not comparable with a task-mode run's Last/Avg/forgetting" in boards[0]
    with pytest.raises(ValueError, match="stream runs .* and task-mode runs in one table"):
        table_columns([stream_results(), classification_results()])


def test_html_puts_stream_runs_in_their_own_leaderboard(tmp_path):
    runs = [write_run(tmp_path / "s-ft", stream_results()), write_run(tmp_path / "s-zs", stream_results("zeroshot", shift=-5.0)),
            write_run(tmp_path / "t-ft", classification_results())]
    out = tmp_path / "r.html"
    assert main(["report", *map(str, runs), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    first = page[page.index('id="leaderboard"'): page.index('id="leaderboard-2"')]
    second = page[page.index('id="leaderboard-2"'): page.index('id="runs"')]
    assert "<h2>Leaderboard: digits: stream (data.stream=online)" in first and "<h2>Leaderboard: digits: top-1 accuracy" in second
    head = lambda board: re.findall(r"<th>([^<]+)</th>", board.split("</thead>")[0])  # noqa: E731
    assert head(first) == ["method", "seeds", *(name for name, _ in STREAM_COLUMNS), "train s"]
    assert "Last" in head(second) and "A_auc" not in head(second)
    assert re.search(r"<tr><td>finetune lr=0.001</td><td class=num>1</td><td class=num><strong>41.5</strong></td>", first)
    assert first.count("<tr><td>") == 2 and second.count("<tr><td>") == 1
    names = page_images(page)
    assert {"leaderboard_digits_1_stream.png", "leaderboard_digits_1_A_auc.png", "leaderboard_digits_1_zeroshot_pd.png"} <= set(names)
    assert "leaderboard_digits_1_plasticity_forgetting.png" not in names and "leaderboard_digits_2_plasticity_forgetting.png" in names


def test_seeds_of_a_stream_run_are_mean_and_std(tmp_path, monkeypatch):
    seeds = [stream_results(seed=0), stream_results(seed=1, shift=2.0)]
    names, rows = seeded_comparison([seeds])
    assert names == [name for name, _ in STREAM_COLUMNS]
    cells = [format_mean_std(mean, std) for mean, std, _ in rows[0]["cells"]]
    assert cells[:4] == ["42.5 +- 1.4", "47.9 +- 1.4", "32.0 +- 1.4", "46.0 +- 1.4"]  # A_auc, A_avg, A_last, F_last
    drawn = []
    real = report_plots.stream_png
    monkeypatch.setattr(report_plots, "stream_png", lambda curves, *a, **k: drawn.append(curves) or real(curves, *a, **k))
    a0, a1 = write_run(tmp_path / "a0", seeds[0]), write_run(tmp_path / "a1", seeds[1])
    out = tmp_path / "r.html"
    assert main(["report", str(a0), str(a1), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert re.search(r"<tr><td>finetune lr=0.001</td><td class=num>2</td><td class=num><strong>42.5 \+- 1.4</strong></td>", page)
    board = drawn[0]  # the leaderboard's curve: the seeds' mean with a band of one std
    assert len(board) == 1 and board[0].scores == [61.0, 41.0, 36.0, 32.0] and all(abs(s - 2 ** 0.5) < 1e-9 for s in board[0].band)
    assert "With several seeds: their mean, the band one standard deviation each way" in page


# -- the HTML: accuracy along the stream -------------------------------------------------------------------------


def test_html_of_a_stream_run_has_the_stream_plot(tmp_path, monkeypatch):
    drawn = []
    real = report_plots.stream_png
    monkeypatch.setattr(report_plots, "stream_png", lambda curves, boundaries, *a, **k: drawn.append((curves, boundaries)) or real(curves, boundaries, *a, **k))
    run = write_run(tmp_path / "srun", stream_results())
    out = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert_plots(out, [f"srun_{p}" for p in ("stream", "heatmap", "tasks", "zeroshot")])  # no alignment diagnostics here
    assert "<strong>Accuracy along the stream.</strong>" in page and "A_auc 41.5, A_avg 46.9, A_last 31.0." in page
    assert page.index("srun_stream.png") < page.index("srun_heatmap.png")  # the stream first
    (curve,), boundaries = drawn[0]
    assert curve.samples == [64.0, 128.0, 176.0, 200.0] and curve.scores == [60.0, 40.0, 35.0, 31.0]  # periodic: the line
    assert curve.end_samples == [80.0, 200.0] and curve.end_scores == [62.8, 31.0]  # task ends: marked
    assert boundaries == [80.0]  # where hidden task 2 begins
    assert "<td>stream top-1 A_auc</td><td class=num>41.5</td>" in page and SHAPE_LINE in page
    assert "A stream run has one stage, stream, which trained every task in one pass." in page
    assert "seen-classes top1 avg" not in page


# -- an incomplete stream ------------------------------------------------------------------------------------------

MARK = "(incomplete stream: points up to sample 128 of 200)"


def test_an_incomplete_stream_says_so(tmp_path, capsys):
    text = markdown_report(incomplete_stream())
    assert f"### finetune lr=0.001 on digits, stream {MARK}" in text
    assert f"| stream top-1 A_auc, A_avg, A_last, F_last {MARK} | - |" in text
    assert "**Incomplete stream**: its points end at sample 128 of 200, before the stream's end, so it has no A_auc" in text
    assert not any(row in text for row in STREAM_ROWS)
    board = comparison_markdown([incomplete_stream(), stream_results("zeroshot")])
    assert f"| finetune lr=0.001 {MARK} | - | - | - | - | 10.0 | 78.5 |" in board
    assert "- (incomplete stream ...): the stream's points stop before its end" in board
    assert "incomplete stream: its points end at sample 128 of 200" in console_text(incomplete_stream())


def test_a_stream_stopped_before_its_stage_ended_says_so():
    text = markdown_report(stopped_stream())
    assert "### finetune lr=0.001 on digits, stream (incomplete: 0 of 1 stages)" in text
    assert "| stream top-1 A_auc, A_avg, A_last, F_last (incomplete: 0 of 1 stages) | - |" in text
    assert "**Stream**: none recorded, the run stopped before its stream ended" in text
    assert "| stream (not run) | - | - |" in text


def test_html_of_an_incomplete_stream(tmp_path):
    stopped = write_run(tmp_path / "stopped", incomplete_stream())
    done = write_run(tmp_path / "done", stream_results())  # the same config and seed, finished: never averaged in
    out = tmp_path / "r.html"
    assert main(["report", str(stopped), str(done), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    rows = re.findall(r"<tr><td>([^<]+)</td><td class=num>(\d)</td>", page)
    assert rows == [(f"finetune lr=0.001 [stopped] {MARK}", "1"), ("finetune lr=0.001 [done]", "1")]
    assert "The stream stopped early: its points end at sample 128 of 200." in page
    assert "the stream&#x27;s points stop before its end, so it has no A_auc" in page
    assert "stopped_stream.png" in page_images(page)


def test_a_report_of_a_stream_run_without_points_has_no_empty_plot(tmp_path):
    results = incomplete_stream()
    results["stream"]["points"] = []
    run = write_run(tmp_path / "empty", results)
    out = tmp_path / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "<strong>Accuracy along the stream (incomplete stream: no points)</strong>: no plot, the stream recorded no points" in page
    assert "empty_stream.png" not in page_images(page)


def test_mean_curve_of_seeds_on_different_streams_is_the_first_seed():
    curves = [report_plots.stream_curve(stream_results()), report_plots.stream_curve(stream_results(shift=1.0))]
    other = copy.deepcopy(stream_results())
    other["stream"]["points"][0]["samples"] = 66  # another stream order (another data.seed)
    mean, averaged = report_plots.mean_stream_curve(curves, "ft")
    assert averaged and mean.scores == [60.5, 40.5, 35.5, 31.5] and mean.band is not None
    first, averaged = report_plots.mean_stream_curve([curves[0], report_plots.stream_curve(other)], "ft")
    assert not averaged and first.scores == curves[0].scores and first.band is None
