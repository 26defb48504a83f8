"""DDAS: per-task autoencoders on frozen features and the rule that routes a sample to a task or to the frozen CLIP."""

from __future__ import annotations

import torch

from vlcl.methods.moe_adapters.ddas import (
    FROZEN_MODEL,
    TaskAutoencoder,
    autoencoder_parameter_count,
    fit_autoencoder,
    reconstruction_errors,
    select_routes,
)

WIDTH = 32


def cloud(pattern: torch.Tensor, n: int, seed: int, std: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return pattern + std * torch.randn(n, WIDTH, generator=g)


HALF = torch.cat([torch.full((WIDTH // 2,), 3.0), torch.full((WIDTH // 2,), -3.0)])
TASK_1, TASK_2, REFERENCE = HALF, -HALF, torch.zeros(WIDTH)
FAR = torch.tensor([6.0, -6.0]).repeat(WIDTH // 2)  # alternating signs: neither half pattern nor centred


def test_select_routes_lowest_error_wins_reference_and_threshold_go_to_the_frozen_model() -> None:
    errors = torch.tensor([
        [0.50, 0.01, 0.30],  # autoencoder 1 -> task 0
        [0.50, 0.30, 0.02],  # autoencoder 2 -> task 1
        [0.01, 0.30, 0.02],  # the reference autoencoder -> frozen model
        [0.90, 0.80, 0.70],  # best above the threshold -> frozen model
        [0.50, 0.05, 0.05],  # a tie: the lower index
    ])
    assert select_routes(errors, threshold=0.1).tolist() == [0, 1, FROZEN_MODEL, FROZEN_MODEL, 0]
    assert select_routes(errors, threshold=1.0, reference_index=None).tolist() == [1, 2, 0, 2, 1]
    assert select_routes(errors, threshold=1.0, reference_index=2).tolist() == [1, FROZEN_MODEL, 0, FROZEN_MODEL, 1]
    # the authors' evaluation: one decision per batch, on the batch-mean errors (0.482, 0.292, 0.218)
    assert select_routes(errors, threshold=1.0, per_batch=True).tolist() == [1] * 5
    assert select_routes(errors, threshold=0.2, per_batch=True).tolist() == [FROZEN_MODEL] * 5


def test_fitted_autoencoders_route_each_task_home_and_an_unseen_distribution_to_the_frozen_model() -> None:
    g = torch.Generator().manual_seed(0)
    train = [cloud(REFERENCE, 256, 1), cloud(TASK_1, 256, 2), cloud(TASK_2, 256, 3)]
    autoencoders = [fit_autoencoder(x, epochs=20, lr=0.01, batch_size=32, generator=g) for x in train]
    own = torch.cat([reconstruction_errors(autoencoders, x)[:, a] for a, x in enumerate(train)])
    threshold = 2 * float(own.max())
    test = {0: cloud(TASK_1, 64, 12), 1: cloud(TASK_2, 64, 13)}
    for task, features in test.items():
        routes = select_routes(reconstruction_errors(autoencoders, features), threshold)
        assert routes.tolist() == [task] * len(features)
    reference_like = select_routes(reconstruction_errors(autoencoders, cloud(REFERENCE, 64, 11)), threshold)
    assert reference_like.tolist() == [FROZEN_MODEL] * 64
    far = reconstruction_errors(autoencoders, cloud(FAR, 64, 14))
    assert (far.min(dim=1).values > threshold).all()  # the threshold alone sends it away, reference or not
    assert select_routes(far, threshold).tolist() == [FROZEN_MODEL] * 64
    assert select_routes(far, threshold, reference_index=None).tolist() == [FROZEN_MODEL] * 64


def test_fit_autoencoder_is_reproducible_from_its_generator_and_learns() -> None:
    features = cloud(TASK_1, 128, 5)
    first, second = (fit_autoencoder(features, epochs=3, generator=torch.Generator().manual_seed(7)) for _ in range(2))
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    torch.manual_seed(7)
    untrained = TaskAutoencoder(WIDTH).eval()
    errors = reconstruction_errors([untrained, first], features)
    assert errors.shape == (128, 2)
    assert errors[:, 1].mean() < 0.2 * errors[:, 0].mean()
    assert not first.training


def test_autoencoder_shape_and_parameter_count() -> None:
    autoencoder = TaskAutoencoder(WIDTH, code_dims=7)
    out = autoencoder(torch.rand(3, WIDTH))
    assert out.shape == (3, WIDTH) and bool(((out > 0) & (out < 1)).all())
    assert autoencoder_parameter_count(WIDTH, 7) == sum(p.numel() for p in autoencoder.parameters())
    assert autoencoder_parameter_count(256 * 13 * 13) == 8_696_164  # the authors' AlexNet-feature autoencoder


def test_select_routes_takes_one_threshold_per_autoencoder() -> None:
    errors = torch.tensor([[0.50, 0.01, 0.30], [0.50, 0.30, 0.02], [0.50, 0.06, 0.20]])
    per_autoencoder = torch.tensor([float("inf"), 0.05, 0.03])
    assert select_routes(errors, per_autoencoder).tolist() == [0, 1, FROZEN_MODEL]  # 0.06 > autoencoder 1's 0.05


def test_fit_by_iterations_matches_the_same_number_of_epochs() -> None:
    features = cloud(TASK_1, 100, 6)  # 2 batches of 64 per epoch
    by_epochs = fit_autoencoder(features, epochs=3, generator=torch.Generator().manual_seed(3))
    by_iterations = fit_autoencoder(features, iterations=6, generator=torch.Generator().manual_seed(3))
    for a, b in zip(by_epochs.state_dict().values(), by_iterations.state_dict().values(), strict=True):
        assert torch.equal(a, b)
