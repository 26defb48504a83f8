"""Continual-learning methods, registered by name. ``create_method(name, options)`` builds one (``options``: the typed
``Options`` a config validated, ``config.method.typed_options()``, or a dict, validated by ``parse_options``)."""

# The methods themselves are found when first asked for (vlcl.methods.registry: every module of this
# package, then the "vlcl.methods" entry points of installed packages); nothing to list here.
from vlcl.methods.base import (
    LossOutput,
    Method,
    MethodOptions,
    ParameterGroup,
    RunContext,
    Stage,
    split_parameters,
)
from vlcl.methods.registry import (
    UnknownMethodError,
    create_method,
    list_methods,
    method_class,
    parse_options,
    register_method,
)

__all__ = [
    "LossOutput",
    "Method",
    "MethodOptions",
    "ParameterGroup",
    "RunContext",
    "Stage",
    "UnknownMethodError",
    "create_method",
    "list_methods",
    "method_class",
    "parse_options",
    "register_method",
    "split_parameters",
]
