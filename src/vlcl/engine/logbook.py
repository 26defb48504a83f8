"""The run's log: ``log.jsonl`` (always) and TensorBoard event files (``logging.tensorboard=true``).

One JSON object per line, strict JSON (a non-finite number is written as ``null``), flushed after every
record so that a killed run keeps every record up to the kill. Records (docs/logging.md has the schema):

* ``start``  - a session began (a fresh run, or ``--resume``);
* ``resume`` - where a resumed session continues: stage and step within it;
* ``step``   - one optimiser step: losses, the method's loss terms, every parameter group's learning rate;
* ``warning`` - something found wrong while the run goes on (a training loss that has not moved): kind, message;
* ``eval``   - one evaluation (the pre-trained model, after every stage): metrics.csv's scalars;
* ``end``    - the run's summary; ``stop`` - the session ended on an error or a signal.

Every record carries ``session`` (0 for the run's first session, +1 per ``--resume``). A resumed session
redoes the steps after its checkpoint, so their records appear twice in the file; :func:`read_log` keeps
what a run that never stopped would have written. log.jsonl is the one file of a run directory that is
appended to rather than replaced atomically: it is a history, each line complete once flushed, and a
resumed run must not rewrite what the killed session recorded (docs/logging.md).

The engine writes it from the main process only (:class:`NullLogbook` elsewhere); it names no method.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vlcl.engine.results import METRIC_KINDS, flatten_metrics
from vlcl.methods.base import ParameterGroup

LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_BATCH = 64
TENSORBOARD_SECONDS = 10.0
"""TensorBoard events are handed to its writer every this many records or seconds, at every evaluation and
before every checkpoint."""
TENSORBOARD_MISSING = "logging.tensorboard=true needs the tensorboard package: pip install 'vlcl[tensorboard]'"

StepLogger = Callable[[int, int, float, dict[str, float], dict[str, float]], None]
"""``(step, steps, loss, terms, lrs)``: called by the training loop after each optimiser step (1-based ``step``
of ``steps`` in the stage)."""


def tensorboard_available() -> bool:
    """Whether TensorBoard's writer can be imported (the ``tensorboard`` package with torch's writer)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


def parameter_group_names(groups: Iterable[ParameterGroup]) -> list[str]:
    """A name per non-empty group, in the optimiser's order: ``<tower>_decay`` / ``<tower>_no_decay``, with
    ``_2``, ``_3``... for a further group of the same kind (C-CLIP's projector)."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for group in groups:
        if not group.params:
            continue
        base = f"{group.tower}_{'decay' if group.weight_decay else 'no_decay'}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _finite(value.item())
    return value


def metric_scalars(metrics: dict[str, Any], order: tuple[str, ...] = METRIC_KINDS) -> dict[str, Any]:
    """One evaluation's scalars keyed ``<kind>/<set>/<metric>`` (metrics.csv's rows, results.flatten_metrics)."""
    return {f"{kind}/{set_name}/{metric}": value for kind, set_name, metric, value in flatten_metrics(metrics, order)}


class NullLogbook:
    """The logbook of a process that writes nothing (every process but the main one under torchrun)."""

    def start(self, **fields: Any) -> None:
        pass

    def resume(self, *, stage: int, stage_name: str, step: int, global_step: int, checkpoint: str | None) -> None:
        pass

    def step_logger(self, stage: int, stage_name: str, offset: int) -> StepLogger | None:
        return None

    def warning(self, *, stage: int, stage_name: str, step: int, global_step: int, kind: str, message: str, set_name: str | None) -> None:
        pass

    def evaluation(self, *, stage: int, stage_name: str, global_step: int, metrics: dict[str, Any], seconds: float) -> None:
        pass

    def end(self, *, global_step: int, summary: dict[str, Any]) -> None:
        pass

    def stop(self, reason: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _wait_past_event_files(folder: Path) -> None:
    """Sleep until the clock's second is past the newest event file's in ``folder`` (under a second).

    TensorBoard reads a run's event files in name order, and the name's first key is its creation second, the
    next the host and the process id. A session resumed within the second the killed session created its file
    would sort by process id, possibly before it, and TensorBoard would then read the killed session's steps
    after the resumed ones: its purge at the resume point would hide the wrong events."""
    seconds = [int(p.name.split(".")[3]) for p in folder.glob("events.out.tfevents.*") if p.name.split(".")[3].isdigit()]
    if seconds:
        time.sleep(max(0.0, max(seconds) + 1 - time.time()))


class Logbook(NullLogbook):
    """log.jsonl of one session of a run (opened for appending on ``--resume``), and optionally TensorBoard.

    A buffered text file, flushed after every record (no fsync: a killed process keeps every record; a power
    cut may lose the last seconds, as it would any file not yet synced). TensorBoard's writer queues events and
    writes them every two minutes; :meth:`flush` (before every checkpoint) writes them out, so everything up to a
    checkpoint is on disk before the checkpoint is.

    A resumed session holds its ``start`` and ``resume`` records back until its first step or evaluation: a
    resume that fails before doing anything (a checkpoint that does not fit, a signal) leaves the log as it
    found it, byte for byte, like every other file of the run."""

    def __init__(self, run_dir: Path, *, append: bool, tensorboard: bool = False, metric_kinds: tuple[str, ...] = METRIC_KINDS):
        self.path = Path(run_dir) / LOG_FILE
        self.metric_kinds = metric_kinds
        """The order of the metric kinds of ``eval`` records: the setting's (vlcl.settings)."""
        self.session = next_session(self.path) if append else 0
        self.tensorboard_dir = Path(run_dir) / TENSORBOARD_DIR if tensorboard else None
        self._writer = None
        self._purge_step: int | None = None
        self._pending: list[tuple[Any, int]] = []  # TensorBoard summaries not yet handed to its writer
        self._pushed = time.perf_counter()
        self._started = time.perf_counter()
        if not append:  # a runner used from Python may be given a directory that does not exist yet
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = None if append else open(self.path, "w", encoding="utf-8", newline="\n")
        self._held: list[str] | None = [] if append else None
        """A resumed session's records not yet written (its start and resume); None once the session has written."""

    # -- records ----------------------------------------------------------------------
    def _line(self, event: str, fields: dict[str, Any]) -> str:
        record = {"event": event, "session": self.session, "time": round(time.time(), 3),
                  "elapsed": round(time.perf_counter() - self._started, 3), **fields}
        try:
            return json.dumps(record, allow_nan=False) + "\n"
        except ValueError:  # a NaN or inf somewhere: null, as results.json
            return json.dumps(_finite(record), allow_nan=False) + "\n"

    def _write(self, event: str, fields: dict[str, Any]) -> None:
        try:
            self._append(self._line(event, fields))
        except OSError as exc:  # a full disk: the error names log.jsonl (a bare write error names no file)
            if exc.filename is not None or exc.strerror is None:
                raise
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def _append(self, line: str) -> None:
        if self._held is not None:  # a resumed session's first record: open the file, its start and resume first
            held, self._held = self._held, None
            cut = False
            if self.path.is_file() and self.path.stat().st_size:
                with open(self.path, "rb") as handle:
                    handle.seek(-1, 2)
                    cut = handle.read(1) != b"\n"  # the killed session's last line was cut: leave it alone on its line
            self._file = open(self.path, "a", encoding="utf-8", newline="\n")
            self._file.write("\n" * cut + "".join(held))
        self._file.write(line)
        self._file.flush()

    def _hold(self, event: str, fields: dict[str, Any]) -> None:
        if self._held is not None:
            self._held.append(self._line(event, fields))
        else:
            self._write(event, fields)

    def start(self, **fields: Any) -> None:
        self._hold("start", _finite(fields))

    def resume(self, *, stage: int, stage_name: str, step: int, global_step: int, checkpoint: str | None) -> None:
        """The session continues at ``step`` steps into ``stage`` (-1: from the very beginning, the pre-trained
        evaluation included): records of the earlier sessions past that point are superseded (:func:`read_log`)."""
        self._hold("resume", {"stage": stage, "stage_name": stage_name, "step": step, "global_step": global_step,
                               "checkpoint": checkpoint})
        self._purge_step = 0 if stage < 0 else global_step + 1  # TensorBoard hides the earlier sessions' later events

    def step_logger(self, stage: int, stage_name: str, offset: int) -> StepLogger:
        """The training loop's callback for ``stage``, whose first step is the run's ``offset + 1``-th."""

        def log(step: int, steps: int, loss: float, terms: dict[str, float], lrs: dict[str, float]) -> None:
            self._write("step", {"stage": stage, "stage_name": stage_name, "step": step, "steps": steps,
                                 "global_step": offset + step, "loss": loss, "terms": terms, "lr": lrs})
            if self.tensorboard_dir is not None:
                scalars = {"train/loss": loss, **{f"train/lr/{k}": v for k, v in lrs.items()},
                           **{f"train/terms/{k}": v for k, v in terms.items()}}
                self._scalars(scalars, offset + step)

        return log

    def warning(self, *, stage: int, stage_name: str, step: int, global_step: int, kind: str, message: str, set_name: str | None) -> None:
        """What the run found wrong at ``step`` of ``stage`` (results.json ``warnings`` holds it too)."""
        self._write("warning", {"stage": stage, "stage_name": stage_name, "step": step, "global_step": global_step,
                                "kind": kind, "set": set_name, "message": message})

    def evaluation(self, *, stage: int, stage_name: str, global_step: int, metrics: dict[str, Any], seconds: float) -> None:
        scalars = metric_scalars(metrics, self.metric_kinds)
        self._write("eval", {"stage": stage, "stage_name": stage_name, "global_step": global_step, "seconds": seconds,
                             "metrics": scalars})
        if self.tensorboard_dir is not None:
            self._scalars({f"eval/{k}": v for k, v in scalars.items()}, global_step)
            self._push()

    def end(self, *, global_step: int, summary: dict[str, Any]) -> None:
        self._write("end", {"global_step": global_step, "summary": _finite(summary)})

    def stop(self, reason: str) -> None:
        if self._held is None:  # a resumed session that wrote nothing leaves the log untouched
            self._write("stop", {"reason": reason})

    # -- TensorBoard ------------------------------------------------------------------
    def _scalars(self, scalars: dict[str, Any], step: int) -> None:
        """One event holding every scalar of a record (``add_scalar`` per scalar costs three times as much), handed
        to TensorBoard's writer thread in batches: one hand-over per event, each waking that thread, cost the
        training loop about 2 ms a step on a busy 2-core machine, a batch of them about a fifth of that."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [
            Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in scalars.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        self._pending.append((Summary(value=values), step))
        if len(self._pending) >= TENSORBOARD_BATCH or time.perf_counter() - self._pushed > TENSORBOARD_SECONDS:
            self._push()

    def _push(self) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            _wait_past_event_files(self.tensorboard_dir)
            self._writer = SummaryWriter(str(self.tensorboard_dir), purge_step=self._purge_step)
        for summary, step in self._pending:
            self._writer.file_writer.add_summary(summary, step)
        self._pending.clear()
        self._pushed = time.perf_counter()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._pending:
            self._push()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._pending:
            self._push()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._file is not None and not self._file.closed:
            self._file.close()


def open_logbook(run_dir: Path, *, main: bool, append: bool, tensorboard: bool, metric_kinds: tuple[str, ...] = METRIC_KINDS) -> NullLogbook:
    """The main process's :class:`Logbook`, a :class:`NullLogbook` for the others."""
    return Logbook(run_dir, append=append, tensorboard=tensorboard, metric_kinds=metric_kinds) if main else NullLogbook()


# -- reading -------------------------------------------------------------------------------


def _records(path: Path) -> Iterable[dict[str, Any]]:
    """Every complete record of the file; a line that is not a JSON object (cut by a kill) is skipped."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def next_session(path: Path) -> int:
    """The session number of a new session appending to ``path``: one past the largest there (0 if none)."""
    if not path.is_file():
        return 0
    sessions = [r.get("session") for r in _records(path)]
    return max((s for s in sessions if isinstance(s, int)), default=-1) + 1


def _superseded(record: dict[str, Any], stage: int, step: int) -> bool:
    """Whether a record of an earlier session lies at or past a resume point (``stage``, ``step``)."""
    event = record.get("event")
    if event in ("step", "warning"):  # a warning belongs to the step that found it
        return (record.get("stage", -1), record.get("step", 0)) > (stage, step)
    if event == "eval":
        return record.get("stage", -1) >= stage  # a stage's evaluation follows all its steps
    return event == "end"


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's log.jsonl (``path``: the file or its run directory) as a run that never stopped
    would have written them, in order: at each ``resume`` record, the records of earlier sessions past its
    point - steps after ``step`` of ``stage``, evaluations of ``stage`` and later, an ``end`` - are dropped, as the
    resumed session redoes them. ``start``, ``resume`` and ``stop`` records are kept; a cut line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_FILE
    kept: list[dict[str, Any]] = []
    for record in _records(path):
        if record.get("event") == "resume":
            stage, step = record.get("stage", -1), record.get("step", 0)
            kept = [r for r in kept if not _superseded(r, stage, step)]
        kept.append(record)
    return kept
