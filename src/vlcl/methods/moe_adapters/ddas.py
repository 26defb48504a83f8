"""DDAS, MoE-Adapters' Distribution Discriminative Auto-Selector: which task's router an input takes, if any.

One autoencoder per task, AE(u) = sigmoid(W2 ReLU(W1 u + b1) + b2) with a
100-wide code, is fitted by MSE on u = sigmoid(f), f the frozen model's
features of that task's training images; one more is fitted on reference
data. For a test sample each autoencoder a gives the error

    e_a = mean_j (AE_a(u)_j - u_j)^2

and the sample goes to a* = argmin_a e_a (the lower index on ties), or to the
frozen CLIP (zero-shot) when a* is the reference autoencoder or e_a* > threshold.

The sigmoid on the features is the authors' (their features are AlexNet's last
conv map before its ReLU, 256 x 13 x 13): input and target are in (0, 1),
which the decoder's sigmoid can reach. Their threshold (0.0655 full-shot)
belongs to those features; other features need their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FROZEN_MODEL = -1
"""The route of a sample that goes to the frozen CLIP."""


def ddas_inputs(features: torch.Tensor) -> torch.Tensor:
    """u = sigmoid(f) in float32: the autoencoders' input and target."""
    return torch.sigmoid(features.float())


class TaskAutoencoder(nn.Module):
    """u -> sigmoid(W2 ReLU(W1 u + b1) + b2), u in (0, 1)^F, code width ``code_dims``."""

    def __init__(self, features: int, code_dims: int = 100) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(features, code_dims), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(code_dims, features), nn.Sigmoid())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(inputs))


def autoencoder_parameter_count(features: int, code_dims: int = 100) -> int:
    """2 F c + c + F: 102,988 for 512-wide CLIP embeddings, 8,696,164 for the authors' 43,264 AlexNet features."""
    return 2 * features * code_dims + code_dims + features


def fit_autoencoder(
    features: torch.Tensor,
    epochs: int | None = None,
    lr: float = 0.01,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    *,
    weight_decay: float = 1e-4,
    decay_every: int = 10,
    code_dims: int = 100,
    iterations: int | None = None,
) -> TaskAutoencoder:
    """Fit an autoencoder to the features [N, F] of one task (or of the reference data), on their device.

    The authors' recipe: Adam with L2 weight decay 1e-4, learning rate
    lr * 0.1^(epoch // 10) (lr 0.01 full-shot, 0.003 few-shot), batches of 64,
    shuffled each epoch; MSE between AE(u) and u. Give either ``epochs`` or
    ``iterations`` (the authors count iterations: 300 + 1 per task, 1000 + 1
    for the reference data, with epoch = iteration // batches per epoch and a
    new shuffle at each epoch's start). ``generator`` (a CPU generator) draws
    the initial weights and the shuffles. Returns the autoencoder in eval mode.
    """
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"features must be a non-empty [N, F] tensor, got shape {tuple(features.shape)}")
    if (epochs is None) == (iterations is None):
        raise ValueError("give exactly one of epochs and iterations")
    inputs = ddas_inputs(features)
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):  # the initial weights from ``generator``, not the global stream
        torch.manual_seed(seed)
        autoencoder = TaskAutoencoder(inputs.shape[1], code_dims).to(inputs.device)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=lr, weight_decay=weight_decay)
    autoencoder.train()
    per_epoch = -(-len(inputs) // batch_size)
    total = iterations if iterations is not None else epochs * per_epoch
    order = None
    for iteration in range(total):
        epoch, within = divmod(iteration, per_epoch)
        if within == 0:
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.1 ** (epoch // decay_every)
            order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
        batch = inputs[order[within * batch_size : (within + 1) * batch_size]]
        loss = F.mse_loss(autoencoder(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return autoencoder.eval()


@torch.no_grad()
def reconstruction_errors(autoencoders: Sequence[TaskAutoencoder], features: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """e[n, a] = mean_j (AE_a(u_n)_j - u_n,j)^2 with u = sigmoid(features): [N, A] in float32."""
    columns = []
    for autoencoder in autoencoders:
        chunks = []
        for start in range(0, len(features), batch_size):
            inputs = ddas_inputs(features[start : start + batch_size])
            chunks.append((autoencoder(inputs) - inputs).pow(2).mean(dim=1))
        columns.append(torch.cat(chunks) if chunks else features.new_zeros(0))
    return torch.stack(columns, dim=1).float()


def select_routes(
    errors: torch.Tensor, threshold: float | torch.Tensor, reference_index: int | None = 0, per_batch: bool = False
) -> torch.Tensor:
    """The task index of each row of ``errors`` [N, A], or FROZEN_MODEL (-1).

    Autoencoder a stands for task a, less one for those after the reference
    autoencoder (the authors' layout: 0 = reference, a = task a - 1). Rows
    whose lowest error is the reference's or above the threshold get -1.
    ``threshold`` is one number (the authors') or one per autoencoder [A]
    (row n is compared with the threshold of its best autoencoder).
    ``per_batch`` decides once for the whole batch on the batch-mean errors,
    as the authors' evaluation does (one decision per evaluation batch of a
    single data set); the default decides per sample.
    """
    if errors.ndim != 2 or errors.shape[1] == 0:
        raise ValueError(f"errors must be [N, A] with A >= 1, got shape {tuple(errors.shape)}")
    if per_batch:
        errors = errors.mean(dim=0, keepdim=True).expand_as(errors)
    best = errors.argmin(dim=1)  # the first minimum: the lower index wins ties, as in the authors' loop
    best_error = errors.gather(1, best[:, None]).squeeze(1)
    routes = best.clone()
    if reference_index is not None:
        routes = routes - (best > reference_index).long()
        routes[best == reference_index] = FROZEN_MODEL
    limit = torch.as_tensor(threshold, dtype=errors.dtype, device=errors.device)
    if limit.ndim:
        if limit.shape != (errors.shape[1],):
            raise ValueError(f"threshold must be a number or one per autoencoder ({errors.shape[1]}), got shape {tuple(limit.shape)}")
        limit = limit[best]
    routes[best_error > limit] = FROZEN_MODEL
    return routes
