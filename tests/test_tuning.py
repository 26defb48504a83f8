"""vlcl compare --tune / --seeds: grids, the selection rule, mean and spread, the within-spread mark."""

import math

import pytest

from vlcl.app.compare import (
    LR_GRID,
    CompareError,
    Tuning,
    grid_points,
    method_grid,
    parse_seeds,
    point_name,
    proxy_overrides,
    select_point,
    tuning_score,
    yaml_value,
)
from vlcl.config import load_config
from vlcl.methods import create_method, list_methods, method_class
from vlcl.report.tables import COMPARISON_COLUMNS, format_mean_std, mean_std, seeded_comparison, spread_marks


def _point(lr, score, **options):
    return {"values": {"train.lr": lr, **{f"method.{k}": v for k, v in options.items()}}, "score": score}


def test_select_point_takes_the_highest_score():
    points = [_point(3e-5, 10.0), _point(1e-4, 12.5), _point(3e-4, 12.4), _point(1e-3, None)]
    assert select_point(points) == 1


def test_select_point_breaks_ties_toward_the_smaller_lr_then_the_grid_order():
    points = [_point(1e-3, 20.0, weight=1), _point(1e-4, 20.0, weight=1), _point(1e-4, 20.0 + 1e-12, weight=2), _point(3e-4, 19.0)]
    assert select_point(points) == 1  # 1e-4 beats 1e-3; weight=1 comes before weight=2 at equal score (within 1e-9)
    assert select_point([_point(1e-4, None), _point(1e-3, None)]) is None  # every point failed
    assert select_point([{"values": {"method.weight": 2}, "score": 5.0}, {"values": {"method.weight": 1}, "score": 5.0}]) == 0  # lr fixed


def _results(task_metric="mean_R@1", **section):
    key = "classification" if task_metric == "top1" else "retrieval"
    return {"method": "x", "task_metric": task_metric, "summary": {key: {task_metric: section}}}


def test_tuning_score_is_last_by_default_avg_on_request_and_last_for_one_stage():
    assert tuning_score(_results(last=30.0, avg=25.0)) == (30.0, "Last")
    assert tuning_score(_results(last=30.0, avg=25.0), "avg") == (25.0, "Avg")
    assert tuning_score(_results(last=66.0), "avg") == (66.0, "Last")  # joint: one stage, only Last is defined
    assert tuning_score(_results("top1", last=50.0, avg=40.0), "avg") == (40.0, "Avg")
    with pytest.raises(CompareError, match="--tune-objective best"):
        Tuning(objective="best").check()
    with pytest.raises(CompareError, match="no Avg or Last"):
        tuning_score(_results())


def test_method_grid_crosses_lrs_with_the_method_grid_and_fixed_keys_are_not_tuned():
    grid = method_grid({"weight": (1.0, 2.0)}, (1e-4, 1e-3), [])
    assert grid == {"train.lr": [1e-4, 1e-3], "method.weight": [1.0, 2.0]}
    assert grid_points(grid) == [
        {"train.lr": 1e-4, "method.weight": 1.0}, {"train.lr": 1e-4, "method.weight": 2.0},
        {"train.lr": 1e-3, "method.weight": 1.0}, {"train.lr": 1e-3, "method.weight": 2.0},
    ]
    assert method_grid({"weight": (1.0, 2.0)}, (1e-4,), ["train.lr=5e-4"]) == {"method.weight": [1.0, 2.0]}
    assert method_grid({"weight": (1.0, 2.0)}, (1e-4,), ["method.weight=3"]) == {"train.lr": [1e-4]}
    assert grid_points({}) == [{}]
    assert method_grid({"fusion_weight": (0.8,)}, (), []) == {"method.fusion_weight": [0.8]}  # no optimiser: no lr
    assert method_grid({}, (), []) == {}
    assert point_name({"train.lr": 3e-5, "method.weight": 2.0}) == "lr=3e-05_weight=2"


def test_yaml_value_round_trips_through_the_config():
    for lr in (*LR_GRID, 5e-4, 1e-2, 2.5e-6):
        config = load_config(None, [f"train.lr={yaml_value(lr)}", "method.name=ewc", f"method.penalty={yaml_value(1e5)}"])
        assert config.train.lr == lr and isinstance(config.train.lr, float)
        assert config.method.options()["penalty"] == 1e5 and isinstance(config.method.options()["penalty"], float)


def test_every_method_declares_a_small_valid_grid():
    for name in list_methods():
        cls = method_class(name)
        for key, values in cls.tuning_grid.items():
            assert 2 <= len(values) <= 3 and len(set(values)) == len(values), (name, key)
            assert "." in key or key in cls.Options.model_fields, (name, key)
            default = cls.Options.model_fields[key].default
            assert values[0] == default, f"{name}: the grid of {key} should start at the default {default}"
            for value in values:
                create_method(name, {key: value})
    assert method_class("zeroshot").tuning_grid == {} and not method_class("zeroshot").trains
    assert {n for n in list_methods() if method_class(n).tuning_grid} >= {"lwf", "ewc", "wise_ft", "zscl", "mulki", "cclip", "modx", "cmcl"}


def test_proxy_overrides():
    config = load_config(None, ["data.train_scale=0.5"])
    overrides = proxy_overrides(config, Tuning(tasks=2, scale=0.5, epochs=1, validation_fraction=0.2))
    proxy = load_config(None, ["data.train_scale=0.5", *overrides])
    assert proxy.data.tasks == ["sketch", "new_shapes"] and proxy.data.train_scale == 0.25
    assert proxy.train.epochs == 1 and proxy.data.validation_fraction == 0.2
    every = load_config(None, proxy_overrides(load_config(None, ["data.tasks=[counting,texture]"]), Tuning(tasks=3, scale=1)))
    assert every.data.tasks is None and every.data.train_scale == 1.0  # fewer tasks than K: the run's own (unchanged)
    pairs = ["data.benchmark=features", "data.features=[{name: a, modalities: [x, y], train: a.npz, test: b.npz},"
             " {name: c, modalities: [x, z], train: c.npz, test: d.npz}]"]
    features = load_config(None, pairs + proxy_overrides(load_config(None, pairs), Tuning(tasks=1)))
    assert [f.name for f in features.data.features] == ["a"]  # feature mode: the first entries of data.features
    with pytest.raises(CompareError, match="--tune-lrs"):
        Tuning(lrs=(1e-4, -1.0)).check()
    with pytest.raises(CompareError, match="--validation-fraction"):
        Tuning(validation_fraction=1.0).check()


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    for bad in ("0,0", "a,b", ""):
        with pytest.raises(CompareError, match="--seeds"):
            parse_seeds(bad)


def test_mean_and_sample_std():
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert mean_std([5.0]) == (5.0, None) and mean_std([None, None]) == (None, None) and mean_std([None, 3.0]) == (3.0, None)


def test_spread_marks_follow_the_rule():
    cells = [(40.0, 1.0), (38.5, 0.5), (38.4, 0.5), (None, None), (39.5, None)]
    assert spread_marks(cells, higher_is_better=True) == ["best", "within", "", "", "within"]
    # |38.5 - 40| = 1.5 <= 0.5 + 1.0 (within, the boundary counts); |38.4 - 40| = 1.6 > 1.5; no std counts as 0
    assert spread_marks([(5.0, 0.1), (5.3, 0.1), (5.0, 0.0)], higher_is_better=False) == ["best", "", "best"]
    assert spread_marks([(5.2, 0.1), (5.0, 0.0), (5.0, 0.2)], higher_is_better=False) == ["within", "best", "best"]
    assert spread_marks([(None, None)], True) == [""]


def _run(last, avg, forgetting, pd, base, method="finetune", lr=1e-4):
    return {
        "method": method,
        "config": {"method": {"name": method}, "train": {"lr": lr}},
        "summary": {
            "retrieval": {"mean_R@1": {"last": last, "avg": avg, "transfer": 1.0, "bwt": -forgetting, "forgetting": forgetting}},
            "zeroshot_mean_pd": pd,
            "heldout_mean_R@1": {"base": {"final": base}},
        },
    }


def test_seeded_comparison_means_stds_and_marks():
    a = [_run(30.0, 20.0, 10.0, 5.0, 80.0), _run(32.0, 22.0, 12.0, 7.0, 82.0)]
    b = [_run(31.5, 30.0, 2.0, 1.0, 90.0, "lwf"), _run(31.5, 30.0, 2.0, 1.0, 90.0, "lwf")]
    names, rows = seeded_comparison([a, b])
    assert names == [n for n, _ in COMPARISON_COLUMNS]
    assert rows[0]["label"] == "finetune lr=0.0001" and rows[0]["seeds"] == 2
    last_a, last_b = rows[0]["cells"][0], rows[1]["cells"][0]
    assert last_a[:2] == pytest.approx((31.0, math.sqrt(2))) and last_b[:2] == (31.5, 0.0)
    assert (last_a[2], last_b[2]) == ("within", "best")  # |31 - 31.5| <= 1.41 + 0
    forgetting_a, forgetting_b = rows[0]["cells"][4], rows[1]["cells"][4]
    assert (forgetting_a[2], forgetting_b[2]) == ("", "best")  # lower is better: |11 - 2| > 1.41
    assert format_mean_std(*last_a) == "31.0 +- 1.4 ~" and format_mean_std(*last_b) == "**31.5 +- 0.0**"
    assert format_mean_std(30.0, None) == "30.0" and format_mean_std(None, None) == "-"
