"""The ``vlcl`` console command: signal handling first, everything else after.

SIGINT and SIGTERM raise :class:`Interrupted` from the moment the command
starts, before torch or transformers are imported, so that a Ctrl-C or a
``kill`` at any moment ends with one line and an exit status instead of a
traceback (or, for SIGTERM, a silent death). Only the standard library is
imported here.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised where the program is, so that ``finally`` blocks and atomic writes clean up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.name = signal.Signals(signum).name
        self.code = 128 + signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise :class:`Interrupted`; returns the previous handlers (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    previous = install_signal_handlers()
    try:
        from vlcl.cli import main as cli_main

        return cli_main(argv)
    except Interrupted as exc:  # while importing the command line (torch, transformers...)
        print(f"vlcl: error: interrupted by {exc.name}", file=sys.stderr)
        return exc.code
    finally:
        restore_signal_handlers(previous)
