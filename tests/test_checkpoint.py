import json

import pytest
import torch

from vlcl.engine.checkpoint import (
    StateFormatError,
    atomic_write_json,
    check_state_round_trip,
    latest_checkpoint,
    merge_state,
    read_stage_checkpoint,
    split_state,
    state_difference,
    write_stage_checkpoint,
)
from vlcl.models import load_clip


def test_split_merge_state_round_trip():
    state = {"fisher": {"w": torch.ones(2, 3), "b": torch.zeros(3)}, "count": 4, "names": ["a", "b"], "empty": {}}
    tensors, values = split_state(state)
    assert set(tensors) == {"fisher/w", "fisher/b"}
    merged = merge_state(tensors, json.loads(json.dumps(values)))
    assert merged["count"] == 4 and merged["names"] == ["a", "b"] and merged["empty"] == {}
    assert torch.equal(merged["fisher"]["w"], state["fisher"]["w"])


def test_any_string_key_survives_the_checkpoint_format():
    """Dotted parameter names, slashes, tildes, empty keys: the state comes back exactly."""
    state = {
        "anchor": {"text_model.encoder.layers.0.mlp.fc1.weight": torch.randn(2, 2), "a/b": torch.ones(1), "~1": torch.zeros(1)},
        "": {"x.y": 1.5, "": [1, "two", None, True]},
        "nested": {"deeper": {"t": torch.arange(3, dtype=torch.int64), "n": 0}},
    }
    check_state_round_trip(state)
    tensors, values = split_state(state)
    assert "anchor/a~1b" in tensors and "anchor/~01" in tensors
    assert state_difference(state, merge_state(tensors, json.loads(json.dumps(values)))) is None


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({1: torch.ones(1)}, r"state key 1 under '\(top level\)' is a int; keys must be strings"),
        ({"a": {"b": (1, 2)}}, r"state key 'a/b' holds a tuple"),
        ({"a": [torch.ones(1)]}, r"state key 'a/0' holds a Tensor \(a tensor inside a list"),
        ({"lr": float("nan")}, r"state key 'lr' is nan"),
        ({"arr": __import__("numpy").zeros(2)}, r"state key 'arr' holds a ndarray"),
    ],
)
def test_a_state_a_checkpoint_cannot_hold_is_named(state, message):
    with pytest.raises(StateFormatError, match=message):
        check_state_round_trip(state)


def test_atomic_write_leaves_no_temporary(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_stage_checkpoint_round_trip(tmp_path, tiny_clip_dir):
    bundle = load_clip(str(tiny_clip_dir))
    with torch.no_grad():
        bundle.model.logit_scale.fill_(1.234)
    state = {"old": {"proj": torch.arange(6.0).view(2, 3)}, "tasks_seen": 1}
    path = write_stage_checkpoint(tmp_path, 0, bundle, state, {"next_stage": 1, "stages": []})
    assert latest_checkpoint(tmp_path) == path
    loaded_state, progress = read_stage_checkpoint(path)
    assert progress["next_stage"] == 1 and loaded_state["tasks_seen"] == 1
    assert torch.equal(loaded_state["old"]["proj"], state["old"]["proj"])
    reloaded = load_clip(str(path / "model"))
    for (name, a), (_, b) in zip(bundle.model.state_dict().items(), reloaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    # Plain transformers loads it without vlcl.
    from transformers import CLIPModel

    assert CLIPModel.from_pretrained(path / "model").logit_scale.item() == pytest.approx(1.234)


def test_incomplete_checkpoint_is_refused(tmp_path, tiny_clip_dir):
    bundle = load_clip(str(tiny_clip_dir))
    path = write_stage_checkpoint(tmp_path, 0, bundle, {}, {"next_stage": 1, "stages": []})
    (path / "COMPLETE").unlink()
    with pytest.raises(ValueError, match="incomplete"):
        latest_checkpoint(tmp_path)


def test_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None


@pytest.mark.slow
def test_only_the_newest_stage_checkpoints_are_kept(tmp_path, world_clip_dir):
    from test_run import quick_args
    from vlcl.app.cli import main

    for keep, expected in (("1", ["stage_01"]), ("2", ["stage_00", "stage_01"]), ("null", ["stage_00", "stage_01"])):
        run_dir = tmp_path / f"keep-{keep}"
        assert main(["run", *quick_args(world_clip_dir, f"checkpoint.keep={keep}"), "-o", str(run_dir)]) == 0
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest.json", *expected], keep
