"""``vlcl compare``: several methods on the same benchmark and seed(s), tuned alike if asked.

Each method gets its own run directory under the comparison directory and is
resumable on its own: a finished run is kept, an interrupted one resumes after
its last complete task, a missing one starts. The leaderboard (Markdown and
CSV) is rewritten after every method, so it always reflects what has finished.

Methods run one after the other, or ``jobs`` at a time in worker processes
that share the CPU threads between them (``--jobs 2`` on 2 cores: one thread
each). Small models use threads poorly, so on 2 cores the eleven-method
embedded comparison ran 1.43x sooner with ``--jobs 2``; very short runs can
be slower (benchmarks/RESULTS.md). A method that fails does not stop the
others: the failures are listed at the end and the command exits non-zero.
Tuning and final runs share one queue (:func:`~vlcl.app.compare.workqueue.run_queue`); the runs share
one evaluation of the pre-trained row (``.shared/``, vlcl.engine.shared_eval);
``timeline.jsonl`` records every run's start and end
(benchmarks/compare_profile.py).

Methods are given as ``name`` or ``name[key=value;key=value]`` with overrides
that apply to that method only, e.g. ``finetune,cclip[train.lr=5e-4]``.

``tuning`` (``--tune``, docs/tuning.md): before the final runs, every method
that trains runs a grid - the shared learning rates x the method's own
``Method.tuning_grid`` (keys its brackets set stay fixed) - on a cheaper proxy
(the first tasks, less data) evaluated on a validation split carved from the
training data (``data.validation_fraction``), never on test data; each
method's final runs use its best point (:func:`select_point`). Grid runs live
in ``tuning/<method>/<point>/``, are resumable like the final runs, run
``jobs`` at a time, and every score is in ``tuning.json`` and ``tuning.md``.
``seeds`` (``--seeds 0,1,2``): every method runs at each seed (``seed=S``,
into ``<method>/seed-S/``) and the leaderboard gives each column's mean and
sample standard deviation, marking the rows within the seeds' spread of the
column's best (:func:`vlcl.report.tables.spread_marks`); one seed keeps one
directory per method and one row per run.

The package, by job: :mod:`~vlcl.app.compare.plan` (the method specs, seeds, grids and grid points, the tuning
proxy's overrides, a run's task order), :mod:`~vlcl.app.compare.workqueue` (one run, the queue and its worker
processes, ``timeline.jsonl``), :mod:`~vlcl.app.compare.tuning` (the tuning settings, a grid point's score, the
choice, ``tuning.json``/``tuning.md``), :mod:`~vlcl.app.compare.leaderboard` (``leaderboard.md``/``.csv`` and the
comparison's ``report.html``) and :mod:`~vlcl.app.compare.run` (:func:`compare`: one command, start to end).
"""

from vlcl.app.compare.leaderboard import SPREAD_NOTE, TUNED_NOTE, comparison_report, leaderboard_files
from vlcl.app.compare.plan import (
    CompareError,
    MethodSpec,
    grid_points,
    method_grid,
    parse_floats,
    parse_methods,
    parse_seeds,
    point_name,
    proxy_overrides,
    task_order,
    yaml_value,
)
from vlcl.app.compare.run import Comparison, check_not_a_run, compare
from vlcl.app.compare.tuning import LR_GRID, OBJECTIVES, MethodTuning, Tuning, objective_text, select_point, tuning_files, tuning_score
from vlcl.app.compare.workqueue import SHARED_EVAL_DIR, TIMELINE, Timeline, Work, run_method, run_queue, worker_threads

__all__ = [
    "LR_GRID",
    "OBJECTIVES",
    "SHARED_EVAL_DIR",
    "SPREAD_NOTE",
    "TIMELINE",
    "TUNED_NOTE",
    "CompareError",
    "Comparison",
    "MethodSpec",
    "MethodTuning",
    "Timeline",
    "Tuning",
    "Work",
    "check_not_a_run",
    "compare",
    "comparison_report",
    "grid_points",
    "leaderboard_files",
    "method_grid",
    "objective_text",
    "parse_floats",
    "parse_methods",
    "parse_seeds",
    "point_name",
    "proxy_overrides",
    "run_method",
    "run_queue",
    "select_point",
    "task_order",
    "tuning_files",
    "tuning_score",
    "worker_threads",
    "yaml_value",
]
