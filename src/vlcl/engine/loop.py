"""The continual loop: stages of training, each followed by evaluation and a checkpoint.

The engine knows nothing about any particular method: it asks the method for
its stages, its parameters, its loss and its hooks (see
:class:`vlcl.methods.Method`). Everything it writes goes into one run
directory, atomically; ``resume`` continues after the last complete stage and
reproduces the uninterrupted run exactly on CPU because every stage reseeds
from (seed, stage index) and data order comes from its own generator.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from vlcl.config import RunConfig, TrainConfig, config_to_dict
from vlcl.data.benchmark import Benchmark, CaptionedImages, ClassificationSet
from vlcl.data.online import OnlineStream, StreamError, build_stream
from vlcl.data.registry import benchmark_model_kind
from vlcl.data.fingerprint import benchmark_fingerprint, evaluation_fingerprint
from vlcl.engine import distributed
from vlcl.engine.checkpoint import (
    LATEST,
    CheckpointError,
    StateFormatError,
    check_state_round_trip,
    newest_complete_stage,
    read_pointer,
    read_stage_checkpoint,
    read_step_checkpoint,
    remove_step_checkpoints,
    write_stage_checkpoint,
    write_step_checkpoint,
)
from vlcl.engine.evaluate import Evaluator, PairEvaluator
from vlcl.engine.faults import fault_point
from vlcl.engine.kinds import ModelKind, models_of_kind
from vlcl.engine.logbook import TENSORBOARD_MISSING, NullLogbook, open_logbook, tensorboard_available
from vlcl.engine.results import assemble_results, stages_on_disk, write_results
from vlcl.engine.shared_eval import changes_evaluation, pretrained_key, read_shared, store_shared
from vlcl.engine.progress import RunProgress, StagePlan
from vlcl.engine.stream import evaluation_batches, stream_without_training, train_on_stream
from vlcl.engine.train import planned_steps, train_on
from vlcl.errors import BadInputError
from vlcl.methods import Method, RunContext, Stage, create_method, list_methods, method_class
from vlcl.methods.base import overridden_evaluation_hooks
from vlcl.models.coverage import coverage, indistinguishable_classes, prompt_encodings, token_text
from vlcl.models.loading import ClipBundle
from vlcl.seeds import stage_seed, stream_seed
from vlcl.settings import Setting, setting_of


@dataclass
class StageRecord:
    index: int
    name: str
    trained_on: list[str]
    metrics: dict[str, Any]
    train: dict[str, Any]
    eval_seconds: float
    shared: bool = False
    """The metrics were read from a comparison's shared pre-trained row (vlcl.engine.shared_eval), not evaluated."""
    warnings: list[dict[str, Any]] = field(default_factory=list)
    """What the stage found wrong while it ran (results.json ``warnings``: kind, message, stage, set)."""
    per_class: dict[str, Any] | None = None
    """Per classification set: classes, support, top-1 and the confusion matrix (results.json ``per_class``); taken
    out of the evaluation's ``metrics``, which hold scalars by kind."""

    def __post_init__(self) -> None:
        if "per_class" in self.metrics:  # a new copy: the evaluation's dict may be shared (the pre-trained row)
            metrics = dict(self.metrics)
            found = metrics.pop("per_class")
            self.per_class, self.metrics = self.per_class or found, metrics

    def to_json(self) -> dict[str, Any]:
        record = dict(self.__dict__)
        for optional in ("shared", "warnings", "per_class"):
            if not record[optional]:
                del record[optional]
        return record


class RunInputError(BadInputError, ValueError):
    """The run cannot start as configured (found before anything is written)."""


def load_method_state(method: Method, state: dict[str, Any], checkpoint: Path) -> None:
    try:
        method.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise CheckpointError(
            f"{checkpoint}: the method state does not fit method '{method.name}' ({exc.__class__.__name__}: {exc})"
        ) from None


def _check_setting(method: Method, benchmark: Benchmark, name: str, model_kind: str) -> Setting:
    """The benchmark's setting (vlcl.settings) is one the method supports (``Method.settings``) and trains the
    kind of model the benchmark was registered with."""
    setting = setting_of(benchmark)
    if setting.model_kind != model_kind:
        raise RunInputError(
            f"benchmark '{name}' is registered to train a {model_kind} model, but its tasks belong to setting "
            f"'{setting.name}', which trains a {setting.model_kind} model"
        )
    if setting.name not in method.settings:
        able = [m for m in list_methods() if setting.name in method_class(m).settings]
        raise RunInputError(setting.refusal(method.name, name, able))
    return setting


def _check_stream(method: Method, setting: Setting) -> None:
    """A stream run (``data.stream=online``) needs a method that works without task boundaries, evaluated by its
    evaluation model alone (it overrides none of the evaluation hooks; parts inside that model, such as sit's
    adapters, are scored), on a setting that can be scored along a stream."""
    if method.needs_task_boundaries:
        able = [m for m in list_methods() if not method_class(m).needs_task_boundaries]
        raise RunInputError(
            f"method '{method.name}' needs task boundaries, and a stream (data.stream=online) gives none; methods that "
            f"work without them: {', '.join(able)}"
        )
    hooks = overridden_evaluation_hooks(type(method))  # parts inside its evaluation model are scored along a stream
    if hooks:
        raise RunInputError(
            f"method '{method.name}': its evaluation also calls the method's {' and '.join(hooks)}, which a stream's "
            "evaluation does not call"
        )
    if not setting.streams():
        raise RunInputError(f"setting '{setting.name}' ({setting.task_words}) cannot run as a stream (data.stream=online)")


def _check_method_state(method: Method, hook: str = "state_dict") -> None:
    """The method's state goes through the checkpoint format and back unchanged - checked before training
    (``state_dict`` after setup, ``step_state_dict`` after each ``begin_task``), not when the first checkpoint
    is written after a task has trained."""
    try:
        check_state_round_trip(getattr(method, hook)())
    except StateFormatError as exc:
        raise RunInputError(f"method '{method.name}': {hook}() cannot be checkpointed: {exc}") from None


def _records(stages: Any, path: Path) -> list[StageRecord]:
    try:
        return [StageRecord(**r) for r in stages]
    except TypeError as exc:
        raise CheckpointError(f"{path}: malformed stage records ({exc})") from None


def check_tokenizer_coverage(benchmark: Benchmark, tokenizer, limit: float) -> None:
    """Refuse data whose text the tokenizer cannot read (:mod:`vlcl.models.coverage`), naming every set above
    ``limit``; record every set's share of unknown words in the benchmark's data report (results.json
    ``data.unknown_words``)."""
    found = {name: coverage(tokenizer, texts) for name, texts in benchmark.texts_by_set().items()}
    failing = [
        f"data set '{name}': {c.unknown_share:.1%} of its caption and prompt words are unknown to the model's tokenizer "
        f"(e.g. {', '.join(repr(w) for w in c.examples)})"
        for name, c in found.items()
        if c.unknown_share > limit
    ]
    if failing:
        raise RunInputError(
            f"{'; '.join(failing)}, more than data.max_unknown_words={limit:g}; they would all encode as one "
            "unknown token. Use a model whose tokenizer reads them, or --allow-unknown-words"
        )
    benchmark.data_report["unknown_words"] = {name: round(c.unknown_share, 6) for name, c in found.items()}


def _class_sets(benchmark: Benchmark) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """Every classification set the run trains or scores as (role, name, class names, per class its prompts):
    each classification task's training prompts (where they differ from its test set's), then every zero-shot
    set (the tasks' test sets and the held-out ones)."""
    tasks = {id(t.test) for t in benchmark.tasks}
    sets = []
    for task in benchmark.tasks:
        prompts = getattr(task.train, "class_prompts", None)
        test = task.test if isinstance(task.test, ClassificationSet) else None
        if prompts is not None and (test is None or prompts != test.prompts()):
            names = test.classnames if test is not None and len(test.classnames) == len(prompts) else [p[0] for p in prompts]
            sets.append(("classification task", task.name, names, prompts))
    for dataset in benchmark.zeroshot:
        role = "classification task" if id(dataset) in tasks else "zero-shot set"
        sets.append((role, dataset.name, dataset.classnames, dataset.prompts()))
    return sets


def _named(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_class_sets(benchmark: Benchmark, tokenizer, context_length: int) -> None:
    """Refuse a classification set whose scores are fixed by construction: one with a single class (loss 0,
    top-1 100%), or one with classes of different names whose prompts encode to the same token ids under every
    template (the model cannot tell them apart: a name the tokenizer reads only as its unknown token, a name
    cut off by the context length). Classes the data itself names alike are not refused
    (:func:`vlcl.models.coverage.indistinguishable_classes`)."""
    for role, name, classnames, prompts in _class_sets(benchmark):
        if len(prompts) == 1:
            raise RunInputError(
                f"{role} '{name}' has a single class ({classnames[0]!r}): its loss is 0 and its top-1 100% by "
                "construction; a classification set needs at least two classes"
            )
        groups = indistinguishable_classes(tokenizer, prompts, context_length)
        if groups:
            example = token_text(tokenizer, prompt_encodings(tokenizer, [prompts[groups[0][0]][:1]], context_length)[0][0])
            described = "; ".join(f"classes {_named([classnames[i] for i in group])}" for group in groups)
            raise RunInputError(
                f"{role} '{name}': {described} encode to the same tokens under the model's tokenizer (e.g. "
                f"{example!r}), so the model cannot tell them apart and their scores mean nothing. Use a model whose "
                "tokenizer reads the class names, or name the classes with words it reads"
            )


class ContinualRunner:
    """Runs one method through one benchmark into ``run_dir``."""

    def __init__(self, config: RunConfig, run_dir: Path, console: Console | None = None, shared_eval: Path | None = None):
        self.config = config
        self.shared_eval = shared_eval
        """A directory of pre-trained rows shared by the runs of a comparison (vlcl.engine.shared_eval), or None."""
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        self.progress = RunProgress(self.console, config.logging.progress_interval_s)
        """The console's bars or plain lines, and the run's estimate (vlcl.engine.progress)."""
        self.checkpoints = self.run_dir / "checkpoints"
        self.stream: OnlineStream | None = None
        """On a stream run (``data.stream=online``): the benchmark as one stream, built by :meth:`prepare`."""
        self.notes: list[str] = []
        """What :meth:`prepare` found worth saying (resuming from where), printed when the run starts."""
        self.state: tuple[Method, ClipBundle | None, Benchmark, list[StageRecord], int] | None = None
        self.models: ModelKind | None = None
        self.on_checkpoint: Callable[[], None] = lambda: None
        """Called after every checkpoint write (the CLI discards a run that ``--overwrite`` replaced)."""
        self.resuming = False
        self.resumed_from: str | None = None
        self.resume_step = None
        self.logbook: NullLogbook = NullLogbook()
        """log.jsonl (and TensorBoard) of the session, open while :meth:`run` runs (vlcl.engine.logbook)."""

    # -- set-up ----------------------------------------------------------------------
    def _device(self) -> torch.device:
        wanted = self.config.device
        if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                raise ValueError("device=cuda but CUDA is not available")
            return torch.device("cuda", distributed.current().local_rank)
        return torch.device("cpu")

    def prepare(self, *, resume: bool = False) -> "ContinualRunner":
        """Every check and load that can fail, before anything is written: the method and its options, the
        model (or the checkpoint resumed from), the data, the batch size against every task. Writes nothing."""
        cfg = self.config
        if cfg.logging.tensorboard and not tensorboard_available():
            raise RunInputError(TENSORBOARD_MISSING)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        method = create_method(cfg.method.name, cfg.method.typed_options())
        pointer = self._resume_pointer() if resume else None
        self.resume_step = None
        self.resuming, self.resumed_from = resume, pointer["path"] if pointer else None
        base = (pointer.get("base") if "step" in pointer else pointer["path"]) if pointer else None
        latest = self.checkpoints / base if base else None
        kind = benchmark_model_kind(cfg.data.benchmark)
        self.models = models_of_kind(kind)
        model, benchmark = self.models.load(cfg, latest, self._device())
        self.setting = _check_setting(method, benchmark, cfg.data.benchmark, kind)
        self.stream = self._build_stream(method, benchmark) if cfg.data.stream == "online" else None
        self.data_fingerprint = benchmark_fingerprint(benchmark, cfg.data.root)
        self._check_batches(method, benchmark)
        bundle = self.models.bundle
        if bundle is not None:
            check_tokenizer_coverage(benchmark, bundle.tokenizer, cfg.data.max_unknown_words)
            check_class_sets(benchmark, bundle.tokenizer, bundle.context_length)
        context = RunContext(
            task_names=benchmark.task_names,
            seed=cfg.seed,
            bundle=bundle,
            device=self._device(),
            gather=cfg.train.gather_features,
            resuming=latest is not None,
            checkpoint=latest,
            pretrained_path=cfg.model.path,
            local_files_only=cfg.model.local_files_only,
            label_smoothing=cfg.train.label_smoothing,
            streaming=self.stream is not None,
        )
        torch.manual_seed(stage_seed(cfg.seed, -1))
        try:
            method.setup(model, context)
        except (ValueError, FileNotFoundError, NotADirectoryError) as exc:  # options that do not fit this model or data
            message = str(exc).removeprefix(f"{method.name}: ")
            raise RunInputError(f"method '{method.name}': {message}") from None
        records: list[StageRecord] = []
        next_stage = 0
        if latest:
            state, progress = read_stage_checkpoint(latest)
            load_method_state(method, state, latest)
            records, next_stage = _records(progress["stages"], latest / "progress.json"), progress["next_stage"]
        if pointer is not None and "step" in pointer:
            step_dir = self.checkpoints / pointer["path"]
            tensors, values = read_step_checkpoint(step_dir)
            records, next_stage = _records(values.pop("records"), step_dir / "state.json"), pointer["stage"]
            self.resume_step = (tensors, values)
        if pointer is not None:
            where = f"{pointer['path']} (stage {next_stage}" + (f", step {pointer['step']})" if "step" in pointer else ")")
            self.notes.append(f"[bold]resuming[/] {self.run_dir} from {where}")
        _check_method_state(method)
        if resume:
            self._refuse_less_complete(len(records))
        self.base = base
        self.state = (method, bundle, benchmark, records, next_stage)
        return self

    def _resume_pointer(self) -> dict[str, Any] | None:
        """What to resume from: ``latest.json``; without it, the newest complete stage checkpoint; without any
        checkpoint, the beginning - only when the run has nothing that a restart would lose."""
        pointer = read_pointer(self.checkpoints)
        if pointer is not None:
            return pointer
        found = newest_complete_stage(self.checkpoints)
        if found is not None:
            self.notes.append(f"[yellow]{self.checkpoints / LATEST} is missing[/]: using the newest complete checkpoint {found['path']}")
            return found
        if (self.run_dir / "results.json").is_file() or any(self.checkpoints.glob("stage_*")):
            raise CheckpointError(
                f"{self.checkpoints}: no complete checkpoint to resume from, but the run has results; "
                "refusing to start it again over them (use --overwrite to start anew)"
            )
        self.notes.append("[yellow]no checkpoint yet[/] (the run stopped during its first task): starting from the beginning")
        return None

    def _refuse_less_complete(self, records: int) -> None:
        """A resumed run must not shrink a results.json that already records more stages."""
        path = self.run_dir / "results.json"
        written = stages_on_disk(path)  # an unreadable results.json holds nothing to protect: 0
        if written > records:
            raise CheckpointError(
                f"{path}: records {written - 1} trained stages but the checkpoint resumed from has {max(records - 1, 0)}; "
                "resuming would replace the results with less complete ones"
            )

    def _build_stream(self, method: Method, benchmark: Benchmark) -> OnlineStream:
        """The benchmark's tasks as one stream (vlcl.data.online), each task's data as its stage would train it."""
        _check_stream(method, self.setting)
        cfg = self.config
        if cfg.train.accumulate_steps != 1:
            raise RunInputError("train.accumulate_steps: a stream's step is one incoming batch; expected 1")
        parts = [self._stage_data(Stage(i, name, (i,)), benchmark) for i, name in enumerate(benchmark.task_names)]
        try:
            order_seed = cfg.stream.seed if cfg.stream.seed is not None else stream_seed(cfg.seed, cfg.data.seed)
            stream = build_stream(benchmark, cfg.stream, cfg.train.batch_size, order_seed, trains=parts)
        except StreamError as exc:
            raise RunInputError(str(exc)) from None
        if not any(p["periodic"] for p in evaluation_batches(stream, cfg.eval.every_samples).values()):
            raise RunInputError(
                f"eval.every_samples={cfg.eval.every_samples} is more than the stream's {len(stream.data)} samples: A_auc "
                "would have no point; lower it"
            )
        return stream

    def _stages(self, method: Method, benchmark: Benchmark) -> list[Stage]:
        """The method's stages, or on a stream the one stage ``stream`` over every task."""
        if self.stream is not None:
            return [Stage(0, "stream", tuple(range(len(benchmark.tasks))))]
        return method.stages(benchmark.task_names)

    def _check_batches(self, method: Method, benchmark: Benchmark) -> None:
        train = self.config.train
        world = distributed.current().world
        if train.batch_size % world:
            raise RunInputError(f"train.batch_size={train.batch_size} must be divisible by the {world} processes")
        if not (method.trains and method.optimises):
            return
        if self.stream is not None:
            return
        for stage in method.stages(benchmark.task_names):
            self._stage_train_config(stage, benchmark)
            pairs = len(self._stage_data(stage, benchmark))
            if planned_steps(pairs, train)[0] == 0:
                raise RunInputError(
                    f"task '{stage.name}' has {pairs} training pairs, fewer than one batch "
                    f"(train.batch_size={train.batch_size} x train.accumulate_steps={train.accumulate_steps})"
                )

    def _stage_data(self, stage: Stage, benchmark: Benchmark) -> CaptionedImages:
        """The stage's training data, classification tasks with the prompts ``train.class_prompts`` asks for."""
        if self.stream is not None:  # a stream run's one stage
            return self.stream.data
        parts = [benchmark.tasks[i].train for i in stage.task_indices]
        try:
            return self.setting.stage_data(parts, self.config.train.class_prompts)
        except ValueError as exc:
            raise RunInputError(f"stage '{stage.name}': {exc}") from None

    def _stage_train_config(self, stage: Stage, benchmark: Benchmark) -> TrainConfig:
        """``train`` with the stage's one learning rate per tower (``train.lr`` and ``train.text_lr`` may give one
        per task)."""
        train = self.config.train
        names = [benchmark.tasks[i].name for i in stage.task_indices]
        try:
            lr, text_lr = train.lr_for(names, benchmark.task_names), train.text_lr_for(names, benchmark.task_names)
        except ValueError as exc:
            raise RunInputError(str(exc)) from None
        return train.model_copy(update={"lr": lr, "text_lr": text_lr, "text_lr_scale": 1.0})

    # -- the loop --------------------------------------------------------------------
    def _evaluate(self, evaluator: Evaluator | PairEvaluator, method: Method, label: str) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        with self.progress.evaluation(label, evaluator.set_count) as done:
            metrics = evaluator.evaluate(method.evaluation_model(), done, hooks=method)
        return metrics, round(time.perf_counter() - started, 3)

    def _pretrained_evaluation(self, evaluator: Evaluator | PairEvaluator, method: Method, benchmark: Benchmark) -> tuple[dict[str, Any], float, bool]:
        """The ``pretrained`` row as (metrics, seconds, whether they were read): read from :attr:`shared_eval` when
        another run of the comparison stored it, else evaluated (and stored there for the others)."""
        share = self.shared_eval is not None and distributed.current().world == 1 and not changes_evaluation(method)
        if not share:
            return *self._evaluate(evaluator, method, "pretrained"), False
        started = time.perf_counter()
        sections = config_to_dict(self.config)
        settings = {"eval": sections["eval"], "model": sections["model"], "device": str(self._device()), "evaluator": type(evaluator).__name__}
        key = pretrained_key(method.evaluation_model(), evaluation_fingerprint(benchmark, self.config.data.root), settings)
        metrics = read_shared(self.shared_eval, key)
        if metrics is not None:
            self.console.print(f"pretrained row: stored by an earlier run of the comparison (key {key[:12]}), not evaluated again")
            return metrics, round(time.perf_counter() - started, 3), True
        metrics, _ = self._evaluate(evaluator, method, "pretrained")
        store_shared(self.shared_eval, key, metrics, str(self.run_dir))
        return metrics, round(time.perf_counter() - started, 3), False  # the key's hashing included

    def run(self) -> dict[str, Any]:
        """Train and evaluate every remaining stage, writing checkpoints and results; :meth:`prepare` first."""
        started = time.perf_counter()
        if self.state is None:
            self.prepare()
        main = distributed.current().is_main
        self.logbook = open_logbook(
            self.run_dir, main=main, append=self.resuming, tensorboard=self.config.logging.tensorboard,
            metric_kinds=self.setting.metric_kinds,
        )
        try:
            return self._run(started, main)
        except BaseException as exc:
            name = getattr(exc, "name", None)
            reason = f"interrupted by {name}" if name and not isinstance(exc, Exception) else f"{exc.__class__.__name__}: {exc}"
            with contextlib.suppress(OSError, ValueError):  # the log must not hide the error itself
                self.logbook.stop(reason.splitlines()[0] if reason else exc.__class__.__name__)
            raise
        finally:
            self.logbook.close()
            self.logbook = NullLogbook()

    def _log_session(self, benchmark: Benchmark, stages: list[Stage], records: list[StageRecord], next_stage: int) -> None:
        """The session's ``start`` record and, on ``--resume``, where it continues (vlcl.engine.logbook)."""
        cfg = self.config
        self.logbook.start(
            method=cfg.method.name, benchmark=cfg.data.benchmark, tasks=benchmark.task_names, stages=[s.name for s in stages],
            seed=cfg.seed, processes=distributed.current().world, resume=self.resuming, run_dir=str(self.run_dir),
        )
        if self.resuming:
            step = int(self.resume_step[1]["step"]) if self.resume_step is not None else 0
            stage = next_stage if records else -1
            name = "pretrained" if stage < 0 else stages[stage].name if stage < len(stages) else "end"
            self.logbook.resume(
                stage=stage, stage_name=name, step=step, global_step=_steps_done(records) + step, checkpoint=self.resumed_from
            )

    def _run(self, started: float, main: bool) -> dict[str, Any]:
        method, bundle, benchmark, records, next_stage = self.state
        for note in self.notes:
            self.console.print(note, soft_wrap=True)  # paths stay whole, to be copied
        skipped = benchmark.data_report.get("skipped_samples", 0) if hasattr(benchmark, "data_report") else 0
        if skipped:
            self.console.print(
                f"[yellow]skipped {skipped} bad samples[/] (data.on_bad_sample=skip; listed in results.json 'data')"
            )
        evaluator = self.models.evaluator(benchmark, self.config.eval)
        stages = self._stages(method, benchmark)
        self._log_session(benchmark, stages, records, next_stage)
        self._plan_progress(method, benchmark, stages, records, next_stage)
        if not records:
            metrics, seconds, shared = self._pretrained_evaluation(evaluator, method, benchmark)
            records.append(StageRecord(-1, "pretrained", [], metrics, {}, seconds, shared))
            self.logbook.evaluation(stage=-1, stage_name="pretrained", global_step=0, metrics=metrics, seconds=seconds)
        for stage in stages[next_stage:]:
            record = self._run_stage(method, bundle, benchmark, evaluator, stage, records)
            records.append(record)
            self.logbook.evaluation(
                stage=stage.index, stage_name=stage.name, global_step=_steps_done(records), metrics=record.metrics,
                seconds=record.eval_seconds,
            )
            progress = {"next_stage": stage.index + 1, "stages": [r.to_json() for r in records]}
            if main:
                self.logbook.flush()  # everything up to the checkpoint is on disk before it
                path = write_stage_checkpoint(
                    self.checkpoints,
                    stage.index,
                    lambda directory: self.models.save(method.evaluation_model(), directory),
                    method.state_dict(),
                    progress,
                    keep=self.config.checkpoint.keep,
                    model_note=_model_note(method),
                )
                self.base = path.name
                self.on_checkpoint()
                self._write(benchmark, stages, records, started)
            distributed.barrier()
        if not main:
            return {}
        results = self._write(benchmark, stages, records, started)
        if self.checkpoints.is_dir():  # what a crash inside a checkpoint write or prune left behind (hidden)
            remove_step_checkpoints(self.checkpoints)
        self.logbook.end(global_step=_steps_done(records), summary=results["summary"])
        return results

    def _plan_progress(self, method: Method, benchmark: Benchmark, stages: list[Stage], records: list[StageRecord], next_stage: int) -> None:
        """The run's estimate: every remaining stage's planned steps (less those a resumed in-task checkpoint took)
        and its evaluation; the time of an evaluation as an earlier session measured it, until this one does."""
        resumed = int(self.resume_step[1]["step"]) if self.resume_step is not None else 0
        plans = []
        for stage in stages[next_stage:]:
            steps = 0
            if self.stream is not None and method.trains:
                steps = len(self.stream.batches) * self.config.train.online_iters
            elif method.trains and method.optimises:
                steps = planned_steps(len(self._stage_data(stage, benchmark)), self._stage_train_config(stage, benchmark))[1]
            plans.append(StagePlan(stage.index, stage.name, max(0, steps - (resumed if stage.index == next_stage else 0)), method.trains))
        measured = next((r.eval_seconds for r in reversed(records) if not r.shared and r.eval_seconds > 0), None)
        self.progress.plan(plans, len(stages), measured)

    def _run_stage(
        self,
        method: Method,
        bundle: ClipBundle | None,
        benchmark: Benchmark,
        evaluator: Evaluator | PairEvaluator,
        stage: Stage,
        records: list[StageRecord],
    ) -> StageRecord:
        previous = records[-1]
        torch.manual_seed(stage_seed(self.config.seed, stage.index))
        trained_on = [benchmark.tasks[i].name for i in stage.task_indices]
        data = self._stage_data(stage, benchmark) if method.trains else None
        began = time.perf_counter()
        self.progress.begin_stage(stage.index)
        method.begin_task(stage, data)
        if data is not None:
            _check_method_state(method, "step_state_dict")
        if data is not None and self.stream is not None:
            resume, self.resume_step = self.resume_step, None
            train_stats = train_on_stream(
                method,
                bundle,
                self.stream,
                self._stage_train_config(stage, benchmark),
                self.config.stream,
                self.config.eval,
                stage_seed(self.config.seed, stage.index),
                self.console,
                self._stream_evaluation(evaluator, method),
                checkpoint=self._step_writer(stage, records),
                resume=resume,
                on_step=self.logbook.step_logger(stage.index, stage.name, _steps_done(records)),
                on_warning=self._warning_reporter(stage, trained_on, _steps_done(records)),
                progress=self.progress,
            )
        elif data is not None and method.optimises:
            resume, self.resume_step = self.resume_step, None
            train_stats = train_on(
                method,
                bundle,
                data,
                stage.name,
                self._stage_train_config(stage, benchmark),
                stage_seed(self.config.seed, stage.index),
                self.console,
                checkpoint=self._step_writer(stage, records),
                resume=resume,
                on_step=self.logbook.step_logger(stage.index, stage.name, _steps_done(records)),
                on_warning=self._warning_reporter(stage, trained_on, _steps_done(records)),
                progress=self.progress,
            )
        elif self.stream is not None:  # a method that does not train: the stream's points of its one model
            train_stats = {"steps": 0, "seconds": 0.0,
                           "stream": stream_without_training(self.stream, self.config.eval, self._stream_evaluation(evaluator, method))}
        else:
            train_stats = {"steps": 0, "seconds": 0.0}
        method.end_task(stage)
        if data is not None and not method.optimises:  # learnt in begin_task / end_task, without a step
            train_stats = {"steps": 0, "samples": len(data), "seconds": round(time.perf_counter() - began, 3)}
        fault_point("evaluation")
        per_class = None
        if method.trains:
            metrics, seconds = self._evaluate(evaluator, method, stage.name)
        else:  # the weights did not change: the previous evaluation holds exactly
            metrics, seconds, per_class = previous.metrics, 0.0, previous.per_class
        warnings = [_warning(w["kind"], w["message"], stage, trained_on) for w in train_stats.pop("warnings", [])]
        if method.trains:
            seen = list(dict.fromkeys([name for r in records[1:] for name in r.trained_on] + trained_on))
            report = self._warning_reporter(stage, trained_on, _steps_done(records))
            for task, message in routing_problems(metrics.get("routes", {}), seen):
                report("routing", message, int(train_stats.get("steps", 0)), task)
                warnings.append({**_warning("routing", message, stage, trained_on), "set": task})
        return StageRecord(stage.index, stage.name, trained_on, metrics, train_stats, seconds, warnings=warnings, per_class=per_class)

    def _stream_evaluation(self, evaluator: Evaluator, method: Method) -> Callable[[int], dict[str, Any]]:
        """What the stream calls at each of its points: the method's evaluation model scored by the setting on what
        the stream has shown so far (``score``, ``per_unit``), logged as a ``stream`` evaluation."""

        def evaluate(batch: int) -> dict[str, Any]:
            began = time.perf_counter()
            model = method.evaluation_model()
            was_training = model.training
            model.eval()
            with torch.no_grad():
                scores = self.setting.stream_metrics(evaluator, model, self.stream, batch)
            model.train(was_training)
            samples = sum(len(b) for b in self.stream.batches[: batch + 1])
            self.logbook.evaluation(
                stage=0, stage_name="stream", global_step=(batch + 1) * self.config.train.online_iters,
                metrics={"stream": {"seen": {self.setting.metric.headline: scores["score"], "samples": samples}}},
                seconds=round(time.perf_counter() - began, 3),
            )
            return scores

        return evaluate

    def _warning_reporter(self, stage: Stage, trained_on: list[str], offset: int) -> Callable[[str, str, int], None]:
        """What the training loop calls when it finds something wrong: one ``vlcl: warning:`` line on the console
        (stderr, also when the progress display is off) and a ``warning`` record in log.jsonl."""

        def report(kind: str, message: str, step: int, set_name: str | None = None) -> None:
            if distributed.current().is_main:
                line = f"vlcl: warning: {message}"
                if self.console.quiet:
                    print(line, file=sys.stderr, flush=True)
                else:
                    self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            self.logbook.warning(
                stage=stage.index, stage_name=stage.name, step=step, global_step=offset + step, kind=kind, message=message,
                set_name=set_name or _warning(kind, message, stage, trained_on)["set"],
            )

        return report

    def _step_writer(self, stage: Stage, records: list[StageRecord]):
        def write(step: int, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
            values = {**values, "records": [r.to_json() for r in records]}
            self.logbook.flush()
            write_step_checkpoint(self.checkpoints, stage.index, step, self.base, tensors, values)
            self.on_checkpoint()

        return write

    def _write(self, benchmark: Benchmark, stages: list[Stage], records: list[StageRecord], started: float) -> dict[str, Any]:
        results = assemble_results(
            config=config_to_dict(self.config),
            benchmark=benchmark,
            stages=stages,
            records=[r.to_json() for r in records],
            wall_seconds=round(time.perf_counter() - started, 3),
            versions=library_versions(),
            setting=self.setting,
        )
        write_results(self.run_dir, results)
        return results


def _model_note(method: Method) -> tuple[str, str] | None:
    """(name, reason) when the method's evaluation uses more than the model a stage checkpoint saves."""
    reason = method.evaluation_beyond_model()
    return (method.name, reason) if reason else None


def _warning(kind: str, message: str, stage: Stage, trained_on: list[str]) -> dict[str, Any]:
    """One entry of results.json ``warnings``: ``stage`` 1-based, ``set`` the task the stage trains (None for
    several)."""
    return {"kind": kind, "message": message, "stage": stage.index + 1, "set": trained_on[0] if len(trained_on) == 1 else None}


ROUTING_MIN_SHARE = 0.5
"""A trained task whose test images reach their own route (results' ``routes``: set -> route -> share, a route named
by the task it was learnt on) less often than this is warned about: its numbers then measure another task's
parameters, not what was learnt on it."""


def routing_problems(routes: dict[str, dict[str, float]], seen_tasks: list[str]) -> list[tuple[str, str]]:
    """(task, message) for every task of ``seen_tasks`` that a method routes (``routes`` holds its test set) whose
    own route received less than :data:`ROUTING_MIN_SHARE` of its test images."""
    problems = []
    for task in seen_tasks:
        shares = routes.get(task)
        if not shares or shares.get(task, 0.0) >= ROUTING_MIN_SHARE:
            continue
        top = max(shares, key=lambda route: shares[route])
        problems.append((task, (
            f"routing failed for '{task}': {shares.get(task, 0.0):.0%} of its test images went to its own route and "
            f"{shares[top]:.0%} to '{top}', so its scores measure other parameters than those learnt on it "
            f"(results.json routes)"
        )))
    return problems


def _steps_done(records: list[StageRecord]) -> int:
    """Optimiser steps taken by the stages recorded (the run's global step at their end)."""
    return sum(int(r.train.get("steps", 0)) for r in records)


def create_runner(config: RunConfig, run_dir: Path, console: Console | None = None, shared_eval: Path | None = None) -> ContinualRunner:
    """The runner of a config: one engine for every benchmark and kind of model."""
    return ContinualRunner(config, run_dir, console, shared_eval)


def library_versions() -> dict[str, str]:
    import transformers

    import vlcl

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "vlcl": vlcl.__version__,
    }
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    return versions
