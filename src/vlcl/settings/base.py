"""What a setting is: one kind of continual-learning problem, as one registered object.

A setting owns everything that differs between kinds of problem, so that the engine, the evaluator and the
report ask it instead of telling kinds apart:

* its typed batch (a dataclass of :class:`Batch`), which carries the setting's default training loss;
* the model kind it trains (``clip``: a CLIPModel; ``feature_maps``: one linear map per modality);
* its task metric (:class:`TaskMetric`: where a task's score is read in a stage's metrics, the matrices
  results.json keeps, the labels of its tables and plots, written into results.json for the report);
* what a stage's evaluation adds to the evaluation every setting shares (:meth:`Setting.stage_metrics`);
* what results.json adds to the matrices and the continual summary (:meth:`Setting.results_sections`);
* the order of its metric kinds in metrics.csv and the log.

A benchmark's setting is named by its tasks' test sets (``RetrievalSet.setting`` is ``captions``...); a method
names the settings it supports (``Method.settings``), and a run of a method on a setting it does not support is
refused before anything is written. A setting outside vlcl registers itself with :func:`register_setting`, or
through the ``vlcl.settings`` entry-point group (docs/settings.md).
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from vlcl.errors import BadInputError
from vlcl.plugins import NotAPlugin, described, discover, unknown_name

if TYPE_CHECKING:
    from vlcl.models.loading import ClipBundle


@dataclass(frozen=True)
class TaskMetric:
    """Where and how a setting scores its tasks: ``metrics[kind][task][key]`` for each of ``keys`` (the first is
    the headline), the continual summary under ``summary[section]``, the pre-trained row under
    ``pretrained[pretrained_row]``, and the words of the report: ``name`` in a sentence, ``label`` over a run's
    stage table, ``axis`` on a plot, ``title`` over a comparison's table. results.json records it (``setting``), so
    that the report reads a run of any setting without importing it (vlcl.schema)."""

    kind: str
    keys: tuple[str, ...]
    section: str
    pretrained_row: str
    name: str
    label: str
    axis: str
    title: str
    summary_label: str
    """The prefix of its continual summary's rows in a report ("retrieval R@1" last ...)."""

    @property
    def headline(self) -> str:
        return self.keys[0]

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> TaskMetric:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if k == "keys" else v for k, v in values.items() if k in fields})

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "keys": list(self.keys), "headline": self.headline}


@dataclass
class Batch:
    """Base of the settings' typed batches: tensors and the values a method may need beside them."""

    sample_index: torch.Tensor
    """long [B]: the row of the task's training data each batch row is (-1 for rows a method added)."""

    def to(self, device: torch.device) -> Batch:
        """The same batch with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v.to(device) for k, v in moved.items() if isinstance(v, torch.Tensor)})

    def default_loss(self, method) -> Any:
        """The setting's default training loss under ``method`` (a ``LossOutput``): ``Method.training_loss``."""
        raise NotImplementedError(f"{type(self).__name__} defines no default loss")


class Setting:
    """One kind of continual-learning problem. Subclass, set the class attributes, register with
    :func:`register_setting`. The hooks' defaults are what a setting without extras does."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    model_kind: ClassVar[str] = "clip"
    metric: ClassVar[TaskMetric]
    metric_kinds: ClassVar[tuple[str, ...]] = ("retrieval", "alignment", "zeroshot", "routes")
    """The metric kinds in metrics.csv's and the log's order (routes: set -> route -> share); a kind not listed
    follows them in the order the evaluation gives."""
    summary_rows: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(summary key, row label) of the flat summary entries :meth:`results_sections` adds, for the report."""
    task_words: ClassVar[str] = ""
    """What its tasks are, in a refusal: "image-caption (retrieval) tasks"."""

    def batch(self, bundle: ClipBundle | None, data: Any, idx: torch.Tensor, picks: torch.Tensor) -> Batch:
        """Rows ``idx`` of a task's training ``data`` as this setting's batch (``picks``: which caption of each)."""
        raise NotImplementedError(f"setting '{self.name}' defines no batch")

    def stage_data(self, parts: list[Any], class_prompts: str) -> Any:
        """One stage's training data from its tasks' (one task, or several for joint training);
        ``class_prompts`` is ``train.class_prompts``. A ValueError says why the parts cannot be one stage.
        Default: one task per stage."""
        if len(parts) > 1:
            raise ValueError(f"setting '{self.name}' trains one task per stage")
        return parts[0]

    def task_score(self, metrics: dict[str, Any], task: str, key: str) -> float:
        """One task's score in one stage's metrics (``key`` one of ``metric.keys``)."""
        return metrics[self.metric.kind][task][key]

    def stage_metrics(self, evaluator: Any, model: Any) -> dict[str, dict]:
        """Metric kinds this setting adds to a stage's evaluation of ``model``, computed with ``evaluator`` (the
        engine's: ``evaluator.benchmark``; it has already scored every retrieval and zero-shot set of the stage, and
        encodes images and texts with ``image_features`` / ``text_features``). Its tasks' test sets of a type the
        evaluator does not know are scored here. Default: nothing added."""
        return {}

    def stream_metrics(self, evaluator: Any, model: Any, stream: Any, batch: int) -> dict[str, Any]:
        """On a stream (``data.stream=online``): ``model`` scored on what ``stream`` (an
        :class:`~vlcl.data.online.OnlineStream`) has shown once batch ``batch`` has arrived, as ``{"score": number,
        "per_unit": {unit: number}}``; ``score`` is the stream's accuracy at that point (the mean of the points is
        A_auc) and ``per_unit`` the scores forgetting is measured on (a class, a task). A setting that does not
        override it cannot run as a stream: such a run is refused before anything is written."""
        raise NotImplementedError(f"setting '{self.name}' cannot run as a stream")

    @classmethod
    def streams(cls) -> bool:
        """Whether the setting can run as a stream (it overrides :meth:`stream_metrics`)."""
        return cls.stream_metrics is not Setting.stream_metrics

    def results_sections(
        self, tasks: list[str], pretrained: dict, trained: list[dict], *, continual: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(top-level sections, summary entries) results.json adds for this setting. Default: none."""
        return {}, {}

    def refusal(self, method: str, benchmark: str, able: list[str]) -> str:
        """The one line that refuses a method that does not support this setting."""
        return (
            f"method '{method}' does not support setting '{self.name}' ({self.task_words}), the setting of benchmark "
            f"'{benchmark}'; methods that do: {', '.join(able) or 'none'}"
        )

    def to_json(self) -> dict[str, Any]:
        """What results.json records of the setting: what the report reads instead of importing it."""
        return {"name": self.name, "description": self.description, "model_kind": self.model_kind,
                "metric": self.metric.to_json(), "metric_kinds": list(self.metric_kinds),
                "summary_rows": [list(row) for row in self.summary_rows]}


_REGISTRY: dict[str, Setting] = {}


class UnknownSettingError(BadInputError, ValueError):
    pass


def register_setting(cls: type[Setting]) -> type[Setting]:
    """Register (an instance of) ``cls`` under its ``name``; a name another class holds is refused."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if not isinstance(getattr(cls, "metric", None), TaskMetric):
        raise TypeError(f"setting '{cls.name}' ({cls.__name__}) has no TaskMetric 'metric'")
    taken = _REGISTRY.get(cls.name)
    if taken is not None and (type(taken).__module__, type(taken).__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"setting name '{cls.name}' is taken by {type(taken).__module__}.{type(taken).__qualname__}")
    _REGISTRY[cls.name] = cls()
    return cls


def _adopt(name: str, obj: Any) -> None:
    """An entry point names a Setting subclass (registered under its name) or a module that registers one."""
    if isinstance(obj, type) and issubclass(obj, Setting):
        if not any(type(s) is obj for s in _REGISTRY.values()):
            try:
                register_setting(obj)
            except (TypeError, ValueError) as exc:
                raise NotAPlugin(str(exc)) from None
        return
    if isinstance(obj, types.ModuleType):
        if not any(type(s).__module__.startswith(obj.__name__) for s in _REGISTRY.values()):
            raise NotAPlugin(f"module '{obj.__name__}' registers no setting (decorate a Setting subclass with @register_setting)")
        return
    raise NotAPlugin(f"names {described(obj)}, not a setting (a vlcl.settings.Setting subclass, or a module that registers one)")


def list_settings() -> dict[str, str]:
    """Every registered setting's name and description."""
    discover("vlcl.settings", "vlcl.settings", _adopt)
    return {name: s.description for name, s in sorted(_REGISTRY.items())}


def setting_named(name: str) -> Setting:
    discover("vlcl.settings", "vlcl.settings", _adopt)
    if name not in _REGISTRY:
        raise UnknownSettingError(unknown_name("setting", name, list(_REGISTRY), "a test set's 'setting'"))
    return _REGISTRY[name]


def setting_of(benchmark: Any) -> Setting:
    """The setting of a built benchmark (:attr:`vlcl.data.benchmark.Benchmark.setting`)."""
    return setting_named(benchmark.setting)


def make_batch(bundle: ClipBundle | None, data: Any, idx: torch.Tensor, picks: torch.Tensor) -> Batch:
    """Rows ``idx`` of training ``data`` as the batch of the setting the data names (``data.setting``)."""
    return setting_named(data.setting).batch(bundle, data, idx, picks)
