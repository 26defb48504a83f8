"""Feature mode: CMCL's own setting - per-modality linear maps over a sequence of modality pairs.

Features are pre-extracted (by ImageBind, LanguageBind, CLIP... any encoder)
and stored per task in two files, ``train`` and ``test``, each a ``.npz`` or
``.safetensors`` file holding one 2-D array per modality named after it
(``text``, ``image``, ``audio``, ``depth``...); row i of the two arrays of a
pair is the i-th positive pair. What trains is one ``Linear(d_m, d)`` per
modality, identity-initialised with a zero bias (CMCL), on the one-directional
loss of CMCL:

    L = CE( (W_A x_A + b_A)(W_B x_B + b_B)^T / T , diagonal )          (T = 1)

Selected by ``data.benchmark: features`` with a ``data.features`` list of
pairs (see ``configs/features_cmcl.yaml``). Methods: ``cmcl`` (dual-sided
null-space projection, :mod:`vlcl.methods.cmcl`) and ``finetune`` (the same
maps, no projection). After every task each pair's test set is evaluated in
both directions (R@1/5/10, A->B as ``i2t``, B->A as ``t2i``; cosine
similarity, as every retrieval number in vlcl) and written to results.json
in the same layout as a CLIP run, so ``vlcl report`` and ``vlcl compare``
read it. A feature run takes seconds, so it keeps no checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from vlcl.config import RunConfig, config_to_dict
from vlcl.data.benchmark import Benchmark
from vlcl.data.feature_pairs import FeatureDataError, build_features
from vlcl.data.fingerprint import benchmark_fingerprint
from vlcl.data.registry import build_benchmark
from vlcl.engine.evaluate import mean_recall_at_1
from vlcl.engine.optim import build_optimizer, build_scheduler
from vlcl.engine.results import assemble_results, write_results
from vlcl.methods.base import ParameterGroup, Stage
from vlcl.methods.cmcl import CMCLOptions, DualNullSpace, RunningCovariance
from vlcl.metrics import retrieval_recall
from vlcl.models.maps import ModalityMaps, augmented, joint_weight, pair_loss
from vlcl.seeds import stage_seed

FEATURE_METHODS = ("cmcl", "finetune")


@dataclass
class FeaturePair:
    """One task of the ``features`` benchmark as the feature-mode loop reads it."""

    name: str
    modalities: tuple[str, str]
    train: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]


def pairs_of(benchmark: Benchmark) -> list[FeaturePair]:
    return [FeaturePair(t.name, t.train.modalities, t.train.arrays, t.test.arrays) for t in benchmark.tasks]


def load_pairs(config: RunConfig) -> list[FeaturePair]:
    """The modality pairs of ``data.features``, read and checked (:mod:`vlcl.data.feature_pairs`)."""
    return pairs_of(build_features(features=config.data.features))


def update_null_space(space: DualNullSpace, maps: ModalityMaps, pair: FeaturePair) -> None:
    """End of a task: both modalities' input covariances, and each one's partner-projected output covariance."""
    a, b = pair.modalities
    inputs = {m: augmented(pair.train[m].double()) for m in (a, b)}
    moments = {m: (x.t() @ x, len(x)) for m, x in inputs.items()}
    for m in (a, b):
        space.inputs.setdefault(m, RunningCovariance(inputs[m].shape[1])).add_second_moment(*moments[m])
    for m, partner in ((a, b), (b, a)):
        space.add_partner_outputs(m, joint_weight(maps.maps[partner]), *moments[partner])
    space.refresh()


def evaluate_pairs(maps: ModalityMaps, pairs: list[FeaturePair], ks: list[int]) -> dict[str, dict]:
    retrieval = {}
    with torch.no_grad():
        for pair in pairs:
            a, b = pair.modalities
            fa, fb = maps(a, pair.test[a]), maps(b, pair.test[b])
            recall = retrieval_recall(fa, fb, torch.arange(len(fb)), ks)
            recall["mean_R@1"] = mean_recall_at_1(recall)
            retrieval[pair.name] = recall
    return {"retrieval": retrieval, "alignment": {}, "zeroshot": {}}


class FeatureRunner:
    """Runs ``cmcl`` or ``finetune`` over a sequence of modality pairs into ``run_dir``."""

    def __init__(self, config: RunConfig, run_dir: Path, console: Console | None = None):
        if config.method.name not in FEATURE_METHODS:
            raise FeatureDataError(f"method '{config.method.name}' has no feature mode; available: {', '.join(FEATURE_METHODS)}")
        self.config = config
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        options = config.method.options()
        self.options = CMCLOptions(**options) if config.method.name == "cmcl" else None
        if self.options is None and options:
            raise FeatureDataError(f"method 'finetune' takes no options in feature mode, got {sorted(options)}")
        self.pairs: list[FeaturePair] | None = None
        self.notes: list[str] = []
        self.on_checkpoint: Callable[[], None] = lambda: None
        """Called once the results are written (the CLI discards a run that ``--overwrite`` replaced)."""

    def prepare(self, *, resume: bool = False) -> "FeatureRunner":
        """Read every feature file and check the batch size against every pair; writes nothing."""
        if resume:
            raise FeatureDataError(f"--resume {self.run_dir}: feature-mode runs keep no checkpoints (they take seconds); run again with --overwrite")
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.benchmark = build_benchmark(self.config.data, image_size=0)
        self.pairs = pairs_of(self.benchmark)
        batch = self.config.train.batch_size
        for pair in self.pairs:
            if len(pair.train[pair.modalities[0]]) < batch:
                raise FeatureDataError(
                    f"task '{pair.name}' has {len(pair.train[pair.modalities[0]])} training pairs, fewer than train.batch_size={batch}"
                )
        self.data_fingerprint = benchmark_fingerprint(self.benchmark)
        return self

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        cfg = self.config
        if self.pairs is None:
            self.prepare()
        pairs = self.pairs
        widths = {m: x.shape[1] for p in pairs for m, x in p.train.items()}
        torch.manual_seed(cfg.seed)
        maps = ModalityMaps(widths)
        space = DualNullSpace(self.options.input_threshold, self.options.output_threshold) if self.options else None
        stages = [Stage(i, p.name, (i,)) for i, p in enumerate(pairs)]
        records = [self._record(-1, "pretrained", [], evaluate_pairs(maps, pairs, cfg.eval.ks), {})]
        for stage, pair in zip(stages, pairs):
            stats = self.train_pair(maps, pair, space, seed=stage_seed(cfg.seed, stage.index))
            if space is not None:
                update_null_space(space, maps, pair)
            records.append(self._record(stage.index, stage.name, [pair.name], evaluate_pairs(maps, pairs, cfg.eval.ks), stats))
            self.console.print(
                f"{stage.name} ({'-'.join(pair.modalities)}): {stats['steps']} steps, loss {stats['final_loss']:.3f}"
            )
        results = assemble_results(
            config=config_to_dict(cfg),
            benchmark=self.benchmark,
            stages=stages,
            records=records,
            wall_seconds=round(time.perf_counter() - started, 3),
            versions={"torch": torch.__version__},
        )
        results["modality_pairs"] = {p.name: list(p.modalities) for p in pairs}
        write_results(self.run_dir, results)
        self.on_checkpoint()
        return results

    @staticmethod
    def _record(index: int, name: str, trained_on: list[str], metrics: dict, train: dict) -> dict[str, Any]:
        return {"index": index, "name": name, "trained_on": trained_on, "metrics": metrics, "train": train, "eval_seconds": 0.0}

    def train_pair(self, maps: ModalityMaps, pair: FeaturePair, space: DualNullSpace | None, seed: int) -> dict[str, Any]:
        train, (a, b) = self.config.train, pair.modalities
        n = len(pair.train[a])
        steps_per_epoch = n // train.batch_size
        if steps_per_epoch == 0:
            raise FeatureDataError(f"task '{pair.name}' has {n} training pairs, fewer than train.batch_size={train.batch_size}")
        total = train.epochs * steps_per_epoch
        if train.max_steps_per_task:
            total = min(total, train.max_steps_per_task)
        layers = {m: maps.maps[m] for m in dict.fromkeys((a, b))}
        optimizer = build_optimizer(
            [
                ParameterGroup([layer.weight for layer in layers.values()], "vision"),
                ParameterGroup([layer.bias for layer in layers.values()], "vision", weight_decay=False),
            ],
            train,
        )
        scheduler = build_scheduler(optimizer, total, train)
        generator = torch.Generator().manual_seed(seed)
        started, losses = time.perf_counter(), []
        while len(losses) < total:
            order = torch.randperm(n, generator=generator)
            for s in range(min(steps_per_epoch, total - len(losses))):
                idx = order[s * train.batch_size : (s + 1) * train.batch_size]
                loss = pair_loss(maps, pair.modalities, pair.train[a][idx], pair.train[b][idx])
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss at step {len(losses)} of task '{pair.name}' (try a lower train.lr)"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if train.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for layer in layers.values() for p in layer.parameters()], train.grad_clip)
                if space is not None:
                    self._step_projected(optimizer, layers, space)
                else:
                    optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
        tail = losses[-max(1, len(losses) // 10) :]
        return {
            "steps": len(losses),
            "seconds": round(time.perf_counter() - started, 3),
            "first_loss": losses[0],
            "final_loss": float(np.mean(tail)),
        }

    def _step_projected(self, optimizer: torch.optim.Optimizer, layers: dict[str, torch.nn.Linear], space: DualNullSpace) -> None:
        """DNS on [W | b] of each map: the gradient before AdamW (CMCL), or the whole step's change (project=update)."""
        if self.options.project == "gradient":
            for m, layer in layers.items():
                grad = torch.cat([_grad(layer.weight), _grad(layer.bias)[:, None]], dim=1)
                projected = space.project(m, grad, dual=True)
                layer.weight.grad, layer.bias.grad = projected[:, :-1].contiguous(), projected[:, -1].contiguous()
            optimizer.step()
            return
        before = {m: joint_weight(layer).detach().clone() for m, layer in layers.items()}
        optimizer.step()
        with torch.no_grad():
            for m, layer in layers.items():
                new = before[m] + space.project(m, joint_weight(layer) - before[m], dual=True)
                layer.weight.copy_(new[:, :-1])
                layer.bias.copy_(new[:, -1])


def _grad(param: torch.nn.Parameter) -> torch.Tensor:
    return param.grad if param.grad is not None else torch.zeros_like(param)
