"""A replay memory for streams: a reservoir sample of the stream's positions (Vitter's algorithm R, 1985).

On a stream (``data.stream=online``) every sample has a position in the stream's data, which the method holds
from ``begin_task``; the memory keeps at most ``capacity`` positions, not copies of the images, so that it is a
list of integers in the run's state. After n samples have been offered (n = 1, 2, ...), the n-th is

    kept in a free slot                          if n <= K
    kept in slot j, j ~ U{0..n-1}, if j < K      otherwise (else dropped)

so that every sample offered so far is in the memory with probability K / n (the SIT authors' ``update_memory``
of ER; Chaudhry et al. 2019). Draws come from the caller's generator, which is part of the step state too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class StreamMemory:
    """At most ``capacity`` stream positions, a uniform sample of every position offered."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a stream memory holds at least one sample, not {capacity}")
        self.capacity = capacity
        self.positions: list[int] = []
        self.seen = 0

    def __len__(self) -> int:
        return len(self.positions)

    def offer(self, positions: Iterable[int], generator: torch.Generator) -> None:
        """Algorithm R over ``positions``, in order."""
        for position in positions:
            self.seen += 1
            if len(self.positions) < self.capacity:
                self.positions.append(int(position))
                continue
            slot = int(torch.randint(0, self.seen, (1,), generator=generator))
            if slot < self.capacity:
                self.positions[slot] = int(position)

    def sample(self, count: int, generator: torch.Generator) -> list[int]:
        """``count`` distinct positions of the memory (all of them if it holds fewer), uniformly at random."""
        rows = torch.randperm(len(self.positions), generator=generator)[:count].tolist()
        return [self.positions[r] for r in rows]

    def state_dict(self) -> dict[str, Any]:
        return {"positions": list(self.positions), "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"positions", "seen"}
        if unknown:
            raise ValueError(f"a stream memory's state has unexpected keys {sorted(unknown)}")
        positions = [int(p) for p in state["positions"]]
        if len(positions) > self.capacity:
            raise ValueError(f"the saved memory holds {len(positions)} samples, more than its capacity {self.capacity}")
        if int(state["seen"]) < len(positions):
            raise ValueError(f"the saved memory holds {len(positions)} samples but has seen {state['seen']}")
        self.positions, self.seen = positions, int(state["seen"])
