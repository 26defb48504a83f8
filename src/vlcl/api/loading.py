"""A run's model loaded for inference (:func:`load_run`, :class:`LoadedRun`), as its evaluation scored it after a
given stage; part of the Python API, re-exported by :mod:`vlcl.api` (see there and docs/api.md).

A method whose evaluation is more than the saved CLIP weights - one that routes each evaluated set (``moe_adapters``),
scores classes with its own head (``rail``) or evaluates a model with parts a plain CLIP cannot hold (``sit`` with
``tuning=adapter``: its bottleneck adapters) - is rebuilt from its checkpointed state, as ``--resume`` does, and
its hooks and parts take part exactly as in the run's evaluation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vlcl.config import RunConfig, build_config, read_yaml
from vlcl.data.benchmark import ClassificationSet, RetrievalSet
from vlcl.engine.rundir import RunDirError
from vlcl.methods import Method, RunContext, create_method, method_class
from vlcl.methods.base import overridden_evaluation_hooks
from vlcl.metrics import zeroshot_classifier

ZERO_SHOT_CHUNK = 4096
"""Images per block of class scores, as :func:`zeroshot_accuracy` computes them (the same numbers, bit for bit)."""


# -- loading a run ------------------------------------------------------------------------------------------------
def _overrides_hook(cls: type[Method], hook: str) -> bool:
    return getattr(cls, hook) is not getattr(Method, hook)


class LoadedRun:
    """The model of a run after one stage, as the run's evaluation scored it (see :func:`load_run`).

    Features are L2-normalised float32 [N, d] tensors on the CPU, computed in batches of the run's
    ``eval.batch_size`` exactly as the evaluator computes them, so the metrics of :mod:`vlcl.metrics` on them give
    the numbers in results.json.
    """

    def __init__(
        self,
        run_dir: Path,
        config: RunConfig,
        stage: int,
        stage_name: str,
        stages: list[str],
        metrics: dict[str, Any],
        bundle: Any,
        method: Method | None,
        device: torch.device,
    ):
        self.run_dir = run_dir
        self.config = config
        self.stage = stage
        """The stage's index: -1 for ``pretrained``, then 0, 1, ... (``stages[i].index`` in results.json)."""
        self.stage_name = stage_name
        self.stages = stages
        """Names of the stages that can be loaded: ``pretrained``, then every complete stage checkpoint's."""
        self.metrics = metrics
        """What the run's evaluation recorded for this stage (results.json ``stages[i].metrics``)."""
        self.tokenizer = bundle.tokenizer
        self.preprocess = bundle.preprocess
        self.context_length = bundle.context_length
        self.method = method
        """The method rebuilt from its checkpoint when its evaluation uses its hooks (routes, its own class scores) or
        more than the saved CLIP weights (``evaluation_beyond_model()``); None when those weights are all the
        evaluation used."""
        self.model = method.evaluation_model() if method is not None else bundle.model
        """The CLIPModel the evaluation encoded with (in eval mode)."""
        self.model.eval()
        self.device = device
        self.batch_size = config.eval.batch_size
        self._routes = method is not None and _overrides_hook(type(method), "evaluation_route")
        self._routing = False
        self._benchmark = None

    def __repr__(self) -> str:
        return f"LoadedRun({str(self.run_dir)!r}, stage={self.stage} '{self.stage_name}', method={self.config.method.name})"

    @property
    def method_name(self) -> str:
        return self.config.method.name

    @property
    def routes(self) -> bool:
        """True when the method evaluates each set through a route it picks from the set's images (MoE-Adapters'
        DDAS): texts are then encoded inside :meth:`route`."""
        return self._routes

    # -- images -------------------------------------------------------------------------------------------------
    def _uint8_images(self, images: Any) -> Any:
        """uint8 [N, S, S, 3] at the model's size: an array or an image store as they are, other inputs decoded
        and resized + centre-cropped with the checkpoint's preprocessing (as the data pipeline reads image files)."""
        from vlcl.data.images import ImageStore

        size = self.preprocess.image_size
        if isinstance(images, ImageStore):
            return images
        if isinstance(images, torch.Tensor):
            if images.dtype != torch.uint8:
                raise TypeError(
                    f"images: a {images.dtype} tensor is taken as preprocessed pixel values [N, 3, {size}, {size}]; pass uint8 "
                    "[N, H, W, 3] images here"
                )
            images = images.cpu().numpy()
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
                raise TypeError(f"images: expected uint8 [N, H, W, 3] (or one [H, W, 3]), got {images.dtype} {tuple(images.shape)}")
            if images.ndim == 3:
                images = images[None]
            if images.shape[1:3] == (size, size):
                return images
            return np.stack([self._one_image(Image.fromarray(a)) for a in images]) if len(images) else images
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        if not isinstance(images, (list, tuple)):
            raise TypeError(f"images: expected PIL images, paths, a uint8 array or a pixel tensor, got {type(images).__name__}")
        if not images:
            return np.zeros((0, size, size, 3), dtype=np.uint8)
        return np.stack([self._one_image(image) for image in images])

    def _one_image(self, image: Any) -> np.ndarray:
        from vlcl.data.images import FileImage, ImageStore

        if isinstance(image, (str, Path)):
            return ImageStore([FileImage(Path(image))], self.preprocess, workers=0, max_pixels=self.config.data.max_image_pixels)[0]
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise TypeError(f"images: expected uint8 [H, W, 3] arrays, got {image.dtype} {tuple(image.shape)}")
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise TypeError(f"images: expected a PIL image, a path or a uint8 [H, W, 3] array, got {type(image).__name__}")
        return np.asarray(self.preprocess._resize_and_crop(image), dtype=np.uint8)

    def _pixel_features(self, pixels: torch.Tensor) -> torch.Tensor:
        from vlcl.models.encode import encode_images

        size = self.preprocess.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise TypeError(f"pixel values: expected [N, 3, {size}, {size}], got {tuple(pixels.shape)}")
        return encode_images(self.model, pixels.float(), self.batch_size)

    def _image_features(self, images: Any) -> torch.Tensor:
        """What the evaluator's ``_images`` computes: per batch of ``eval.batch_size``, normalise then encode."""
        from vlcl.models.encode import encode_images

        chunks = [torch.zeros(0, int(self.model.config.projection_dim))]
        for start in range(0, len(images), self.batch_size):
            pixels = self.preprocess.normalize_uint8(images[start : start + self.batch_size])
            chunks.append(encode_images(self.model, pixels, self.batch_size))
        return torch.cat(chunks)

    def encode_images(self, images: Any) -> torch.Tensor:
        """Unit-norm image features [N, d]. ``images``: PIL images, image paths, uint8 [N, H, W, 3] arrays (any size:
        resized and centre-cropped with the checkpoint's preprocessing), or a float tensor of preprocessed pixel values
        [N, 3, S, S]. A routing method picks the route from these images, as its evaluation does for a set (unless
        inside :meth:`route`)."""
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            if self._routes and not self._routing:
                raise ValueError(
                    f"method '{self.method_name}' picks its route from uint8 images (evaluation_route); pass images (PIL, "
                    "paths or uint8 arrays), not preprocessed pixel values"
                )
            return self._pixel_features(images)
        array = self._uint8_images(images)
        with self._routed(array):
            return self._image_features(array)

    @contextmanager
    def route(self, images: Any, set_name: str = "api") -> Iterator[dict[str, float] | None]:
        """Encode inside the route the method picks for ``images`` (the images of one evaluated set), as the run's
        evaluation does around each set; yields the share of the images per route (None for a method that routes
        nothing, for which this changes nothing)."""
        if not self._routes:
            yield None
            return
        if self._routing:
            raise ValueError("route(): already inside a route; one set at a time")
        array = self._uint8_images(images)
        with self.method.evaluation_route(set_name, array) as shares:
            self._routing = True
            try:
                yield shares
            finally:
                self._routing = False

    def _routed(self, images: Any):
        return self.route(images) if self._routes and not self._routing else nullcontext()

    def _need_route(self, what: str) -> None:
        if self._routes and not self._routing:
            raise ValueError(
                f"method '{self.method_name}' evaluates each set through a route it picks from the set's images "
                f"(evaluation_route); encode {what} inside `with run.route(images):`, with the images of the set they belong to"
            )

    # -- texts --------------------------------------------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text features [N, d] of ``texts`` (tokenised together and encoded in batches, as the evaluator
        encodes a set's captions). For a routing method, only inside :meth:`route`."""
        from vlcl.models.encode import encode_token_batches, tokenize

        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts: expected a list of strings")
        self._need_route("texts")
        if not texts:
            return torch.zeros(0, int(self.model.config.projection_dim))
        ids, mask = tokenize(self.tokenizer, texts, self.context_length)
        return encode_token_batches(self.model, ids, mask, self.batch_size)

    def class_embeddings(self, class_names: Sequence[str], templates: Sequence[str] = ("a photo of a {}.",)) -> torch.Tensor:
        """[C, d] unit-norm class embeddings: each class's prompts (every template filled with its name) encoded and
        averaged, CLIP's prompt ensemble, as the evaluator builds a zero-shot classifier."""
        prompts = _prompts(class_names, templates)
        self._need_route("class prompts")
        features = self.encode_texts([p for per_class in prompts for p in per_class])
        return zeroshot_classifier(features.view(len(prompts), len(prompts[0]), -1))

    def classify(self, images: Any, class_names: Sequence[str], templates: Sequence[str] = ("a photo of a {}.",)) -> torch.Tensor:
        """[N, C] class scores of ``images`` as the run's evaluation scores a classification set: cosine similarity to
        the class embeddings, or the method's own scores (RAIL's regression fused with zero-shot), under the route the
        method picks from the images. ``argmax(1)`` is the prediction; :func:`logit_accuracy` of the scores and the
        labels is the top-1 / top-5 / mean per-class recall of results.json."""
        prompts = _prompts(class_names, templates)
        array = None if isinstance(images, torch.Tensor) and images.is_floating_point() else self._uint8_images(images)
        with self._routed(array) if array is not None else nullcontext():
            features = self.encode_images(array if array is not None else images)
            classifier = self.class_embeddings(class_names, templates)
            logits = None
            if self.method is not None:
                keys = [tuple(p) for p in prompts]
                logits = self.method.classification_logits(features, classifier, keys)
        if logits is None:
            unit = F.normalize(features.float(), dim=-1)
            weights = classifier.float()
            logits = torch.cat([unit[s : s + ZERO_SHOT_CHUNK] @ weights.t() for s in range(0, len(unit), ZERO_SHOT_CHUNK)] or [unit @ weights.t()])
        return logits.detach().float().cpu()

    # -- the run's own data -------------------------------------------------------------------------------------
    def benchmark(self):
        """The run's benchmark, built from its config as the run built it (the embedded world is generated again;
        data read from ``data.root`` must still be there). Built once."""
        if self._benchmark is None:
            from vlcl.data.registry import build_benchmark
            from vlcl.engine.kinds import with_validation

            data = self.config.data
            self._benchmark = with_validation(
                build_benchmark(data, image_size=self.preprocess.image_size, preprocess=self.preprocess), self.config
            )
        return self._benchmark

    def data_set(self, name: str) -> RetrievalSet | ClassificationSet:
        """One of the sets the run evaluated: a task's test set (or validation split) or a held-out set.
        A :class:`~vlcl.data.benchmark.RetrievalSet` has ``images``, ``captions``, ``text_to_image``; a
        :class:`~vlcl.data.benchmark.ClassificationSet` ``images``, ``labels``, ``classnames``, ``templates``."""
        benchmark = self.benchmark()
        sets = {s.name: s for s in [*benchmark.retrieval_sets(), *benchmark.zeroshot]}
        if name not in sets:
            raise KeyError(f"'{name}' is not a set this run evaluated; its sets: {', '.join(sets)}")
        return sets[name]

    def evaluate(self, *, per_class: bool = False) -> dict[str, Any]:
        """Every metric of the stage, recomputed by the run's own evaluator on the run's own data: equal to
        :attr:`metrics` (results.json ``stages[i].metrics``); ``per_class=True`` adds ``per_class`` (each
        classification set's classes, support, top-1 and confusion matrix: results.json ``stages[i].per_class``)."""
        from vlcl.engine.evaluate import Evaluator

        evaluator = Evaluator(self.benchmark(), self.tokenizer, self.preprocess, self.context_length, self.config.eval)
        metrics = evaluator.evaluate(self.model, hooks=self.method)
        return metrics if per_class else {kind: values for kind, values in metrics.items() if kind != "per_class"}


def _prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    if isinstance(class_names, str) or isinstance(templates, str):
        raise TypeError("class_names and templates: expected lists of strings, e.g. ['cat', 'dog'] and ['a photo of a {}.']")
    names, templates = list(class_names), list(templates)
    if not names or not templates:
        raise ValueError("classify: need at least one class name and one template")
    missing = next((t for t in templates if "{}" not in t), None)
    if missing is not None:
        raise ValueError(f"template {missing!r} has no '{{}}' for the class name")
    return [[t.format(c) for t in templates] for c in names]


def _stage_checkpoints(checkpoints: Path) -> dict[int, Path]:
    """The complete stage checkpoints of a run, by stage index."""
    from vlcl.engine.checkpoint import COMPLETE

    if not checkpoints.is_dir():
        return {}
    return {
        int(p.name.split("_")[1]): p
        for p in checkpoints.iterdir()
        if p.is_dir() and re.fullmatch(r"stage_\d{2,}", p.name) and (p / COMPLETE).is_file()
    }


def _newest(checkpoints: Path, complete: dict[int, Path]) -> Path | None:
    """The run's newest complete stage checkpoint: the one ``latest.json`` names (as ``--resume`` takes it), the
    newest complete one listed when there is no ``latest.json``."""
    from vlcl.engine.checkpoint import latest_checkpoint

    named = latest_checkpoint(checkpoints)
    if named is not None:
        return named
    return complete[max(complete)] if complete else None


def _records(checkpoint: Path) -> list[dict[str, Any]]:
    from vlcl.engine.checkpoint import CheckpointError, read_json_file

    path = checkpoint / "progress.json"
    progress = read_json_file(path, "progress record", CheckpointError)
    stages = progress.get("stages") if isinstance(progress, dict) else None
    if not isinstance(stages, list) or not all(isinstance(r, dict) and "index" in r and "name" in r for r in stages):
        raise CheckpointError(f"{path}: expected a JSON object with the run's 'stages'")
    return stages


def _task_names(run_dir: Path, config: RunConfig, load_benchmark) -> list[str]:
    """The run's tasks in order: ``data.tasks``, else results.json's ``tasks``, else the benchmark's own order."""
    if config.data.tasks is not None:
        return list(config.data.tasks)
    try:
        tasks = json.loads((run_dir / "results.json").read_text(encoding="utf-8")).get("tasks")
        if isinstance(tasks, list) and all(isinstance(t, str) for t in tasks):
            return tasks
    except (OSError, ValueError, AttributeError):
        pass
    return load_benchmark().task_names


def _device(config: RunConfig, device: str | torch.device | None) -> torch.device:
    wanted = str(device) if device is not None else config.device
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={wanted} but CUDA is not available here; use device='cpu'")
    return torch.device(wanted)


def read_run_config(path: Path) -> RunConfig:
    """The config of the run in ``path``; :class:`RunDirError` in one line when ``path`` is not a run directory."""
    if not path.exists():
        raise RunDirError(f"{path}: run directory not found")
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory, expected a vlcl run directory")
    if not (path / "config.yaml").is_file():
        raise RunDirError(f"{path}: not a vlcl run directory (no config.yaml)")
    return build_config(read_yaml(path / "config.yaml"), str(path / "config.yaml"))


def load_run(run_dir: str | Path, stage: int | str | None = None, *, device: str | torch.device | None = None) -> LoadedRun:
    """The model of the run in ``run_dir`` after ``stage``, as the run's evaluation scored it.

    ``stage``: None (the newest complete stage), a stage's name (a task's name; ``"pretrained"``: the model before
    any training, as the run evaluated it first) or its index as in results.json (``-1`` = pretrained, ``0`` = the
    first stage...). ``device``: where to compute (default: the run's ``device``, ``auto`` = CUDA when available).

    A stage is read from ``checkpoints/stage_XX/``: ``model/`` holds the evaluated CLIP weights. A method whose
    evaluation also used its hooks - ``evaluation_route`` (``moe_adapters``: DDAS picks a task's router or the
    frozen model per evaluated set) or ``classification_logits`` (``rail``: its regression head) - is rebuilt
    there as ``--resume`` rebuilds it (``setup`` on those weights, then ``load_state_dict`` of the checkpoint's
    state), and its hooks take part in :meth:`LoadedRun.encode_images`, :meth:`~LoadedRun.classify` and
    :meth:`~LoadedRun.route` as they did in the evaluation. So is a method whose ``evaluation_beyond_model()``
    (with the run's options) is not None, e.g. ``sit`` with ``tuning=adapter``: :attr:`LoadedRun.model` is then its
    ``evaluation_model()``, the saved CLIP with the method's adapters in it. Such a method must be registered in this process
    (one from your own code: :func:`register_method` first). Problems raise
    :class:`~vlcl.engine.rundir.RunDirError` (or a checkpoint / model error) with one line naming the path.
    """
    from vlcl.data.registry import benchmark_model_kind
    from vlcl.methods import UnknownMethodError
    from vlcl.models.loading import load_clip

    path = Path(run_dir)
    config = read_run_config(path)
    if benchmark_model_kind(config.data.benchmark) != "clip":
        raise RunDirError(
            f"{path}: the run trained per-modality feature maps (data.benchmark={config.data.benchmark}), not a CLIP model; "
            "read checkpoints/stage_XX/model/maps.safetensors with vlcl.models.maps.load_maps"
        )
    checkpoints = path / "checkpoints"
    complete = _stage_checkpoints(checkpoints)
    newest = _newest(checkpoints, complete)
    if newest is None:
        raise RunDirError(f"{path}: no complete stage checkpoint yet (the run stopped in its first task)")
    records = _records(newest)
    names = {int(r["index"]): str(r["name"]) for r in records}
    loadable = {i: names[i] for i in sorted(names) if i == -1 or i in complete}
    index = _stage_index(path, stage, loadable, names)
    record = next(r for r in records if int(r["index"]) == index)
    try:
        cls = method_class(config.method.name)
    except UnknownMethodError:
        raise RunDirError(
            f"{path}: the run's method '{config.method.name}' is not registered in this process; import or register it "
            "(vlcl.register_method) before load_run"
        ) from None
    hooks = bool(overridden_evaluation_hooks(cls))
    beyond = create_method(config.method.name, config.method.typed_options()).evaluation_beyond_model()
    where = str(complete[index] / "model") if index >= 0 else config.model.path
    bundle = load_clip(where, local_files_only=True if index >= 0 else config.model.local_files_only)
    target = _device(config, device)
    bundle.model.to(target)
    method = None
    if hooks or (index >= 0 and beyond is not None) or (index == -1 and _overrides_hook(cls, "evaluation_model")):
        method = _rebuild_method(path, config, bundle, complete[index] if index >= 0 else None, target)
    return LoadedRun(path, config, index, names[index], list(loadable.values()), record["metrics"], bundle, method, target)


def _rebuild_method(path: Path, config: RunConfig, bundle: Any, checkpoint: Path | None, device: torch.device) -> Method:
    """The run's method as ``--resume`` rebuilds it from ``checkpoint`` (``setup`` on its weights, then its state),
    or as the run set it up before its first stage when ``checkpoint`` is None (the pretrained evaluation)."""
    from vlcl.engine.checkpoint import read_stage_checkpoint
    from vlcl.engine.loop import load_method_state
    from vlcl.seeds import stage_seed

    benchmark: list[Any] = []

    def load_benchmark():
        if not benchmark:
            from vlcl.data.registry import build_benchmark

            benchmark.append(build_benchmark(config.data, image_size=bundle.preprocess.image_size, preprocess=bundle.preprocess))
        return benchmark[0]

    method = create_method(config.method.name, config.method.typed_options())
    context = RunContext(
        task_names=_task_names(path, config, load_benchmark),
        seed=config.seed,
        bundle=bundle,
        device=device,
        gather=False,
        resuming=checkpoint is not None,
        checkpoint=checkpoint,
        pretrained_path=config.model.path,
        local_files_only=config.model.local_files_only,
        label_smoothing=config.train.label_smoothing,
    )
    with torch.random.fork_rng(devices=[]):  # the runner's seed before setup, without moving the caller's RNG
        torch.manual_seed(stage_seed(config.seed, -1))
        try:
            method.setup(bundle.model, context)
        except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
            message = str(exc).removeprefix(f"{method.name}: ")
            raise RunDirError(f"{path}: method '{method.name}' cannot be rebuilt: {message}") from None
    if checkpoint is not None:
        state, _ = read_stage_checkpoint(checkpoint)
        load_method_state(method, state, checkpoint)
    return method


def _stage_index(run_dir: Path, stage: int | str | None, loadable: dict[int, str], recorded: dict[int, str]) -> int:
    choices = ", ".join(f"{i} ({name})" for i, name in loadable.items())
    if stage is None:
        return max(loadable)
    if isinstance(stage, bool) or not isinstance(stage, (int, str)):
        raise TypeError(f"stage: expected a stage name or index, got {stage!r}")
    if isinstance(stage, str):
        found = [i for i, name in loadable.items() if name == stage]
        if found:
            return found[0]
    elif stage in loadable:
        return stage
    if stage in recorded or stage in recorded.values():
        raise RunDirError(
            f"{run_dir}: stage {stage!r} was evaluated but its checkpoint was not kept (checkpoint.keep keeps the newest; "
            f"run with checkpoint.keep=null to keep every stage); stages that can be loaded: {choices}"
        )
    raise RunDirError(f"{run_dir}: no complete stage {stage!r}; stages that can be loaded: {choices}")
