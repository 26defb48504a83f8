"""Finding methods and benchmarks without a hand-kept list: the package's own modules, then entry points.

A module in ``vlcl/methods/`` (or ``vlcl/data/``) registers what it defines
when it is imported (``@register_method``, ``@register_benchmark``);
:func:`discover` imports every module of the package once, then loads every
entry point of the group, the way pytest finds plugins. A lab keeps its method
in its own package and declares it in its ``pyproject.toml``::

    [project.entry-points."vlcl.methods"]
    my_method = "my_lab.my_method"            # a module that registers it
    # or: my_method = "my_lab.my_method:MyMethod"   (the class; registered under its name)

Only the standard library is imported here.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable
from typing import Any


class PluginError(ImportError):
    """A module or entry point that cannot be loaded: one line naming it."""


_DONE: set[tuple[str, str]] = set()


def discover(package: str, group: str, adopt: Callable[[str, Any], None] | None = None) -> None:
    """Import every module of ``package`` and load every entry point of ``group`` (once per process).

    ``adopt(name, obj)`` is called with each entry point's name and loaded object, so that a class or a
    function that did not register itself can be registered under the entry point's name.
    """
    if (package, group) in _DONE:
        return
    _DONE.add((package, group))
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        name = f"{package}.{info.name}"
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(f"{name}: cannot be imported ({exc})") from exc
    for entry in importlib.metadata.entry_points(group=group):
        try:
            loaded = entry.load()
        except Exception as exc:  # an installed package's code: name it, whatever it raised
            raise PluginError(f"entry point '{entry.name} = {entry.value}' ({group}): cannot be loaded ({exc.__class__.__name__}: {exc})") from None
        if adopt is not None:
            adopt(entry.name, loaded)


def unknown_name(kind: str, name: str, choices: list[str], key: str) -> str:
    """``unknown method 'fintune' (did you mean 'finetune'?); valid choices for 'method.name': ...``"""
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {kind} '{name}'{hint}; valid choices for '{key}': {', '.join(sorted(choices))}"
