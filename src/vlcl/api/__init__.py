"""The Python API: run a config, load a run's model for inference, score your own features, add a method.

Everything here is also importable from ``vlcl`` itself (``vlcl.run``, ``vlcl.load_run``...), lazily, so that
``import vlcl`` stays cheap. docs/api.md walks through it with examples that the test suite runs.

* :func:`run` - what ``vlcl run`` does, from Python: the same checks (config, model, data, the run directory:
  an existing one is refused unless ``overwrite`` or ``resume``), the same files, and results.json as a dict.
* :func:`load_run` - the model of a finished (or stopped) run as its evaluation scored it after a given stage,
  as a :class:`LoadedRun`: ``encode_images``, ``encode_texts``, ``classify``, ``evaluate``. A method whose
  evaluation is more than the saved CLIP weights - one that routes each evaluated set (``moe_adapters``) or
  scores classes with its own head (``rail``) - is rebuilt from its checkpointed state, as ``--resume`` does,
  and its hooks take part exactly as in the run's evaluation.
* The metrics, pure functions over feature tensors: :func:`retrieval_recall`, :func:`zeroshot_accuracy`,
  :func:`logit_accuracy`, :func:`alignment_diagnostics`, :func:`continual_summary` (and helpers).
* :func:`register_method` - a :class:`Method` subclass defined in your own code, registered in this process
  (no entry point needed) and run with :func:`run`.

Importing this module imports neither torch nor transformers: :func:`run`, :func:`open_run` and
:func:`execute_run` import the engine when they run, and every other name (:func:`load_run`, the methods, the
metrics...) is imported from its module on first use. The command line (:mod:`vlcl.app.cli`) goes through this
module alone: besides the API above, it re-exports what the command line uses of the library (the config, the
errors, the report, the data checks, the method and benchmark lists, :func:`export_run`).
"""


from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vlcl.api.running import OpenedRun, RunOutcome, build_run_config, execute_run, open_run, register_method, run
from vlcl.config import ConfigError, DataConfig, RunConfig, load_config, parse_override
from vlcl.errors import EXIT_BAD_INPUT, EXIT_RUN_FAILED, BadInputError, RunFailedError, VlclError
from vlcl.fileio import atomic_write_text

if TYPE_CHECKING:
    from vlcl.api.loading import ZERO_SHOT_CHUNK, LoadedRun, load_run, read_run_config
    from vlcl.data.registry import list_benchmarks
    from vlcl.data.benchmarks.catalogue import FOLDERS as FOLDERS_BENCHMARK
    from vlcl.data.benchmarks.catalogue import NAMED as NAMED_BENCHMARKS
    from vlcl.data.check import check_benchmark, coverage_fails, coverage_lines, prepare_text
    from vlcl.engine.rundir import RunDirError
    from vlcl.export import ExportError, export_run
    from vlcl.methods import LossOutput, Method, MethodOptions, ParameterGroup, RunContext, Stage, list_methods, method_class
    from vlcl.metrics import (
        alignment_diagnostics,
        continual_summary,
        logit_accuracy,
        retrieval_recall,
        zeroshot_accuracy,
        zeroshot_classifier,
    )
    from vlcl.metrics.retrieval import caption_groups
    from vlcl.models.coverage import coverage, indistinguishable_classes
    from vlcl.models.loading import load_clip
    from vlcl.report import comparison_markdown, render_console
    from vlcl.report.files import ReportError, check_output, find_runs
    from vlcl.report.html import report_paths

_LAZY: dict[str, tuple[str, str]] = {
    # the Python API of docs/api.md
    **{name: ("vlcl.api.loading", name) for name in ("LoadedRun", "ZERO_SHOT_CHUNK", "load_run", "read_run_config")},
    **{name: ("vlcl.methods", name) for name in ("LossOutput", "Method", "MethodOptions", "ParameterGroup", "RunContext", "Stage")},
    **{
        name: ("vlcl.metrics", name)
        for name in (
            "alignment_diagnostics", "continual_summary", "logit_accuracy", "retrieval_recall", "zeroshot_accuracy",
            "zeroshot_classifier",
        )
    },
    "caption_groups": ("vlcl.metrics.retrieval", "caption_groups"),
    "RunDirError": ("vlcl.engine.rundir", "RunDirError"),
    # what the command line uses of the library
    "ExportError": ("vlcl.export", "ExportError"),
    "export_run": ("vlcl.export", "export_run"),
    "list_methods": ("vlcl.methods", "list_methods"),
    "method_class": ("vlcl.methods", "method_class"),
    "list_benchmarks": ("vlcl.data.registry", "list_benchmarks"),
    "NAMED_BENCHMARKS": ("vlcl.data.benchmarks.catalogue", "NAMED"),
    "FOLDERS_BENCHMARK": ("vlcl.data.benchmarks.catalogue", "FOLDERS"),
    **{name: ("vlcl.data.check", name) for name in ("check_benchmark", "coverage_fails", "coverage_lines", "prepare_text")},
    "coverage": ("vlcl.models.coverage", "coverage"),
    "indistinguishable_classes": ("vlcl.models.coverage", "indistinguishable_classes"),
    "load_clip": ("vlcl.models.loading", "load_clip"),
    "comparison_markdown": ("vlcl.report", "comparison_markdown"),
    "render_console": ("vlcl.report", "render_console"),
    **{name: ("vlcl.report.files", name) for name in ("ReportError", "check_output", "find_runs")},
    "report_paths": ("vlcl.report.html", "report_paths"),
}
"""Name -> (module, name there): imported on first use (PEP 562), so that ``import vlcl.api`` stays light."""

__all__ = [
    "LoadedRun",
    "LossOutput",
    "Method",
    "MethodOptions",
    "ParameterGroup",
    "RunContext",
    "RunDirError",
    "Stage",
    "alignment_diagnostics",
    "caption_groups",
    "continual_summary",
    "load_run",
    "logit_accuracy",
    "register_method",
    "retrieval_recall",
    "run",
    "zeroshot_accuracy",
    "zeroshot_classifier",
    # running as the command line does
    "OpenedRun",
    "RunOutcome",
    "build_run_config",
    "execute_run",
    "open_run",
    "read_run_config",
    "ZERO_SHOT_CHUNK",
    # what the command line uses of the library
    "EXIT_BAD_INPUT",
    "EXIT_RUN_FAILED",
    "FOLDERS_BENCHMARK",
    "NAMED_BENCHMARKS",
    "BadInputError",
    "ConfigError",
    "DataConfig",
    "ExportError",
    "ReportError",
    "RunConfig",
    "RunFailedError",
    "VlclError",
    "atomic_write_text",
    "check_benchmark",
    "check_output",
    "comparison_markdown",
    "coverage",
    "coverage_fails",
    "coverage_lines",
    "export_run",
    "find_runs",
    "indistinguishable_classes",
    "list_benchmarks",
    "list_methods",
    "load_clip",
    "load_config",
    "method_class",
    "parse_override",
    "prepare_text",
    "render_console",
    "report_paths",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vlcl.api' has no attribute '{name}'")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next look-up is a plain one
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
