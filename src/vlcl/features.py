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

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from vlcl.config import RunConfig, config_to_dict
from vlcl.engine.evaluate import mean_recall_at_1
from vlcl.engine.optim import build_optimizer, build_scheduler
from vlcl.engine.results import assemble_results, write_results
from vlcl.methods.base import ParameterGroup, Stage
from vlcl.methods.cmcl import CMCLOptions, DualNullSpace, RunningCovariance
from vlcl.metrics import retrieval_recall
from vlcl.seeds import stage_seed

FEATURE_METHODS = ("cmcl", "finetune")


class FeatureDataError(ValueError):
    """A feature file that cannot be used, named with what was expected."""


def load_feature_file(path: str | Path, modalities: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The named 2-D float arrays of a .npz or .safetensors file, with equal row counts."""
    path = Path(path)
    if not path.is_file():
        raise FeatureDataError(f"{path}: feature file not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: torch.from_numpy(np.asarray(archive[k])) for k in archive.files}
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            arrays = load_file(str(path))
        else:
            raise FeatureDataError(f"{path}: expected a .npz or .safetensors feature file")
    except FeatureDataError:
        raise
    except Exception as exc:  # a truncated or foreign file: say which one
        raise FeatureDataError(f"{path}: cannot read features ({type(exc).__name__}: {exc})") from None
    out = {}
    for m in modalities:
        if m not in arrays:
            raise FeatureDataError(f"{path}: no array '{m}'; found: {', '.join(sorted(arrays)) or 'none'}")
        x = arrays[m]
        if x.ndim != 2 or not x.dtype.is_floating_point:
            raise FeatureDataError(f"{path}: array '{m}' must be 2-D floating point [N, d], got {x.dtype} {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise FeatureDataError(f"{path}: array '{m}' has non-finite values")
        out[m] = x.float()
    rows = {m: len(x) for m, x in out.items()}
    if len(set(rows.values())) != 1:
        raise FeatureDataError(f"{path}: row counts differ between modalities {rows}; row i of each must be pair i")
    return out


@dataclass
class FeaturePair:
    name: str
    modalities: tuple[str, str]
    train: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]


def load_pairs(config: RunConfig) -> list[FeaturePair]:
    if not config.data.features:
        raise FeatureDataError("data.benchmark=features needs a data.features list of {name, modalities, train, test}")
    pairs, widths = [], {}
    for entry in config.data.features:
        mods = tuple(entry.modalities)
        pair = FeaturePair(entry.name, mods, load_feature_file(entry.train, mods), load_feature_file(entry.test, mods))
        for split, path in (("train", entry.train), ("test", entry.test)):
            for m, x in getattr(pair, split).items():
                if widths.setdefault(m, x.shape[1]) != x.shape[1]:
                    raise FeatureDataError(f"{path}: modality '{m}' has width {x.shape[1]}, earlier files gave {widths[m]}")
        pairs.append(pair)
    if len(set(widths.values())) > 1:
        raise FeatureDataError(
            f"data.features: modalities must share one width (CMCL's maps act inside one binder's joint space), got {widths}"
        )
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise FeatureDataError(f"data.features: task names must be unique, got {names}")
    return pairs


class ModalityMaps(torch.nn.Module):
    """One Linear(d_m, d_m) per modality, identity weights and zero bias (CMCL's initialisation)."""

    def __init__(self, widths: dict[str, int]):
        super().__init__()
        self.maps = torch.nn.ModuleDict()
        for m, d in widths.items():
            layer = torch.nn.Linear(d, d)
            with torch.no_grad():
                layer.weight.copy_(torch.eye(d))
                layer.bias.zero_()
            self.maps[m] = layer

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.maps[modality](x)


def pair_loss(
    maps: ModalityMaps, pair: tuple[str, str], xa: torch.Tensor, xb: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """CMCL's loss: cross-entropy of A->B over the raw products of the mapped features."""
    a, b = pair
    logits = maps(a, xa) @ maps(b, xb).t() / temperature
    return F.cross_entropy(logits, torch.arange(len(xa), device=xa.device))


def augmented(x: torch.Tensor) -> torch.Tensor:
    """[x, 1]: the bias is the weight of a constant input, so the projection covers it too."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)


def joint_weight(layer: torch.nn.Linear) -> torch.Tensor:
    """[W | b], the map as one matrix acting on [x, 1]."""
    return torch.cat([layer.weight, layer.bias[:, None]], dim=1)


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
        self.pairs = load_pairs(self.config)
        batch = self.config.train.batch_size
        for pair in self.pairs:
            if len(pair.train[pair.modalities[0]]) < batch:
                raise FeatureDataError(
                    f"task '{pair.name}' has {len(pair.train[pair.modalities[0]])} training pairs, fewer than train.batch_size={batch}"
                )
        self.data_fingerprint = hashlib.sha256(
            b"".join(np.ascontiguousarray(x.numpy()).tobytes() for p in self.pairs for x in [*p.train.values(), *p.test.values()])
        ).hexdigest()
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
        benchmark = SimpleNamespace(name="features", task_names=[p.name for p in pairs], heldout_retrieval=[], zeroshot=[])
        results = assemble_results(
            config=config_to_dict(cfg),
            benchmark=benchmark,
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
