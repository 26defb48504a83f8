"""The one base of every error that reaches the user as one line, ``vlcl: error: <message>``: the command line
catches :class:`VlclError` and exits with its :attr:`~VlclError.exit_code`, never a traceback. Each layer's error
derives from :class:`BadInputError` (exit 2: the input is wrong, nothing was done or changed) or
:class:`RunFailedError` (exit 1: a run that started well could not go on), and keeps its built-in base
(``ValueError``...) for code that catches those."""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


class VlclError(Exception):
    """An error whose message is the whole story: one line naming the file, key or value and what was expected."""

    exit_code = EXIT_BAD_INPUT


class BadInputError(VlclError):
    """Bad input (a config key, a data file, a checkpoint, a run directory): refused before anything is written."""

    exit_code = EXIT_BAD_INPUT


class RunFailedError(VlclError):
    """A run that started on good input and could not go on (a loss that became NaN, results it would lose)."""

    exit_code = EXIT_RUN_FAILED
