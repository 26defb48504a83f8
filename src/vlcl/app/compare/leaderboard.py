"""The leaderboard of a comparison (``leaderboard.md``, ``leaderboard.csv``), rewritten after every finished run,
and its ``report.html``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from rich.console import Console

from vlcl.app.compare.plan import MethodSpec, short_value
from vlcl.fileio import atomic_write_text
from vlcl.report.tables import comparison_rows, format_mean_std, markdown_table, mean_std, seeded_comparison


def _tuned_text(values: dict[str, Any] | None) -> str:
    return "" if not values else ", ".join(f"{k.rsplit('.', 1)[-1]}={short_value(v)}" for k, v in values.items())


TUNED_NOTE = "Tuned values: [tuning.md](tuning.md) (chosen on a validation split of the training data)."
SPREAD_NOTE = (
    "Cells: mean +- sample standard deviation (divisor n - 1) over the seeds. **Bold**: the column's best mean "
    "(highest; lowest for forgetting, F_last of a stream included, and zero-shot PD). `~`: within the seeds' spread of the best, "
    "|mean - best mean| <= std + best std (docs/tuning.md); a row with one finished seed has no spread (std 0)."
)


def leaderboard_files(
    out_dir: Path,
    runs: list[tuple[MethodSpec, list[tuple[str, dict[str, Any]]]]],
    command: str,
    seeded: bool = False,
    tuned: dict[str, dict[str, Any] | None] | None = None,
) -> None:
    """``leaderboard.md`` and ``leaderboard.csv``. ``runs``: per method, its (run directory relative to
    ``out_dir``, results) at each finished seed. One seed (``seeded`` false): one row per run, as before;
    several: mean +- sample std per column, the best and the rows within the seeds' spread of it marked.
    ``tuned``: the values chosen per method (a ``tuned on validation`` column), None without tuning."""
    tuned_md = ["tuned on validation"] if tuned is not None else []
    tuned_csv = ["tuned"] if tuned is not None else []

    def tuned_cell(spec: MethodSpec) -> list[str]:
        return [_tuned_text(tuned.get(spec.label))] if tuned is not None else []

    md_rows, csv_rows = [], []
    if not seeded:
        header, rows = comparison_rows([finished[0][1] for _, finished in runs])
        md_header = header + ["train s"] + tuned_md + ["files"]
        csv_header = ["run"] + header[1:] + ["train_seconds", "results"] + tuned_csv
        for (spec, finished), row in zip(runs, rows):
            where, results = finished[0]
            seconds = results["timings"]["train_seconds"]
            links = f"[results]({where}/results.json), [metrics]({where}/metrics.csv)"
            md_rows.append(row + [f"{seconds:.0f}"] + tuned_cell(spec) + [links])
            csv_rows.append([spec.label] + row[1:] + [seconds, f"{where}/results.json"] + tuned_cell(spec))
        notes = [TUNED_NOTE] if tuned is not None else []
    else:
        names, rows = seeded_comparison([[results for _, results in finished] for _, finished in runs])
        md_header = ["method", "seeds"] + names + ["train s"] + tuned_md + ["files"]
        csv_header = (
            ["run", "seeds"] + [f"{n} {part}" for n in names for part in ("mean", "std", "mark")]
            + ["train_seconds mean", "train_seconds std", "results"] + tuned_csv
        )
        for (spec, finished), row in zip(runs, rows):
            seconds = mean_std([results["timings"]["train_seconds"] for _, results in finished])
            links = ", ".join(f"[{Path(where).name}]({where}/results.json)" for where, _ in finished)
            md_rows.append(
                [row["label"], str(row["seeds"])] + [format_mean_std(*cell) for cell in row["cells"]]
                + [format_mean_std(*seconds)] + tuned_cell(spec) + [links]
            )
            numbers = [x for cell in row["cells"] for x in cell] + list(seconds)
            csv_rows.append(
                [spec.label, row["seeds"]] + ["" if v is None else v for v in numbers]
                + [" ".join(f"{where}/results.json" for where, _ in finished)] + tuned_cell(spec)
            )
        notes = [SPREAD_NOTE] + ([TUNED_NOTE] if tuned is not None else [])
    text = f"# Leaderboard\n\nMade with:\n\n```bash\n{command}\n```\n\n{markdown_table(md_header, md_rows)}\n"
    atomic_write_text(out_dir / "leaderboard.md", text + "".join(f"\n{note}\n" for note in notes))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_header)
    writer.writerows(csv_rows)
    atomic_write_text(out_dir / "leaderboard.csv", buffer.getvalue())


def comparison_report(out_dir: Path, specs: list[MethodSpec], results: dict[tuple[str, int], tuple[str, dict[str, Any]]], console: Console) -> None:
    """``<out_dir>/report.html`` of the finished runs (docs/report.md), method by method, seed by seed; a failure
    to write it is one warning line (the runs and the leaderboard are already written)."""
    from vlcl.report.html import REPORT_NAME, auto_report, run_groups

    if not results:
        return
    order = {spec.label: i for i, spec in enumerate(specs)}
    finished = [results[key] for key in sorted(results, key=lambda key: (order[key[0]], key[1]))]
    groups = run_groups([(where, out_dir / where, run) for where, run in finished], lambda where: f"{out_dir}/{where.split('/')[0]}")
    say = lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    if auto_report(out_dir / REPORT_NAME, groups, say, inputs=[str(out_dir)], across=True):
        console.print(f"report: {out_dir / REPORT_NAME}", markup=False, highlight=False, soft_wrap=True)
