"""vlcl.methods.rail.analytic: RAIL's recursive ridge regression (primal and dual) and its zero-shot fusion."""

import io

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from vlcl.methods.rail.analytic import (
    DEFAULT_FUSION_WEIGHT,
    KernelRidge,
    RandomExpansion,
    RecursiveRidge,
    fuse_with_zero_shot,
    kernel_ridge_solution,
    learned_domain_mask,
    one_hot_targets,
    rbf_kernel,
    ridge_solution,
)


def unit(seed: int, n: int, d: int) -> torch.Tensor:
    """Unit-norm rows, like CLIP image features."""
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def domains(seed: int = 0, d: int = 12) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Four batches whose label space grows (3, 3, 5, 8 classes): (features, labels, classes so far)."""
    g = torch.Generator().manual_seed(seed)
    spec = [(9, 0, 3), (7, 0, 3), (11, 3, 5), (6, 5, 8)]  # rows, first new-or-old label, label-space size
    out = []
    for k, (rows, low, size) in enumerate(spec):
        labels = torch.randint(low, size, (rows,), generator=g)
        out.append((unit(100 + k, rows, d), labels, size))
    return out


def all_seen(batches: list[tuple[torch.Tensor, torch.Tensor, int]], upto: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every feature seen up to batch ``upto`` and its one-hot target over the label space at that point."""
    size = batches[upto][2]
    x = torch.cat([b[0] for b in batches[: upto + 1]])
    y = one_hot_targets(torch.cat([b[1] for b in batches[: upto + 1]]), size)
    return x, y


def test_recursive_primal_equals_the_joint_ridge_solution_after_every_batch():
    batches = domains()
    expansion = RandomExpansion(12, 40, seed=3, dtype=torch.float64)
    ridge = RecursiveRidge(40, gamma=0.1)
    for k, (x, labels, size) in enumerate(batches):
        ridge.update(expansion(x), labels, size)
        seen_x, seen_y = all_seen(batches, k)
        expected = ridge_solution(expansion(seen_x), seen_y, 0.1)
        assert ridge.W.shape == (40, size)
        assert torch.allclose(ridge.W, expected, atol=1e-5, rtol=0), k
        gram = expansion(seen_x).mT @ expansion(seen_x) + 0.1 * torch.eye(40, dtype=torch.float64)
        assert torch.allclose(ridge.R, torch.linalg.inv(gram), atol=1e-5, rtol=0)
        assert torch.allclose(ridge.logits(expansion(seen_x)), expansion(seen_x) @ expected, atol=1e-5, rtol=0)


def test_recursion_is_exact_whatever_the_batching():
    # Feeding a domain in one batch or row by row gives the same W (the official code recurses per batch of 128).
    x, labels, size = domains()[2]
    whole, rows = RecursiveRidge(12, 0.5), RecursiveRidge(12, 0.5)
    whole.update(x, labels, size)
    for i in range(len(x)):
        rows.update(x[i : i + 1], labels[i : i + 1], size)
    assert torch.allclose(whole.W, rows.W, atol=1e-10)
    assert torch.allclose(whole.W, ridge_solution(x, one_hot_targets(labels, size), 0.5), atol=1e-10)


def test_recursive_dual_equals_the_kernel_ridge_closed_form_after_every_batch():
    batches = domains(seed=1)
    krr = KernelRidge()  # the official lambda = 1e-3, gamma = 0.1: a flat kernel on unit vectors, badly conditioned
    for k, (x, labels, size) in enumerate(batches):
        krr.update(x, labels, size)
        seen_x, seen_y = all_seen(batches, k)
        alpha = kernel_ridge_solution(seen_x, seen_y, 1e-3, 0.1)
        assert krr.num_samples == len(seen_x) and krr.num_classes == size
        assert torch.equal(krr.features, seen_x)
        assert torch.allclose(krr.alpha, alpha, atol=1e-5 * alpha.abs().max().item(), rtol=0), k
        gram = rbf_kernel(seen_x, seen_x, 0.1) + 1e-3 * torch.eye(len(seen_x), dtype=torch.float64)
        assert torch.allclose(krr.inverse @ gram, torch.eye(len(seen_x), dtype=torch.float64), atol=1e-6)
        probe = unit(7, 5, 12)
        assert torch.allclose(krr.logits(probe, chunk_size=2), rbf_kernel(probe, seen_x, 0.1) @ alpha, atol=1e-5)


def test_dual_with_a_sharper_kernel_matches_to_1e_5_absolute():
    batches = domains(seed=2)
    krr = KernelRidge(lam=0.1, gamma=2.0)
    for k, (x, labels, size) in enumerate(batches):
        krr.update(x, labels, size)
        seen_x, seen_y = all_seen(batches, k)
        assert torch.allclose(krr.alpha, kernel_ridge_solution(seen_x, seen_y, 0.1, 2.0), atol=1e-5, rtol=0)


def test_rbf_kernel_is_the_gaussian_of_the_squared_distance():
    a, b = unit(1, 4, 6), unit(2, 3, 6)
    direct = torch.exp(-0.7 * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    assert torch.allclose(rbf_kernel(a, b, 0.7), direct, atol=1e-12)
    assert torch.allclose(rbf_kernel(a, a, 0.7).diagonal(), torch.ones(4, dtype=torch.float64))


def separable(seed: int, classes: range, per_class: int = 6, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight clusters around class-specific directions: features near e_c, label c."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([c for c in classes for _ in range(per_class)])
    centres = torch.eye(d, dtype=torch.float64)[labels]
    return F.normalize(centres + 0.05 * torch.randn(len(labels), d, generator=g, dtype=torch.float64), dim=1), labels


@pytest.mark.parametrize("form", ["primal", "dual"])
def test_separable_domains_learned_in_sequence_are_all_predicted_correctly(form):
    expansion = RandomExpansion(16, 200, seed=0)
    model = RecursiveRidge(200, 0.1) if form == "primal" else KernelRidge()
    embed = expansion if form == "primal" else (lambda x: x)
    tests = []
    for k, classes in enumerate([range(0, 4), range(4, 7), range(7, 12)]):
        x, labels = separable(k, classes)
        model.update(embed(x), labels, classes.stop)
        tests.append(separable(50 + k, classes))
    # After the last domain every earlier domain is still right: nothing is forgotten.
    for x, labels in tests:
        assert torch.equal(model.logits(embed(x)).argmax(1), labels)


def test_expansion_is_seeded_relu_of_a_bounded_uniform_matrix_and_round_trips():
    a, b = RandomExpansion(8, 30, seed=5), RandomExpansion(8, 30, seed=5)
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, RandomExpansion(8, 30, seed=6).weight)
    assert a.weight.shape == (30, 8) and a.weight.dtype == torch.float32
    assert float(a.weight.abs().max()) <= 1 / 8**0.5
    x = unit(3, 5, 8).float()
    assert torch.equal(a(x), torch.relu(x @ a.weight.T))
    assert (a(x) >= 0).all()
    restored = RandomExpansion.from_state_dict(load(save(a.state_dict())))
    assert torch.equal(restored(x), a(x))


def test_new_classes_start_with_zero_weights_and_old_samples_target_zero_there():
    x, labels = separable(0, range(0, 3))
    ridge = RecursiveRidge(16, 0.1)
    ridge.update(x, labels, 3)
    before = ridge.W.clone()
    ridge.update(x[:0], labels[:0], 6)  # the label space grows before any data of the new classes arrives
    assert ridge.W.shape == (16, 6)
    assert torch.equal(ridge.W[:, :3], before) and torch.equal(ridge.W[:, 3:], torch.zeros(16, 3, dtype=torch.float64))
    # Classes the regression has never seen score exactly 0: it cannot predict them.
    assert torch.equal(ridge.logits(x)[:, 3:], torch.zeros(len(x), 3, dtype=torch.float64))


def test_the_label_space_cannot_shrink_and_bad_inputs_are_refused():
    ridge = RecursiveRidge(4, 0.1)
    ridge.update(unit(0, 3, 4), torch.tensor([0, 1, 4]))  # num_classes inferred: 5
    assert ridge.num_classes == 5
    ridge.update(unit(1, 2, 4), torch.tensor([0, 1]), 2)  # a smaller size is read as "no new classes"
    assert ridge.num_classes == 5
    with pytest.raises(ValueError):
        ridge.update(unit(1, 2, 4), torch.tensor([0, 6]), 6)  # label 6 outside [0, 6)
    with pytest.raises(ValueError):
        ridge.update(unit(1, 2, 4), torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError):
        ridge.update(torch.full((1, 4), float("nan")), torch.tensor([0]))
    with pytest.raises(ValueError):
        ridge.update(unit(1, 2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        ridge.update_targets(unit(1, 2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        KernelRidge(lam=0)


def test_primal_and_dual_state_round_trips_through_safetensors_and_keeps_learning():
    batches = domains(seed=4)
    ridge, krr = RecursiveRidge(12, 0.1), KernelRidge()
    for x, labels, size in batches[:2]:
        ridge.update(x, labels, size)
        krr.update(x, labels, size)
    ridge2 = RecursiveRidge.from_state_dict(load(save(ridge.state_dict())))
    krr2 = KernelRidge.from_state_dict(load(save(krr.state_dict())))
    for name, value in ridge.state_dict().items():
        assert torch.equal(ridge2.state_dict()[name], value), name
    for name, value in krr.state_dict().items():
        assert torch.equal(krr2.state_dict()[name], value), name
    for x, labels, size in batches[2:]:
        for model in (ridge, ridge2, krr, krr2):
            model.update(x, labels, size)
    probe = unit(9, 4, 12)
    assert torch.equal(ridge.logits(probe), ridge2.logits(probe))
    assert torch.equal(krr.logits(probe), krr2.logits(probe))
    # load_state_dict into an existing object, and torch.save works as well
    buffer = io.BytesIO()
    torch.save(krr.state_dict(), buffer)
    buffer.seek(0)
    krr3 = KernelRidge(lam=5.0, gamma=5.0)
    krr3.load_state_dict(torch.load(buffer))
    assert krr3.lam == 1e-3 and torch.equal(krr3.logits(probe), krr.logits(probe))


def test_fusion_on_a_constructed_case():
    # Union label space of 5 classes: 0-2 learned by the regression (domain 1), 3-4 belong to an unseen domain.
    zero_shot = torch.tensor(
        [
            [4.0, 1.0, 0.0, 0.0, 0.0],  # zero-shot says class 0 (learned domain): fused
            [0.0, 3.0, 2.9, 0.0, 0.0],  # says 1, the regression says 2: the regression's weight 0.8 wins
            [0.0, 0.0, 0.0, 5.0, 1.0],  # says 3 (unseen domain): zero-shot kept as is
        ]
    )
    adapter = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.1, 1.0], [1.0, 0.0, 0.0]])
    fused = fuse_with_zero_shot(zero_shot, adapter)
    probs = torch.softmax(zero_shot, dim=1)
    beta = DEFAULT_FUSION_WEIGHT
    padded = F.pad(adapter, (0, 2))
    assert torch.allclose(fused[:2], (1 - beta) * probs[:2] + beta * padded[:2])
    assert torch.equal(fused[2], probs[2])  # the regression's strong "class 0" is ignored: out of its domains
    assert fused.argmax(1).tolist() == [0, 2, 3]
    assert learned_domain_mask(zero_shot, regression_classes=3).tolist() == [True, True, False]
    # Weight 0: zero-shot only; weight 1: the regression alone decides on the selected rows.
    assert torch.equal(fuse_with_zero_shot(zero_shot, adapter, weight=0.0), probs)
    assert fuse_with_zero_shot(zero_shot, adapter, weight=1.0)[:2].argmax(1).tolist() == [0, 2]


def test_fusion_with_learned_classes_scattered_in_the_union():
    # vlcl's union label space merges identical classes, so the learned ones need not be a prefix.
    zero_shot = torch.tensor([[0.0, 0.0, 6.0, 0.0], [6.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    adapter = torch.tensor([[-0.5, 1.0], [0.5, 0.5]], dtype=torch.float64)  # regression columns = union classes 2 and 3
    classes = torch.tensor([2, 3])
    fused = fuse_with_zero_shot(zero_shot, adapter, classes, weight=0.5)
    probs = torch.softmax(zero_shot, dim=1)
    expected0 = 0.5 * probs[0] + 0.5 * torch.tensor([0.0, 0.0, -0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(fused[0], expected0)
    assert torch.equal(fused[1], probs[1])  # zero-shot says 0, a class the regression does not know
    assert fused[0].argmax() == 3
    with pytest.raises(ValueError):
        fuse_with_zero_shot(zero_shot, adapter, torch.tensor([2, 2]))
    with pytest.raises(ValueError):
        fuse_with_zero_shot(zero_shot, adapter, torch.tensor([2, 4]))


def test_dense_targets_follow_the_same_closed_forms():
    # Dense targets (e.g. text embeddings instead of one-hot labels): not RAIL's use, but the same exact recursion.
    x1, x2 = unit(20, 8, 6), unit(21, 5, 6)
    y1, y2 = unit(22, 8, 3), unit(23, 5, 4)  # the second batch widens the targets; old rows read 0 there
    ridge, krr = RecursiveRidge(6, 0.3), KernelRidge(0.05, 1.5)
    for x, y in ((x1, y1), (x2, y2)):
        ridge.update_targets(x, y)
        krr.update_targets(x, y)
    x, y = torch.cat([x1, x2]), torch.cat([F.pad(y1, (0, 1)), y2])
    assert torch.allclose(ridge.W, ridge_solution(x, y, 0.3), atol=1e-10)
    assert torch.allclose(krr.alpha, kernel_ridge_solution(x, y, 0.05, 1.5), atol=1e-8)
    assert krr.labels.tolist() == [-1] * 13
