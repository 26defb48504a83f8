"""A method added as one file - dropped into vlcl.methods, or in a separate installed package behind an entry point -
is listed by `vlcl methods`, runs, resumes and is covered by the contract test, with no other file touched.

The method is the example of docs/extending.md, taken from the page itself, so the documented code is the code
that is tested.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


def documented_files() -> dict[str, str]:
    """The code blocks of docs/extending.md that name a file (```python l2_init.py), by file name."""
    text = (REPOSITORY / "docs" / "extending.md").read_text(encoding="utf-8")
    return {name: body for name, body in re.findall(r"```\w+ (\S+\.(?:py|md))\n(.*?)```", text, flags=re.S)}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=900)


def contract_test(env: dict[str, str]) -> str:
    """The contract test, only for l2_init, in a fresh process; its summary line."""
    pytest_args = ["tests/test_contract.py", "-k", "l2_init", "-o", "addopts=", "-q", "-p", "no:cacheprovider"]
    result = run([sys.executable, "-m", "pytest", *pytest_args], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def with_path(env: dict[str, str], folder: Path) -> dict[str, str]:
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))}


def test_the_example_is_in_the_docs():
    files = documented_files()
    assert set(files) == {"l2_init.py", "l2_init.md"}
    assert "@register_method" in files["l2_init.py"] and "| weight | 1.0 |" in files["l2_init.md"]


@pytest.mark.slow
def test_a_method_in_its_own_package_is_found_through_its_entry_point(tmp_path):
    site = tmp_path / "site"
    package = site / "lab_methods"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, body in documented_files().items():
        (package / name).write_text(body)
    info = site / "lab_methods-0.1.dist-info"  # what pip writes for an installed package with an entry point
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-methods\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vlcl.methods]\nl2_init = lab_methods.l2_init\n")
    env = with_path(dict(os.environ), site)

    listed = run([sys.executable, "-m", "vlcl", "methods"], env)
    assert listed.returncode == 0 and re.search(r"^l2_init\s+fine-tuning \+", listed.stdout, flags=re.M), listed.stdout
    assert contract_test(env).startswith("3 passed")  # page, state round trip, SIGKILL + resume


@pytest.mark.slow
def test_a_new_file_in_vlcl_methods_is_found(tmp_path):
    """The same file dropped into src/vlcl/methods/ - of a copy of the package, first on the path, since a test
    must not write into the source tree."""
    source = tmp_path / "src"
    shutil.copytree(REPOSITORY / "src" / "vlcl", source / "vlcl", ignore=shutil.ignore_patterns("__pycache__"))
    for name, body in documented_files().items():
        (source / "vlcl" / "methods" / name).write_text(body)
    env = with_path(dict(os.environ), source)
    listed = run([sys.executable, "-m", "vlcl", "methods"], env)
    assert re.search(r"^l2_init\s+fine-tuning \+", listed.stdout, flags=re.M), listed.stdout + listed.stderr
    assert contract_test(env).startswith("3 passed")


@pytest.mark.slow
def test_a_benchmark_in_its_own_package_is_found_through_its_entry_point(tmp_path):
    """A builder function named by a ``vlcl.benchmarks`` entry point is registered under the entry point's name."""
    site = tmp_path / "site"
    (site / "lab_bench").mkdir(parents=True)
    (site / "lab_bench" / "__init__.py").write_text(
        'def build(**options):\n    """Toy: one task of a lab\'s own data."""\n    raise NotImplementedError\n'
    )
    info = site / "lab_bench-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-bench\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vlcl.benchmarks]\ntoy = lab_bench:build\n")
    listed = run([sys.executable, "-m", "vlcl", "benchmarks"], with_path(dict(os.environ), site))
    assert listed.returncode == 0 and re.search(r"^toy\s+Toy: one task of a lab's own data\.", listed.stdout, flags=re.M), listed.stdout


@pytest.mark.slow
def test_a_broken_entry_point_is_one_line(tmp_path):
    site = tmp_path / "site"
    info = site / "lab_broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vlcl.methods]\nbroken = lab_missing.module\n")
    listed = run([sys.executable, "-m", "vlcl", "methods"], with_path(dict(os.environ), site))
    assert listed.returncode == 2 and "Traceback" not in listed.stderr, listed.stderr
    assert listed.stderr.strip().splitlines()[-1].startswith("vlcl: error: entry point 'broken = lab_missing.module' (vlcl.methods): cannot be loaded")


@pytest.mark.slow
def test_a_state_a_checkpoint_cannot_hold_stops_the_run_before_anything_is_written(tmp_path, world_clip_dir):
    """The round trip at setup: one line naming the method and the key, exit 2, no run directory."""
    site = tmp_path / "site"
    (site / "lab_bad").mkdir(parents=True)
    (site / "lab_bad" / "__init__.py").write_text(
        "from vlcl.methods import Method, register_method\n\n\n"
        "@register_method\nclass TupleState(Method):\n    name = 'tuple_state'\n\n"
        "    def state_dict(self):\n        return {'shape': (3, 4)}\n"
    )
    info = site / "lab_bad-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-bad\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vlcl.methods]\ntuple_state = lab_bad\n")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "vlcl", "run", "method.name=tuple_state", f"model.path={world_clip_dir}",
               "data.tasks=[sketch]", "data.train_scale=0.02", "data.test_images=12", "-o", str(run_dir)]
    result = run(command, with_path(dict(os.environ), site))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "vlcl: error: method 'tuple_state': state_dict() cannot be checkpointed: state key 'shape' holds a tuple; "
        "a state holds tensors, dicts with string keys, and JSON values (None, bool, int, float, str, list)"
    )
    assert not run_dir.exists()


@pytest.mark.slow
def test_an_entry_point_naming_something_that_is_not_a_method_is_refused(tmp_path):
    """`[vlcl.methods] fortytwo = mod:VALUE` (an int) and a module that registers nothing: one line each, exit 2."""
    site = tmp_path / "site"
    (site / "lab_values").mkdir(parents=True)
    (site / "lab_values" / "__init__.py").write_text("VALUE = 42\n")
    (site / "lab_values" / "empty.py").write_text('"""No method here."""\n')
    info = site / "lab_values-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-values\nVersion: 0.1\n")
    for entry, expected in (("fortytwo = lab_values:VALUE", "not a method"), ("nothing = lab_values.empty", "registers no method")):
        (info / "entry_points.txt").write_text(f"[vlcl.methods]\n{entry}\n")
        listed = run([sys.executable, "-m", "vlcl", "methods"], with_path(dict(os.environ), site))
        last = listed.stderr.strip().splitlines()[-1]
        assert listed.returncode == 2 and "Traceback" not in listed.stderr, listed.stderr
        assert last.startswith(f"vlcl: error: entry point '{entry}' (vlcl.methods): ") and expected in last, last
