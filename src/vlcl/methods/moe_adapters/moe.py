"""MoE-Adapters (Yu et al., CVPR 2024): a mixture of adapter experts beside the MLP of every CLIP block.

Block l of either tower, with h the hidden state after the attention residual
and h_0 its token 0 (CLS for images, the start token for texts):

    h' = h + MLP(LN2(h)) + sum_{e in top_k(z)} softmax(z_top_k)_e * E_e(h)
    E_e(h) = scale * (W_up dropout(ReLU(W_down h + b_down)) + b_up)
    z = h_0 W_t + eps * (softplus(h_0 V_t) + 0.01),  eps ~ N(0, 1) in training only

W_t, V_t (width x experts, zero at start) are task t's router and noise
weights (Shazeer et al.'s noisy top-k gating); the experts are shared by all
tasks. One routing per sample (from h_0) is applied to all its tokens. After
each task the k most-used experts of every layer are frozen for good.

The adapters live in a :class:`MoEAdapters` module beside the CLIPModel, joined
to it by forward hooks: the CLIPModel keeps its class, its state-dict keys and
its outputs (with routing off it is the frozen CLIP exactly), and the adapters'
state is saved apart from it. Matches the authors' code (JiazuoYu/MoE-Adapters4CL
at 4572d97, mtil/clip/model.py) bit for bit on one block in eval mode.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel

from vlcl.models.lora import LaneDropout

TOWERS = ("vision", "text")
NOISE_EPSILON = 1e-2
"""Floor of the gating noise's standard deviation (the authors' noise_epsilon)."""

_INJECTED: weakref.WeakKeyDictionary[nn.Module, MoEAdapterLayer] = weakref.WeakKeyDictionary()
"""CLIP encoder layer -> its adapter layer, so a block is never given two mixtures."""


class AdapterExpert(nn.Module):
    """E(h) = scale * up(dropout(ReLU(down(h)))): a bottleneck adapter whose up projection starts at zero,
    so a fresh expert adds exactly nothing."""

    def __init__(self, width: int, bottleneck: int = 64, dropout: float = 0.1, scale: float = 0.1) -> None:
        super().__init__()
        self.down_proj = nn.Linear(width, bottleneck)
        self.up_proj = nn.Linear(bottleneck, width)
        self.dropout = LaneDropout(dropout)
        self.scale = scale
        with torch.no_grad():  # the authors' "lora" init: Kaiming-uniform down, zeros elsewhere
            nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down_proj.bias)
            nn.init.zeros_(self.up_proj.weight)
            nn.init.zeros_(self.up_proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up_proj(self.dropout(F.relu(self.down_proj(hidden)))) * self.scale


class TaskRouter(nn.Module):
    """One task's gate: logits z = x W (+ eps * (softplus(x V) + 0.01) when noisy), W and V zero at start."""

    def __init__(self, width: int, num_experts: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(width, num_experts))
        self.noise = nn.Parameter(torch.zeros(width, num_experts))

    def logits(self, first_token: torch.Tensor, noisy: bool) -> torch.Tensor:
        """[N, width] -> [N, experts]; the noise comes from torch's global generator."""
        clean = first_token @ self.gate.to(first_token.dtype)
        if not noisy:
            return clean
        std = F.softplus(first_token @ self.noise.to(first_token.dtype)) + NOISE_EPSILON
        return clean + torch.randn_like(clean) * std


def top_k_gates(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest logits per row and their softmax: (weights [N, k], expert indices [N, k])."""
    values, indices = logits.topk(k, dim=1)
    return values.softmax(dim=1), indices


class MoEAdapterLayer(nn.Module):
    """The experts of one block and one router per task.

    ``active_task`` picks the router; None switches the layer off (the block
    is then the frozen CLIP block). ``usage[e]`` counts the samples routed to
    expert e in training mode since the last reset; ``frozen[e]`` marks
    experts that no longer train. Both are buffers, so they travel in the
    state dict, and loading one re-applies the frozen set to requires_grad.
    """

    usage: torch.Tensor
    frozen: torch.Tensor

    def __init__(
        self, width: int, num_tasks: int, num_experts: int = 22, top_k: int = 2, bottleneck: int = 64, dropout: float = 0.1, scale: float = 0.1
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.top_k = top_k
        self.experts = nn.ModuleList(AdapterExpert(width, bottleneck, dropout, scale) for _ in range(num_experts))
        self.routers = nn.ModuleList(TaskRouter(width, num_experts) for _ in range(num_tasks))
        self.register_buffer("usage", torch.zeros(num_experts, dtype=torch.int64))
        self.register_buffer("frozen", torch.zeros(num_experts, dtype=torch.bool))
        self.active_task: int | None = None
        self.noisy_gating = True
        self._pending: torch.Tensor | None = None  # the mixture of the block being run, added by its output hook
        self.register_load_state_dict_post_hook(lambda module, _keys: module.apply_frozen())

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def route(self, first_token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights [N, k], experts [N, k]) of the active task's router; noisy only in training mode."""
        if self.active_task is None:
            raise RuntimeError("no active task: set one before routing")
        logits = self.routers[self.active_task].logits(first_token, noisy=self.training and self.noisy_gating)
        return top_k_gates(logits, self.top_k)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, L, width] -> the mixture [N, L, width]; every token of a sample uses the experts of its token 0."""
        weights, chosen = self.route(hidden[:, 0])
        if self.training:
            self.usage += torch.bincount(chosen.flatten(), minlength=self.num_experts).to(self.usage.device)
        out = torch.zeros_like(hidden)
        # Experts in ascending order, each on its samples only (as the authors' sparse dispatcher sums them).
        for expert in chosen.unique().tolist():
            rows, slots = (chosen == expert).nonzero(as_tuple=True)
            gate = weights[rows, slots].to(hidden.dtype).view(-1, 1, 1)
            out = out.index_add(0, rows, self.experts[expert](hidden[rows]) * gate)
        return out

    def most_used(self, k: int) -> list[int]:
        """The k experts with the highest usage; ties go to the lower index."""
        order = torch.sort(self.usage, descending=True, stable=True).indices
        return order[:k].tolist()

    def freeze(self, experts: Iterable[int]) -> None:
        for expert in experts:
            self.frozen[expert] = True
        self.apply_frozen()

    def apply_frozen(self) -> None:
        """requires_grad = not frozen, expert by expert; a frozen expert's gradient is dropped too, since
        AdamW decays and steps any parameter whose ``.grad`` is a tensor, zeros included."""
        for expert, is_frozen in zip(self.experts, self.frozen.tolist(), strict=True):
            expert.requires_grad_(not is_frozen)
            if is_frozen:
                for param in expert.parameters():
                    param.grad = None


def _stash_mixture(layer: MoEAdapterLayer):
    def hook(_norm: nn.Module, args: tuple) -> None:
        if layer.active_task is not None:
            layer._pending = layer(args[0])  # args[0]: h after the attention residual, before LN2

    return hook


def _add_mixture(layer: MoEAdapterLayer):
    def hook(_block: nn.Module, _args: tuple, output):
        pending, layer._pending = layer._pending, None
        if pending is None:
            return None
        if isinstance(output, tuple):  # transformers 4 returns (hidden_states, ...)
            return (output[0] + pending, *output[1:])
        return output + pending  # (h + MLP(LN2(h))) + mixture, the authors' order of the sum

    return hook


def _prepare_block(layer: MoEAdapterLayer):
    def hook(block: nn.Module, _args: tuple) -> None:
        layer._pending = None  # a block run that raised must not leave its mixture for the next run
        # model.train() / model.eval() do not reach a module outside the model; follow the block's mode.
        if layer.training != block.training:
            layer.train(block.training)

    return hook


class MoEAdapters(nn.Module):
    """The adapter layers of both towers of one CLIPModel (``vision[i]``, ``text[i]`` beside encoder layer i).

    Not a submodule of the CLIPModel: move it with ``.to()`` alongside the
    model and save its ``state_dict()`` apart. Its layers follow the train /
    eval mode of the blocks they sit in.
    """

    def __init__(self, vision: list[MoEAdapterLayer], text: list[MoEAdapterLayer], num_tasks: int) -> None:
        super().__init__()
        self.vision = nn.ModuleList(vision)
        self.text = nn.ModuleList(text)
        self.num_tasks = num_tasks
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def layers(self) -> Iterator[tuple[str, int, MoEAdapterLayer]]:
        for tower in TOWERS:
            for index, layer in enumerate(getattr(self, tower)):
                yield tower, index, layer

    @property
    def active_task(self) -> int | None:
        return self.vision[0].active_task if len(self.vision) else self.text[0].active_task

    def set_active_task(self, task: int | None) -> None:
        """Route every block of both towers through task ``task``'s routers; None = the frozen CLIP."""
        if task is not None and not 0 <= task < self.num_tasks:
            raise ValueError(f"task must be in [0, {self.num_tasks}) or None, got {task}")
        for _, _, layer in self.layers():
            layer.active_task = task

    @contextmanager
    def routing(self, task: int | None) -> Iterator[None]:
        """Temporarily route through ``task`` (None = frozen CLIP), restoring the previous task after."""
        previous = self.active_task
        self.set_active_task(task)
        try:
            yield
        finally:
            self.set_active_task(previous)

    def start_task(self, task: int) -> None:
        """Before training task ``task``: route through it, and let only its routers and the unfrozen experts
        require grad. Other tasks' routers lose their gradients too: AdamW decays and steps any parameter whose
        ``.grad`` is a tensor (zeros included), so an optimiser kept across tasks would move them."""
        self.set_active_task(task)
        for _, _, layer in self.layers():
            for index, router in enumerate(layer.routers):
                router.requires_grad_(index == task)
                if index != task:
                    for param in router.parameters():
                        param.grad = None
            layer.apply_frozen()

    def reset_usage(self) -> None:
        for _, _, layer in self.layers():
            layer.usage.zero_()

    def freeze_most_used(self, k: int = 2) -> dict[str, list[list[int]]]:
        """Freeze the k most-used experts of every layer of each tower (added to those already frozen), then
        reset the usage counts. Returns the newly frozen experts per tower and layer: fewer than k where
        a most-used expert was frozen already."""
        added: dict[str, list[list[int]]] = {tower: [] for tower in TOWERS}
        for tower, _, layer in self.layers():
            top = layer.most_used(k)
            added[tower].append([e for e in top if not layer.frozen[e]])
            layer.freeze(top)
        self.reset_usage()
        return added

    def frozen_experts(self) -> dict[str, list[list[int]]]:
        return {tower: [layer.frozen.nonzero().flatten().tolist() for layer in getattr(self, tower)] for tower in TOWERS}

    def named_trainable_parameters(self, task: int) -> Iterator[tuple[str, nn.Parameter]]:
        """Task ``task``'s routers and every expert not frozen, named as in the state dict (``vision.``/``text.``
        first, for a tower's learning rate). Routers of other tasks receive no gradient while ``task`` trains."""
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task must be in [0, {self.num_tasks}), got {task}")
        for name, param in self.named_parameters():
            tower, index, kind, number = name.split(".")[:4]
            layer = getattr(self, tower)[int(index)]
            if (kind == "routers" and int(number) == task) or (kind == "experts" and not layer.frozen[int(number)]):
                yield name, param

    def trainable_parameters(self, task: int) -> list[nn.Parameter]:
        return [param for _, param in self.named_trainable_parameters(task)]

    def remove(self) -> None:
        """Detach the hooks: the CLIPModel is the plain model again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for _, _, layer in self.layers():
            for block, adapter in list(_INJECTED.items()):
                if adapter is layer:
                    del _INJECTED[block]


def add_moe_adapters(
    model: CLIPModel, num_tasks: int, num_experts: int = 22, top_k: int = 2, bottleneck: int = 64, dropout: float = 0.1, scale: float = 0.1
) -> MoEAdapters:
    """Give every encoder layer of both towers a mixture of adapter experts, in parallel to its MLP.

    Two hooks per block: a pre-hook on ``layer_norm2`` computes the mixture of
    its input (h after the attention residual, as the authors feed it), and a
    forward hook adds it to the block's output. The adapters are created on
    the device and in the dtype of the model's parameters.
    """
    reference = next(model.parameters())
    towers = {"vision": model.vision_model.encoder.layers, "text": model.text_model.encoder.layers}
    built: dict[str, list[MoEAdapterLayer]] = {}
    for tower, blocks in towers.items():
        if any(block in _INJECTED for block in blocks):
            raise ValueError(f"the {tower} tower already has MoE adapters; remove() them first")
        width = blocks[0].layer_norm2.normalized_shape[0] if len(blocks) else 0
        built[tower] = [MoEAdapterLayer(width, num_tasks, num_experts, top_k, bottleneck, dropout, scale) for _ in blocks]
    adapters = MoEAdapters(built["vision"], built["text"], num_tasks).to(device=reference.device, dtype=reference.dtype)
    for tower, blocks in towers.items():
        for block, layer in zip(blocks, getattr(adapters, tower), strict=True):
            adapters._handles += [
                block.register_forward_pre_hook(_prepare_block(layer)),
                block.layer_norm2.register_forward_pre_hook(_stash_mixture(layer)),
                block.register_forward_hook(_add_mixture(layer)),
            ]
            _INJECTED[block] = layer
    adapters.train(model.training)
    return adapters


@dataclass(frozen=True)
class MoEParameterCount:
    """Parameter counts of MoE adapters on both towers."""

    experts: int
    routers: int
    """All tasks' router and noise weights."""
    total: int
    """experts + routers: every parameter the adapters add (what the authors' code marks trainable)."""
    per_task: int
    """experts + one task's routers: what one task can train before any expert is frozen."""


def moe_parameter_count(
    vision_width: int, vision_layers: int, text_width: int, text_layers: int, num_tasks: int, num_experts: int = 22, bottleneck: int = 64
) -> MoEParameterCount:
    """Per layer of width d: experts E * (2 d b + b + d) (down and up projections with biases), routers
    T * 2 d E (gate and noise weights). ViT-B/16 (768 x 12 and 512 x 12), T = 11, E = 22, b = 64:
    43,625,472 + 7,434,240 = 51,059,712."""
    towers = ((vision_width, vision_layers), (text_width, text_layers))
    experts = sum(layers * num_experts * (2 * width * bottleneck + bottleneck + width) for width, layers in towers)
    routers = sum(layers * num_tasks * 2 * width * num_experts for width, layers in towers)
    return MoEParameterCount(experts, routers, experts + routers, experts + routers // num_tasks)
