"""vlcl.losses.distillation_kl, the softened KL shared by lwf, zscl and mulki."""

import pytest
import torch
import torch.nn.functional as F

from vlcl.losses import distillation_kl
from vlcl.methods.lwf import softened_kl
from vlcl.methods.mulki import prototype_kl
from vlcl.methods.zscl import distillation_kl as zscl_kl


def logits(seed: int, n: int = 6, k: int = 9) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def direct(teacher: torch.Tensor, student: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)) per row, written out with sums."""
    p = torch.exp(teacher / T) / torch.exp(teacher / T).sum(dim=-1, keepdim=True)
    q = torch.exp(student / T) / torch.exp(student / T).sum(dim=-1, keepdim=True)
    return T**2 * (p * (p.log() - q.log())).sum(dim=-1)


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 3.7])
def test_matches_the_direct_formula_for_every_reduction(T):
    teacher, student = logits(0), logits(1)
    rows = direct(teacher, student, T)
    assert torch.allclose(distillation_kl(teacher, student, T, reduction="rows"), rows, rtol=1e-10, atol=1e-12)
    assert torch.allclose(distillation_kl(teacher, student, T), rows.mean(), rtol=1e-10)
    assert torch.allclose(distillation_kl(teacher, student, T, reduction="batchmean"), rows.mean(), rtol=1e-10)
    assert torch.allclose(distillation_kl(teacher, student, T, reduction="sum"), rows.sum(), rtol=1e-10)
    assert distillation_kl(teacher, student, T, reduction="rows").shape == (6,)
    assert float(distillation_kl(teacher, student, T)) > 0


def test_is_zero_when_the_student_equals_the_teacher():
    teacher = logits(2)
    for reduction in ("batchmean", "sum", "rows"):
        value = distillation_kl(teacher, teacher.clone(), 2.0, reduction=reduction)
        assert torch.all(value == 0), reduction


def test_is_invariant_to_a_shift_of_a_row():
    teacher, student = logits(3), logits(4)
    shifted = student + torch.arange(6, dtype=student.dtype)[:, None] * 10
    assert torch.allclose(distillation_kl(teacher, student, 2.0), distillation_kl(teacher, shifted, 2.0), rtol=1e-10)


def test_t_squared_scaling():
    """The value is T^2 times the KL of the softened distributions: dividing the logits by T and using T = 1 gives it / T^2."""
    teacher, student = logits(5), logits(6)
    for T in (0.5, 2.0, 4.0):
        scaled = distillation_kl(teacher, student, T)
        unscaled = distillation_kl(teacher / T, student / T, 1.0)
        assert torch.allclose(scaled, T**2 * unscaled, rtol=1e-10)
    # the gradient keeps its scale as T grows (Hinton et al.): d/d student of T^2 KL_T -> (p_s - p_t) / N * T, not / T
    for T in (1.0, 2.0):
        s = student.clone().requires_grad_(True)
        distillation_kl(teacher, s, T, reduction="sum").backward()
        p_t, p_s = torch.softmax(teacher / T, -1), torch.softmax(s.detach() / T, -1)
        assert torch.allclose(s.grad, T * (p_s - p_t), rtol=1e-8, atol=1e-12)


def test_the_teacher_gets_no_gradient_and_the_student_does():
    teacher = logits(7).requires_grad_(True)
    student = logits(8).requires_grad_(True)
    distillation_kl(teacher, student, 2.0).backward()
    assert teacher.grad is None
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    # also when the teacher comes out of a computation with parameters
    weight = torch.randn(9, 9, dtype=torch.float64, requires_grad=True)
    distillation_kl(logits(7) @ weight, student, 2.0, reduction="rows").sum().backward()
    assert weight.grad is None


def test_rejects_an_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        distillation_kl(logits(0), logits(1), 2.0, reduction="mean")


def test_the_methods_use_it_bit_for_bit():
    """lwf's softened_kl and zscl's distillation_kl are the shared function; mulki's prototype_kl is its per-row form."""
    assert softened_kl is distillation_kl and zscl_kl is distillation_kl
    g = torch.Generator().manual_seed(11)
    x, y, protos = (F.normalize(torch.randn(n, 8, generator=g), dim=-1) for n in (5, 5, 4))
    expected = distillation_kl(30.0 * y @ protos.t(), 30.0 * x @ protos.t(), 2.0, reduction="rows")
    assert torch.equal(prototype_kl(x, y, protos, 30.0, 2.0), expected)
