"""The console's progress of a run: rich's live bar in a terminal, plain self-contained lines in a file or a pipe,
and the estimate of the whole run's remaining time (docs/logging.md, "Progress on the console")."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def run_eta(
    *, steps_done: int, step_seconds: float, steps_left: int, evaluations_left: int, evaluation_seconds: float | None
) -> float | None:
    """Seconds left in a run: ``steps_left`` optimiser steps at the measured ``step_seconds / steps_done`` each, plus
    ``evaluations_left`` evaluations at ``evaluation_seconds`` (the last one's measured time) each. None while a part
    still to come has no measurement yet (no step timed, or no evaluation), rather than a number that leaves it out."""
    if steps_left and not steps_done:
        return None
    if evaluations_left and evaluation_seconds is None:
        return None
    per_step = step_seconds / steps_done if steps_done else 0.0
    return steps_left * per_step + evaluations_left * (evaluation_seconds or 0.0)


def duration(seconds: float | None) -> str:
    """``7m45s``, ``1h02m``, ``42s``, ``3.4s``; ``?`` for an estimate that is not known yet."""
    if seconds is None:
        return "?"
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_bar(console: Console) -> Progress:
    """The terminal's live bar of one task or evaluation (removed when it ends)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[run]}"),
        console=console,
        transient=True,
    )


@dataclass
class StagePlan:
    """One stage still to run: its position among the run's stages (0-based) and name, the optimiser steps it has
    left (its planned total, less those restored by ``--resume``), and whether an evaluation follows it."""

    index: int
    name: str
    steps_left: int
    evaluates: bool


class RunProgress:
    """What the console shows of a run. A terminal (or a notebook) gets rich's bars, a file or a pipe plain lines:
    one at each task's start and end, one every ``interval_s`` seconds of a task (0: every step) and one at each
    evaluation's end, each stamped with the wall-clock time, no ANSI codes, no blank lines. With a plan
    (:meth:`plan`) every line and bar also carries the whole run's estimate (:func:`run_eta`)."""

    def __init__(self, console: Console, interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.console = console
        self.plain = not (console.is_terminal or console.is_jupyter)
        self.interval_s = interval_s
        self.clock = clock
        self.stages: list[StagePlan] = []
        self.stage_count = 0
        self.current: StagePlan | None = None
        self.steps_done = 0
        """Steps timed in this session (resumed steps are not: they took no time here)."""
        self.step_seconds = 0.0
        self.evaluation_seconds: float | None = None

    # -- the plan and the estimate -------------------------------------------------------------------------------
    def plan(self, stages: Sequence[StagePlan], stage_count: int, evaluation_seconds: float | None = None) -> None:
        """The stages still to run, of ``stage_count`` in all; ``evaluation_seconds``: an evaluation's time measured
        by an earlier session (resume), until this one measures its own."""
        self.stages = [replace(stage) for stage in stages]  # counted down here, the caller's left as given
        self.stage_count, self.evaluation_seconds = stage_count, evaluation_seconds

    def begin_stage(self, index: int) -> None:
        self.current = next((s for s in self.stages if s.index == index), None)

    def eta(self, running_seconds: float = 0.0) -> tuple[float | None, bool]:
        """The run's remaining seconds (None without a plan or a measured step) and whether they are a lower bound:
        the steps alone, while no evaluation of this run has been timed (its pre-trained row was read from a
        comparison's shared store). ``running_seconds``: time spent on the task now training, not yet added to the
        measured step time."""
        if not self.stages:
            return None, False
        evaluations_left = sum(s.evaluates for s in self.stages)
        untimed = bool(evaluations_left) and self.evaluation_seconds is None
        seconds = run_eta(
            steps_done=self.steps_done,
            step_seconds=self.step_seconds + running_seconds,
            steps_left=sum(s.steps_left for s in self.stages),
            evaluations_left=0 if untimed else evaluations_left,
            evaluation_seconds=self.evaluation_seconds,
        )
        return seconds, untimed and seconds is not None

    def _run_text(self, running_seconds: float = 0.0) -> str:
        if not self.stages:
            return ""
        seconds, lower_bound = self.eta(running_seconds)
        return f"run ETA {'>' if lower_bound else ''}{duration(seconds)}"

    def _say(self, text: str) -> None:
        self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", markup=False, highlight=False, soft_wrap=True)

    def _name(self, label: str) -> str:
        stage = self.current
        return f"task {stage.index + 1}/{self.stage_count} {label}" if stage is not None else label

    # -- a task's training ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def training(self, label: str, total: int, done: int, steps_per_epoch: int) -> Iterator["TaskMeter"]:
        """The progress of one task's ``total`` steps, ``done`` of them already taken (resume)."""
        meter = TaskMeter(self, self._name(label), total, done, steps_per_epoch)
        if self.plain:
            meter.started()
            yield meter
            meter.finished()
            return
        with progress_bar(self.console) as bar:
            meter.bar = (bar, bar.add_task(f"train {label}", total=total, completed=done, info="", run=self._run_text()))
            yield meter
        meter.finished()

    # -- an evaluation ----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def evaluation(self, label: str, sets: int) -> Iterator[Callable[[str], None]]:
        """The progress of one evaluation of ``sets`` sets: yields the callable told each set's name as it is done.
        Its time becomes the estimate's time per evaluation."""
        started = self.clock()
        after = f"eval after {self._name(label)}" if self.current is not None else f"eval {label}"
        if self.plain:
            yield lambda name: None
        else:
            with progress_bar(self.console) as bar:
                task = bar.add_task(f"eval {label}", total=sets, info="", run=self._run_text())
                yield lambda name: bar.update(task, advance=1, info=name)
        seconds = self.clock() - started
        self.evaluation_seconds = seconds
        if self.current is not None:
            self.current.evaluates = False
        if self.plain:
            self._say(f"{after}  {sets} sets in {duration(seconds)}  {self._run_text()}".rstrip())


class TaskMeter:
    """One task's steps, as :meth:`RunProgress.training` shows them; :meth:`step` after every optimiser step."""

    def __init__(self, run: RunProgress, name: str, total: int, done: int, steps_per_epoch: int):
        self.run, self.name, self.total, self.done, self.steps_per_epoch = run, name, total, done, steps_per_epoch
        self.first = done
        self.started_at = self.last_line = run.clock()
        self.loss: float | None = None
        self.bar: tuple[Progress, int] | None = None

    def step(self, loss: float) -> None:
        self.done += 1
        self.loss = loss
        self.run.steps_done += 1
        if self.run.current is not None:
            self.run.current.steps_left = max(0, self.run.current.steps_left - 1)
        now = self.run.clock()
        if self.bar is not None:
            bar, task = self.bar
            bar.update(task, advance=1, info=f"loss {loss:.3f}", run=self.run._run_text(now - self.started_at))
        elif self.done < self.total and now - self.last_line >= self.run.interval_s:
            self.last_line = now
            self.run._say(self._line(now))

    def _line(self, now: float) -> str:
        spent = now - self.started_at
        timed = self.done - self.first
        task_eta = duration(spent / timed * (self.total - self.done)) if timed else "?"
        epochs = -(-self.total // self.steps_per_epoch)
        epoch = min(epochs, (self.done - 1) // self.steps_per_epoch + 1) if self.done else 1
        loss = f"  loss {self.loss:.4g}" if self.loss is not None else ""
        return (
            f"{self.name}  epoch {epoch}/{epochs}  step {self.done}/{self.total} ({100 * self.done / self.total:.0f}%){loss}"
            f"  task ETA {task_eta}  {self.run._run_text(spent)}"
        ).rstrip()

    def started(self) -> None:
        resumed = f", from step {self.first}" if self.first else ""
        self.run._say(f"{self.name}  started: {self.total} steps ({self.steps_per_epoch} per epoch){resumed}  {self.run._run_text()}".rstrip())

    def finished(self) -> None:
        """The task's time joins the measured step time; in a file, the task's last line."""
        spent = self.run.clock() - self.started_at
        self.run.step_seconds += spent
        if self.run.plain:
            loss = f"  loss {self.loss:.4g}" if self.loss is not None else ""
            self.run._say(f"{self.name}  trained: {self.done - self.first} steps in {duration(spent)}{loss}  {self.run._run_text()}".rstrip())
