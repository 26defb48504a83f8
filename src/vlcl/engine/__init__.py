"""The task loop, optimisation, evaluation and checkpoints; method-agnostic."""

from vlcl.engine.loop import ContinualRunner
from vlcl.engine.train import NonFiniteLossError

__all__ = ["ContinualRunner", "NonFiniteLossError"]
