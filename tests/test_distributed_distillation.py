"""Under torchrun the distillation terms see the global batch: 2 processes with N rows each give the loss and the
averaged gradient of 1 process with the 2N rows (lwf, zscl, mulki, modx, and C-CLIP's projector batch norm).

Two gloo processes on the CPU are spawned once for every case; each builds the method as the parent does
(same weights, same seeds), computes ``training_loss`` on its N rows, and averages the loss and the gradients
as the engine does (``mean_over_processes``, ``average_gradients``).

The comparison runs in float64. In float32 the gathered and all-reduced sums round differently from one
process's, and batch norm's backward cancels heavily (C-CLIP's projector gradients differ by up to 5e-5 of
their scale), so a float32 tolerance would be loose enough to hide a real error in a small gradient; in
float64 every case agrees to about 1e-12.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import tiny_data
from test_classification_training import class_data
from vlcl.engine.distributed import average_gradients, mean_over_processes
from vlcl.methods import RunContext, Stage, create_method
from vlcl.models import load_clip
from vlcl.settings import make_batch

WORLD = 2
LOCAL_ROWS = 4  # N per process; the single process takes all 2N
STAGE = Stage(0, "t0", (0,))
ZSCL_SMALL = {"reference_images": 12, "reference_batch_size": 6}

# case -> (method, options, data): every in-batch distillation term, caption and classification batches.
CASES = {
    "lwf": ("lwf", {}, "captions"),
    "lwf-classes": ("lwf", {}, "classes"),
    "zscl": ("zscl", ZSCL_SMALL, "captions"),
    "zscl-student-texts": ("zscl", {**ZSCL_SMALL, "text_features": "student"}, "captions"),
    "mulki": ("mulki", {"prototypes": 4, "kmeans_iterations": 2}, "captions"),
    "mulki-classes": ("mulki", {"prototypes": 3, "kmeans_iterations": 2}, "classes"),
    "modx": ("modx", {}, "captions"),
    "modx-mean-classes": ("modx", {"reduction": "mean"}, "classes"),
    "cclip": ("cclip", {"lora_dropout": 0.0}, "captions"),
}
# The logged distillation term of each method. Without gathering each process distils over its own rows
# only, a different term (zscl's reference batch is then the whole batch on every process: no change).
DISTILLATION_LOG = {"lwf": "distill", "mulki": "align", "modx": "align", "cclip": "ckc"}

LOSS_TOLERANCE = 1e-9  # float64 (see the module docstring)
GRADIENT_TOLERANCE = {"atol": 1e-9, "rtol": 1e-7}


@contextmanager
def float64():
    """New tensors (the projector, LoRA adapters) in float64 for the duration; the previous default after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def perturb(model: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Move both projections the same way in every process (teachers, student and initial model then differ)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("visual_projection.weight", "text_projection.weight")):
                param.add_(scale * torch.randn(param.shape, generator=generator))


def data_of(kind: str):
    return tiny_data() if kind == "captions" else class_data(n=16)


def prepared_method(case: str, clip_dir: str, gather: bool):
    """The method in training mode inside task 1, its student apart from its teachers, and its batch maker."""
    name, options, kind = CASES[case]
    bundle = load_clip(clip_dir)
    bundle.model.double()
    torch.manual_seed(0)  # LoRA's and the projector's initialisation
    method = create_method(name, dict(options))
    method.setup(bundle.model, RunContext(["t0", "t1"], seed=0, bundle=bundle, gather=gather))
    perturb(method.model, seed=1)
    data = data_of(kind)
    method.begin_task(STAGE, data)
    perturb(method.model, seed=2)
    method.train()
    picks = torch.arange(len(data)) % 2
    return method, lambda rows: make_batch(bundle, data, rows, picks[rows])


def one_step(case: str, clip_dir: str, rows: torch.Tensor, gather: bool = True) -> dict:
    """Loss, gradients and buffers after one ``training_loss`` + backward on ``rows``, averaged over processes."""
    with float64():
        method, batch_of = prepared_method(case, clip_dir, gather)
        output = method.training_loss(batch_of(rows), 0)
        output.loss.backward()
    named = {
        f"{module}.{name}": param
        for module, part in method.training_modules().items()
        for name, param in part.named_parameters()
        if param.grad is not None
    }
    average_gradients(list(named.values()))
    buffers = {f"{module}.{name}": b.clone() for module, part in method.training_modules().items() for name, b in part.named_buffers()}
    return {
        "loss": mean_over_processes(float(output.loss.detach())),
        "logs": {name: mean_over_processes(value) for name, value in output.logs.items()},
        "grads": {name: param.grad.clone() for name, param in named.items()},
        "buffers": buffers,
    }


def worker(rank: int, port: int, clip_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        rows = torch.arange(rank * LOCAL_ROWS, (rank + 1) * LOCAL_ROWS)
        results = {case: one_step(case, clip_dir, rows) for case in CASES}
        local = {case: one_step(case, clip_dir, rows, gather=False)["logs"] for case in DISTILLATION_LOG}
        if rank == 0:
            torch.save({"gathered": results, "local_logs": local}, f"{out_dir}/results.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tiny_clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    mp.spawn(worker, args=(free_port(), str(tiny_clip_dir), str(out)), nprocs=WORLD, join=True)
    return torch.load(out / "results.pt")


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a), default=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_two_processes_give_the_loss_and_gradient_of_one(case, tiny_clip_dir, two_processes):
    single = one_step(case, str(tiny_clip_dir), torch.arange(WORLD * LOCAL_ROWS))
    double = two_processes["gathered"][case]
    loss_gap, gradient_gap = abs(single["loss"] - double["loss"]), max_difference(single["grads"], double["grads"])
    print(f"{case}: loss {single['loss']:.6f}, |loss gap| {loss_gap:.2e}, max |gradient gap| {gradient_gap:.2e}")
    assert loss_gap <= LOSS_TOLERANCE
    assert single["logs"] == pytest.approx(double["logs"], abs=LOSS_TOLERANCE)  # every term, as logged
    assert sorted(single["grads"]) == sorted(double["grads"]) and single["grads"]
    for name, grad in single["grads"].items():
        torch.testing.assert_close(double["grads"][name], grad, **GRADIENT_TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")
    for name, buffer in single["buffers"].items():  # C-CLIP's running batch-norm statistics among them
        torch.testing.assert_close(double["buffers"][name], buffer, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", DISTILLATION_LOG)
def test_without_gathering_each_process_distils_over_its_own_rows(case, tiny_clip_dir, two_processes):
    """The check above is not vacuous: the distillation term over N rows per process is another number."""
    single = one_step(case, str(tiny_clip_dir), torch.arange(WORLD * LOCAL_ROWS))
    term = DISTILLATION_LOG[case]
    local = two_processes["local_logs"][case][term]
    print(f"{case}: {term} over the global batch {single['logs'][term]:.6f}, mean of the local ones {local:.6f}")
    assert abs(local - single["logs"][term]) > 1e-6  # a thousand times the tolerance of the agreement above


def test_projector_batch_norm_is_batchnorm1d_on_one_process():
    """Same state_dict keys as the plain projector (step checkpoints), and on one process the same numbers."""
    from torch import nn

    from vlcl.methods.cclip import make_projector

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8))
    projector = make_projector(8, 16, gather=True)
    assert list(projector.state_dict()) == list(plain.state_dict())
    projector.load_state_dict(plain.state_dict())
    features = torch.randn(6, 8)
    for _ in range(2):
        assert torch.equal(projector(features), plain(features))
    assert all(torch.equal(a, b) for a, b in zip(projector.state_dict().values(), plain.state_dict().values()))
