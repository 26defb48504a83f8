"""Fault injection for the crash tests: ``VLCL_FAULT=point:n`` kills the process with SIGKILL the n-th
time (1-based) execution reaches ``fault_point(point)``. Unset (always, outside tests), it does nothing.

Points: ``step`` (after an optimiser step, before any checkpoint of it), ``step_checkpoint_write`` and
``stage_checkpoint_write`` (inside a checkpoint write, before it is complete), ``stage_checkpoint_pointer``
(a stage checkpoint is complete but ``latest.json`` does not name it yet), ``stage_checkpoint_prune`` (an
older stage checkpoint renamed for deletion, not yet deleted), ``evaluation`` (after a stage's
training, before its evaluation), ``overwrite_moved`` (``--overwrite`` has moved the old run aside),
``run_files_written`` (the new run's config.yaml is written, no checkpoint yet), ``replaced_discard`` (the new
run's first checkpoint exists, the old run is not yet deleted).
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def fault_point(point: str) -> None:
    spec = os.environ.get("VLCL_FAULT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
