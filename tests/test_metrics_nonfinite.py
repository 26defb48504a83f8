"""NaN and inf never score: every metric function refuses them (a NaN compares false with everything, so under
the pessimistic ">= the target" rule a NaN query would have no competitor and rank first)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vlcl.engine.checkpoint import atomic_write_json
from vlcl.metrics import (
    NonFiniteError,
    alignment_diagnostics,
    continual_summary,
    performance_drop,
    retrieval_recall,
    zeroshot_accuracy,
    zeroshot_classifier,
    zeroshot_retention_summary,
)

BAD = [float("nan"), float("inf"), float("-inf")]


def features(n: int = 6, d: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def spoil(x: torch.Tensor, value: float, rows=(0,)) -> torch.Tensor:
    x = x.clone()
    x[list(rows), 0] = value
    return x


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("convention", ["any", "diagonal"])
def test_retrieval_refuses_non_finite_images(value, convention):
    with pytest.raises(NonFiniteError, match="image features: 1 of 6 rows"):
        retrieval_recall(spoil(features(), value), features(seed=1), list(range(6)), convention=convention)


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("convention", ["any", "diagonal"])
def test_retrieval_refuses_non_finite_texts(value, convention):
    with pytest.raises(NonFiniteError, match="text features: 2 of 6 rows"):
        retrieval_recall(features(), spoil(features(seed=1), value, rows=(1, 4)), list(range(6)), convention=convention)


def test_an_all_nan_model_does_not_score_100():
    """The bug this guards against: all-NaN features used to give R@1 = 100."""
    nan = torch.full((5, 4), float("nan"))
    with pytest.raises(NonFiniteError):
        retrieval_recall(nan, nan, list(range(5)))
    with pytest.raises(NonFiniteError):
        zeroshot_accuracy(nan, torch.eye(4)[:3], [0, 1, 2, 0, 1])


@pytest.mark.parametrize("value", BAD)
def test_zeroshot_accuracy_refuses_non_finite_images(value):
    with pytest.raises(NonFiniteError, match="image features"):
        zeroshot_accuracy(spoil(features(), value), torch.eye(4)[:3], [0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("value", BAD)
def test_zeroshot_accuracy_refuses_a_non_finite_classifier(value):
    with pytest.raises(NonFiniteError, match="classifier"):
        zeroshot_accuracy(features(), spoil(torch.eye(4)[:3], value), [0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("value", BAD)
def test_zeroshot_classifier_refuses_non_finite_prompts(value):
    prompts = torch.randn(3, 2, 4)
    prompts[1, 1, 2] = value
    with pytest.raises(NonFiniteError, match="class prompt features"):
        zeroshot_classifier(prompts)


@pytest.mark.parametrize("value", BAD)
def test_alignment_refuses_non_finite_features(value):
    with pytest.raises(NonFiniteError):
        alignment_diagnostics(spoil(features(), value), features(seed=1), list(range(6)))
    with pytest.raises(NonFiniteError):
        alignment_diagnostics(features(), spoil(features(seed=1), value), list(range(6)))


@pytest.mark.parametrize("value", BAD)
def test_continual_summary_refuses_non_finite_scores(value):
    with pytest.raises(ValueError, match=r"NaN or inf at \(row, column\) \(1, 0\)"):
        continual_summary([[50.0, 10.0], [value, 60.0]])


@pytest.mark.parametrize("value", BAD)
def test_retention_and_pd_refuse_non_finite_scores(value):
    with pytest.raises(ValueError, match="finite"):
        zeroshot_retention_summary(value, [40.0])
    with pytest.raises(ValueError, match="finite"):
        zeroshot_retention_summary(50.0, [40.0, value])
    with pytest.raises(ValueError, match="finite"):
        performance_drop(50.0, value)


def test_finite_inputs_still_score():
    x = features()
    assert retrieval_recall(x, x, list(range(6)))["i2t_R@1"] == 100.0
    assert math.isclose(performance_drop(50, 40), 10)


def test_json_is_strict(tmp_path):
    with pytest.raises(ValueError, match="refusing to write NaN or inf"):
        atomic_write_json(tmp_path / "results.json", {"last": float("nan")})
    assert not (tmp_path / "results.json").exists()
    atomic_write_json(tmp_path / "results.json", {"last": 1.5, "transfer": None})
    assert json.loads((tmp_path / "results.json").read_text(), parse_constant=lambda c: 1 / 0) == {"last": 1.5, "transfer": None}


def test_evaluation_names_the_set_of_a_model_gone_non_finite(world_clip_dir):
    from vlcl.config import DataConfig, EvalConfig
    from vlcl.data.registry import build_benchmark
    from vlcl.engine.evaluate import Evaluator
    from vlcl.models.loading import load_clip

    bundle = load_clip(str(world_clip_dir))
    data = DataConfig(tasks=["sketch"], train_scale=0.02, test_images=12, zeroshot_per_class=2)
    benchmark = build_benchmark(data, image_size=bundle.preprocess.image_size, preprocess=bundle.preprocess)
    evaluator = Evaluator(benchmark, bundle.tokenizer, bundle.preprocess, bundle.context_length, EvalConfig())
    with torch.no_grad():
        bundle.model.visual_projection.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="set 'sketch': image features: 12 of 12 rows hold NaN or inf"):
        evaluator.evaluate(bundle.model)
