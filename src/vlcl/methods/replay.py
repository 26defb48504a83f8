"""Experience replay with a reservoir buffer (Vitter's algorithm R, 1985; Chaudhry et al. 2019).

The only method that keeps old data. A buffer of at most K image-caption
pairs (K = ``buffer_size`` = 1000) is a uniform sample of every training pair
seen so far: at the end of each task every image of the task is offered once,
with one of its captions drawn at random, and the n-th pair of the whole
stream (n = 1, 2, ...) is

    kept in a free slot                     if n <= K
    kept in slot j, j ~ U{1..n}, if j <= K  otherwise (else dropped)

so that after N offers every pair is in the buffer with probability K / N.
Each training step of task t > 1 adds R = ``replay_batch_size`` (32) pairs
drawn uniformly without replacement from the buffer - that is, from tasks
1..t-1 - to the current batch of B pairs, and the CLIP loss is taken over
the B + R rows:

    L = L_CLIP([v_1..v_B, v'_1..v'_R], [c_1..c_B, c'_1..c'_R])

On a classification task the loss is the cross-entropy over class prompts
and a replayed pair's caption is its class's prompt (first template): the
label space of a step is the task's classes plus the distinct old classes
among the R replayed pairs, so that an old image competes with its own
task's prompt; a replayed caption equal to a current class's first prompt is
that class.

On a stream (``data.stream=online``: no task boundaries) the memory is filled as the samples arrive: after
each incoming batch's ``train.online_iters`` steps, its positions in the stream are offered to a reservoir of K
positions (``observe_batch``; :class:`vlcl.methods.parts.memory.StreamMemory`, the same algorithm R), so that a
batch is replayed from the next batch on and the memory stays a uniform sample of the stream so far; every step
adds R memory samples, each with one of its captions drawn afresh (the ER baseline of the online-learning
literature, which the SIT authors' code runs as ``er``; it splits a batch into halves of new and memory samples
instead). The memory is a list of integers, part of the in-stream step state with its generators, so that a
resumed stream replays the same samples.

Draws come from torch generators seeded from the run seed and the stage
index, so runs are deterministic and a resumed run replays the same pairs.
Images are kept as uint8 [H, W, 3] arrays, as the benchmarks hold them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from vlcl.data.benchmark import CaptionedImages
from vlcl.methods.base import LossOutput, Method, MethodOptions, Stage
from vlcl.methods.parts.memory import StreamMemory
from vlcl.methods.registry import register_method
from vlcl.settings import CaptionBatch
from vlcl.seeds import replay_seed


class ReplayOptions(MethodOptions):
    buffer_size: int = Field(1000, ge=1)
    """K: the most image-caption pairs the buffer holds, all tasks together."""
    replay_batch_size: int = Field(32, ge=1)
    """R: buffer pairs added to every training batch (half of the default train.batch_size=64)."""


class ReservoirBuffer:
    """At most ``capacity`` (uint8 image, caption) pairs, a uniform sample of all pairs offered."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.images: torch.Tensor | None = None  # uint8 [capacity, H, W, 3], the first len(self) rows valid
        self.captions: list[str] = []
        self.seen = 0

    def __len__(self) -> int:
        return len(self.captions)

    def offer(self, images: np.ndarray | torch.Tensor, captions: list[str], generator: torch.Generator) -> None:
        """Algorithm R over the pairs (images[k], captions[k]) in order."""
        images = torch.as_tensor(np.asarray(images))
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(captions):
            raise ValueError(
                f"expected uint8 images [N, H, W, 3] and N captions, got {tuple(images.shape)} {images.dtype} and {len(captions)}"
            )
        if self.images is None:
            self.images = torch.empty((self.capacity, *images.shape[1:]), dtype=torch.uint8)
        elif images.shape[1:] != self.images.shape[1:]:
            raise ValueError(f"image shape {tuple(images.shape[1:])} differs from the buffer's {tuple(self.images.shape[1:])}")
        # One uniform draw per offered pair, mapped to j ~ U{0..n-1} for the pair with 0-based stream position n-1.
        positions = torch.arange(self.seen, self.seen + len(captions), dtype=torch.float64) + 1
        slots = torch.minimum(
            (torch.rand(len(captions), dtype=torch.float64, generator=generator) * positions).long(), positions.long() - 1
        )
        for k, slot in enumerate(slots.tolist()):
            if len(self.captions) < self.capacity:
                slot = len(self.captions)
                self.captions.append(captions[k])
            elif slot < self.capacity:
                self.captions[slot] = captions[k]
            else:
                continue
            self.images[slot] = images[k]
        self.seen += len(captions)

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """``count`` distinct pairs (all of them if the buffer holds fewer), uniformly at random."""
        rows = torch.randperm(len(self), generator=generator)[:count].tolist()
        return self.images[rows], [self.captions[r] for r in rows]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"captions": list(self.captions), "seen": self.seen}
        if len(self):
            state["images"] = self.images[: len(self)].clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        captions = list(state.get("captions", []))
        if len(captions) > self.capacity:
            raise ValueError(f"the saved buffer holds {len(captions)} pairs, more than buffer_size={self.capacity}")
        self.captions, self.seen, self.images = captions, int(state.get("seen", 0)), None
        if captions:
            images = state["images"]
            if len(images) != len(captions) or images.dtype != torch.uint8:
                raise ValueError("the saved buffer's images do not match its captions")
            self.images = torch.empty((self.capacity, *images.shape[1:]), dtype=torch.uint8)
            self.images[: len(captions)] = images


@register_method
class Replay(Method):
    name = "replay"
    description = "experience replay from a reservoir buffer of old image-caption pairs (the only method that keeps old data)"
    Options = ReplayOptions
    needs_task_boundaries = False  # on a stream the reservoir takes each batch as it arrives (observe_batch)

    def __init__(self, options: ReplayOptions | None = None) -> None:
        super().__init__(options)
        self.buffer = ReservoirBuffer(self.options.buffer_size)
        self.data: CaptionedImages | None = None
        self.generator: torch.Generator | None = None
        self.memory: StreamMemory | None = None  # on a stream: positions in the stream's data, instead of the buffer

    def begin_task(self, stage: Stage, data: CaptionedImages | None) -> None:
        self.data = data
        self.generator = torch.Generator().manual_seed(replay_seed(self.context.seed, stage.index, 2))
        if self.context.streaming:  # a memory of stream positions, filled batch by batch
            self.memory = StreamMemory(self.options.buffer_size)
            self.offer_generator = torch.Generator().manual_seed(replay_seed(self.context.seed, stage.index, 1))

    def with_replay(self, batch: CaptionBatch) -> tuple[CaptionBatch, torch.Tensor]:
        """The batch followed by up to ``replay_batch_size`` buffer pairs (their rows' sample_index -1), added as
        the batch's setting adds image-caption pairs (a classification batch maps each caption to its class), and
        the mask of the replayed rows."""
        if not len(self.memory if self.memory is not None else self.buffer):
            return batch, torch.zeros(len(batch), dtype=torch.bool)
        if self.generator is None:  # training without begin_task (tests): a fixed stream
            self.generator = torch.Generator().manual_seed(replay_seed(self.context.seed, 0, 2))
        bundle = self.context.bundle
        if self.memory is not None:
            images, captions = self._from_stream(self.memory.sample(self.options.replay_batch_size, self.generator))
        else:
            images, captions = self.buffer.sample(self.options.replay_batch_size, self.generator)
        full = batch.with_pairs(bundle.preprocess.normalize_uint8(images), captions, bundle)
        return full, torch.cat([torch.zeros(len(batch), dtype=torch.bool), torch.ones(len(images), dtype=torch.bool)])

    def training_loss(self, batch: CaptionBatch, step: int) -> LossOutput:
        full, replayed = self.with_replay(batch)
        output = super().training_loss(full, step)
        output.logs["replayed"] = float(replayed.sum())
        return output

    def _from_stream(self, positions: list[int]) -> tuple[torch.Tensor, list[str]]:
        """The uint8 images of stream ``positions`` (a lazy store decodes just these) and one caption of each."""
        picks = torch.randint(0, 1 << 30, (len(positions),), generator=self.generator).tolist()
        captions = [self.data.captions[r][p % len(self.data.captions[r])] for r, p in zip(positions, picks)]
        return torch.as_tensor(np.asarray(self.data.images[positions])), captions

    def observe_batch(self, data: CaptionedImages, indices: torch.Tensor) -> None:
        """A stream's incoming batch, once trained on, offered to the memory of stream positions."""
        self.memory.offer(indices.tolist(), self.offer_generator)

    def end_task(self, stage: Stage) -> None:
        if self.data is not None and not self.context.streaming:
            generator = torch.Generator().manual_seed(replay_seed(self.context.seed, stage.index, 1))
            # One caption per image, drawn with the same generator before the reservoir draws.
            picks = torch.randint(0, 1 << 30, (len(self.data),), generator=generator).tolist()
            captions = [caps[p % len(caps)] for caps, p in zip(self.data.captions, picks)]
            self.buffer.offer(self.data.images, captions, generator)
        self.data = None
        self.generator = None

    def step_state_dict(self) -> dict[str, Any]:
        state = {"generator": self.generator.get_state()} if self.generator is not None else {}
        if self.context is not None and self.context.streaming:  # an in-stream checkpoint saves only step state
            state.update(offer_generator=self.offer_generator.get_state(), memory=self.memory.state_dict())
        return state

    def load_step_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
        if "memory" in state:
            self.offer_generator.set_state(state["offer_generator"])
            self.memory.load_state_dict(state["memory"])

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"buffer"}
        if unknown:
            raise ValueError(f"method 'replay': unexpected state keys {sorted(unknown)}")
        self.buffer.load_state_dict(state.get("buffer", {}))
