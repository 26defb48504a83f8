"""The plots of the HTML report, drawn with matplotlib's Agg renderer into PNG bytes.

Every function returns the PNG's bytes, or None when the results hold nothing to draw (the page then says so
instead of showing an empty axis). matplotlib is imported inside the functions, so that ``vlcl`` starts without
it; figures are plain ``matplotlib.figure.Figure`` objects (no pyplot, no global state, no display needed).
Values are percentages as results.json holds them; the alignment diagnostics are cosines and distances.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from vlcl.report.tables import lookup, mean_std, stages_not_run, stream_points, stream_section
from vlcl.schema import task_metric_of

DPI = 80
"""Pixels per inch of the PNGs: a 7-inch-wide plot is 560 pixels, sharp enough on a page and quick to draw."""

_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363",
)


def _colour(i: int) -> str:
    return _COLOURS[i % len(_COLOURS)]


def _png(figure: Any) -> bytes:
    """The figure drawn by Agg, as a PNG of at most 256 colours (a plot has few; a third of the bytes of a full-colour
    PNG, so that a page of many runs stays small)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    buffer = io.BytesIO()
    image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(buffer, format="PNG")
    return buffer.getvalue()


# -- layout ------------------------------------------------------------------------------------------------
# Margins are computed from the widths of the labels (measured with the font the plot uses) instead of
# bbox_inches="tight", which lays every figure out twice: a report draws in about half the time.

ROTATION = 30
"""Degrees of the rotated x tick labels (stage and task names)."""


def _text_width(texts: list[str], size: float) -> float:
    """Width in inches of the widest of ``texts`` at ``size`` points in matplotlib's default font."""
    from matplotlib.font_manager import FontProperties, findfont, get_font

    font = get_font(findfont(FontProperties()))
    font.set_size(size, 72)
    widest = 0.0
    for text in texts:
        font.set_text(str(text), 0.0)
        widest = max(widest, font.get_width_height()[0] / 64)
    return widest / 72


def _line(size: float) -> float:
    """Height in inches of one line of text at ``size`` points."""
    return size / 72 * 1.3


TICK = 0.1
"""Inches between an axis and its tick labels (tick length and padding)."""
Y_TICKS = 0.32
"""Inches for numeric y tick labels such as ``100`` or ``-0.5`` at 8 points."""


def _xlabels(labels: list[str], slot: float, size: float = 8) -> tuple[float, float, bool]:
    """For x tick labels ``slot`` inches apart: (inches they take below the axis, how far the first reaches left of
    its tick, whether they are rotated: when one is wider than its slot)."""
    widths = [_text_width([label], size) for label in labels] or [0.0]
    if max(widths) <= 0.92 * slot:
        return TICK + _line(size), widths[0] / 2, False
    angle = math.radians(ROTATION)
    return TICK + max(widths) * math.sin(angle) + _line(size) * math.cos(angle), widths[0] * math.cos(angle), True


def _frame(axes_width: float, axes_height: float, *, left: float, right: float, bottom: float, top: float, count: int = 1,
           gap: float = 0.0) -> tuple[Any, list[Any]]:
    """A figure holding ``count`` axes of the given size (inches) side by side, ``gap`` inches apart, with these margins."""
    from matplotlib.figure import Figure

    width = left + count * axes_width + (count - 1) * gap + right
    height = bottom + axes_height + top
    figure = Figure(figsize=(width, height), dpi=DPI)
    axes = [
        figure.add_axes((
            (left + i * (axes_width + gap)) / width, bottom / height, axes_width / width, axes_height / height
        ))
        for i in range(count)
    ]
    return figure, axes


def _legend_width(labels: list[str]) -> float:
    """Inches a legend of ``labels`` (7 points) takes right of its axes."""
    return 0.12 + 0.42 + _text_width(labels, 7) + 0.08


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def task_metric_label(results: dict[str, Any]) -> str:
    return task_metric_of(results)["axis"]


@dataclass
class StageTable:
    """The task metric after every stage: ``rows`` (``pretrained`` and each stage), ``tasks`` and ``values[r][t]``
    (None where missing); ``trained[r]``: the tasks stage ``r`` trained on."""

    rows: list[str]
    tasks: list[str]
    values: list[list[float | None]]
    trained: list[set[str]]


def stage_axis(results: dict[str, Any]) -> list[str]:
    """The stages a plot runs over: every evaluated one, then an unfinished run's planned stages as ``b (not run)``,
    so that a plot of an incomplete run shows where it stopped (its PNG stands alone on a slide)."""
    return [s["name"] for s in results["stages"]] + [f"{name} (not run)" for name in stages_not_run(results)]


def stage_table(results: dict[str, Any]) -> StageTable:
    metric = task_metric_of(results)
    kind, key = metric["kind"], metric["headline"]
    stages = results["stages"]
    missing = len(stages_not_run(results))
    return StageTable(
        rows=stage_axis(results),
        tasks=list(results["tasks"]),
        values=[[_number(lookup(s["metrics"], kind, t, key)) for t in results["tasks"]] for s in stages] + [[None] * len(results["tasks"])] * missing,
        trained=[set(s.get("trained_on") or []) for s in stages] + [set() for _ in range(missing)],
    )


def _series(results: dict[str, Any], *keys: str) -> list[float | None]:
    return [_number(lookup(stage["metrics"], *keys)) for stage in results["stages"]] + [None] * len(stages_not_run(results))


def _present(values: list[float | None]) -> bool:
    return any(v is not None for v in values)


STAGE_AXES = (5.0, 2.4)
"""Width and height in inches of the axes of a plot over the stages."""


def _stage_margins(rows: list[str], axes_width: float) -> tuple[float, float, bool]:
    """(left, bottom) margins in inches of a plot over the stages, and whether its labels are rotated."""
    slot = axes_width / max(len(rows) - 0.4, 1.0)
    below, reach, rotated = _xlabels(rows, slot)
    left = max(_line(8) + Y_TICKS + TICK, reach - 0.3 * slot + 0.08)
    return left, below + _line(8) + 0.12, rotated


def _stage_axis(ax: Any, rows: list[str], rotated: bool) -> None:
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(rows, rotation=ROTATION if rotated else 0, ha="right" if rotated else "center", rotation_mode="anchor" if rotated else "default",
                       fontsize=8)
    ax.set_xlim(-0.3, len(rows) - 0.7)
    ax.set_xlabel("evaluated after", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.tick_params(axis="y", labelsize=8)


def _percent_limits(ax: Any, values: list[float]) -> None:
    top = max(values) if values else 100.0
    ax.set_ylim(min(0.0, min(values, default=0.0) * 1.05), min(102.0, max(5.0, top * 1.08)) if top <= 100 else top * 1.05)


def _legend(ax: Any) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False, borderpad=0.2,
              handlelength=2.0)


def heatmap_png(results: dict[str, Any]) -> bytes | None:
    """Stage x task heatmap of the task metric, every cell annotated, the cell of each task where it was trained
    outlined; None without tasks or numbers."""
    table = stage_table(results)
    if not table.tasks or not any(_present(row) for row in table.values):
        return None
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    data = np.array([[np.nan if v is None else v for v in row] for row in table.values], dtype=float)
    n_rows, n_cols = data.shape
    cell_width, cell_height = 0.72, 0.3
    below, reach, rotated = _xlabels(table.tasks, cell_width)
    left = max(_line(8) + _text_width(table.rows, 8) + TICK + 0.06, reach - cell_width / 2 + 0.08)
    colourbar_width = 0.12 + 0.14 + TICK + _text_width(["100"], 7) + _line(8) + 0.08
    figure, (ax,) = _frame(cell_width * n_cols, cell_height * n_rows, left=left, right=colourbar_width, bottom=below + _line(8) + 0.1,
                           top=0.1)
    cmap = colormaps["viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    size = 8 if n_cols <= 8 else 7
    for r in range(n_rows):
        for c in range(n_cols):
            value = data[r, c]
            text, colour = ("-", "black") if np.isnan(value) else (f"{value:.1f}", "white" if value < 60 else "black")
            ax.text(c, r, text, ha="center", va="center", fontsize=size, color=colour)
            if table.tasks[c] in table.trained[r]:
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=1.6))
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(table.tasks, rotation=ROTATION if rotated else 0, ha="right" if rotated else "center",
                       rotation_mode="anchor" if rotated else "default", fontsize=8)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(table.rows, fontsize=8)
    ax.set_xlabel("task (test split)", fontsize=8)
    ax.set_ylabel("evaluated after", fontsize=8)
    width, height = figure.get_size_inches()
    box = ax.get_position()
    colourbar = figure.colorbar(image, cax=figure.add_axes((box.x1 + 0.12 / width, box.y0, 0.14 / width, box.height)))
    colourbar.set_label(task_metric_label(results), fontsize=8)
    colourbar.ax.tick_params(labelsize=7)
    return _png(figure)


def _lines_figure(rows: list[str], legend: list[str]) -> tuple[Any, Any, bool]:
    """A figure with one axes over the stages and room for ``legend`` on its right."""
    left, bottom, rotated = _stage_margins(rows, STAGE_AXES[0])
    figure, (ax,) = _frame(*STAGE_AXES, left=left, right=_legend_width(legend), bottom=bottom, top=0.1)
    return figure, ax, rotated


def task_curves_png(results: dict[str, Any]) -> bytes | None:
    """Each task's metric over the stages (a star where the task was trained); None without numbers."""
    table = stage_table(results)
    columns = [[row[c] for row in table.values] for c in range(len(table.tasks))]
    if not any(_present(column) for column in columns):
        return None
    figure, ax, rotated = _lines_figure(table.rows, table.tasks)
    x = list(range(len(table.rows)))
    for c, (task, column) in enumerate(zip(table.tasks, columns)):
        colour = _colour(c)
        ax.plot(x, [math.nan if v is None else v for v in column], marker="o", markersize=3, linewidth=1.4, color=colour, label=task)
        stars = [(r, v) for r, v in enumerate(column) if v is not None and task in table.trained[r]]
        if stars:
            ax.plot([r for r, _ in stars], [v for _, v in stars], marker="*", markersize=10, linestyle="none", color=colour)
    _stage_axis(ax, table.rows, rotated)
    _percent_limits(ax, [v for column in columns for v in column if v is not None])
    ax.set_ylabel(task_metric_label(results), fontsize=8)
    _legend(ax)
    return _png(figure)


def retention_png(results: dict[str, Any]) -> bytes | None:
    """Zero-shot top-1 of every zero-shot set (solid) and mean R@1 of every held-out retrieval set (dashed) over
    the stages; None when the run has neither."""
    lines = [(f"{z} top-1", "-", _series(results, "zeroshot", z, "top1")) for z in results["zeroshot_sets"]]
    lines += [(f"{h} R@1 (held out)", "--", _series(results, "retrieval", h, "mean_R@1")) for h in results["heldout_retrieval"]]
    lines = [line for line in lines if _present(line[2])]
    if not lines:
        return None
    rows = stage_axis(results)
    figure, ax, rotated = _lines_figure(rows, [label for label, _, _ in lines])
    for i, (label, style, values) in enumerate(lines):
        ax.plot(range(len(rows)), [math.nan if v is None else v for v in values], style, marker="o", markersize=3, linewidth=1.4,
                color=_colour(i), label=label)
    _stage_axis(ax, rows, rotated)
    _percent_limits(ax, [v for _, _, values in lines for v in values if v is not None])
    ax.set_ylabel("%", fontsize=8)
    _legend(ax)
    return _png(figure)


ALIGNMENT_KEYS = (("matched_cosine", "matched cosine (higher: pairs closer)"), ("modality_gap", "modality gap (centroid distance)"))


def alignment_sets(results: dict[str, Any]) -> list[str]:
    """The sets with alignment diagnostics in any stage, in order of first appearance."""
    names: list[str] = []
    for stage in results["stages"]:
        for name, values in (lookup(stage["metrics"], "alignment") or {}).items():
            if name not in names and isinstance(values, dict) and any(_number(values.get(k)) is not None for k, _ in ALIGNMENT_KEYS):
                names.append(name)
    return names


def alignment_png(results: dict[str, Any]) -> bytes | None:
    """Matched-pair cosine and modality gap of every set over the stages, side by side; None without diagnostics."""
    sets = alignment_sets(results)
    if not sets:
        return None
    rows = stage_axis(results)
    size = (3.6, 2.3)
    left, bottom, rotated = _stage_margins(rows, size[0])
    figure, axes = _frame(*size, left=left, right=_legend_width(sets), bottom=bottom, top=_line(9) + 0.08, count=2, gap=left + 0.15)
    for ax, (key, title) in zip(axes, ALIGNMENT_KEYS):
        for i, name in enumerate(sets):
            values = _series(results, "alignment", name, key)
            if _present(values):
                ax.plot(range(len(rows)), [math.nan if v is None else v for v in values], marker="o", markersize=3, linewidth=1.3,
                        color=_colour(i), label=name)
        _stage_axis(ax, rows, rotated)
        ax.set_title(title, fontsize=9)
    _legend(axes[1])
    return _png(figure)


@dataclass
class Point:
    """One method of a cross-run plot: its label and each coordinate's mean and spread over the seeds (std None
    with one seed)."""

    label: str
    x: float
    x_std: float | None = None
    y: float | None = None
    y_std: float | None = None
    colour: int = 0
    """Index into the palette: the method's place in the report, so that a method has one colour in every plot."""


def tradeoff_png(points: list[Point], xlabel: str, ylabel: str) -> bytes | None:
    """One point per method (error bars: the seeds' standard deviation), labelled; None without points."""
    points = [p for p in points if p.y is not None]
    if not points:
        return None
    figure, (ax,) = _frame(5.0, 3.3, left=_line(8) + Y_TICKS + TICK + 0.05, right=_legend_width([p.label for p in points]),
                           bottom=TICK + 2 * _line(8) + 0.1, top=0.12)
    for p in points:  # on the plot the method's first word, in the legend its whole label
        colour = _colour(p.colour)
        ax.errorbar(p.x, p.y, xerr=p.x_std or None, yerr=p.y_std or None, fmt="o", markersize=6, capsize=3, color=colour, label=p.label)
        ax.annotate(p.label.split(" ")[0], (p.x, p.y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=colour)
    _legend(ax)
    xs = [p.x for p in points] + [p.x + (p.x_std or 0) for p in points] + [p.x - (p.x_std or 0) for p in points]
    ys = [p.y for p in points] + [p.y + (p.y_std or 0) for p in points] + [p.y - (p.y_std or 0) for p in points]
    pad_x, pad_y = max(1.0, 0.12 * (max(xs) - min(xs))), max(1.0, 0.12 * (max(ys) - min(ys)))
    ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    return _png(figure)


def bars_png(points: list[Point], xlabel: str) -> bytes | None:
    """Horizontal bars, one per method (``Point.x`` and its std as error bar), values written at the bars; None
    without values."""
    if not points:
        return None
    # 5% over the measured width: long labels (an incomplete run's) were clipped by a character
    figure, (ax,) = _frame(4.6, 0.3 * len(points) + 0.25, left=1.05 * _text_width([p.label for p in points], 8) + TICK + 0.12, right=0.2,
                           bottom=TICK + 2 * _line(8) + 0.1, top=0.1)
    y = list(range(len(points)))
    values = [p.x for p in points]
    errors = [p.x_std or 0.0 for p in points]
    ax.barh(y, values, xerr=errors if any(errors) else None, capsize=3, color=[_colour(p.colour) for p in points], alpha=0.85, height=0.6)
    span = max(max(abs(v) + e for v, e in zip(values, errors)), 1.0)
    for i, (value, error) in enumerate(zip(values, errors)):
        text = f"{value:.1f}" + (f" ± {error:.1f}" if error else "")
        ax.text(value + (error + 0.01 * span) * (1 if value >= 0 else -1), i, text, va="center", ha="left" if value >= 0 else "right", fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels([p.label for p in points], fontsize=8)
    ax.set_ylim(len(points) - 0.5, -0.5)
    ax.axvline(0, color="black", linewidth=0.8)
    low = min(0.0, min(v - e for v, e in zip(values, errors)))
    ax.set_xlim(low - (0.3 * span if low < 0 else 0), max(1.0, max(0.0, max(v + e for v, e in zip(values, errors))) + 0.3 * span))
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return _png(figure)


MAX_CONFUSION_CLASSES = 30
"""The most classes a set may have for its confusion matrix to be drawn (more: unreadable cells; the page says so)."""


def confusion_png(classes: list[str], confusion: list[list[int]] | None) -> bytes | None:
    """The confusion matrix of one set (rows: true class, columns: predicted), coloured by the share of each true
    class (row-normalised, %), cells annotated with counts up to 15 classes; None without a matrix or with more than
    :data:`MAX_CONFUSION_CLASSES` classes."""
    if not confusion or len(classes) > MAX_CONFUSION_CLASSES:
        return None
    import numpy as np

    counts = np.array(confusion, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(100 * counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(classes)
    cell = 0.34 if n <= 15 else 0.2
    size = 7 if n <= 15 else 5
    below, reach, rotated = _xlabels(classes, cell, size)
    left = max(_line(8) + _text_width(classes, size) + TICK + 0.06, reach - cell / 2 + 0.08)
    colourbar_width = 0.12 + 0.14 + TICK + _text_width(["100"], 7) + _line(8) + 0.08
    figure, (ax,) = _frame(cell * n, cell * n, left=left, right=colourbar_width, bottom=below + _line(8) + 0.1, top=0.1)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=100, aspect="auto")
    if n <= 15:
        for r in range(n):
            for c in range(n):
                ax.text(c, r, f"{int(counts[r, c])}", ha="center", va="center", fontsize=size, color="white" if shares[r, c] > 60 else "black")
    ax.set_xticks(range(n))
    ax.set_xticklabels(classes, rotation=ROTATION if rotated else 0, ha="right" if rotated else "center",
                       rotation_mode="anchor" if rotated else "default", fontsize=size)
    ax.set_yticks(range(n))
    ax.set_yticklabels(classes, fontsize=size)
    ax.set_xlabel("predicted class", fontsize=8)
    ax.set_ylabel("true class", fontsize=8)
    width, _ = figure.get_size_inches()
    box = ax.get_position()
    colourbar = figure.colorbar(image, cax=figure.add_axes((box.x1 + 0.12 / width, box.y0, 0.14 / width, box.height)))
    colourbar.set_label("% of the true class", fontsize=8)
    colourbar.ax.tick_params(labelsize=7)
    return _png(figure)


# -- a stream run (data.stream=online): accuracy along the stream -------------------------------------------


@dataclass
class StreamCurve:
    """One line of the plot of accuracy along the stream: the periodic points (every ``eval.every_samples`` samples:
    A_auc's) as (samples seen, score) and the hidden-task ends (A_avg's, A_last's) as markers; ``band``: the seeds'
    standard deviation at each periodic point (None: one run, or seeds whose points are not at the same samples)."""

    label: str
    samples: list[float]
    scores: list[float | None]
    end_samples: list[float]
    end_scores: list[float | None]
    band: list[float | None] | None = None
    colour: int = 0
    total: float | None = None
    """The stream's samples (the x axis reaches it, so that a stream that stopped early shows where)."""


def stream_curve(results: dict[str, Any], label: str = "", colour: int = 0) -> StreamCurve | None:
    """The curve of one stream run, None without points."""
    points = stream_points(results)
    periodic = [p for p in points if p.get("periodic")]
    ends = [p for p in points if p.get("task_end")]
    if not any(_number(p.get("score")) is not None for p in periodic + ends):
        return None
    total = _number((stream_section(results) or {}).get("samples"))
    return StreamCurve(label, [float(p["samples"]) for p in periodic], [_number(p.get("score")) for p in periodic],
                       [float(p["samples"]) for p in ends], [_number(p.get("score")) for p in ends], colour=colour, total=total)


def mean_stream_curve(curves: list[StreamCurve], label: str, colour: int = 0) -> tuple[StreamCurve, bool]:
    """The seeds of one method as one curve: the mean at each point and the standard deviation as its band, when every
    seed's points are at the same samples (the same stream: one data.seed); else the first seed's curve. Returns the
    curve and whether it is the mean."""
    first = curves[0]
    if len(curves) == 1 or any(c.samples != first.samples or c.end_samples != first.end_samples for c in curves):
        return StreamCurve(label, first.samples, first.scores, first.end_samples, first.end_scores, colour=colour, total=first.total), len(curves) == 1
    periodic = [mean_std(list(column)) for column in zip(*(c.scores for c in curves))]
    ends = [mean_std(list(column)) for column in zip(*(c.end_scores for c in curves))]
    return StreamCurve(label, first.samples, [m for m, _ in periodic], first.end_samples, [m for m, _ in ends],
                       band=[s for _, s in periodic], colour=colour, total=first.total), True


def stream_boundaries(results: dict[str, Any]) -> list[float]:
    """The samples seen where each hidden task after the first begins (the running sum of ``task_sizes``)."""
    sizes = (stream_section(results) or {}).get("task_sizes")
    if not isinstance(sizes, list) or not all(_number(s) is not None for s in sizes):
        return []
    edges, seen = [], 0.0
    for size in sizes[:-1]:
        seen += float(size)
        edges.append(seen)
    return edges


def stream_png(curves: list[StreamCurve], boundaries: list[float], ylabel: str, *, periodic_label: str | None = None) -> bytes | None:
    """Score against samples seen, one line per curve (the periodic points; a band where the curve has one), its
    hidden-task ends marked (diamonds), the hidden-task boundaries as dashed vertical lines numbered by the task that
    begins there; None without a point. ``periodic_label``: the line's legend entry for a single curve."""
    curves = [c for c in curves if any(v is not None for v in c.scores + c.end_scores)]
    if not curves:
        return None
    from matplotlib.lines import Line2D

    single = len(curves) == 1
    labels = [periodic_label or curves[0].label] if single else [c.label for c in curves]
    keys = ["hidden-task end", "hidden-task boundary"]
    figure, (ax,) = _frame(5.6, 2.6, left=_line(8) + Y_TICKS + TICK + 0.05, right=_legend_width(labels + keys),
                           bottom=TICK + 2 * _line(8) + 0.1, top=_line(7) + 0.06)
    values: list[float] = []
    for curve, label in zip(curves, labels):
        colour = _colour(curve.colour)
        y = [math.nan if v is None else v for v in curve.scores]
        ax.plot(curve.samples, y, marker="o", markersize=2.5, linewidth=1.4, color=colour, label=label)
        if curve.band and any(s for s in curve.band):
            low = [v - (s or 0.0) for v, s in zip(y, curve.band)]
            high = [v + (s or 0.0) for v, s in zip(y, curve.band)]
            ax.fill_between(curve.samples, low, high, color=colour, alpha=0.18, linewidth=0)
            values += [v for v in low + high if not math.isnan(v)]
        ends = [(x, v) for x, v in zip(curve.end_samples, curve.end_scores) if v is not None]
        if ends:
            ax.plot([x for x, _ in ends], [v for _, v in ends], marker="D", markersize=4.5, linestyle="none", color=colour,
                    markeredgecolor="black", markeredgewidth=0.6)
        values += [v for v in curve.scores + curve.end_scores if v is not None]
    for k, edge in enumerate(boundaries):
        ax.axvline(edge, color="#888888", linestyle="--", linewidth=0.8)
        ax.text(edge, 1.01, str(k + 2), transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=6, color="#555555")
    right = max([c.total or 0.0 for c in curves] + [x for c in curves for x in c.samples + c.end_samples] + boundaries)
    ax.set_xlim(0, right * 1.02 if right > 0 else 1.0)
    _percent_limits(ax, values)
    ax.set_xlabel("samples seen", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    handles += [Line2D([], [], marker="D", markersize=4.5, linestyle="none", color="#bbbbbb", markeredgecolor="black", markeredgewidth=0.6),
                Line2D([], [], color="#888888", linestyle="--", linewidth=0.8)]
    ax.legend(handles, names + keys, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False,
              borderpad=0.2, handlelength=2.0)
    return _png(figure)
