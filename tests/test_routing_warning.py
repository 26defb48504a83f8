"""A method that routes sets (MoE-Adapters' DDAS) and sends a trained task's test images elsewhere is warned about,
in the console, log.jsonl, results.json and the report (vlcl.engine.loop.routing_problems)."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

import vlcl
from vlcl.app.cli import main
from vlcl.methods import registry
from vlcl.methods.finetune import FineTune


def test_routing_problems_name_each_trained_task_below_the_share():
    from vlcl.engine.loop import ROUTING_MIN_SHARE, routing_problems

    routes = {"a": {"a": 1.0}, "b": {"a": 0.9, "b": 0.1}, "c": {"frozen": 1.0}, "zs_x": {"a": 1.0}}
    problems = routing_problems(routes, ["a", "b", "c"])
    assert [task for task, _ in problems] == ["b", "c"]
    assert "10% of its test images went to its own route and 90% to 'a'" in problems[0][1]
    assert routing_problems(routes, ["a"]) == [] and routing_problems({}, ["a", "b"]) == []
    assert routing_problems({"b": {"b": ROUTING_MIN_SHARE, "a": 1 - ROUTING_MIN_SHARE}}, ["b"]) == []


@pytest.fixture
def first_route_only():
    before = dict(registry._REGISTRY)

    @vlcl.register_method
    class FirstRouteOnly(FineTune):
        """Fine-tuning whose evaluation 'routes' every set to the first task (as DDAS did on the digits)."""

        name = "test_first_route_only"

        @contextmanager
        def evaluation_route(self, set_name, images):
            yield {self.context.task_names[0]: 1.0}

    yield FirstRouteOnly.name
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


@pytest.mark.slow
def test_a_task_routed_to_another_tasks_parameters_is_warned_everywhere(first_route_only, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["run", f"method.name={first_route_only}", "data.train_scale=0.02", "data.test_images=10",
            "data.zeroshot_per_class=2", "train.epochs=1", "train.batch_size=16", "threads=1", "data.tasks=[sketch,new_shapes]", "-o", str(run_dir)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "vlcl: warning: routing failed for 'new_shapes': 0% of its test images went to its own route and 100% to 'sketch'" in err
    results = json.loads((run_dir / "results.json").read_text())
    routing = [w for w in results["warnings"] if w["kind"] == "routing"]
    assert [(w["stage"], w["set"]) for w in routing] == [(2, "new_shapes")]  # sketch is routed to its own route
    logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "warning" and e.get("kind") == "routing" and e.get("set") == "new_shapes" for e in logged)
    report = tmp_path / "report.md"
    assert main(["report", str(run_dir), "-o", str(report)]) == 0
    assert "routing failed for 'new_shapes'" in report.read_text()
