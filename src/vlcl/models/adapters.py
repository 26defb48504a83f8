"""Bottleneck adapters in every residual block of a Hugging Face CLIP, placed as Wang et al. (2024) place theirs.

Their ``ResidualAttentionBlock_Adapter`` (Debatrix/LifeLong-CLIP ``models/clip/model.py`` 257-281, the adapter
``models/clip/adapter.py`` 11-68) holds ONE adapter per block, applied to both sub-layer outputs::

    x = x + a(attn(ln_1(x)))          a(h) = h + s * W_up dropout(relu(W_down h + b_down)) + s * b_up
    x = x + a(mlp(ln_2(x)))

with bottleneck 64, s = 0.1, dropout 0.1 (on the hidden units, training only), no layer norm, W_down
Kaiming-uniform (a = sqrt 5), b_down, W_up and b_up zero: the model starts as the pre-trained one.

Here each :class:`~transformers.models.clip.modeling_clip.CLIPEncoderLayer` gets the :class:`BottleneckAdapter` as
``layer.adapter`` (registered once), and its ``self_attn`` and ``mlp`` are replaced by :class:`AdaptedOutput`
wrappers that hold the original module as ``base`` and add the layer's adapter to its output. So the model's state
dict is explicit - ``...layers.3.self_attn.base.q_proj.weight``, ``...layers.3.adapter.down_proj.weight`` - and
:func:`plain_state_dict` gives the CLIP weights under their own names (what a plain ``CLIPModel`` loads, without the
adapters); :func:`remove_adapters` puts the original modules back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER = "adapter"
"""The name of a layer's adapter (state-dict keys ``<layer>.adapter.*``)."""
BASE = "base"
"""The name under which an :class:`AdaptedOutput` holds the module it wraps."""
WRAPPED = ("self_attn", "mlp")
"""The sub-layers of a CLIPEncoderLayer whose outputs the adapter is added to, as the authors' attention and MLP."""


class BottleneckAdapter(nn.Module):
    """``h -> h + scale * up(dropout(relu(down(h))))``: the residual bottleneck MLP of the authors' ``Adapter``
    (``adapter_layernorm_option='none'``, ``init_option='lora'``, ``add_residual=True``)."""

    def __init__(self, width: int, bottleneck: int = 64, scale: float = 0.1, dropout: float = 0.1) -> None:
        super().__init__()
        self.scale = float(scale)
        self.dropout = float(dropout)
        self.down_proj = nn.Linear(width, bottleneck)
        self.up_proj = nn.Linear(bottleneck, width)
        with torch.no_grad():  # the authors' init_option 'lora' (models/clip/adapter.py 42-47)
            nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down_proj.bias)
            nn.init.zeros_(self.up_proj.weight)
            nn.init.zeros_(self.up_proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        down = F.dropout(F.relu(self.down_proj(hidden)), p=self.dropout, training=self.training)
        return hidden + self.up_proj(down) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}, dropout={self.dropout}"


class AdaptedOutput(nn.Module):
    """A sub-layer (``base``) whose output - the first element of a tuple output, as an attention's - goes through
    its layer's adapter. The adapter is registered on the layer, not here: one adapter serves both sub-layers."""

    def __init__(self, base: nn.Module, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.base = base
        self._adapter = [adapter]  # a reference, not a child: the state dict holds it once, under the layer

    @property
    def adapter(self) -> BottleneckAdapter:
        return self._adapter[0]

    def forward(self, *args, **kwargs):
        output = self.base(*args, **kwargs)
        if isinstance(output, tuple):
            return (self.adapter(output[0]), *output[1:])
        return self.adapter(output)


def encoder_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) of every CLIPEncoderLayer of both towers in module order (the modules that have
    ``self_attn``, ``layer_norm1``, ``mlp`` and ``layer_norm2``)."""
    for name, module in model.named_modules():
        if all(hasattr(module, part) for part in ("self_attn", "layer_norm1", "mlp", "layer_norm2")):
            yield name, module


def has_adapters(model: nn.Module) -> bool:
    return any(isinstance(m, BottleneckAdapter) for m in model.modules())


def add_adapters(model: nn.Module, bottleneck: int = 64, scale: float = 0.1, dropout: float = 0.1) -> list[nn.Parameter]:
    """One fresh adapter per encoder layer of both towers (width: the layer's hidden size), on the model's device
    and dtype, added to its attention and MLP outputs; returns the adapters' parameters (trainable). The draws
    (``down_proj``'s Kaiming init) come from torch's global generator, layer by layer in ``named_modules`` order."""
    layers = list(encoder_layers(model))
    if not layers:
        raise ValueError("add_adapters: the model has no CLIP encoder layers (self_attn, layer_norm1, mlp, layer_norm2)")
    if has_adapters(model):
        raise ValueError("add_adapters: the model has adapters already")
    params: list[nn.Parameter] = []
    for _, layer in layers:
        reference = layer.layer_norm1.weight
        adapter = BottleneckAdapter(reference.shape[0], bottleneck, scale, dropout).to(reference.device, reference.dtype)
        adapter.train(layer.training)
        setattr(layer, ADAPTER, adapter)
        for part in WRAPPED:
            setattr(layer, part, AdaptedOutput(getattr(layer, part), adapter))
        params.extend(adapter.parameters())
    return params


def adapter_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every adapter, in the model's state-dict names."""
    return [(n, p) for n, p in model.named_parameters() if _is_adapter_key(n)]


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights (detached copies), keyed by their names in the model's state dict."""
    return {n: t.detach().clone() for n, t in model.state_dict().items() if _is_adapter_key(n)}


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy :func:`adapter_state_dict`'s weights into the model's adapters (the same names, the same shapes)."""
    own = dict(adapter_parameters(model))
    if set(own) != set(state):
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise ValueError(f"the saved adapters do not match the model's (missing {missing[:3]}, unexpected {unexpected[:3]})")
    with torch.no_grad():
        for name, value in state.items():
            if own[name].shape != value.shape:
                raise ValueError(f"adapter weight {name}: saved {tuple(value.shape)}, the model's {tuple(own[name].shape)}")
            own[name].copy_(value)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without the adapters and with the wrapped modules under their own names: the state
    dict of the CLIPModel the adapters sit on (what ``CLIPModel.from_pretrained`` of a saved copy loads)."""
    wrapped = re.compile(rf"\.({'|'.join(WRAPPED)})\.{BASE}\.")
    return {wrapped.sub(r".\1.", n): t for n, t in model.state_dict().items() if not _is_adapter_key(n)}


def remove_adapters(model: nn.Module) -> nn.Module:
    """Put the original sub-layers back and drop the adapters, in place; returns the model."""
    for _, layer in encoder_layers(model):
        for part in WRAPPED:
            module = getattr(layer, part)
            if isinstance(module, AdaptedOutput):
                setattr(layer, part, module.base)
        if isinstance(getattr(layer, ADAPTER, None), BottleneckAdapter):
            delattr(layer, ADAPTER)
    return model


def _is_adapter_key(name: str) -> bool:
    return f".{ADAPTER}." in f".{name}"
