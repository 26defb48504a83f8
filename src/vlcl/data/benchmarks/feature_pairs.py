"""CMCL's setting as a benchmark: a sequence of modality pairs over pre-extracted features (``features``).

Each task is a modality pair (A, B) - text-image, text-audio, image-depth...
- with a ``train`` and a ``test`` file: a ``.npz`` or ``.safetensors`` file
holding one 2-D float array per modality, named after it; row i of A's and B's
arrays is the i-th positive pair. The features come from any encoder
(ImageBind, LanguageBind, CLIP...); every modality must share one width (the
binder's joint space). Listed by ``vlcl benchmarks``; its model kind is
``feature_maps``: the engine trains one linear map per modality
(:mod:`vlcl.models.maps`, :mod:`vlcl.engine.kinds`) with ``finetune`` or
``cmcl``, evaluates every pair in both directions after each stage
(``i2t`` = A->B, ``t2i`` = B->A), and checkpoints and resumes as for CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from vlcl.data.benchmark import Benchmark, Task
from vlcl.data.images import DataError
from vlcl.data.registry import register_benchmark


class FeatureDataError(DataError):
    """A feature file that cannot be used, named with what was expected."""


@dataclass
class ModalityPairs:
    """Positive pairs of two modalities: row i of ``arrays[a]`` and ``arrays[b]`` belong together."""

    setting: ClassVar[str] = "modality_pairs"
    """Training and test data of the modality-pair setting (vlcl.settings)."""
    name: str
    modalities: tuple[str, str]
    arrays: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.arrays[self.modalities[0]])


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
            from safetensors.torch import load

            arrays = load(path.read_bytes())
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


def _field(entry: Any, key: str) -> Any:
    return entry[key] if isinstance(entry, dict) else getattr(entry, key)


@register_benchmark(
    "features", "CMCL's modality pairs: pre-extracted features, one linear map per modality (data.features)", model="feature_maps"
)
def build_features(*, features: list | None = None, **_: Any) -> Benchmark:
    """One task per entry of ``data.features`` ({name, modalities, train, test}), in order."""
    if not features:
        raise FeatureDataError("data.benchmark=features needs a data.features list of {name, modalities, train, test}")
    tasks, widths = [], {}
    for entry in features:
        name, modalities = _field(entry, "name"), tuple(_field(entry, "modalities"))
        splits = {split: load_feature_file(_field(entry, split), modalities) for split in ("train", "test")}
        for split, arrays in splits.items():
            for m, x in arrays.items():
                if widths.setdefault(m, x.shape[1]) != x.shape[1]:
                    path = _field(entry, split)
                    raise FeatureDataError(f"{path}: modality '{m}' has width {x.shape[1]}, earlier files gave {widths[m]}")
        tasks.append(Task(name, ModalityPairs(name, modalities, splits["train"]), ModalityPairs(name, modalities, splits["test"])))
    if len(set(widths.values())) > 1:
        raise FeatureDataError(
            f"data.features: modalities must share one width (CMCL's maps act inside one binder's joint space), got {widths}"
        )
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise FeatureDataError(f"data.features: task names must be unique, got {names}")
    report = {"modality_pairs": {t.name: list(t.train.modalities) for t in tasks}, "widths": widths}
    return Benchmark("features", tasks, data_report=report)
