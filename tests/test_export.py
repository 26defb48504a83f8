"""`vlcl export`: a run's evaluated model as a plain Hugging Face CLIP directory that transformers alone loads and
that scores exactly what the run recorded; refusals in one line; the note in the checkpoints of methods whose
evaluation is more than their CLIPModel.

The scoring below uses transformers alone (CLIPModel, AutoTokenizer and CLIPImageProcessor from the exported
directory; recall@1 and top-1 counted by hand); vlcl only builds the run's test images and texts again.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

import vlcl
from test_run import quick_args
from vlcl.app.cli import main
from vlcl.engine.checkpoint import NOT_EVALUATED_FIELD
from vlcl.methods import Method, create_method

RUNS: dict[str, list[str]] = {
    "finetune": ["checkpoint.keep=null"],  # every stage kept: stage 0 is exported too
    "lora": [],
    "cclip": [],
    "wise_ft": [],
    "moe_adapters": [],
    "rail": ["data.benchmark=embedded_cls"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, world_clip_dir):
    """The tiny two-task run of each method, made on first use (a few seconds each)."""
    made: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in made:
            run_dir = tmp_path_factory.mktemp(f"run-{name}") / "run"
            assert main(["run", *quick_args(world_clip_dir, f"method.name={name}", *RUNS[name]), "-o", str(run_dir)]) == 0
            made[name] = run_dir
        return made[name]

    return run


# -- scoring with transformers alone ---------------------------------------------------------------------------
class Transformers:
    """The exported directory, read by transformers alone; unit-norm features as CLIPModel's forward returns them."""

    def __init__(self, directory: Path):
        self.model = CLIPModel.from_pretrained(directory, local_files_only=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.processor = CLIPImageProcessor.from_pretrained(directory, local_files_only=True)

    @torch.no_grad()
    def features(self, images: np.ndarray, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
        return out.image_embeds, out.text_embeds


def percent(hits: list[bool]) -> float:
    return 100.0 * sum(hits) / len(hits)


def hit_at_1(scores: torch.Tensor, positives: list[int]) -> bool:
    """Every non-positive scores strictly below the best positive (a tie is a miss)."""
    best = scores[positives].max()
    others = torch.ones(len(scores), dtype=torch.bool)
    others[positives] = False
    return bool((scores[others] < best).all())


def recall_at_1(images: torch.Tensor, texts: torch.Tensor, captions: list[str], text_to_image: list[int]) -> tuple[float, float]:
    """(image->text, text->image) R@1, any of an image's captions counting; identical caption strings are one text."""
    scores = images @ texts.T
    strings_of = {i: {c for c, owner in zip(captions, text_to_image) if owner == i} for i in set(text_to_image)}
    i2t = [
        hit_at_1(scores[i], [j for j, c in enumerate(captions) if c in strings_of[i]])
        for i in range(len(images)) if i in strings_of
    ]
    t2i = [hit_at_1(scores[:, j], [i for i in strings_of if captions[j] in strings_of[i]]) for j in range(len(captions))]
    return percent(i2t), percent(t2i)


def top1(images: torch.Tensor, prompt_features: torch.Tensor, classes: int, labels: list[int]) -> float:
    """Class embedding = the normalised mean of its prompts' unit embeddings (CLIP's prompt ensemble)."""
    classifier = F.normalize(prompt_features.view(classes, -1, prompt_features.shape[-1]).mean(1), dim=-1)
    scores = images @ classifier.T
    return percent([hit_at_1(scores[n], [label]) for n, label in enumerate(labels)])


def recorded(run_dir: Path, stage: int) -> dict:
    stages = json.loads((run_dir / "results.json").read_text())["stages"]
    return next(s for s in stages if s["index"] == stage)["metrics"]


def check_scores(exported: Path, run_dir: Path, stage: int) -> int:
    """Every retrieval R@1 and zero-shot top-1 of the stage, from the exported directory, equal to results.json."""
    metrics, model = recorded(run_dir, stage), Transformers(exported)
    benchmark = vlcl.load_run(run_dir).benchmark()  # the run's test images and texts, built again
    compared = 0
    for dataset in benchmark.retrieval_sets():
        images, texts = model.features(dataset.images, list(dataset.captions))
        i2t, t2i = recall_at_1(images, texts, list(dataset.captions), [int(i) for i in dataset.text_to_image])
        assert (i2t, t2i) == (metrics["retrieval"][dataset.name]["i2t_R@1"], metrics["retrieval"][dataset.name]["t2i_R@1"]), dataset.name
        compared += 2
    for dataset in benchmark.zeroshot:
        prompts = [p for per_class in dataset.prompts() for p in per_class]
        images, texts = model.features(dataset.images, prompts)
        assert top1(images, texts, len(dataset.classnames), [int(y) for y in dataset.labels]) == metrics["zeroshot"][dataset.name]["top1"], dataset.name
        compared += 1
    return compared


@pytest.mark.parametrize("name", ["finetune", "lora", "cclip", "wise_ft"])
def test_export_scores_what_the_run_scored(name, runs, tmp_path, capsys):
    run_dir = runs(name)
    capsys.readouterr()  # the run's own output
    assert main(["export", str(run_dir), "-o", str(tmp_path / "model")]) == 0
    assert "after stage 1 (counting" in capsys.readouterr().out
    assert check_scores(tmp_path / "model", run_dir, 1) >= 8  # 4 retrieval sets in both directions, 3 zero-shot sets
    record = json.loads((tmp_path / "model" / "vlcl_export.json").read_text())
    assert (record["method"], record["stage"], record["stage_name"]) == (name, 1, "counting")
    assert record["metrics"] == recorded(run_dir, 1)


def test_export_of_an_earlier_stage_and_of_the_pretrained_model(runs, tmp_path):
    run_dir = runs("finetune")
    assert main(["export", str(run_dir), "--stage", "0", "-o", str(tmp_path / "first")]) == 0
    check_scores(tmp_path / "first", run_dir, 0)
    assert recorded(run_dir, 0) != recorded(run_dir, 1)  # the stages differ, so the stage matters
    assert main(["export", str(run_dir), "--stage", "pretrained", "-o", str(tmp_path / "pre")]) == 0
    check_scores(tmp_path / "pre", run_dir, -1)


def test_exported_weights_are_the_evaluated_model(runs, tmp_path):
    """The CLIPModel that load_run gives (the one the evaluation encoded with), tensor for tensor."""
    run_dir = runs("lora")
    vlcl.export_run(run_dir, tmp_path / "model")
    exported = CLIPModel.from_pretrained(tmp_path / "model", local_files_only=True).state_dict()
    evaluated = vlcl.load_run(run_dir).model.state_dict()
    assert exported.keys() == evaluated.keys()
    assert all(torch.equal(exported[k], evaluated[k]) for k in evaluated)
    pretrained = CLIPModel.from_pretrained(vlcl.load_run(run_dir, "pretrained").config.model.path).state_dict()
    assert not all(torch.equal(pretrained[k], evaluated[k]) for k in evaluated)  # LoRA was merged in


# -- methods whose evaluation is more than a CLIPModel ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["moe_adapters", "rail"])
def test_export_refuses_a_method_whose_evaluation_is_more_than_its_model(name, runs, tmp_path, capsys):
    run_dir = runs(name)
    capsys.readouterr()  # the run's own output
    assert main(["export", str(run_dir), "-o", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vlcl: error: ")
    assert f"method '{name}'" in err and "vlcl.load_run(" in err and create_method(name).evaluation_beyond_model() in err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("name", ["moe_adapters", "rail"])
def test_checkpoint_model_says_it_is_not_the_evaluated_model(name, runs):
    model_dir = runs(name) / "checkpoints" / "stage_01" / "model"
    readme = (model_dir / "README.md").read_text()
    assert "NOT the model" in readme and "vlcl.load_run(RUN_DIR, stage=1)" in readme and f"'{name}'" in readme
    note = getattr(CLIPModel.from_pretrained(model_dir, local_files_only=True).config, NOT_EVALUATED_FIELD)
    assert f"method '{name}'" in note and "vlcl.load_run" in note
    assert vlcl.load_run(runs(name)).evaluate() == recorded(runs(name), 1)  # load_run still rebuilds the evaluated one


def test_checkpoint_model_of_a_plain_method_has_no_note(runs):
    model_dir = runs("lora") / "checkpoints" / "stage_01" / "model"
    assert not (model_dir / "README.md").exists()
    assert NOT_EVALUATED_FIELD not in json.loads((model_dir / "config.json").read_text())


def test_a_method_overriding_an_evaluation_hook_is_not_exportable_by_default():
    """The contract decides, not a list of names: a method of your own that scores classes itself is refused."""

    class OwnHead(Method):
        def classification_logits(self, image_features, classifier, class_keys):
            return image_features @ classifier.T

    assert "classification_logits" in OwnHead().evaluation_beyond_model()
    assert Method().evaluation_beyond_model() is None and create_method("cclip").evaluation_beyond_model() is None


# -- refusals ------------------------------------------------------------------------------------------------
def _not_a_run(run_dir: Path, tmp: Path) -> list[str]:
    (tmp / "empty").mkdir()
    return [str(tmp / "empty"), "-o", str(tmp / "out")]


def _missing_run(run_dir: Path, tmp: Path) -> list[str]:
    return [str(tmp / "no-such-run"), "-o", str(tmp / "out")]


def _pruned_stage(run_dir: Path, tmp: Path) -> list[str]:
    return [str(run_dir), "--stage", "0", "-o", str(tmp / "out")]


def _unknown_stage(run_dir: Path, tmp: Path) -> list[str]:
    return [str(run_dir), "--stage", "7", "-o", str(tmp / "out")]


def _unknown_stage_name(run_dir: Path, tmp: Path) -> list[str]:
    return [str(run_dir), "--stage", "nosuchtask", "-o", str(tmp / "out")]


def _output_not_empty(run_dir: Path, tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "mine.txt").write_text("keep me")
    return [str(run_dir), "-o", str(tmp / "out")]


def _output_is_a_file(run_dir: Path, tmp: Path) -> list[str]:
    (tmp / "out").write_text("keep me")
    return [str(run_dir), "-o", str(tmp / "out")]


def _output_under_a_file(run_dir: Path, tmp: Path) -> list[str]:
    (tmp / "out").write_text("keep me")
    return [str(run_dir), "-o", str(tmp / "out" / "model")]


def _output_unwritable(run_dir: Path, tmp: Path) -> list[str]:
    return [str(run_dir), "-o", "/proc/vlcl-export"]  # no one, root included, can make a folder there


def _output_in_a_read_only_folder(run_dir: Path, tmp: Path) -> list[str]:
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    (tmp / "locked").mkdir()
    (tmp / "locked").chmod(0o500)
    return [str(run_dir), "-o", str(tmp / "locked" / "out")]


REFUSALS = {
    _not_a_run: "not a vlcl run directory",
    _missing_run: "run directory not found",
    _pruned_stage: "checkpoint.keep=null",
    _unknown_stage: "no complete stage 7",
    _unknown_stage_name: "no complete stage 'nosuchtask'",
    _output_not_empty: "exists and is not empty",
    _output_is_a_file: "exists and is not a directory",
    _output_under_a_file: "is a file, not a directory",
    _output_unwritable: "cannot write it",
    _output_in_a_read_only_folder: "is not writable",
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=lambda case: case.__name__.strip("_"))
def test_export_refusal_is_one_line_and_writes_nothing(case, runs, tmp_path, capsys):
    run_dir = runs("lora")  # checkpoint.keep=1: only stage 1 is kept
    work = tmp_path / "work"
    work.mkdir()
    args = case(run_dir, work)
    capsys.readouterr()  # the run's own output
    before = sorted((str(p), p.read_bytes() if p.is_file() else None) for p in work.rglob("*"))
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlcl: error: ") and err.count("\n") == 1, err
    assert REFUSALS[case] in err
    assert sorted((str(p), p.read_bytes() if p.is_file() else None) for p in work.rglob("*")) == before


def test_a_failure_while_writing_leaves_nothing(runs, tmp_path, monkeypatch):
    def broken(directory: Path, loaded) -> None:
        (directory / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("vlcl.export._fill", broken)
    with pytest.raises(OSError):
        vlcl.export_run(runs("lora"), tmp_path / "deep" / "model")
    assert list(tmp_path.iterdir()) == []  # neither the output, its staging folder, nor the parent it made


def test_export_into_an_empty_folder_with_the_umask_modes(runs, tmp_path):
    (tmp_path / "model").mkdir()
    previous = os.umask(0o027)
    try:
        vlcl.export_run(runs("lora"), tmp_path / "model")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "model").iterdir()}
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o750
    assert set(modes.values()) == {0o640} and "model.safetensors" in modes
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
