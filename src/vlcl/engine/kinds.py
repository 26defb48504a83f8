"""The kinds of model the engine trains, behind one interface: load (with the benchmark), evaluate, save.

``clip``: a Hugging Face CLIPModel with its tokenizer and preprocessing, on
image-caption (or classification) benchmarks; checkpoints hold a plain
Hugging Face directory. ``feature_maps``: one linear map per modality over
pre-extracted features (CMCL's modality pairs, the ``features`` benchmark);
checkpoints hold the maps as safetensors. The loop, the optimiser,
checkpoints, resume and results are the same for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from vlcl.config import EvalConfig, RunConfig
from vlcl.data.benchmark import Benchmark
from vlcl.data.registry import build_benchmark
from vlcl.data.validation import validation_split
from vlcl.engine.evaluate import Evaluator, PairEvaluator
from vlcl.models.encode import encode_images, encode_texts
from vlcl.models.loading import ClipBundle, ModelLoadError, load_clip, save_clip
from vlcl.models.maps import MAPS_CONFIG, ModalityMaps, load_maps, save_maps


class ModelKind(Protocol):
    bundle: ClipBundle | None
    """Tokenizer and preprocessing of a CLIP model (None for feature maps): what batches and methods encode with."""

    def load(self, config: RunConfig, checkpoint: Path | None, device: torch.device) -> tuple[torch.nn.Module, Benchmark]: ...

    def evaluator(self, benchmark: Benchmark, config: EvalConfig) -> Evaluator | PairEvaluator: ...

    def save(self, model: torch.nn.Module, directory: Path) -> None: ...


class ClipModels:
    """A CLIPModel: the checkpoint decides the image size and statistics the benchmark is read with."""

    bundle: ClipBundle | None = None

    def load(self, config: RunConfig, checkpoint: Path | None, device: torch.device) -> tuple[torch.nn.Module, Benchmark]:
        path = str(checkpoint / "model") if checkpoint else config.model.path
        self.bundle = load_clip(path, local_files_only=config.model.local_files_only if not checkpoint else True)
        self.bundle.model.to(device)
        benchmark = build_benchmark(config.data, image_size=self.bundle.preprocess.image_size, preprocess=self.bundle.preprocess)
        benchmark = with_validation(benchmark, config)
        probe_features(self.bundle, benchmark)
        return self.bundle.model, benchmark

    def evaluator(self, benchmark: Benchmark, config: EvalConfig) -> Evaluator:
        bundle = self.bundle
        return Evaluator(benchmark, bundle.tokenizer, bundle.preprocess, bundle.context_length, config)

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        save_clip(ClipBundle(model, self.bundle.tokenizer, self.bundle.preprocess, self.bundle.source), directory)


class FeatureMaps:
    """One identity-initialised linear map per modality (CMCL); the benchmark decides the modalities and widths."""

    bundle: ClipBundle | None = None

    def load(self, config: RunConfig, checkpoint: Path | None, device: torch.device) -> tuple[torch.nn.Module, Benchmark]:
        benchmark = with_validation(build_benchmark(config.data, image_size=0), config)
        widths = benchmark.data_report["widths"]
        if checkpoint is None:
            return ModalityMaps(widths).to(device), benchmark
        try:
            maps = load_maps(checkpoint / "model")
        except Exception as exc:  # a missing, truncated or foreign file: name the checkpoint
            raise ModelLoadError(f"{checkpoint / 'model'}: cannot load the modality maps ({exc.__class__.__name__}: {exc})") from None
        saved = {m: layer.in_features for m, layer in maps.maps.items()}
        if saved != widths:
            raise ModelLoadError(f"{checkpoint / 'model' / MAPS_CONFIG}: maps of widths {saved}, the data has {widths}")
        return maps.to(device), benchmark

    def evaluator(self, benchmark: Benchmark, config: EvalConfig) -> PairEvaluator:
        return PairEvaluator(benchmark, config)

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        save_maps(model, directory)


def with_validation(benchmark: Benchmark, config: RunConfig) -> Benchmark:
    """With ``data.validation_fraction``: every task evaluated on a split carved from its training data, no test data."""
    if config.data.validation_fraction is None:
        return benchmark
    return validation_split(benchmark, config.data.validation_fraction, config.data.seed)


def models_of_kind(kind: str) -> ModelKind:
    return {"clip": ClipModels, "feature_maps": FeatureMaps}[kind]()


def probe_features(bundle: ClipBundle, benchmark: Benchmark, count: int = 4) -> None:
    """Encode a few images and captions of the first task: a model whose weights are finite but whose features
    overflow to inf or NaN fails here, before the run directory is touched, not at the first evaluation."""
    test = benchmark.tasks[0].test
    texts = benchmark.texts_by_set().get(benchmark.tasks[0].name, [])[:count] or ["a photo"]
    model = bundle.model
    was_training = model.training
    model.eval()
    images = encode_images(model, bundle.preprocess.normalize_uint8(test.images[:count]))
    captions = encode_texts(model, bundle.tokenizer, texts)
    model.train(was_training)
    for what, features in (("image", images), ("text", captions)):
        if not bool(torch.isfinite(features).all()):
            raise ModelLoadError(
                f"{bundle.source}: the model's {what} features hold NaN or inf on {test.name} (its weights overflow); nothing would score"
            )
