"""The task loop, optimisation, evaluation and checkpoints; method-agnostic.

``from vlcl.engine import ContinualRunner`` is resolved lazily so that light
modules (checkpoint files, optimiser) import without the data stack.
"""

from typing import Any

__all__ = ["ContinualRunner", "NonFiniteLossError"]


def __getattr__(name: str) -> Any:
    if name == "ContinualRunner":
        from vlcl.engine.loop import ContinualRunner

        return ContinualRunner
    if name == "NonFiniteLossError":
        from vlcl.engine.train import NonFiniteLossError

        return NonFiniteLossError
    raise AttributeError(name)
