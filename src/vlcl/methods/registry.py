"""Methods registered by name, behind one constructor (the timm pattern)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from vlcl.methods.base import Method
from vlcl.plugins import discover, unknown_name

_REGISTRY: dict[str, type[Method]] = {}


class UnknownMethodError(ValueError):
    pass


def register_method(cls: type[Method]) -> type[Method]:
    """Register ``cls`` under its ``name``. A name taken by another class is refused, naming that class; the same
    definition executed again (same module and qualified name: a re-run notebook cell) replaces it."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    taken = _REGISTRY.get(cls.name)
    if taken is not None and taken is not cls and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(
            f"method name '{cls.name}' is taken by {taken.__module__}.{taken.__qualname__}; give {cls.__name__} another name"
        )
    _REGISTRY[cls.name] = cls
    return cls


def _adopt(name: str, obj: Any) -> None:
    """An entry point that names a Method class registers it (a module registers its own)."""
    if isinstance(obj, type) and issubclass(obj, Method) and obj not in _REGISTRY.values():
        register_method(obj)


def _discover() -> None:
    """Every module of vlcl.methods, then the ``vlcl.methods`` entry points of installed packages."""
    discover("vlcl.methods", "vlcl.methods", _adopt)


def list_methods() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    _discover()
    if name not in _REGISTRY:
        raise UnknownMethodError(unknown_name("method", name, list(_REGISTRY), "method.name"))
    return _REGISTRY[name]


def create_method(name: str, options: dict[str, Any] | None = None) -> Method:
    """Build a method from its name and its ``method.*`` options, validating the options."""
    cls = method_class(name)
    try:
        parsed = cls.Options.model_validate(options or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = "method." + ".".join(str(p) for p in first["loc"])
        valid = sorted(cls.Options.model_fields)
        if first["type"] == "extra_forbidden":
            choices = ", ".join(valid) if valid else "none"
            raise UnknownMethodError(f"unknown option '{key}' for method '{name}'; its options: {choices}") from None
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a check across options: the message names them
            raise UnknownMethodError(f"method '{name}': {message}") from None
        raise UnknownMethodError(f"invalid value for '{key}': {message} (got {first.get('input')!r})") from None
    return cls(parsed)
