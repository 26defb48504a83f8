"""Planning a comparison's runs: the ``--methods`` specs, ``--seeds``, the grid of each method and its points, the
tuning proxy's overrides, a run's task order. Pure functions of the command's input and the config."""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlcl.config import RunConfig
from vlcl.errors import BadInputError

if TYPE_CHECKING:
    from vlcl.app.compare.tuning import Tuning


class CompareError(BadInputError, ValueError):
    pass


@dataclass
class MethodSpec:
    name: str
    overrides: list[str] = field(default_factory=list)
    label: str = ""


def _split_top_level(text: str, separator: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise CompareError(f"--methods '{text}': unbalanced brackets")
    return parts + [current]


def parse_methods(text: str) -> list[MethodSpec]:
    specs = []
    for item in (p.strip() for p in _split_top_level(text, ",")):
        if not item:
            raise CompareError(f"--methods '{text}': empty method name")
        name, _, rest = item.partition("[")
        overrides = [o.strip() for o in rest[:-1].split(";") if o.strip()] if rest else []
        if rest and not rest.endswith("]"):
            raise CompareError(f"--methods: '{item}' should look like name[key=value;key=value]")
        if "method.name" in _override_keys(overrides):  # the run would be stored under the other method's name
            raise CompareError(f"--methods: '{item}' sets method.name inside its brackets; name the method itself instead")
        specs.append(MethodSpec(name.strip(), overrides))
    counts: dict[str, int] = {}
    for spec in specs:  # directory names: the method name, numbered when a method appears twice
        counts[spec.name] = counts.get(spec.name, 0) + 1
        spec.label = spec.name if counts[spec.name] == 1 else f"{spec.name}-{counts[spec.name]}"
    return specs


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2] (distinct integers)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CompareError(f"--seeds '{text}': expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CompareError(f"--seeds '{text}': expected distinct comma-separated integers, e.g. 0,1,2")
    return seeds


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CompareError(f"{flag} '{text}': expected comma-separated numbers, e.g. 3e-5,1e-4,3e-4,1e-3") from None


def yaml_value(value: Any) -> str:
    """``value`` written so that the config's YAML parsing reads it back as the same value (``3e-05`` would be a
    string to YAML 1.1: floats get a mantissa with a point, ``3.0e-05``)."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return json.dumps(value)


def short_value(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def point_name(values: dict[str, Any]) -> str:
    """A grid point's directory name: ``lr=0.0003_weight=2``."""
    return "_".join(f"{key.rsplit('.', 1)[-1]}={short_value(value)}" for key, value in values.items()) or "default"


def _override_keys(overrides: list[str]) -> set[str]:
    return {o.split("=", 1)[0].strip() for o in overrides}


def method_grid(method_grid_spec: dict[str, tuple[Any, ...]], lrs: tuple[float, ...], fixed: list[str]) -> dict[str, list[Any]]:
    """Config key -> values: ``train.lr`` over ``lrs`` (none: a method without an optimiser), then the method's own
    grid (``method.<key>``); a key that the method's bracketed overrides set (``lwf[method.weight=2]``) is fixed
    there, not tuned."""
    grid: dict[str, list[Any]] = {"train.lr": [float(lr) for lr in lrs]} if lrs else {}
    for key, values in method_grid_spec.items():
        grid[key if "." in key else f"method.{key}"] = list(values)
    given = _override_keys(fixed)
    return {key: values for key, values in grid.items() if key not in given}


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, the first key varying slowest (``train.lr`` first, in the order given)."""
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]


def task_order(config: RunConfig) -> list[str]:
    """The run's tasks in order: ``data.tasks``, else the benchmark's own sequence."""
    if config.data.tasks:
        return list(config.data.tasks)
    if config.data.benchmark == "embedded":
        from vlcl.data.benchmarks.embedded import DEFAULT_SEQUENCE

        return list(DEFAULT_SEQUENCE)
    if config.data.benchmark == "features":
        return [f.name for f in config.data.features or []]
    from vlcl.data.benchmarks.data_root import validate_data_config

    selection = validate_data_config(config.data)
    if selection is not None:  # read from a data root: the catalogue (or the folders) give the order
        return list(selection.tasks)
    return list(_built_task_names(config.data.model_dump_json()))


@functools.lru_cache(maxsize=8)
def _built_task_names(data_json: str) -> tuple[str, ...]:
    """Another benchmark (``embedded_cls``, a plugin's): built once at 32 px to read its task names."""
    from vlcl.config import DataConfig
    from vlcl.data.registry import build_benchmark

    return tuple(build_benchmark(DataConfig.model_validate_json(data_json), image_size=32).task_names)


def proxy_overrides(config: RunConfig, tuning: Tuning) -> list[str]:
    """What turns a method's config into its tuning proxy: the validation split, the first tasks, less data, epochs."""
    overrides = [f"data.validation_fraction={yaml_value(float(tuning.validation_fraction))}"]
    if tuning.tasks is not None:
        order = task_order(config)
        if tuning.tasks < len(order) and config.data.benchmark == "features":  # its tasks are the data.features list
            first = [f.model_dump(mode="json") for f in (config.data.features or [])[: tuning.tasks]]
            overrides.append(f"data.features={json.dumps(first)}")
        elif tuning.tasks < len(order):
            overrides.append(f"data.tasks={json.dumps(order[: tuning.tasks])}")
    if tuning.scale != 1:
        overrides.append(f"data.train_scale={yaml_value(float(config.data.train_scale * tuning.scale))}")
    if tuning.epochs is not None:
        overrides.append(f"train.epochs={tuning.epochs}")
    return overrides
