"""CMCL's model for the modality-pair setting: one linear map per modality over pre-extracted features.

Each modality m has ``Linear(d_m, d_m)``, identity-initialised with a zero bias
(CMCL), and a pair (A, B) is trained with CMCL's one-directional loss

    L = CE( (W_A x_A + b_A)(W_B x_B + b_B)^T / T , diagonal )          (T = 1)

For the dual-sided null-space projection the bias is the weight of a constant
input: a map is the matrix [W | b] acting on [x, 1].
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F


class ModalityMaps(torch.nn.Module):
    """One Linear(d_m, d_m) per modality, identity weights and zero bias (CMCL's initialisation)."""

    def __init__(self, widths: dict[str, int]):
        super().__init__()
        self.maps = torch.nn.ModuleDict()
        for m, d in widths.items():
            layer = torch.nn.Linear(d, d)
            with torch.no_grad():
                layer.weight.copy_(torch.eye(d))
                layer.bias.zero_()
            self.maps[m] = layer

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.maps[modality](x)


def pair_loss(
    maps: ModalityMaps, pair: tuple[str, str], xa: torch.Tensor, xb: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """CMCL's loss: cross-entropy of A->B over the raw products of the mapped features."""
    a, b = pair
    logits = maps(a, xa) @ maps(b, xb).t() / temperature
    return F.cross_entropy(logits, torch.arange(len(xa), device=xa.device))


def augmented(x: torch.Tensor) -> torch.Tensor:
    """[x, 1]: the bias is the weight of a constant input, so the projection covers it too."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)


def joint_weight(layer: torch.nn.Linear) -> torch.Tensor:
    """[W | b], the map as one matrix acting on [x, 1]."""
    return torch.cat([layer.weight, layer.bias[:, None]], dim=1)




MAPS_WEIGHTS = "maps.safetensors"
MAPS_CONFIG = "maps.json"


def save_maps(maps: ModalityMaps, directory: str | Path) -> None:
    """A checkpoint's model: the maps' tensors (safetensors) and their widths (JSON)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in maps.state_dict().items()}, str(directory / MAPS_WEIGHTS))
    widths = {m: layer.in_features for m, layer in maps.maps.items()}
    (directory / MAPS_CONFIG).write_text(json.dumps({"widths": widths}, indent=2), encoding="utf-8")


def load_maps(directory: str | Path) -> ModalityMaps:
    """The maps :func:`save_maps` wrote; every tensor must be there (strict)."""
    from safetensors.torch import load

    directory = Path(directory)
    widths = json.loads((directory / MAPS_CONFIG).read_text(encoding="utf-8"))["widths"]
    maps = ModalityMaps(widths)
    maps.load_state_dict(load((directory / MAPS_WEIGHTS).read_bytes()), strict=True)
    return maps
