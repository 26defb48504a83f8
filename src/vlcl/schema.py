"""The version of results.json, shared by what writes it (vlcl.engine.results) and what reads it (vlcl.report):
the standard library only, so that a report reads runs without torch.

Format 1: the results.json of vlcl before the format was recorded (no ``format`` key), read as it is.
Format 2: adds ``format`` itself, per-class scores in the stage records (``stages[i].per_class``) and ``warnings``.
"""

from __future__ import annotations

from typing import Any

RESULTS_FORMAT = 2
"""The format this vlcl writes; it reads every format from 1 up to it."""


def results_format(results: dict[str, Any], where: str) -> int:
    """The format of parsed ``results`` (1 when it records none); a format this vlcl cannot read is a ValueError
    naming ``where`` and the format."""
    found = results.get("format", 1)
    if isinstance(found, bool) or not isinstance(found, int):
        raise ValueError(f"{where}: 'format' is {found!r}, expected a whole number (the results file's format)")
    if not 1 <= found <= RESULTS_FORMAT:
        newer = " (written by a newer vlcl: upgrade to read it)" if found > RESULTS_FORMAT else ""
        raise ValueError(f"{where}: results format {found}, this vlcl reads formats 1 to {RESULTS_FORMAT}{newer}")
    return found
