"""Typed run configuration: YAML file + dotted ``key=value`` overrides.

Every section is a pydantic model with ``extra="forbid"`` so that a typo is an
error naming the key and the valid choices, never a silently ignored setting.
The ``method`` section is open: its extra keys are the chosen method's options,
validated against the method's ``Options`` when the config is built (the method
registry is looked up then, never when this module is imported; see
:meth:`MethodConfig.typed_options`).
"""

from __future__ import annotations

import difflib
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from vlcl.errors import BadInputError


class ConfigError(BadInputError, ValueError):
    """A configuration problem, phrased as one line for the user."""


class _Section(BaseModel):
    # NaN and inf are refused everywhere: `train.lr=.inf` would otherwise train to NaN weights.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(_Section):
    path: str = "embedded"
    """``embedded`` (the small CLIP shipped with vlcl), a local Hugging Face directory, or a hub id."""
    local_files_only: bool = True
    """Never touch the network unless this is switched off explicitly."""


class FeaturePairConfig(_Section):
    """One task of feature mode (``data.benchmark: features``): a modality pair and its feature files."""

    name: str
    modalities: tuple[str, str]
    """The pair (A, B); the files hold one 2-D array per modality, named after it."""
    train: str
    """A .npz or .safetensors file; row i of A's and B's arrays is the i-th positive pair."""
    test: str

    @field_validator("modalities")
    @classmethod
    def _two_modalities(cls, modalities: tuple[str, str]) -> tuple[str, str]:
        if modalities[0] == modalities[1]:
            raise ValueError("expected two different modalities")
        return modalities


class DataConfig(_Section):
    benchmark: str = "embedded"
    tasks: list[str] | None = None
    """Subset / order of the benchmark's tasks; ``None`` = the benchmark's own order."""
    seed: int = 0
    """Seed of the data itself (procedural world, random splits); independent of the training seed."""
    train_scale: float = Field(1.0, gt=0)
    """Multiplies every task's training-set size (quick runs and tests use < 1)."""
    test_images: int | None = Field(None, ge=10)
    """Override the number of test images per retrieval set."""
    zeroshot_per_class: int | None = Field(None, ge=1)
    root: str | None = None
    """Folder holding the real data sets of ``vlcl8`` / ``mtil`` (one folder per data set; ``vlcl data prepare``)."""
    eval_sets: list[str] | None = None
    """Held-out retrieval and zero-shot sets of a benchmark read from ``root``; ``None`` = all of them."""
    on_bad_sample: Literal["error", "skip"] = "error"
    """A missing or corrupt image, malformed JSON line or empty caption: stop naming it, or skip and count it."""
    image_check: Literal["none", "header", "full"] = "header"
    """Before training, open every image's header (``header``), decode it (``full``), or trust the files (``none``)."""
    max_image_pixels: int | None = Field(89_478_485, ge=1)
    """Images with more pixels (width x height, read from the header before decoding) are a per-image error
    naming the file and both numbers, or a skipped sample under ``on_bad_sample=skip``. The default is
    Pillow's decompression-bomb threshold; raise it for trusted data; ``None`` = no limit."""
    workers: int = Field(4, ge=0)
    """Threads decoding images of data sets read from ``root`` (0 = the training thread)."""
    max_unknown_words: float = Field(0.05, ge=0, le=1)
    """Before training: stop when more than this share of a data set's caption and prompt words are unknown to
    the model's tokenizer (they encode to its unknown token or to nothing); 1 = never (``--allow-unknown-words``).
    The shares are recorded in results.json under ``data.unknown_words``."""
    validation_fraction: float | None = Field(None, gt=0, lt=1)
    """Carve this share of every task's training data (drawn with ``data.seed`` and the task's name) as the set the
    task is evaluated on, in place of its test split; the rest stays training data, and the held-out test sets are
    dropped (``vlcl.data.validation``; results.json ``data.validation``). For choosing hyper-parameters without test
    data (``vlcl compare --tune``); ``None`` = off: tasks are evaluated on their test splits."""
    features: list[FeaturePairConfig] | None = None
    """Feature mode's sequence of modality pairs (CMCL's setting; the ``features`` benchmark, vlcl.data.benchmarks.feature_pairs)."""
    stream: Literal["off", "online"] = "off"
    """``online``: the benchmark's tasks become one stream of batches (online lifelong learning, SIT): every
    training sample is seen once, in the order of ``stream.boundaries``, with ``train.online_iters`` optimiser steps
    per incoming batch, and the method is told nothing of the tasks (docs/streams.md); ``off``: one task at a time."""


PositiveFloat = Annotated[float, Field(gt=0)]


class TrainConfig(_Section):
    epochs: int = Field(3, ge=1)
    """Passes over each task's training data (unless ``iterations`` is set)."""
    iterations: int | None = Field(None, ge=1)
    """A fixed number of optimiser steps per task instead of ``epochs`` (ZSCL and MoE-Adapters: 1000), drawing
    new epochs of the task's data as needed; ``None`` = ``epochs``."""
    batch_size: int = Field(64, ge=2)
    lr: PositiveFloat | list[PositiveFloat] | dict[str, PositiveFloat] = 1e-4
    """Learning rate of the vision tower (and of everything that is not the text tower): one number, one per task
    in the run's task order, or a mapping by task name where ``default`` covers the tasks it does not name."""
    text_lr: PositiveFloat | list[PositiveFloat] | dict[str, PositiveFloat] | None = None
    """Learning rate of the text tower (its transformer, embeddings and projection), in the same forms as ``lr``;
    ``None`` = ``lr`` times ``text_lr_scale``."""
    text_lr_scale: float = Field(1.0, gt=0)
    """With ``text_lr`` unset, the text tower learns at ``lr`` times this, so that tuning ``train.lr`` keeps the
    ratio (the C-CLIP authors' text tower: about 15 times the image tower's)."""
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW's moment decays, each in [0, 1)."""
    eps: float = Field(1e-6, gt=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of each task's steps spent in linear warm-up before the cosine decay."""
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    max_steps_per_task: int | None = Field(None, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """fp32; bf16 autocast (CPU or CUDA); fp16 autocast with loss scaling (CUDA only). Weights stay fp32."""
    gradient_checkpointing: bool = False
    """Recompute the towers' activations in the backward pass (Hugging Face's gradient checkpointing)."""
    accumulate_steps: int = Field(1, ge=1)
    """Micro-batches of ``batch_size`` per optimiser step (each is its own contrastive batch)."""
    checkpoint_every_steps: int | None = Field(None, ge=1)
    """Also write a resumable checkpoint every N optimiser steps inside a task (tasks' ends always are)."""
    label_smoothing: float = Field(0.2, ge=0, lt=1)
    """Of the cross-entropy over class prompts that trains a classification task (0.2 in ZSCL and MoE-Adapters)."""
    class_prompts: Literal["first", "average"] = "first"
    """A classification task's class text during training: its first template filled with the class name (ZSCL,
    MoE-Adapters), or the mean embedding of every template's prompt. Evaluation always averages every template."""
    online_iters: int = Field(3, ge=1)
    """In a stream (``data.stream=online``): optimiser steps on each incoming batch before the next arrives (the
    SIT authors' ``online_iter``: 3). Not used one task at a time."""
    gather_features: bool = True
    """Under torchrun: contrast each process's rows against every process's features (global-batch negatives,
    gradients kept, as open_clip's gather-with-grad); false keeps losses per process (as the C-CLIP authors)."""


    def lr_for(self, task_names: list[str], order: list[str]) -> float:
        """The learning rate of a stage training ``task_names`` (``order``: every task of the run, in order)."""
        return _stage_rate(self.lr, "train.lr", task_names, order)

    def text_lr_for(self, task_names: list[str], order: list[str]) -> float:
        """The text tower's learning rate of that stage: ``text_lr``'s, or ``lr``'s times ``text_lr_scale``."""
        if self.text_lr is None:
            return self.lr_for(task_names, order) * self.text_lr_scale
        return _stage_rate(self.text_lr, "train.text_lr", task_names, order)

    @model_validator(mode="after")
    def _one_text_rate(self) -> "TrainConfig":
        if self.text_lr is not None and self.text_lr_scale != 1.0:
            raise ValueError("set 'train.text_lr' or 'train.text_lr_scale', not both")
        return self

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        bad = [(i, b) for i, b in enumerate(betas) if not 0 <= b < 1]
        if bad:
            raise ValueError(f"each beta must be in [0, 1); element {bad[0][0]} is {bad[0][1]!r}")
        return betas


def _stage_rate(rates: float | list[float] | dict[str, float], key: str, task_names: list[str], order: list[str]) -> float:
    """The one learning rate that ``rates`` (one number, one per task of ``order``, or a mapping by task name with
    an optional ``default``) gives the tasks of a stage."""
    found = {_task_rate(rates, key, name, order) for name in task_names}
    if len(found) != 1:
        raise ValueError(f"tasks {', '.join(task_names)} train in one stage but have different learning rates in '{key}'")
    return found.pop()


def _task_rate(rates: float | list[float] | dict[str, float], key: str, name: str, order: list[str]) -> float:
    if isinstance(rates, (int, float)):
        return float(rates)
    if isinstance(rates, list):
        if len(rates) != len(order):
            raise ValueError(f"'{key}' lists {len(rates)} learning rates for {len(order)} tasks ({', '.join(order)})")
        return float(rates[order.index(name)])
    unknown = sorted(set(rates) - set(order) - {"default"})
    if unknown:
        raise ValueError(f"'{key}' names '{unknown[0]}', which is not a task of this run ({', '.join(order)})")
    if name not in rates and "default" not in rates:
        raise ValueError(f"'{key}' has no learning rate for task '{name}' and no 'default'")
    return float(rates.get(name, rates.get("default")))


class EvalConfig(_Section):
    batch_size: int = Field(256, ge=1)
    ks: list[int] = [1, 5, 10]
    recall_convention: Literal["any", "diagonal"] = "any"
    retrieval_memory_mb: int = Field(256, ge=1)
    """Memory for the similarity tiles of retrieval recall (``vlcl.metrics.retrieval_recall``'s ``block_bytes``, in
    MiB); the numbers do not depend on it."""
    chunk_size: int | None = Field(None, ge=1)
    """At most this many images per similarity tile (None: as the memory gives); the numbers do not depend on it."""
    every_samples: int = Field(1000, ge=1)
    """In a stream (``data.stream=online``): evaluate on the classes (or caption pairs) seen so far every this many
    training samples (the SIT authors' ``eval_period``: 1000); the mean of these is A_auc. Not used one task at a
    time."""
    confusion_max_classes: int = Field(100, ge=0)
    """results.json keeps each classification set's confusion matrix (``per_class``) up to this many classes; a
    larger label space keeps its per-class top-1 and support only (a 1000-class matrix is a million counts per
    stage). The HTML report draws matrices of up to 30 classes."""

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        bad = [(i, k) for i, k in enumerate(ks) if k < 1]
        if bad:
            raise ValueError(f"expected a list of positive integers that contains 1; element {bad[0][0]} is {bad[0][1]!r}")
        if 1 not in ks:
            raise ValueError("expected a list of positive integers that contains 1")
        return sorted(set(ks))


def _non_finite_path(value: Any, path: str) -> str | None:
    """The dotted path of the first NaN or inf inside ``value`` (nested lists and dicts), else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found = _non_finite_path(child, f"{path}.{key}")
        if found:
            return found
    return None


class LoggingConfig(_Section):
    """What a run logs besides its results files: ``<run_dir>/log.jsonl`` is always written (every optimiser
    step's losses and learning rates, every evaluation; docs/logging.md)."""

    tensorboard: bool = False
    """Also write the same scalars as TensorBoard event files in ``<run_dir>/tensorboard/`` (needs the
    ``tensorboard`` package: ``pip install 'vlcl[tensorboard]'``; refused before anything is written without it)."""
    progress_interval_s: float = Field(30.0, ge=0)
    """When the console is not a terminal (a file, a pipe, ``compare.log``), a plain progress line every this many
    seconds of a task (0: every step), besides one at each task's start and end and each evaluation's end."""


class _InvalidMethodOptions(ValueError):
    """Carries the method registry's one-line error out of :class:`MethodConfig`'s validator, through pydantic's
    ValidationError, to :func:`build_config`, which raises it as it is (its message and its class unchanged)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class MethodConfig(BaseModel):
    """``method.name`` and the method's options (the extra keys), validated against the method's ``Options`` once,
    when the config is built; :meth:`typed_options` gives the result."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str = "finetune"
    _typed: Any = PrivateAttr(default=None)
    """The method's ``Options`` (a vlcl.methods.MethodOptions); None while the method is not registered."""

    @model_validator(mode="after")
    def _valid_options(self) -> "MethodConfig":
        for key, value in (self.model_extra or {}).items():
            if _non_finite_path(value, key):
                raise ValueError(f"option '{_non_finite_path(value, key)}' must be a finite number, got {value!r}")
        # The method registry is above this layer: imported here, when a config is built, never with vlcl.config.
        from vlcl.methods.registry import UnknownMethodError, method_class, parse_options

        try:
            method_class(self.name)
        except UnknownMethodError:  # not registered (yet): typed_options() looks again, and names it as create_method does
            return self
        try:
            self._typed = parse_options(self.name, self.options())
        except UnknownMethodError as exc:
            raise _InvalidMethodOptions(exc) from None
        return self

    def options(self) -> dict[str, Any]:
        """The options as given (the untyped ``method.*`` keys, without ``name``)."""
        return dict(self.model_extra or {})

    def typed_options(self) -> Any:
        """The options validated into the method's ``Options``, for ``create_method(name, options)``; an
        UnknownMethodError when the method is not registered in this process."""
        if self._typed is None:
            from vlcl.methods.registry import parse_options

            self._typed = parse_options(self.name, self.options())
        return self._typed


class CheckpointConfig(_Section):
    keep: int | None = Field(1, ge=1)
    """Complete stage checkpoints kept in ``checkpoints/``: the newest ``keep`` (1: the one ``--resume`` needs);
    ``None`` keeps every stage (to load earlier stages with ``vlcl.load_run`` or ``CLIPModel.from_pretrained``).
    Older ones are removed once a newer one is complete."""


class StreamConfig(_Section):
    """How the tasks of a benchmark become one stream (``data.stream=online``; vlcl.data.stream, docs/streams.md)."""

    boundaries: Literal["sharp", "si_blurry"] = "si_blurry"
    """``sharp``: the benchmark's tasks one after another, each shuffled; ``si_blurry``: the Si-Blurry stream of SIT
    (and MVP/MISA): the classes of every task pooled, ``disjoint_percent`` of them each in one hidden task, the rest
    blurred across tasks (needs labels: a classification benchmark)."""
    tasks: int | None = Field(None, ge=1)
    """Hidden tasks of a Si-Blurry stream; ``None`` = the benchmark's number of tasks (the authors: 5)."""
    disjoint_percent: int = Field(50, ge=0, le=100)
    """Si-Blurry's N: the percentage of classes that appear in one hidden task only (the authors: 50)."""
    blurry_percent: int = Field(10, ge=0, le=100)
    """Si-Blurry's M: the percentage of the blurry classes' samples moved to other hidden tasks (the authors: 10)."""
    random_sizes: bool = True
    """Si-Blurry with random hidden-task sizes (the authors' ``--rnd_NM``); false: equal numbers of classes."""
    seed: int | None = None
    """Seed of the stream's order (the Si-Blurry split, the shuffles). ``None``: drawn from the run's ``seed`` and
    ``data.seed`` (``vlcl.seeds.stream_seed``), so that the seeds of a comparison are different streams, as the
    authors' seeds 1-5 are (their ``rnd_seed`` draws the split); set it to hold one stream across run seeds."""
    reset_optimizer: bool = True
    """Rebuild the optimiser (moments and step count) when a hidden task begins, as the authors' trainer does at
    each task; the method itself is told nothing. False: one optimiser for the whole stream."""


class RunConfig(_Section):
    seed: int = 0
    name: str | None = None
    """Run name; default ``<benchmark>-<method>``. The run directory is ``output_dir/name``."""
    output_dir: str = "runs"
    threads: int | None = Field(None, ge=1)
    """torch intra-op threads; ``None`` keeps torch's default."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when available (under torchrun, the process's LOCAL_RANK GPU), else CPU."""
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    method: MethodConfig = Field(default_factory=MethodConfig)  # built when used: it looks its method up
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    stream: StreamConfig = StreamConfig()

    @property
    def run_name(self) -> str:
        return self.name or f"{self.data.benchmark}-{self.method.name}"


def _section_model(annotation: Any) -> type[BaseModel]:
    """The config section inside ``annotation`` (``list[FeaturePairConfig] | None`` -> FeaturePairConfig)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        try:
            return _section_model(arg)
        except TypeError:
            continue
    raise TypeError(f"no config section in {annotation!r}")


def _valid_keys(prefix: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in prefix:
        if not part.isdigit():  # an index into a list of sections (data.features.0) names no field
            model = _section_model(model.model_fields[part].annotation)
    return sorted(model.model_fields)


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


_TYPE_TAGS = {"float", "int", "str", "bool", "list", "dict", "tuple", "none"}


def _is_type_tag(part: Any) -> bool:
    """Pydantic names the member of a union it tried (``train.lr.constrained-float``); a key never has such a part."""
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or part.startswith("constrained-"))


def _key_parts(error: Any) -> tuple[str | int, ...]:
    return tuple(p for p in error["loc"] if not _is_type_tag(p))


def _dotted(parts: tuple[str | int, ...]) -> str:
    """``train.lr[1]``, ``data.features[0].train``: an element of a list by its index."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def _most_specific(errors: list[Any]) -> Any:
    """A key that takes a number, a list or a mapping (``train.lr``) fails once per form; the failure inside the
    value (one element of the list) is the one that names what is wrong."""
    key = _key_parts(errors[0])
    inside = [e for e in errors if len(_key_parts(e)) > len(key) and _key_parts(e)[: len(key)] == key]
    return inside[0] if inside else errors[0]


def _format_validation_error(errors: list[Any], source: str) -> str:
    first = _most_specific(errors)
    parts = _key_parts(first)
    loc = tuple(str(p) for p in parts)
    key = _dotted(parts)
    if first["type"] == "extra_forbidden":
        parent = loc[:-1]
        valid = _valid_keys(parent)
        where = f"'{_dotted(_key_parts(first)[:-1])}'" if parent else "the top level"
        return (
            f"{source}: unknown config key '{key}'{_suggest(loc[-1], valid)}; "
            f"valid keys in {where}: {', '.join(valid)}"
        )
    value = first.get("input")
    message = first["msg"].removeprefix("Value error, ")
    got = "" if isinstance(value, dict) else f" (got {value!r})"  # a whole section: the message names the key
    return f"{source}: invalid value for '{key}': {message}{got}"


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override '{dotted}': empty component in a dotted key")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``train.epochs=3`` -> ("train.epochs", 3); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE, for example train.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def _method_options_error(error: Any) -> Exception | None:
    """The method registry's own error inside one of pydantic's errors (see :class:`_InvalidMethodOptions`)."""
    carried = (error.get("ctx") or {}).get("error")
    return carried.error if isinstance(carried, _InvalidMethodOptions) else None


def build_config(tree: dict[str, Any], source: str = "config") -> RunConfig:
    """The RunConfig of ``tree``, the method's options validated with it. A problem is one line: a config key's
    (ConfigError, naming ``source``) before the method's options' (the method registry's error, as
    ``create_method`` words it)."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        errors = exc.errors()
        others = [e for e in errors if _method_options_error(e) is None]
        if not others:
            raise _method_options_error(errors[0]) from None
        raise ConfigError(_format_validation_error(others, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults < YAML file < ``key=value`` overrides, validated once at the end."""
    tree = read_yaml(path) if path is not None else {}
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    source = str(path) if path is not None else "config"
    return build_config(tree, source)


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    data["method"] = {"name": config.method.name, **config.method.options()}
    return data


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
