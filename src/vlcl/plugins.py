"""Finding methods, settings and benchmarks without a hand-kept list: the package's own modules, then entry points.

A module in ``vlcl/methods/`` (or ``vlcl/settings/``, ``vlcl/data/benchmarks/``) registers what it defines
when it is imported (``@register_method``, ``@register_setting``, ``@register_benchmark``);
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

from vlcl.errors import BadInputError


class PluginError(BadInputError, ImportError):
    """A module or entry point that cannot be loaded: one line naming it."""


class NotAPlugin(TypeError):
    """Raised by an ``adopt`` function for an entry point whose object is not what the group holds; :func:`discover`
    turns it into a :class:`PluginError` naming the entry point."""


def described(obj: Any) -> str:
    """What an entry point's object is, for a message: ``an int (42)``, ``class my_lab.Thing``."""
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    shown = repr(obj)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    kind = type(obj).__name__
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} ({shown})"


_DONE: set[tuple[str, str]] = set()
_LOADING: set[tuple[str, str]] = set()


def discover(package: str, group: str, adopt: Callable[[str, Any], None] | None = None) -> None:
    """Import every module of ``package`` and load every entry point of ``group`` (once per process).

    ``adopt(name, obj)`` is called with each entry point's name and loaded object, so that a class or a
    function that did not register itself can be registered under the entry point's name; it raises
    :class:`NotAPlugin` for an object that is nothing the group holds.
    """
    key = (package, group)
    if key in _DONE or key in _LOADING:  # _LOADING: a plugin that lists methods while it is imported
        return
    _LOADING.add(key)
    try:
        _load(package, group, adopt)
    finally:
        _LOADING.discard(key)
    _DONE.add(key)  # only once everything loaded: a refused entry point is refused again, never skipped


def _load(package: str, group: str, adopt: Callable[[str, Any], None] | None) -> None:
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
            try:
                adopt(entry.name, loaded)
            except NotAPlugin as exc:  # found, but not what the group holds: refused, not ignored
                raise PluginError(f"entry point '{entry.name} = {entry.value}' ({group}): {exc}") from None


def unknown_name(kind: str, name: str, choices: list[str], key: str) -> str:
    """``unknown method 'fintune' (did you mean 'finetune'?); valid choices for 'method.name': ...``"""
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {kind} '{name}'{hint}; valid choices for '{key}': {', '.join(sorted(choices))}"
