"""Running from Python as ``vlcl run`` does (:func:`run`), the run set-up the command line shares
(:func:`open_run`, :func:`execute_run`), and :func:`register_method`; re-exported by :mod:`vlcl.api`.

Only the standard library and the config are imported here; the engine (torch) is imported when a run starts.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlcl.config import RunConfig, build_config, config_to_dict, parse_override, read_yaml, set_dotted

if TYPE_CHECKING:
    from vlcl.methods import Method


# -- running ----------------------------------------------------------------------------------------------------
def _overrides(overrides: Sequence[str] | Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """``["train.epochs=2"]`` (values read as YAML, as on the command line) or ``{"train.epochs": 2}`` (as given)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [(str(key), value) for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise TypeError(f"overrides: expected a list of KEY=VALUE strings or a dict, got the string {overrides!r}")
    return [parse_override(item) for item in overrides]


def _as_texts(pairs: list[tuple[str, Any]]) -> list[str]:
    """Overrides as KEY=VALUE strings whose YAML reading gives the values back (for the resume checks)."""
    return [f"{key}={json.dumps(value)}" for key, value in pairs]


def build_run_config(
    config: str | Path | Mapping[str, Any] | RunConfig | None = None, overrides: Sequence[str] | Mapping[str, Any] | None = None
) -> RunConfig:
    """A validated :class:`~vlcl.config.RunConfig`: defaults < ``config`` (a YAML file, a dict of the same keys,
    or a RunConfig) < ``overrides``. Bad keys and values raise :class:`~vlcl.config.ConfigError` (one line)."""
    pairs = _overrides(overrides)
    if config is None or isinstance(config, (str, Path)):
        if isinstance(config, str) and "=" in config and not config.endswith((".yaml", ".yml")):
            raise TypeError(f"config: {config!r} looks like an override; pass it in overrides=[...]")
        tree = read_yaml(config) if config is not None else {}
        source = str(config) if config is not None else "config"
    elif isinstance(config, RunConfig):
        tree, source = config_to_dict(config), "config"
    elif isinstance(config, Mapping):
        tree, source = copy.deepcopy(dict(config)), "config"
    else:
        raise TypeError(f"config: expected a YAML path, a dict or a RunConfig, got {type(config).__name__}")
    for key, value in pairs:
        set_dotted(tree, key, value)
    return build_config(tree, source) if pairs or not isinstance(config, RunConfig) else config


def run(
    config: str | Path | Mapping[str, Any] | RunConfig | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a method through a benchmark, as ``vlcl run`` does; returns what results.json holds.

    ``config``: a YAML file, a dict of config keys (``{"method": {"name": "lora"}, "train": {"epochs": 2}}``) or a
    :class:`~vlcl.config.RunConfig`; ``overrides``: ``["train.epochs=2"]`` (values read as YAML) or
    ``{"train.epochs": 2}``. ``run_dir`` defaults to ``<output_dir>/<name>`` of the config (``runs/<benchmark>-<method>``)
    and must not hold a run unless ``overwrite=True`` (the old run is kept until the new one has its first
    checkpoint) or ``resume=True`` (``resume=True`` takes the config from ``run_dir``; the only override it
    accepts is ``data.root``). Every check - config, method, model, data, batch size, run directory - happens
    before anything is written; bad input raises an exception whose message is the command line's one line.
    ``progress=False`` keeps the console quiet.
    """
    if resume:
        if run_dir is None:
            raise TypeError("run(resume=True) needs run_dir=, the run to continue")
        if config is not None or overwrite:
            raise TypeError("run(resume=True) takes the config from run_dir and cannot overwrite; pass only overrides (data.root)")
        with open_run(None, run_dir, resume=True, overrides=lambda: _as_texts(_overrides(overrides))) as opened:
            return opened.execute(progress=progress).results
    cfg = build_run_config(config, overrides)
    with open_run(cfg, run_dir, overwrite=overwrite, python=True) as opened:
        return opened.execute(progress=progress).results


@dataclass
class OpenedRun:
    """A run directory that :func:`open_run` holds and has checked: the run's config, where it runs, how (a new run,
    ``overwrite`` of an old one, or ``resume``) and, on resume, whether the data root moved since the run began."""

    config: RunConfig
    path: Path
    resume: bool = False
    overwrite: bool = False
    root_moved: bool = False

    def execute(
        self, *, progress: bool = True, on_failure: Callable[[BaseException, str | None], None] | None = None
    ) -> RunOutcome:
        """:func:`execute_run` of this run."""
        return execute_run(
            self.config, self.path, resume=self.resume, overwrite=self.overwrite, root_moved=self.root_moved,
            progress=progress, on_failure=on_failure,
        )


@contextmanager
def open_run(
    config: RunConfig | None,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    overrides: Sequence[str] | Callable[[], Sequence[str]] = (),
    python: bool = False,
) -> Iterator[OpenedRun]:
    """The run set-up that ``vlcl run`` and :func:`run` share, before anything is loaded or written: the run
    directory, held by this process (:func:`vlcl.engine.rundir.hold`) until the ``with`` block ends, an interrupted
    ``--overwrite`` there finished first (its note printed), then the directory checked.

    A new run (``config`` given): ``run_dir`` defaults to ``<output_dir>/<name>`` of the config; its parent must be
    writable, and it must not hold a run unless ``overwrite``. A resumed run (``resume=True``, ``config`` None):
    ``run_dir`` must exist; its config is read back with ``overrides`` (KEY=VALUE strings, only ``data.root``; or a
    callable that gives them, called once the directory is found). ``python``: the refusals name the Python API's
    ``resume=True`` / ``overwrite=True`` instead of the command line's flags. Refusals raise
    :class:`~vlcl.engine.rundir.RunDirError` (one line)."""
    from vlcl.engine import rundir

    if resume:
        if config is not None or run_dir is None or overwrite:
            raise TypeError("open_run(resume=True) takes the config from run_dir: pass run_dir, and no config or overwrite")
        path = Path(run_dir)
        if not path.parent.is_dir():
            raise rundir.RunDirError(f"{path}: run directory to resume not found")
        with rundir.hold(path):  # before anything is written, the recovery of an --overwrite included
            _note(rundir.recover_on_main(path))
            if not path.is_dir():
                raise rundir.RunDirError(f"{path}: run directory to resume not found")
            config, root_moved = rundir.resume_config(path, list(overrides() if callable(overrides) else overrides))
            yield OpenedRun(config, path, resume=True, root_moved=root_moved)
        return
    if config is None:
        raise TypeError("open_run: a new run needs its config (resume=True takes it from run_dir)")
    path = Path(run_dir) if run_dir is not None else Path(config.output_dir) / config.run_name
    rundir.check_writable_parent(path)
    with rundir.hold(path):  # before anything is written, the recovery of an --overwrite included
        _note(rundir.recover_on_main(path))
        rundir.check_available(path, resume=False, overwrite=overwrite, python=python, config=config)  # before loading anything
        yield OpenedRun(config, path, overwrite=overwrite)


@dataclass
class RunOutcome:
    """What :func:`execute_run` gives back: the results, the report page (None: not written, or not the main
    process) and whether this is the main process (the only one that writes, under torchrun)."""

    results: dict[str, Any]
    report: Path | None
    is_main: bool


def execute_run(
    cfg: RunConfig,
    path: Path,
    *,
    resume: bool,
    overwrite: bool,
    root_moved: bool = False,
    progress: bool = True,
    on_failure: Callable[[BaseException, str | None], None] | None = None,
) -> RunOutcome:
    """Everything ``vlcl run`` and :func:`run` do once the config and the run directory are known and checked as
    free: the remaining checks (method, model, data, batch size, the data's fingerprint on resume) before anything is
    written, the run directory's files, the run, then ``report.html`` (a failure there is one warning line: the
    results are already on disk). On failure the previous run of an ``overwrite`` is put back when the new one made
    no progress; ``on_failure(exception, note)`` is called before the exception goes on (the command line turns a
    signal into its message there). The run directory is held (:func:`vlcl.engine.rundir.hold`) throughout."""
    from vlcl.engine import rundir

    with rundir.hold(path):  # the callers above hold it already; a direct caller takes it here
        return _execute_held(cfg, path, resume=resume, overwrite=overwrite, root_moved=root_moved, progress=progress,
                             on_failure=on_failure)


def _execute_held(
    cfg: RunConfig,
    path: Path,
    *,
    resume: bool,
    overwrite: bool,
    root_moved: bool,
    progress: bool,
    on_failure: Callable[[BaseException, str | None], None] | None,
) -> RunOutcome:
    from rich.console import Console

    from vlcl.engine import distributed, rundir
    from vlcl.engine.faults import fault_point
    from vlcl.engine.loop import create_runner

    rundir.check_config(cfg)
    info = distributed.init_distributed(cfg.device)
    console = Console(stderr=True, quiet=not (progress and info.is_main))
    runner = create_runner(cfg, path, console).prepare(resume=resume)  # every check; nothing written yet
    data_changed = resume and rundir.check_data_fingerprint(path, runner.data_fingerprint, cfg, root_moved)
    if info.is_main and data_changed:
        _note(f"{path}: the data differs from the data this run started on, but the run has no checkpoint yet: starting it again on this data")
    elif info.is_main and not resume and not overwrite and rundir.restartable(path, cfg):
        _note(rundir.RESTART_NOTE.format(path))
    try:
        if info.is_main:
            rundir.prepare(path, resume=resume, overwrite=overwrite, config=cfg)
            rundir.write_run_files(path, runner.data_fingerprint, cfg, resume=resume and not data_changed, root_moved=root_moved)
            fault_point("run_files_written")
            runner.on_checkpoint = lambda: rundir.discard_replaced(path)
        distributed.barrier()  # the other processes start once the run directory is ready
        where = f" ({info.world} processes)" if info.enabled else ""
        console.print(f"[bold]vlcl run[/] method={cfg.method.name} benchmark={cfg.data.benchmark}{where} -> {path}")
        results = runner.run()
    except BaseException as exc:
        restored = rundir.restore_if_no_progress(path) if info.is_main else None
        _note(restored)
        if on_failure is not None:
            on_failure(exc, restored)
        raise
    if not info.is_main:
        return RunOutcome(results, None, False)
    from vlcl.report.html import REPORT_NAME, auto_report, run_groups

    report = auto_report(path / REPORT_NAME, run_groups([(str(path), path, results)]), lambda line: print(line, file=sys.stderr))
    return RunOutcome(results, report, True)


def _note(note: str | None) -> None:
    if note:
        print(f"vlcl: {note}", file=sys.stderr)


# -- registering a method -----------------------------------------------------------------------------------------
def register_method(cls: type[Method]) -> type[Method]:
    """Register a :class:`Method` subclass defined in your own code under its ``name`` (a class decorator), so that
    ``method.name=<name>`` runs it in this process - no package, no entry point. The methods of vlcl and of
    installed packages are found first, so a name already taken is refused here, naming the class that has it.
    Defining the same class again (a re-run notebook cell: same module and qualified name) replaces it."""
    from vlcl.methods import Method, registry
    from vlcl.methods import register_method as register

    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register_method: expected a subclass of vlcl.Method, got {cls!r}")
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name: set the class attribute name = '...'")
    registry.list_methods()  # discovery first: a clash with a method of vlcl or of a plugin is found now
    return register(cls)
