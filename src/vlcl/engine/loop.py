"""The continual loop: stages of training, each followed by evaluation and a checkpoint.

The engine knows nothing about any particular method: it asks the method for
its stages, its parameters, its loss and its hooks (see
:class:`vlcl.methods.Method`). Everything it writes goes into one run
directory, atomically; ``resume`` continues after the last complete stage and
reproduces the uninterrupted run exactly on CPU because every stage reseeds
from (seed, stage index) and data order comes from its own generator.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from vlcl.config import RunConfig, config_to_dict
from vlcl.data.benchmark import Benchmark, CaptionedImages
from vlcl.data.registry import build_benchmark
from vlcl.engine.checkpoint import (
    latest_checkpoint,
    read_stage_checkpoint,
    write_stage_checkpoint,
)
from vlcl.engine.evaluate import Evaluator
from vlcl.engine.results import assemble_results, write_results
from vlcl.engine.train import progress_bar, train_on
from vlcl.methods import Method, RunContext, Stage, create_method
from vlcl.models.loading import ClipBundle, load_clip


@dataclass
class StageRecord:
    index: int
    name: str
    trained_on: list[str]
    metrics: dict[str, Any]
    train: dict[str, Any]
    eval_seconds: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def stage_seed(seed: int, stage_index: int) -> int:
    return seed * 1000 + stage_index + 1


def concatenate(datasets: list[CaptionedImages]) -> CaptionedImages:
    if len(datasets) == 1:
        return datasets[0]
    return CaptionedImages(
        "+".join(d.name for d in datasets),
        np.concatenate([d.images for d in datasets]),
        [caps for d in datasets for caps in d.captions],
    )


class ContinualRunner:
    """Runs one method through one benchmark into ``run_dir``."""

    def __init__(self, config: RunConfig, run_dir: Path, console: Console | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        self.checkpoints = self.run_dir / "checkpoints"

    # -- set-up ----------------------------------------------------------------------
    def _prepare(self) -> tuple[Method, ClipBundle, Benchmark, list[StageRecord], int]:
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        method = create_method(cfg.method.name, cfg.method.options())
        latest = latest_checkpoint(self.checkpoints) if self.checkpoints.exists() else None
        model_path = str(latest / "model") if latest else cfg.model.path
        bundle = load_clip(model_path, local_files_only=cfg.model.local_files_only if not latest else True)
        benchmark = build_benchmark(cfg.data, image_size=bundle.preprocess.image_size)
        context = RunContext(task_names=benchmark.task_names, seed=cfg.seed, bundle=bundle)
        torch.manual_seed(stage_seed(cfg.seed, -1))
        method.setup(bundle.model, context)
        records: list[StageRecord] = []
        next_stage = 0
        if latest:
            state, progress = read_stage_checkpoint(latest)
            method.load_state_dict(state)
            records = [StageRecord(**r) for r in progress["stages"]]
            next_stage = progress["next_stage"]
            self.console.print(f"[bold]resuming[/] {self.run_dir} from {latest.name} (next stage {next_stage})")
        return method, bundle, benchmark, records, next_stage

    # -- the loop --------------------------------------------------------------------
    def _evaluate(self, evaluator: Evaluator, method: Method, label: str) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        sets = len(evaluator.benchmark.retrieval_sets()) + len(evaluator.benchmark.zeroshot)
        with progress_bar(self.console) as bar:
            task = bar.add_task(f"eval {label}", total=sets, info="")
            metrics = evaluator.evaluate(method.evaluation_model(), lambda name: bar.update(task, advance=1, info=name))
        return metrics, round(time.perf_counter() - started, 3)

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        method, bundle, benchmark, records, next_stage = self._prepare()
        evaluator = Evaluator(benchmark, bundle.tokenizer, bundle.preprocess, bundle.context_length, self.config.eval)
        stages = method.stages(benchmark.task_names)
        if not records:
            metrics, seconds = self._evaluate(evaluator, method, "pretrained")
            records.append(StageRecord(-1, "pretrained", [], metrics, {}, seconds))
        for stage in stages[next_stage:]:
            records.append(self._run_stage(method, bundle, benchmark, evaluator, stage, records[-1]))
            progress = {"next_stage": stage.index + 1, "stages": [r.to_json() for r in records]}
            write_stage_checkpoint(
                self.checkpoints, stage.index, ClipBundle(method.evaluation_model(), bundle.tokenizer, bundle.preprocess, bundle.source),
                method.state_dict(), progress,
            )
            self._write(benchmark, stages, records, started)
        return self._write(benchmark, stages, records, started)

    def _run_stage(self, method: Method, bundle: ClipBundle, benchmark: Benchmark, evaluator: Evaluator, stage: Stage, previous: StageRecord) -> StageRecord:
        torch.manual_seed(stage_seed(self.config.seed, stage.index))
        trained_on = [benchmark.tasks[i].name for i in stage.task_indices]
        data = concatenate([benchmark.tasks[i].train for i in stage.task_indices]) if method.trains else None
        method.begin_task(stage, data)
        if data is not None:
            train_stats = train_on(method, bundle, data, stage.name, self.config.train, stage_seed(self.config.seed, stage.index), self.console)
        else:
            train_stats = {"steps": 0, "seconds": 0.0}
        method.end_task(stage)
        if method.trains:
            metrics, seconds = self._evaluate(evaluator, method, stage.name)
        else:  # the weights did not change: the previous evaluation holds exactly
            metrics, seconds = previous.metrics, 0.0
        return StageRecord(stage.index, stage.name, trained_on, metrics, train_stats, seconds)

    def _write(self, benchmark: Benchmark, stages: list[Stage], records: list[StageRecord], started: float) -> dict[str, Any]:
        results = assemble_results(
            config=config_to_dict(self.config),
            benchmark=benchmark,
            stages=stages,
            records=[r.to_json() for r in records],
            wall_seconds=round(time.perf_counter() - started, 3),
            versions=library_versions(),
        )
        write_results(self.run_dir, results)
        return results


def create_runner(config: RunConfig, run_dir: Path, console: Console | None = None):
    """The runner for a config: CLIP continual learning, or feature mode (``data.benchmark: features``)."""
    if config.data.benchmark == "features":
        from vlcl.features import FeatureRunner

        return FeatureRunner(config, run_dir, console)
    return ContinualRunner(config, run_dir, console)


def library_versions() -> dict[str, str]:
    import transformers

    import vlcl

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__, "vlcl": vlcl.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    return versions
