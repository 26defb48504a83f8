"""vlcl: continual learning of CLIP-style vision-language models.

The Python API (docs/api.md) is importable from here: ``vlcl.run``, ``vlcl.load_run``, ``vlcl.export_run``,
``vlcl.register_method``, ``vlcl.Method``, the metrics (``vlcl.retrieval_recall``...). It is loaded on first use
(``vlcl.api``, ``vlcl.export``), so that
``import vlcl`` imports neither torch nor transformers (the ``vlcl`` command installs its signal handlers first).
"""

from typing import Any

__version__ = "0.1.0"

_API = (
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
)

_EXPORT = ("ExportError", "export_run")
"""From ``vlcl.export``: what ``vlcl export`` does (docs/api.md)."""

__all__ = ["__version__", *_API, *_EXPORT]


def __getattr__(name: str) -> Any:
    if name in _API:
        from vlcl import api

        return getattr(api, name)
    if name in _EXPORT:
        import vlcl.export

        return getattr(vlcl.export, name)
    raise AttributeError(f"module 'vlcl' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | set(_EXPORT))
