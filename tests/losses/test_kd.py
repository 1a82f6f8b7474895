"""Pixel-wise KD against a float64 loop over pixels, gradcheck, and the "kd" distiller."""

import pytest
import torch

from hwd_tune.losses import build_distiller
from hwd_tune.losses.kd import KDLoss
from hwd_tune.outputs import SegOutput


def reference_kd(student, teacher, temperature):
    """T^2 * mean over the N*H*W pixels of KL(softmax_c(teacher/T) || softmax_c(student/T))."""
    n, _, h, w = student.shape
    total = torch.zeros((), dtype=torch.float64)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                s = student[b, :, y, x].double() / temperature
                t = teacher[b, :, y, x].double() / temperature
                p_t = torch.softmax(t, 0)
                total = total + (p_t * (torch.log(p_t) - torch.log_softmax(s, 0))).sum()
    return total * temperature**2 / (n * h * w)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_value_and_gradient_match_reference(temperature):
    student = (2 * torch.randn(2, 4, 3, 5)).requires_grad_()
    teacher = 2 * torch.randn(2, 4, 3, 5)
    loss = KDLoss(temperature)(student, teacher)
    expected = reference_kd(student, teacher, temperature)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, student)
    (expected_grad,) = torch.autograd.grad(expected, student)
    torch.testing.assert_close(grad, expected_grad.float(), rtol=1e-4, atol=1e-7)


def test_gradcheck_float64_and_teacher_gets_no_gradient():
    student = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: KDLoss(2.0)(s, teacher), (student,))
    KDLoss()(student, teacher).backward()
    assert teacher.grad is None


def test_zero_for_equal_inputs_and_finite_for_large_logits():
    logits = torch.randn(2, 5, 4, 4)
    assert KDLoss()(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    loss = KDLoss()(1e4 * torch.randn(2, 5, 4, 4), 1e4 * torch.randn(2, 5, 4, 4))
    assert torch.isfinite(loss) and loss.item() > 0


def test_invalid_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        KDLoss()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, 4))


def test_distiller_gives_weighted_kd_on_main_logits():
    student, teacher = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    labels = torch.randint(-1, 4, (2, 6, 6))
    terms = build_distiller("kd", num_classes=4)(
        SegOutput(student, torch.randn(2, 4, 3, 3), student), SegOutput(teacher, None, teacher), labels
    )
    assert set(terms) == {"ce", "aux", "kd"}
    assert terms["kd"].item() == pytest.approx(reference_kd(student, teacher, 1.0).item(), rel=1e-5)
    terms = build_distiller("kd", num_classes=4, temperature=3.0, weight=2.0)(
        SegOutput(student, None, student), SegOutput(teacher, None, teacher), labels
    )
    assert terms["kd"].item() == pytest.approx(2.0 * reference_kd(student, teacher, 3.0).item(), rel=1e-5)
