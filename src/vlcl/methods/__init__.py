"""Continual-learning methods, registered by name. ``create_method(name, options)`` builds one."""

# Importing the modules registers the methods.
from vlcl.methods import (  # noqa: E402,F401
    cclip,
    cmcl,
    ewc,
    finetune,
    joint,
    lora,
    lwf,
    modx,
    mulki,
    replay,
    wise_ft,
    zeroshot,
    zscl,
)
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
    "register_method",
    "split_parameters",
]
