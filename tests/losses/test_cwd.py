"""CWD loss against a float64 loop over (image, channel), gradcheck, and the "cwd" distiller."""

import pytest
import torch

from hwd_tune.losses import build_distiller
from hwd_tune.losses.cwd import CWDLoss, check_logit_pair
from hwd_tune.losses.hwd import HWDLoss
from hwd_tune.outputs import SegOutput


def reference_cwd(student, teacher, tau):
    """tau^2 / (N*C) * sum over (n, c) of KL between spatial softmaxes, one channel at a time."""
    n, c = student.shape[:2]
    total = torch.zeros((), dtype=torch.float64)
    for b in range(n):
        for k in range(c):
            s = student[b, k].double().flatten() / tau
            t = teacher[b, k].double().flatten() / tau
            p_t = torch.softmax(t, 0)
            total = total + (p_t * (torch.log(p_t) - torch.log_softmax(s, 0))).sum()
    return total * tau**2 / (n * c)


@pytest.mark.parametrize("tau", [1.0, 4.0, 0.5])
def test_value_and_gradient_match_reference(tau):
    student = (2 * torch.randn(2, 3, 5, 4)).requires_grad_()
    teacher = 2 * torch.randn(2, 3, 5, 4)
    loss = CWDLoss(tau)(student, teacher)
    expected = reference_cwd(student, teacher, tau)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, student)
    (expected_grad,) = torch.autograd.grad(expected, student)
    torch.testing.assert_close(grad, expected_grad.float(), rtol=1e-4, atol=1e-7)


def test_gradcheck_float64():
    student = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: CWDLoss(4.0)(s, teacher), (student,))


def test_equals_hwd_with_uniform_weights_and_is_zero_for_equal_inputs():
    student = torch.randn(2, 1, 4, 4).expand(2, 6, 4, 4).contiguous()
    teacher = torch.randn(2, 1, 4, 4).expand(2, 6, 4, 4).contiguous()
    assert CWDLoss(4.0)(student, teacher).item() == pytest.approx(HWDLoss(4.0)(student, teacher).item(), rel=1e-6)
    logits = torch.randn(2, 6, 4, 4)
    assert CWDLoss()(logits, logits).item() == pytest.approx(0.0, abs=1e-7)


def test_teacher_gets_no_gradient_and_large_logits_are_finite():
    student = (1e4 * torch.randn(2, 3, 4, 4)).requires_grad_()
    teacher = (1e4 * torch.randn(2, 3, 4, 4)).requires_grad_()
    loss = CWDLoss()(student, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    assert teacher.grad is None


def test_invalid_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="tau"):
        CWDLoss(0.0)
    with pytest.raises(ValueError, match="student_logits must be 4-D"):
        check_logit_pair(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="teacher_logits"):
        CWDLoss()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_distiller_gives_weighted_cwd_on_main_logits():
    student, teacher = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    labels = torch.randint(-1, 4, (2, 8, 8))
    distiller = build_distiller("cwd", num_classes=4)
    terms = distiller(
        SegOutput(student, None, torch.randn(2, 3, 4, 4)), SegOutput(teacher, None, torch.randn(2, 5, 4, 4)), labels
    )
    assert set(terms) == {"ce", "cwd"}
    assert terms["cwd"].item() == pytest.approx(3.0 * reference_cwd(student, teacher, 4.0).item(), rel=1e-5)
    terms = build_distiller("cwd", num_classes=4, tau=2.0, weight=0.5)(
        SegOutput(student, None, student), SegOutput(teacher, None, teacher), labels
    )
    assert terms["cwd"].item() == pytest.approx(0.5 * reference_cwd(student, teacher, 2.0).item(), rel=1e-5)
