"""The ``vlcl`` console command: signal handling first, everything else after.

SIGINT and SIGTERM raise :class:`Interrupted` from the moment the command
starts, before torch or transformers are imported, so that a Ctrl-C or a
``kill`` at any moment ends with one line and an exit status instead of a
traceback (or, for SIGTERM, a silent death). Only the standard library is
imported here.

A raise from a signal handler lands wherever Python is; where Python cannot
propagate it (a weakref callback such as the import lock's, a ``__del__``) it
is printed as "Exception ignored in ..." and dropped, and the command would go
on to exit 0. So an :class:`Interrupted` that reaches ``sys.unraisablehook`` is
delivered again (the signal is re-raised, and its handler runs at the next
place Python can raise from), and a command that still returns normally after
a signal ends with 128 + signal all the same.
"""

from __future__ import annotations

import os
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


_received: list[int] = []
"""The signals received in this process, in order (the handler's record, read by :func:`interruption_pending`)."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def _redeliver_swallowed(unraisable: Any) -> None:
    """``sys.unraisablehook``: an Interrupted that Python had to drop is raised again at the next safe place.

    The signal is sent again from a short-lived thread, a moment later, so that its handler runs in the main thread
    once the callback that dropped the raise has returned (``signal.raise_signal`` here would run it at once, inside
    this hook, where it would be dropped again); should it land in another such callback, it comes back here."""
    if isinstance(unraisable.exc_value, Interrupted):
        resend = threading.Timer(0.01, os.kill, (os.getpid(), unraisable.exc_value.args[0]))
        resend.daemon = True
        _resends.append(resend)
        resend.start()
        return
    _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook
_resends: list[threading.Timer] = []


def interruption_pending() -> Interrupted | None:
    """The first signal this process received, as the Interrupted it raised (None when none arrived)."""
    return Interrupted(_received[0]) if _received else None


def install_signal_handlers() -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise :class:`Interrupted`; returns the previous handlers (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    sys.unraisablehook = _redeliver_swallowed
    return {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    outermost = bool(previous) and previous.get(signal.SIGTERM) is not _raise_interrupted
    if outermost:  # first stop any signal about to be sent again: after this it would meet the previous handler
        for resend in _resends:
            resend.cancel()
            resend.join()
        _resends.clear()
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    if outermost:
        sys.unraisablehook = _previous_unraisablehook


def main(argv: list[str] | None = None) -> int:
    previous = install_signal_handlers()
    try:
        from vlcl.app.cli import main as cli_main

        code = cli_main(argv)
    except Interrupted as exc:  # while importing the command line (torch, transformers...)
        print(f"vlcl: error: interrupted by {exc.name}", file=sys.stderr)
        return exc.code
    finally:
        restore_signal_handlers(previous)
    late = interruption_pending()
    if late is not None and code != late.code:  # a signal whose raise was dropped somewhere: never exit as if it had not come
        print(f"vlcl: error: interrupted by {late.name}", file=sys.stderr)
        return late.code
    return code
