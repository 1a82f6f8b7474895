"""DIST against a numpy float64 reference over the rows of the [N*H*W, C] matrix, and the distiller."""

import numpy as np
import pytest
import torch

from hwd_tune.losses import build_distiller
from hwd_tune.losses.dist import DISTLoss
from hwd_tune.outputs import SegOutput

EPS = 1e-8  # the authors' eps, added to the product of the norms


def reference_mean_pearson(a, b):
    """Mean over rows of the Pearson correlation of row i of `a` with row i of `b` (numpy)."""
    values = []
    for row_a, row_b in zip(a, b):
        centred_a, centred_b = row_a - row_a.mean(), row_b - row_b.mean()
        norms = np.sqrt((centred_a**2).sum()) * np.sqrt((centred_b**2).sum())
        values.append((centred_a * centred_b).sum() / (norms + EPS))
    return float(np.mean(values))


def reference_dist(student, teacher, beta, gamma, softmax):
    c = student.shape[1]
    s = student.detach().double().permute(0, 2, 3, 1).reshape(-1, c).numpy()
    t = teacher.detach().double().permute(0, 2, 3, 1).reshape(-1, c).numpy()
    if softmax:
        s = np.exp(s - s.max(1, keepdims=True))
        s /= s.sum(1, keepdims=True)
        t = np.exp(t - t.max(1, keepdims=True))
        t /= t.sum(1, keepdims=True)
    inter = 1 - reference_mean_pearson(s, t)
    intra = 1 - reference_mean_pearson(s.T, t.T)
    return beta * inter + gamma * intra


@pytest.mark.parametrize(
    "beta, gamma, softmax", [(1.0, 1.0, False), (2.0, 0.5, False), (1.0, 1.0, True), (0.0, 3.0, True)]
)
def test_value_matches_reference(beta, gamma, softmax):
    student, teacher = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    loss = DISTLoss(beta, gamma, softmax)(student, teacher)
    assert loss.item() == pytest.approx(reference_dist(student, teacher, beta, gamma, softmax), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("softmax", [False, True])
def test_gradcheck_float64(softmax):
    student = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: DISTLoss(1.0, 2.0, softmax)(s, teacher), (student,))


def test_perfect_correlation_gives_zero_and_anti_correlation_gives_four():
    teacher = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    assert DISTLoss()(2.0 * teacher + 1.0, teacher).item() == pytest.approx(0.0, abs=1e-7)
    assert DISTLoss()(-teacher, teacher).item() == pytest.approx(4.0, abs=1e-7)


def test_constant_rows_use_eps_not_nan_and_teacher_gets_no_gradient():
    student = torch.ones(1, 3, 2, 2, requires_grad=True)
    teacher = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = DISTLoss()(student, teacher)
    loss.backward()
    assert loss.item() == pytest.approx(2.0)  # correlation 0 on both terms
    assert torch.isfinite(student.grad).all() and teacher.grad is None


def test_invalid_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="beta"):
        DISTLoss(beta=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        DISTLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        DISTLoss()(torch.zeros(1, 3, 4, 4), torch.zeros(2, 3, 4, 4))


def test_distiller_gives_weighted_dist_on_main_logits():
    student, teacher = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    labels = torch.randint(-1, 4, (2, 6, 6))
    terms = build_distiller("dist", num_classes=4)(
        SegOutput(student, None, student), SegOutput(teacher, None, teacher), labels
    )
    assert set(terms) == {"ce", "dist"}
    assert terms["dist"].item() == pytest.approx(reference_dist(student, teacher, 1.0, 1.0, False), rel=1e-5)
    terms = build_distiller("dist", num_classes=4, beta=2.0, gamma=0.0, softmax=True, weight=0.5)(
        SegOutput(student, None, student), SegOutput(teacher, None, teacher), labels
    )
    assert terms["dist"].item() == pytest.approx(0.5 * reference_dist(student, teacher, 2.0, 0.0, True), rel=1e-5)
