"""Under torchrun every process counts expert usage on its own shard of the data; before freezing, the counts
are summed over the processes (``sum_usage_over_processes``), so every process freezes the same experts: those a
single process would freeze with all the data."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import CLIPConfig, CLIPModel

from vlcl.methods.moe_adapters import sum_usage_over_processes
from vlcl.methods.moe_adapters.moe import add_moe_adapters

WORLD = 2
EXPERTS = 6


def tiny_adapters():
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 8, "patch_size": 4},
        projection_dim=8,
    )
    return add_moe_adapters(CLIPModel(config), num_tasks=2, num_experts=EXPERTS)


def shard_usage(rank: int) -> torch.Tensor:
    """What a process counted: on its own, rank 0 would freeze experts 0 and 1, rank 1 experts 4 and 5."""
    return torch.tensor([[9, 8, 0, 7, 0, 0], [0, 0, 0, 7, 9, 8]][rank], dtype=torch.int64)


def frozen_after(usages: list[torch.Tensor]) -> dict[str, list[list[int]]]:
    adapters = tiny_adapters()
    for _, _, layer in adapters.layers():
        layer.usage.copy_(sum(usages))
    adapters.freeze_most_used(2)
    return adapters.frozen_experts()


def worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=120))
    try:
        adapters = tiny_adapters()
        for _, _, layer in adapters.layers():
            layer.usage.copy_(shard_usage(rank))
        sum_usage_over_processes(adapters)
        adapters.freeze_most_used(2)
        torch.save(adapters.frozen_experts(), f"{out_dir}/frozen-{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_every_process_freezes_the_experts_one_process_would_freeze(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    frozen = [torch.load(tmp_path / f"frozen-{rank}.pt") for rank in range(WORLD)]
    expected = frozen_after([shard_usage(0), shard_usage(1)])  # usage 9, 8, 0, 14, 9, 8: experts 3 and 0
    assert frozen[0] == frozen[1] == expected
    assert all(sorted(experts) == [0, 3] for layers in expected.values() for experts in layers)
    alone = frozen_after([shard_usage(0)])
    assert alone != expected  # without the sum, the processes would disagree


def test_one_process_is_left_alone():
    adapters = tiny_adapters()
    for _, _, layer in adapters.layers():
        layer.usage.copy_(shard_usage(0))
    sum_usage_over_processes(adapters)
    assert all(torch.equal(layer.usage, shard_usage(0)) for _, _, layer in adapters.layers())
