"""The bad-input suite: every case ends in one line, a non-zero exit, and nothing already written lost.

Families: config, model, checkpoint (resume), data, rundir (where a run writes,
--overwrite), report, features. The harness is tests/badinput.py; signals and
SIGKILL of --overwrite runs are in tests/test_signals.py, NaN/inf metric inputs in
tests/test_metrics_*.py.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from badinput import Case, Context, check_case
from test_run import quick_args
from vlcl.app.cli import main

CASES: list[Case] = []
FAST = ["train.epochs=1", "train.batch_size=4", "train.lr=0.001", "threads=1", "data.workers=0"]


def case(family: str, code: int, message: str):
    def register(setup):
        CASES.append(Case(setup.__name__, family, setup, code, message))
        return setup

    return register


def embedded(ctx: Context, *extra: str, model: Path | None = None) -> list[str]:
    return ["run", *quick_args(model or ctx.clip, *extra), "-o", str(ctx.new_run_dir())]


def folders(ctx: Context, root: Path, *extra: str) -> list[str]:
    return [
        "run", f"model.path={ctx.clip}", "data.benchmark=folders", f"data.root={root}", *FAST, *extra, "-o", str(ctx.new_run_dir())
    ]


def write_config(ctx: Context, content: bytes | str) -> Path:
    path = ctx.tmp / "config.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def edit_weights(directory: Path, edit) -> None:
    path = directory / "model.safetensors"
    tensors = {k: v.clone() for k, v in load_file(str(path)).items()}
    edit(tensors)
    save_file(tensors, str(path))


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# -- config -------------------------------------------------------------------------------------

@case("config", 2, r"unknown config key 'sed'.*did you mean 'seed'")
def unknown_top_level_key(ctx):
    return embedded(ctx, "sed=1")


@case("config", 2, r"unknown config key 'train.epoch'.*did you mean 'epochs'")
def unknown_nested_key(ctx):
    return embedded(ctx, "train.epoch=2")


@case("config", 2, r"invalid value for 'train.epochs'")
def epochs_not_a_number(ctx):
    return embedded(ctx, "train.epochs=abc")


@case("config", 2, r"invalid value for 'train.epochs'.*greater than or equal to 1")
def epochs_zero(ctx):
    return embedded(ctx, "train.epochs=0")


@case("config", 2, r"'train.lr'.*finite number")
def lr_infinite(ctx):
    return embedded(ctx, "train.lr=.inf")


@case("config", 2, r"'train.lr'.*finite number")
def lr_nan(ctx):
    return embedded(ctx, "train.lr=.nan")


@case("config", 2, r"'train.lr'.*finite number")
def lr_string_inf(ctx):
    return embedded(ctx, "train.lr=inf")


@case("config", 2, r"'train.lr'.*greater than 0")
def lr_negative(ctx):
    return embedded(ctx, "train.lr=-1")


@case("config", 2, r"'train.text_lr'.*finite number")
def text_lr_infinite(ctx):
    return embedded(ctx, "train.text_lr=-.inf")


@case("config", 2, r"'train.betas\[1\]'.*finite number")
def beta_infinite(ctx):
    return embedded(ctx, "train.betas=[0.9,.inf]")


@case("config", 2, r"option 'integration' must be a finite number")
def method_option_nan(ctx):
    return embedded(ctx, "method.name=cclip", "method.integration=.nan")


@case("config", 2, r"'eval.ks'.*contains 1")
def ks_without_1(ctx):
    return embedded(ctx, "eval.ks=[5]")


@case("config", 2, r"'data.on_bad_sample'")
def bad_sample_policy_unknown(ctx):
    return embedded(ctx, "data.on_bad_sample=ignore")


@case("config", 2, r"fp16 needs CUDA")
def fp16_on_cpu(ctx):
    return embedded(ctx, "train.precision=fp16", "device=cpu")


@case("config", 2, r"CUDA is not available")
def cuda_without_gpu(ctx):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return embedded(ctx, "device=cuda")


@case("config", 2, r"config.yaml: config file not found")
def config_file_missing(ctx):
    return ["run", str(ctx.tmp / "config.yaml"), "-o", str(ctx.new_run_dir())]


@case("config", 2, r"config.yaml: line \d+: malformed YAML")
def config_malformed_yaml(ctx):
    return ["run", str(write_config(ctx, "seed: 1\ntrain: [epochs: 2\n")), "-o", str(ctx.new_run_dir())]


@case("config", 2, r"expected a mapping of config keys")
def config_top_level_list(ctx):
    return ["run", str(write_config(ctx, "- seed\n- 1\n")), "-o", str(ctx.new_run_dir())]


@case("config", 2, r"config.yaml: line 3: not UTF-8")
def config_not_utf8(ctx):
    return ["run", str(write_config(ctx, b"seed: 1\ntrain:\n  lr: \xff\xfe\n")), "-o", str(ctx.new_run_dir())]


@case("config", 2, r"config.yaml: unknown config key 'train.lrr'")
def config_file_unknown_key(ctx):
    return ["run", str(write_config(ctx, "train:\n  lrr: 0.1\n")), "-o", str(ctx.new_run_dir())]


@case("config", 2, r"config.yaml: invalid value for 'train.lr'.*finite")
def config_file_infinite_lr(ctx):
    return ["run", str(write_config(ctx, "train:\n  lr: .inf\n")), "-o", str(ctx.new_run_dir())]


@case("config", 2, r"unexpected argument 'extra'")
def positional_after_config(ctx):
    return ["run", str(write_config(ctx, "seed: 1\n")), "extra", "-o", str(ctx.new_run_dir())]


@case("config", 2, r"invalid value for 'seed'")
def override_into_a_value(ctx):
    return embedded(ctx, "seed.x=1")


@case("config", 2, r"empty component")
def override_empty_component(ctx):
    return embedded(ctx, "train..lr=1")


@case("config", 2, r"invalid value for 'train'")
def override_section_with_value(ctx):
    return embedded(ctx, "train=3")


@case("config", 2, r"unknown method 'nosuch'")
def unknown_method(ctx):
    return embedded(ctx, "method.name=nosuch")


@case("config", 2, r"nosuch")
def unknown_method_option(ctx):
    return embedded(ctx, "method.name=cclip", "method.nosuch=1")


@case("config", 2, r"method 'lora': method.target_modules: no Linear layer named 'nope' in the model; its Linear layers: fc1")
def lora_target_not_in_the_model(ctx):
    return embedded(ctx, "method.name=lora", "method.target_modules=[q_proj,nope]")


@case("config", 2, r"method 'zscl': method.reference=folder needs method.reference_dir")
def zscl_folder_reference_without_a_folder(ctx):
    return embedded(ctx, "method.name=zscl", "method.reference=folder")


@case("config", 2, r"method 'zscl': reference image folder '.*nowhere' \(method.reference_dir\) does not exist")
def zscl_reference_folder_missing(ctx):
    sentences = ctx.tmp / "sentences.txt"
    sentences.write_text("a red circle\n")
    return embedded(ctx, "method.name=zscl", "method.reference=folder", f"method.reference_dir={ctx.tmp / 'nowhere'}",
                    f"method.reference_sentences={sentences}")


@case("config", 2, r"method 'zscl': reference_sentences is read only with reference=folder")
def zscl_folder_option_ignored(ctx):
    return embedded(ctx, "method.name=zscl", f"method.reference_sentences={ctx.tmp / 's.txt'}")


@case("config", 2, r"unknown benchmark 'nosuch'")
def unknown_benchmark(ctx):
    return embedded(ctx, "data.benchmark=nosuch")


@case("config", 2, r"unknown task 'nosuch' in 'data.tasks'")
def unknown_task(ctx):
    return embedded(ctx, "data.tasks=[sketch,nosuch]")


@case("config", 2, r"'data.tasks' is empty")
def no_tasks(ctx):
    return embedded(ctx, "data.tasks=[]")


@case("config", 2, r"names a task twice")
def task_twice(ctx):
    return embedded(ctx, "data.tasks=[sketch,sketch]")


@case("config", 2, r"'data.train_scale'")
def train_scale_zero(ctx):
    return embedded(ctx, "data.train_scale=0")


@case("config", 2, r"'threads'")
def threads_zero(ctx):
    return embedded(ctx, "threads=0")


@case("config", 2, r"'data.test_images'")
def too_few_test_images(ctx):
    return embedded(ctx, "data.test_images=5")


@case("config", 2, r"'train.warmup_fraction'")
def warmup_all_steps(ctx):
    return embedded(ctx, "train.warmup_fraction=1")


@case("config", 2, r"'seed'.*valid integer")
def fractional_seed(ctx):
    return embedded(ctx, "seed=1.5")


@case("config", 2, r"'data.max_image_pixels'")
def max_pixels_zero(ctx):
    return embedded(ctx, "data.max_image_pixels=0")


@case("config", 2, r"unknown pretrain setting 'nosuch'")
def pretrain_unknown_setting(ctx):
    return ["pretrain", "-o", str(ctx.new_run_dir()), "nosuch=1"]


@case("config", 2, r"'train.betas'.*each beta must be in \[0, 1\)")
def beta_out_of_range(ctx):
    return embedded(ctx, "train.betas=[1.5,0.9]")


@case("config", 2, r"pretrain setting 'epochs': expected an integer, got 'abc'")
def pretrain_setting_not_a_number(ctx):
    return ["pretrain", "-o", str(ctx.new_run_dir()), "epochs=abc"]


@case("config", 2, r"pretrain setting 'lr': expected a finite number")
def pretrain_setting_infinite(ctx):
    return ["pretrain", "-o", str(ctx.new_run_dir()), "lr=.inf"]


@case("config", 2, r"pretrain setting 'batch_size': 0 is out of range")
def pretrain_setting_zero_batch(ctx):
    return ["pretrain", "-o", str(ctx.new_run_dir()), "batch_size=0"]


@case("config", 2, r"unknown method 'nosuch'")
def compare_unknown_method(ctx):
    return ["compare", *quick_args(ctx.clip), "--methods", "zeroshot,nosuch", "-o", str(ctx.new_run_dir())]


@case("config", 2, r"'train.lr'.*finite")
def compare_method_override_infinite(ctx):
    return ["compare", *quick_args(ctx.clip), "--methods", "finetune[train.lr=.inf]", "-o", str(ctx.new_run_dir())]


@case("config", 2, r"empty method name")
def compare_empty_method(ctx):
    return ["compare", *quick_args(ctx.clip), "--methods", "zeroshot,,finetune", "-o", str(ctx.new_run_dir())]


@case("config", 2, r"finetune/results.json: line 1: results file is not valid JSON")
def compare_over_a_corrupt_results_file(ctx):
    out = ctx.tmp / "compare"
    method = out / "finetune"
    method.mkdir(parents=True)
    (method / "config.yaml").write_text(Path(ctx.finished_run / "config.yaml").read_text())
    (method / "results.json").write_text("{")
    ctx.protected.append(out)
    return ["compare", *quick_args(ctx.clip, "checkpoint.keep=null"), "--methods", "finetune", "-o", str(out)]  # the finished run's config


# -- model ----------------------------------------------------------------------------------------

@case("model", 2, r"model directory not found")
def model_dir_missing(ctx):
    return embedded(ctx, model=ctx.tmp / "nowhere" / "clip")


@case("model", 2, r"expected a Hugging Face model directory, found a file")
def model_path_is_a_file(ctx):
    (ctx.tmp / "clip.bin").write_bytes(b"x")
    return embedded(ctx, model=ctx.tmp / "clip.bin")


@case("model", 2, r"missing config.json")
def model_without_config(ctx):
    model = ctx.model()
    (model / "config.json").unlink()
    return embedded(ctx, model=model)


@case("model", 2, r"cannot read a CLIP config")
def model_config_not_json(ctx):
    model = ctx.model()
    (model / "config.json").write_text("{not json")
    return embedded(ctx, model=model)


@case("model", 2, r"model_type is 'bert', expected 'clip'|cannot read a CLIP config")
def model_config_not_clip(ctx):
    model = ctx.model()
    edit_json(model / "config.json", lambda c: c.update(model_type="bert"))
    return embedded(ctx, model=model)


@case("model", 2, r"no weights")
def model_without_weights(ctx):
    model = ctx.model()
    (model / "model.safetensors").unlink()
    return embedded(ctx, model=model)


@case("model", 2, r"model.safetensors: cannot load the weights \(SafetensorError")
def weights_truncated(ctx):
    model = ctx.model()
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    return embedded(ctx, model=model)


@case("model", 2, r"model.safetensors: cannot load the weights")
def weights_garbage(ctx):
    model = ctx.model()
    (model / "model.safetensors").write_bytes(b"\x07" * 64)
    return embedded(ctx, model=model)


@case("model", 2, r"model.safetensors: cannot load the weights")
def weights_empty(ctx):
    model = ctx.model()
    (model / "model.safetensors").write_bytes(b"")
    return embedded(ctx, model=model)


@case("model", 2, r"1 missing tensor\(s\) for a CLIPModel: logit_scale")
def weights_missing_tensor(ctx):
    model = ctx.model()
    edit_weights(model, lambda t: t.pop("logit_scale"))
    return embedded(ctx, model=model)


@case("model", 2, r"1 unexpected tensor\(s\).*extra.weight")
def weights_unexpected_tensor(ctx):
    model = ctx.model()
    edit_weights(model, lambda t: t.update({"extra.weight": torch.zeros(2)}))
    return embedded(ctx, model=model)


@case("model", 2, r"shape differs from what config.json describes")
def weights_wrong_shape(ctx):
    model = ctx.model()
    edit_weights(model, lambda t: t.update({"visual_projection.weight": torch.zeros(3, 3)}))
    return embedded(ctx, model=model)


@case("model", 2, r"hold NaN or inf, first visual_projection.weight")
def weights_nan(ctx):
    model = ctx.model()
    edit_weights(model, lambda t: t["visual_projection.weight"].fill_(float("nan")))
    return embedded(ctx, model=model)


@case("model", 2, r"hold NaN or inf")
def weights_inf(ctx):
    model = ctx.model()
    edit_weights(model, lambda t: t["text_projection.weight"].view(-1)[0].fill_(float("inf")))
    return embedded(ctx, model=model)


@case("model", 2, r"image features hold NaN or inf on sketch")
def weights_that_overflow(ctx):
    model = ctx.model()
    edit_weights(model, lambda t: t["visual_projection.weight"].fill_(3e38))
    return embedded(ctx, model=model)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would have run",))


@case("model", 2, r"pytorch_model.bin: cannot load the weights \(not a tensor-only checkpoint: .* will not unpickle")
def weights_pickle_with_code(ctx):
    model = ctx.model()
    (model / "model.safetensors").unlink()
    torch.save({"x": _RunsCode()}, model / "pytorch_model.bin")
    return embedded(ctx, model=model)


@case("model", 2, r"pytorch_model.bin: cannot load the weights")
def weights_bin_garbage(ctx):
    model = ctx.model()
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"garbage")
    return embedded(ctx, model=model)


@case("model", 2, r"no tokenizer files")
def model_without_tokenizer(ctx):
    model = ctx.model()
    for name in ("tokenizer.json", "vocab.json"):
        (model / name).unlink(missing_ok=True)
    return embedded(ctx, model=model)


@case("model", 2, r"cannot load the tokenizer")
def tokenizer_corrupt(ctx):
    model = ctx.model()
    (model / "tokenizer.json").write_text("{broken")
    return embedded(ctx, model=model)


@case("model", 2, r"not a local directory; set model.local_files_only=false")
def hub_id_offline(ctx):
    return embedded(ctx, "model.path=someone/clip-model")


@case("model", 2, r"preprocessor_config.json")
def preprocessor_config_not_json(ctx):
    model = ctx.model()
    (model / "preprocessor_config.json").write_text("[1, 2")
    return embedded(ctx, model=model)


@case("model", 2, r"preprocessor crop size 99 differs")
def preprocessor_crop_size_differs(ctx):
    model = ctx.model()
    edit_json(model / "preprocessor_config.json", lambda c: c.update(crop_size={"height": 99, "width": 99}))
    return embedded(ctx, model=model)


# -- checkpoint (resume) ----------------------------------------------------------------------------

def resume(run: Path, *extra: str) -> list[str]:
    return ["run", "--resume", str(run), *extra]


def checkpoints(run: Path) -> Path:
    return run / "checkpoints"


@case("checkpoint", 2, r"run directory to resume not found")
def resume_missing_dir(ctx):
    return resume(ctx.tmp / "nowhere")


@case("checkpoint", 2, r"not a vlcl run directory \(no config.yaml\)")
def resume_not_a_run(ctx):
    folder = ctx.tmp / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    ctx.protected.append(folder)
    return resume(folder)


@case("checkpoint", 2, r"config.yaml: line \d+: malformed YAML")
def resume_config_corrupt(ctx):
    run = ctx.run()
    (run / "config.yaml").write_text("seed: [\n")
    return resume(run)


@case("checkpoint", 2, r"config.yaml: line 1: not UTF-8")
def resume_config_not_utf8(ctx):
    run = ctx.run()
    (run / "config.yaml").write_bytes(b"\xff\xfe" + (run / "config.yaml").read_bytes())
    return resume(run)


@case("checkpoint", 2, r"latest.json: line 1: checkpoint pointer is not valid JSON")
def pointer_not_json(ctx):
    run = ctx.run()
    (checkpoints(run) / "latest.json").write_text("{stage: 1")
    return resume(run)


@case("checkpoint", 2, r"latest.json: checkpoint pointer is a directory")
def pointer_is_a_directory(ctx):
    run = ctx.run()
    (checkpoints(run) / "latest.json").unlink()
    (checkpoints(run) / "latest.json").mkdir()
    return resume(run)


@case("checkpoint", 2, r"latest.json: expected \{\"stage\": N, \"path\": NAME\}")
def pointer_is_a_list(ctx):
    run = ctx.run()
    (checkpoints(run) / "latest.json").write_text("[1, 2]")
    return resume(run)


@case("checkpoint", 2, r"names '\.\./\.\./other/checkpoints/stage_01', expected a checkpoint of this run")
def pointer_names_another_run(ctx):
    run = ctx.run()
    (checkpoints(run) / "latest.json").write_text(json.dumps({"stage": 1, "path": "../../other/checkpoints/stage_01"}))
    return resume(run)


@case("checkpoint", 2, r"names '/tmp', expected a checkpoint of this run")
def pointer_names_absolute_path(ctx):
    run = ctx.run()
    (checkpoints(run) / "latest.json").write_text(json.dumps({"stage": 1, "path": "/tmp"}))
    return resume(run)


@case("checkpoint", 2, r"stage_07: checkpoint named by .*latest.json is incomplete or missing")
def pointer_names_missing_checkpoint(ctx):
    run = ctx.run()
    (checkpoints(run) / "latest.json").write_text(json.dumps({"stage": 7, "path": "stage_07"}))
    return resume(run)


@case("checkpoint", 2, r"stage_01: checkpoint named by .* is incomplete")
def checkpoint_not_complete(ctx):
    run = ctx.run()
    (checkpoints(run) / "stage_01" / "COMPLETE").unlink()
    return resume(run)


@case("checkpoint", 2, r"step_01_0000002: checkpoint named by .* is incomplete or missing")
def step_pointer_to_missing_step(ctx):
    run = ctx.run()
    (checkpoints(run) / "latest.json").write_text(json.dumps({"stage": 1, "step": 2, "path": "step_01_0000002", "base": "stage_00"}))
    return resume(run)


@case("checkpoint", 2, r"method_state.safetensors: not a readable safetensors file")
def method_state_corrupt(ctx):
    run = ctx.run()
    (checkpoints(run) / "stage_01" / "method_state.safetensors").write_bytes(b"\x00" * 10)
    return resume(run)


@case("checkpoint", 2, r"method_state.safetensors: not found")
def method_state_missing(ctx):
    run = ctx.run()
    (checkpoints(run) / "stage_01" / "method_state.safetensors").unlink()
    return resume(run)


@case("checkpoint", 2, r"method_state.json: line 1: method state is not valid JSON")
def method_state_json_corrupt(ctx):
    run = ctx.run()
    (checkpoints(run) / "stage_01" / "method_state.json").write_text("nope")
    return resume(run)


@case("checkpoint", 2, r"progress.json: line 1: progress record is not valid JSON")
def progress_corrupt(ctx):
    run = ctx.run()
    (checkpoints(run) / "stage_01" / "progress.json").write_text("{")
    return resume(run)


@case("checkpoint", 2, r"progress.json: expected a JSON object with 'next_stage' and 'stages'")
def progress_missing_keys(ctx):
    run = ctx.run()
    (checkpoints(run) / "stage_01" / "progress.json").write_text("{}")
    return resume(run)


@case("checkpoint", 2, r"progress.json: malformed stage records")
def progress_bad_records(ctx):
    run = ctx.run()
    edit_json(checkpoints(run) / "stage_01" / "progress.json", lambda p: p.update(stages=[{"index": 0}]))
    return resume(run)


@case("checkpoint", 2, r"stage_01/model/model.safetensors: cannot load the weights")
def checkpoint_model_truncated(ctx):
    run = ctx.run()
    weights = checkpoints(run) / "stage_01" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return resume(run)


@case("checkpoint", 2, r"stage_01/model/model.safetensors: 1 missing tensor")
def checkpoint_model_missing_tensor(ctx):
    run = ctx.run()
    edit_weights(checkpoints(run) / "stage_01" / "model", lambda t: t.pop("text_projection.weight"))
    return resume(run)


def _killed_mid_task(ctx: Context) -> Path:
    """A run SIGKILLed in its first task, one step after an in-task checkpoint at step 3."""
    import os
    import subprocess
    import sys

    run = ctx.tmp / "killed"
    args = quick_args(ctx.clip, "train.checkpoint_every_steps=3")
    env = {**os.environ, "VLCL_FAULT": "step:4"}
    subprocess.run([sys.executable, "-m", "vlcl", "run", *args, "-o", str(run)], env=env, capture_output=True, timeout=300)
    assert (checkpoints(run) / "step_00_0000003" / "COMPLETE").is_file()
    ctx.protected.append(run)
    return run


@case("checkpoint", 2, r"in-task checkpoint named by checkpoints/latest.json does not fit this run \(KeyError: 'data/order'\)")
def step_checkpoint_missing_tensor(ctx):
    run = _killed_mid_task(ctx)
    path = checkpoints(run) / "step_00_0000003" / "state.safetensors"
    tensors = {k: v.clone() for k, v in load_file(str(path)).items() if k != "data/order"}
    save_file(tensors, str(path))
    return resume(run)


@case("checkpoint", 2, r"state.json: line 1: in-task checkpoint state is not valid JSON")
def step_checkpoint_state_corrupt(ctx):
    run = _killed_mid_task(ctx)
    (checkpoints(run) / "step_00_0000003" / "state.json").write_text("{")
    return resume(run)


@case("checkpoint", 2, r"overrides change the run's config at train.lr")
def resume_changing_config(ctx):
    return resume(ctx.run(), "train.lr=0.5")


@case("checkpoint", 2, r"--resume RUN_DIR cannot be combined with --overwrite or -o")
def resume_with_output(ctx):
    return resume(ctx.run(), "-o", str(ctx.tmp / "elsewhere"))


@case("checkpoint", 2, r"--resume RUN_DIR cannot be combined with --overwrite or -o")
def resume_with_overwrite(ctx):
    return resume(ctx.run(), "--overwrite")


@case("checkpoint", 2, r"--resume takes the config from the run directory")
def resume_with_config_file(ctx):
    return ["run", str(write_config(ctx, "seed: 1\n")), "--resume", str(ctx.run())]


@case("checkpoint", 2, r"no complete checkpoint to resume from, but the run has results")
def resume_without_any_checkpoint(ctx):
    run = ctx.run()
    for path in sorted(checkpoints(run).rglob("COMPLETE")):
        path.unlink()
    (checkpoints(run) / "latest.json").unlink()
    return resume(run)


@case("checkpoint", 2, r"results.json: records 2 trained stages but the checkpoint resumed from has 1")
def resume_would_shrink_results(ctx):
    run = ctx.run()
    (checkpoints(run) / "stage_01" / "COMPLETE").unlink()
    (checkpoints(run) / "latest.json").unlink()
    return resume(run)


@case("checkpoint", 2, r"data_fingerprint.json: line 1: data fingerprint is not valid JSON")
def fingerprint_file_corrupt(ctx):
    run = ctx.run()
    (run / "data_fingerprint.json").write_text("#")
    return resume(run)


@case("checkpoint", 2, r"data.benchmark=embedded: the data differs from the data this run started on")
def fingerprint_differs(ctx):
    run = ctx.run()
    edit_json(run / "data_fingerprint.json", lambda f: f.update(fingerprint="0" * 64))
    return resume(run)


# -- data -----------------------------------------------------------------------------------------

@case("data", 2, r"data.root=.*nowhere: data root not found")
def data_root_missing(ctx):
    return folders(ctx, ctx.tmp / "nowhere")


@case("data", 2, r"root.txt: not a folder")
def data_root_is_a_file(ctx):
    (ctx.tmp / "root.txt").write_text("x")
    return folders(ctx, ctx.tmp / "root.txt")


@case("data", 2, r"reads the sub-folders of data.root: set data.root=DIR")
def data_root_unset(ctx):
    return ["run", f"model.path={ctx.clip}", "data.benchmark=folders", *FAST, "-o", str(ctx.new_run_dir())]


@case("data", 2, r"no data set folder to train on")
def data_root_empty(ctx):
    (ctx.tmp / "empty").mkdir()
    return folders(ctx, ctx.tmp / "empty")


@case("data", 2, r"no data set folder 'nope'")
def data_task_folder_missing(ctx):
    return folders(ctx, ctx.data(), "data.tasks=[photos,nope]")


@case("data", 2, r"photos")
def csv_without_caption_column(ctx):
    root = ctx.data()
    csv = root / "photos" / "photos.csv"
    csv.write_text(csv.read_text().replace("filepath,title", "filepath,words"))
    return folders(ctx, root)


@case("data", 2, r"train.jsonl.*line 2")
def jsonl_bad_line(ctx):
    root = ctx.data()
    path = root / "drawings" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    return folders(ctx, root)


@case("data", 2, r"train.jsonl.*(empty|no) caption")
def jsonl_empty_caption(ctx):
    root = ctx.data()
    path = root / "drawings" / "train.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    record["caption"] = ["  "]
    lines[0] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    return folders(ctx, root)


@case("data", 2, r"img000.png.*not found")
def image_file_missing(ctx):
    root = ctx.data()
    (root / "photos" / "img000.png").unlink()
    return folders(ctx, root)


@case("data", 2, r"img001.jpg.*not an image Pillow can read")
def image_not_an_image(ctx):
    root = ctx.data()
    (root / "photos" / "img001.jpg").write_bytes(b"hello, not a jpeg")
    return folders(ctx, root)


@case("data", 2, r"img000.png.*cannot be decoded")
def image_truncated(ctx):
    root = ctx.data()
    path = root / "photos" / "img000.png"
    path.write_bytes(path.read_bytes()[:60])
    return folders(ctx, root, "data.image_check=full")


@case("data", 2, r"image .*img\d+.(png|jpg) has \d+ pixels \(\d+x\d+\), over data.max_image_pixels=100")
def image_over_pixel_limit(ctx):
    return folders(ctx, ctx.data(), "data.max_image_pixels=100")


@case("data", 2, r"decompress them")
def shards_compressed(ctx):
    root = ctx.data()
    shards = root / "street"
    shards.mkdir()
    with tarfile.open(shards / "0.tar.gz", "w:gz") as tar:
        tar.add(root / "photos" / "img000.png", arcname="s0.png")
    return folders(ctx, root, "data.tasks=[photos,street]")


def _shard_root(ctx: Context) -> Path:
    from realdata import pairs, write_wds

    root = ctx.data()
    write_wds(root / "street", pairs(10), per_shard=10, offset=40)
    return root


@case("data", 2, r"0.tar.*(truncated|ends|end)")
def shard_truncated(ctx):
    root = _shard_root(ctx)
    shard = root / "street" / "0.tar"
    shard.write_bytes(shard.read_bytes()[:2560])
    return folders(ctx, root, "data.tasks=[photos,street]")


@case("data", 2, r"1.tar: sample 's000000': key already used by a sample in .*0.tar")
def shard_duplicate_key(ctx):
    root = _shard_root(ctx)
    with tarfile.open(root / "street" / "1.tar", "w") as tar:
        tar.add(root / "photos" / "img000.png", arcname="s000000.png")
        info = tarfile.TarInfo("s000000.txt")
        info.size = 7
        import io

        tar.addfile(info, io.BytesIO(b"another"))
    return folders(ctx, root, "data.tasks=[photos,street]")


@case("data", 2, r"0.tar.*(not a readable tar|corrupt)")
def shard_not_a_tar(ctx):
    root = _shard_root(ctx)
    (root / "street" / "0.tar").write_bytes(b"\x00\x01" * 700)
    return folders(ctx, root, "data.tasks=[photos,street]")


@case("data", 2, r"photos.csv.*(UTF-8|utf-8)")
def csv_not_utf8(ctx):
    root = ctx.data()
    csv = root / "photos" / "photos.csv"
    csv.write_bytes(csv.read_bytes().replace(b"red", b"r\xe9d"))
    return folders(ctx, root)


@case("data", 2, r"task 'sketch' has \d+ training pairs, fewer than one batch")
def task_smaller_than_a_batch(ctx):
    return embedded(ctx, "train.batch_size=4096")


@case("data", 2, r"task '\w+' has \d+ training pairs, fewer than one batch")
def real_task_smaller_than_a_batch(ctx):
    return folders(ctx, ctx.data(), "train.batch_size=64")


@case("data", 2, r"train.batch_size=16 x train.accumulate_steps=64")
def accumulation_larger_than_the_task(ctx):
    return embedded(ctx, "train.accumulate_steps=64")


@case("data", 2, r"data.root=.*moved: the data differs from the data this run started on")
def resume_on_other_data(ctx):
    from realdata import pairs, write_jsonl

    root = ctx.data()
    run = ctx.tmp / "folder-run"
    assert main(folders(ctx, root, "data.tasks=[drawings]")[:-2] + ["-o", str(run)]) == 0
    ctx.protected.append(run)
    moved = ctx.copy(root, "moved")
    items = pairs(10)
    items[0] = (items[0][0], ["a blue star on the left"])
    write_jsonl(moved / "drawings" / "train.jsonl", items[:8])
    return ["run", "--resume", str(run), "--data-root", str(moved)]


# -- rundir ---------------------------------------------------------------------------------------

@case("rundir", 2, r"run directory already exists; use --resume")
def run_dir_exists(ctx):
    return ["run", *quick_args(ctx.clip), "-o", str(ctx.run())]


@case("rundir", 2, r"--overwrite refuses to replace a directory that is not a vlcl run")
def overwrite_foreign_directory(ctx):
    folder = ctx.tmp / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    ctx.protected.append(folder)
    return ["run", *quick_args(ctx.clip), "--overwrite", "-o", str(folder)]


@case("rundir", 2, r"exists and is not a directory")
def output_is_a_file(ctx):
    target = ctx.tmp / "out"
    target.write_text("x")
    ctx.protected.append(target)
    return ["run", *quick_args(ctx.clip), "-o", str(target)]


@case("rundir", 2, r"is a file, not a directory")
def output_under_a_file(ctx):
    target = ctx.tmp / "out"
    target.write_text("x")
    ctx.protected.append(target)
    return ["run", *quick_args(ctx.clip), "-o", str(target / "run")]


@case("rundir", 2, r"unknown task 'nosuch'")
def overwrite_with_unknown_task(ctx):
    return ["run", *quick_args(ctx.clip, "data.tasks=[nosuch]"), "--overwrite", "-o", str(ctx.run())]


@case("rundir", 2, r"cannot load the weights")
def overwrite_with_corrupt_model(ctx):
    model = ctx.model()
    (model / "model.safetensors").write_bytes(b"junk")
    return ["run", *quick_args(model), "--overwrite", "-o", str(ctx.run())]


@case("rundir", 2, r"hold NaN or inf")
def overwrite_with_nan_model(ctx):
    model = ctx.model()
    edit_weights(model, lambda t: t["logit_scale"].fill_(float("nan")))
    return ["run", *quick_args(model), "--overwrite", "-o", str(ctx.run())]


@case("rundir", 2, r"fewer than one batch")
def overwrite_with_too_large_batch(ctx):
    return ["run", *quick_args(ctx.clip, "train.batch_size=4096"), "--overwrite", "-o", str(ctx.run())]


@case("rundir", 2, r"data root not found")
def overwrite_with_missing_data(ctx):
    return [*folders(ctx, ctx.tmp / "nowhere")[:-2], "--overwrite", "-o", str(ctx.run())]


@case("rundir", 1, r"non-finite loss")
def overwrite_run_that_diverges(ctx):
    """Fails in its first task, before any checkpoint: the old run is put back."""
    args = quick_args(ctx.clip, "train.lr=1e30", "train.warmup_fraction=0")
    return ["run", *args, "--overwrite", "-o", str(ctx.run())]


@case("rundir", 2, r"unknown method")
def fresh_run_dir_not_created(ctx):
    return embedded(ctx, "method.name=nosuch")


# -- report ---------------------------------------------------------------------------------------

def report_of(ctx: Context, content: bytes | str) -> list[str]:
    run = ctx.run()
    (run / "results.json").write_bytes(content.encode() if isinstance(content, str) else content)
    return ["report", str(run)]


@case("report", 2, r"results.json: not found")
def report_without_results(ctx):
    run = ctx.run()
    (run / "results.json").unlink()
    return ["report", str(run)]


@case("report", 2, r"expected a JSON object.*got a list")
def report_results_list(ctx):
    return report_of(ctx, "[]")


@case("report", 2, r"no 'method'")
def report_results_empty_object(ctx):
    return report_of(ctx, "{}")


@case("report", 2, r"results.json: line 1: results file is not valid JSON")
def report_results_not_json(ctx):
    return report_of(ctx, "{results")


@case("report", 2, r"results.json: results file is not UTF-8 text")
def report_results_not_utf8(ctx):
    return report_of(ctx, b"\xff\xfe{}")


@case("report", 2, r"holds NaN, which is not JSON")
def report_results_bare_nan(ctx):
    run = ctx.run()
    text = (run / "results.json").read_text()
    (run / "results.json").write_text(text.replace('"mean_pd": ', '"mean_pd": NaN, "x": ', 1) if '"mean_pd": ' in text else text.replace("{", '{"bad": NaN, ', 1))
    return ["report", str(run)]


@case("report", 2, r"results.json: results format 99, this vlcl reads formats 1 to \d+ \(written by a newer vlcl")
def report_results_of_a_newer_format(ctx):
    run = ctx.run()
    edit_json(run / "results.json", lambda r: r.update(format=99))
    return ["report", str(run)]


@case("report", 2, r"results.json: 'format' is 'two', expected a whole number")
def report_results_format_not_a_number(ctx):
    run = ctx.run()
    edit_json(run / "results.json", lambda r: r.update(format="two"))
    return ["report", str(run)]


@case("report", 2, r"no 'matrices'")
def report_results_without_matrices(ctx):
    run = ctx.run()
    edit_json(run / "results.json", lambda r: r.pop("matrices"))
    return ["report", str(run)]


@case("report", 2, r"'stages' is a str, expected a list")
def report_stages_wrong_type(ctx):
    run = ctx.run()
    edit_json(run / "results.json", lambda r: r.update(stages="all"))
    return ["report", str(run)]


@case("report", 2, r"'stages' is empty")
def report_stages_empty(ctx):
    run = ctx.run()
    edit_json(run / "results.json", lambda r: r.update(stages=[]))
    return ["report", str(run)]


@case("report", 2, r"lacks what a report needs")
def report_stage_without_metrics(ctx):
    run = ctx.run()
    edit_json(run / "results.json", lambda r: r["stages"][0].pop("metrics"))
    return ["report", str(run)]


@case("report", 2, r"not found \(is .* a vlcl run directory\?\)")
def report_of_a_folder(ctx):
    (ctx.tmp / "folder").mkdir()
    return ["report", str(ctx.tmp / "folder")]


@case("report", 2, r"is a directory; -o takes the Markdown file to write")
def report_output_is_a_directory(ctx):
    return ["report", str(ctx.run()), "-o", str(ctx.tmp)]


# -- features (CMCL's feature mode) -----------------------------------------------------------------

def feature_run(ctx: Context, train: Path, test: Path | None = None, *extra: str) -> list[str]:
    config = ctx.tmp / "features.yaml"
    entry = {"name": "pair", "modalities": ["text", "image"], "train": str(train), "test": str(test or train)}
    config.write_text(json.dumps({"data": {"benchmark": "features", "features": [entry]}, "method": {"name": "cmcl"}}))
    return ["run", str(config), "train.batch_size=4", "train.epochs=1", *extra, "-o", str(ctx.new_run_dir())]


def feature_file(ctx: Context, **arrays) -> Path:
    path = ctx.tmp / "features.npz"
    np.savez(path, **arrays)
    return path


GOOD = {"text": np.random.default_rng(0).normal(size=(8, 4)).astype("float32"), "image": np.ones((8, 4), "float32")}


@case("features", 2, r"features.npz: feature file not found")
def feature_file_missing(ctx):
    return feature_run(ctx, ctx.tmp / "features.npz")


@case("features", 2, r"features.npz: cannot read features")
def feature_file_corrupt(ctx):
    (ctx.tmp / "features.npz").write_bytes(b"PK\x03\x04 broken")
    return feature_run(ctx, ctx.tmp / "features.npz")


@case("features", 2, r"no array 'image'; found: text")
def feature_array_missing(ctx):
    return feature_run(ctx, feature_file(ctx, text=GOOD["text"]))


@case("features", 2, r"array 'image' has non-finite values")
def feature_array_nan(ctx):
    return feature_run(ctx, feature_file(ctx, text=GOOD["text"], image=np.full((8, 4), np.nan, "float32")))


@case("features", 2, r"row counts differ")
def feature_rows_differ(ctx):
    return feature_run(ctx, feature_file(ctx, text=GOOD["text"], image=np.ones((7, 4), "float32")))


@case("features", 2, r"task .pair. has 8 training pairs, fewer than one batch \(train.batch_size=16")
def feature_task_smaller_than_batch(ctx):
    return feature_run(ctx, feature_file(ctx, **GOOD), None, "train.batch_size=16")


@case("features", 2, r"method 'lwf' does not support setting 'modality_pairs' \(modality pairs of pre-extracted features, a feature_maps model\), the setting of benchmark 'features'; methods that do: cmcl, finetune")
def feature_mode_unknown_method(ctx):
    return feature_run(ctx, feature_file(ctx, **GOOD), None, "method.name=lwf")


@case("features", 2, r"stage_00/model: cannot load the modality maps")
def feature_checkpoint_maps_corrupt(ctx):
    args = feature_run(ctx, feature_file(ctx, **GOOD), None, "train.batch_size=4")
    run = Path(args[-1])
    assert main(args) == 0
    ctx.absent.remove(run)
    ctx.protected.append(run)
    (run / "checkpoints" / "stage_00" / "model" / "maps.safetensors").write_bytes(b"broken")
    return ["run", "--resume", str(run)]


# -- the suite ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, world_clip_dir):
    run = tmp_path_factory.mktemp("finished") / "run"  # every stage kept: some cases fall back to the first one
    assert main(["run", *quick_args(world_clip_dir, "checkpoint.keep=null"), "-o", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def folders_root(tmp_path_factory):
    from realdata import pairs, write_csv, write_images, write_jsonl

    root = tmp_path_factory.mktemp("folders") / "data"
    items = pairs(10)
    write_images(root / "photos", items)
    write_csv(root / "photos" / "photos.csv", items)
    write_images(root / "drawings" / "images", items, offset=20)
    write_jsonl(root / "drawings" / "train.jsonl", items[:8], prefix="images/")
    write_jsonl(root / "drawings" / "test.jsonl", items[8:], prefix="images/")
    return root


@pytest.mark.parametrize("bad", CASES, ids=[f"{c.family}-{c.id}" for c in CASES])
def test_bad_input(bad: Case, tmp_path, world_clip_dir, finished_run, folders_root, capsys):
    context = Context(tmp_path, world_clip_dir, finished_run, folders_root)
    check_case(bad, context, capsys)


def test_tensorboard_without_its_package_is_refused(tmp_path, world_clip_dir, capsys, monkeypatch):
    """A config case that needs the import hidden for its duration, so it is checked here rather than in CASES:
    logging.tensorboard=true without the tensorboard package is one line, exit 2, no run directory."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    bad = Case(
        "tensorboard_missing", "config", lambda ctx: embedded(ctx, "logging.tensorboard=true"), 2,
        r"^vlcl: error: logging\.tensorboard=true needs the tensorboard package: pip install 'vlcl\[tensorboard\]'$",
    )
    check_case(bad, Context(tmp_path, world_clip_dir, finished_run=tmp_path, folders_root=tmp_path), capsys)  # neither used


def test_the_suite_covers_every_family_with_at_least_150_cases():
    """The one-line cases of this file; the faults and races that need more than one command (locks, signals, a
    full disk, file modes, degenerate runs, routing) have their own files: test_collisions.py, test_signals.py,
    test_disk_full.py, test_file_modes.py, test_degenerate.py, test_routing_warning.py, test_faults.py."""
    families = {}
    for c in CASES:
        families[c.family] = families.get(c.family, 0) + 1
    assert len(CASES) >= 150, families
    assert set(families) == {"config", "model", "checkpoint", "data", "rundir", "report", "features"}
    assert len({c.id for c in CASES}) == len(CASES)


def test_good_inputs_of_the_suite_run(tmp_path, world_clip_dir, folders_root):
    """The fixtures themselves are good input: a folders run on the data root completes."""
    args = ["run", f"model.path={world_clip_dir}", "data.benchmark=folders", f"data.root={folders_root}", *FAST, "-o", str(tmp_path / "r")]
    assert main(args) == 0



def test_data_check_takes_the_pixel_limit(folders_root, capsys):
    assert main(["data", "check", "folders", "--data-root", str(folders_root), "--max-image-pixels", "100"]) == 1
    assert "over data.max_image_pixels=100" in capsys.readouterr().out
    assert main(["data", "check", "folders", "--data-root", str(folders_root), "--max-image-pixels", "0"]) == 0
