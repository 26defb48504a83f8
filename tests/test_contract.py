"""The method contract, for every registered method - including ones added later or installed from another
package (the parametrisation asks the registry, it lists nothing by hand):

* the method has a documentation page whose options table equals its options class (keys and defaults);
* its state survives a stage checkpoint exactly (written, read back, loaded into a fresh method);
* a two-task run killed with SIGKILL inside task 2 and resumed gives results equal to the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_run import metrics_of, quick_args
from vlcl.app.cli import main
from vlcl.engine.checkpoint import read_stage_checkpoint, state_difference
from vlcl.methods import RunContext, create_method, list_methods, method_class
from vlcl.models import load_clip

REPOSITORY = Path(__file__).resolve().parent.parent
METHODS = list_methods()
KILL_IN_TASK_2 = "step:20"  # quick_args: task 1 has 16 optimiser steps, task 2 has 24
KILL_AFTER_LEARNING_TASK_2 = "evaluation:2"  # a method without steps: task 2 learnt, not yet evaluated or saved
EVERY = "train.checkpoint_every_steps=3"


def method_args(name: str) -> list[str]:
    """The tiny two-task run of a method: the caption tasks sketch and counting, or for a method that learns only
    classification tasks the classification tasks of the same names (``embedded_cls``)."""
    benchmark = [] if "captions" in method_class(name).settings else ["data.benchmark=embedded_cls"]
    return [f"method.name={name}", *benchmark, EVERY]


def docs_page(name: str) -> Path:
    page = method_class(name).docs_page
    return Path(page) if page is not None else REPOSITORY / "docs" / "methods" / f"{name}.md"


def options_table(page: Path) -> dict[str, str]:
    """The ``| key | default | meaning |`` table of a method page: key -> default as written."""
    rows, inside = {}, False
    for line in page.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells[:2] == ["key", "default"]:
            inside = True
        elif inside and cells and not set(cells[0]) <= set("-: "):
            rows[cells[0].strip("`")] = cells[1]
        elif inside and not cells:
            break
    return rows


def same_default(written: str, actual) -> bool:
    text = written.strip("`").strip()
    if actual is None:
        return text.lower() in ("none", "null", "-", "")
    if isinstance(actual, bool):
        return text.lower() == str(actual).lower()
    if isinstance(actual, (int, float)):
        try:
            return math.isclose(float(text), float(actual))
        except ValueError:
            return False
    if isinstance(actual, list):  # [a, b] or a, b
        return (yaml.safe_load(text) if text.startswith("[") else [t.strip() for t in text.split(",")]) == actual
    return text == str(actual)


@pytest.mark.parametrize("name", METHODS)
def test_documented_with_its_options(name):
    page = docs_page(name)
    assert page.is_file(), f"method '{name}' has no documentation page {page}"
    fields = method_class(name).Options.model_fields
    table = options_table(page)
    assert set(table) == set(fields), f"{page.name}: table keys {sorted(table)} != options {sorted(fields)}"
    wrong = {key: (table[key], field.default) for key, field in fields.items() if not same_default(table[key], field.default)}
    assert not wrong, f"{page.name}: defaults written differently from the options class: {wrong}"


_REFERENCES: dict[str, Path] = {}


@pytest.fixture
def reference(tmp_path_factory, world_clip_dir):
    """The uninterrupted two-task run of a method, made once per method."""

    def run(name: str) -> Path:
        if name not in _REFERENCES:
            run_dir = tmp_path_factory.mktemp(f"reference-{name}") / "run"
            assert main(["run", *quick_args(world_clip_dir, *method_args(name)), "-o", str(run_dir)]) == 0
            _REFERENCES[name] = run_dir
        return _REFERENCES[name]

    return run


@pytest.mark.parametrize("name", METHODS)
def test_state_survives_a_checkpoint_exactly(name, reference):
    run_dir = reference(name)
    pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    checkpoint = run_dir / "checkpoints" / pointer["path"]
    state, _ = read_stage_checkpoint(checkpoint)
    bundle = load_clip(str(checkpoint / "model"))
    method = create_method(name)
    context = RunContext(task_names=["sketch", "counting"], seed=0, bundle=bundle, resuming=True, checkpoint=checkpoint)
    method.setup(bundle.model, context)
    method.load_state_dict(state)
    assert state_difference(state, method.state_dict()) is None


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_sigkill_in_task_2_then_resume_equals_the_uninterrupted_run(name, reference, world_clip_dir, tmp_path):
    expected = metrics_of(reference(name))
    run_dir = tmp_path / "run"
    cls = method_class(name)
    steps = cls.trains and cls.optimises
    killed = subprocess.run(
        [sys.executable, "-m", "vlcl", "run", *quick_args(world_clip_dir, *method_args(name)), "-o", str(run_dir)],
        env={**os.environ, "VLCL_FAULT": KILL_IN_TASK_2 if steps or not cls.trains else KILL_AFTER_LEARNING_TASK_2},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if steps:
        assert killed.returncode == -9, killed.stderr[-2000:]
        pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
        assert "step" in pointer, pointer  # killed inside a task, after an in-task checkpoint
    elif cls.trains:  # learns without steps (optimises False): killed after learning task 2, before its checkpoint
        assert killed.returncode == -9, killed.stderr[-2000:]
        pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
        assert pointer["path"] == "stage_00", pointer  # task 1's checkpoint: task 2 is learnt again on resume
    else:  # nothing trains, so no step is reached: the run completes, and resuming it changes nothing
        assert killed.returncode == 0, killed.stderr[-2000:]
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert metrics_of(run_dir) == expected


def test_every_module_that_registers_a_method_is_found():
    """No hand-kept list: each file of src/vlcl/methods (and of its packages) with @register_method is in the registry."""
    declared = set()
    for path in (REPOSITORY / "src" / "vlcl" / "methods").rglob("*.py"):  # packages too (methods/rail/)
        text = path.read_text(encoding="utf-8")
        declared |= set(re.findall(r"@register_method\s+class \w+\([^)]*\):\s+name = \"(\w+)\"", text))
    assert declared and declared <= set(METHODS)
