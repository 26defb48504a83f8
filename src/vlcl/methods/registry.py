"""Methods registered by name, behind one constructor (the timm pattern)."""

from __future__ import annotations

import types
from typing import Any

from pydantic import ValidationError

from vlcl.errors import BadInputError
from vlcl.methods.base import Method, MethodOptions
from vlcl.plugins import NotAPlugin, described, discover, unknown_name

_REGISTRY: dict[str, type[Method]] = {}


class UnknownMethodError(BadInputError, ValueError):
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
    """An entry point that names a Method class registers it; one that names a module must have registered a
    method on import. Anything else (a value, a function, another class) is refused: a method the user declared
    must not go missing without a word."""
    if isinstance(obj, type) and issubclass(obj, Method):
        if obj not in _REGISTRY.values():
            try:
                register_method(obj)
            except (TypeError, ValueError) as exc:  # no name, or a name another class holds
                raise NotAPlugin(str(exc)) from None
        return
    if isinstance(obj, types.ModuleType):
        if not _registers_a_method(obj):
            raise NotAPlugin(f"module '{obj.__name__}' registers no method (decorate a Method subclass with @register_method)")
        return
    raise NotAPlugin(f"names {described(obj)}, not a method (a vlcl.methods.Method subclass, or a module that registers one)")


def _registers_a_method(module: types.ModuleType) -> bool:
    """A registered method is defined in ``module`` or a module under it, or imported into it."""
    registered = list(_REGISTRY.values())
    within = lambda cls: cls.__module__ == module.__name__ or cls.__module__.startswith(module.__name__ + ".")  # noqa: E731
    return any(within(cls) for cls in registered) or any(any(v is cls for cls in registered) for v in vars(module).values())


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


def parse_options(name: str, options: dict[str, Any] | None = None) -> MethodOptions:
    """The ``method.*`` options of method ``name`` validated into its typed ``Options``; a one-line
    :class:`UnknownMethodError` for an unknown method, an unknown option or an invalid value. Called once per
    config, when it is built (:meth:`vlcl.config.MethodConfig.typed_options` keeps the result)."""
    cls = method_class(name)
    try:
        return cls.Options.model_validate(options or {})
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


def create_method(name: str, options: MethodOptions | dict[str, Any] | None = None) -> Method:
    """Build a method from its name and its options: the typed ``Options`` a config validated
    (``config.method.typed_options()``), used as they are, or a dict of ``method.*`` options, validated here."""
    cls = method_class(name)
    if isinstance(options, MethodOptions) and not isinstance(options, cls.Options):
        options = options.model_dump()  # another class's options (a method registered again since): its values
    if isinstance(options, MethodOptions):
        return cls(options.model_copy(deep=True))  # each method its own copy, as a fresh validation gave it
    return cls(parse_options(name, options))
