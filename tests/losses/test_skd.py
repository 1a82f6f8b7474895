"""SKD: pair-wise similarity against explicit loops, and the distiller's named, weighted terms."""

import copy
import math

import numpy as np
import pytest
import torch

from hwd_tune.losses import build_distiller
from hwd_tune.losses.kd import KDLoss
from hwd_tune.losses.skd import pairwise_similarity_loss
from hwd_tune.outputs import SegOutput


def reference_max_pool(features, pool=2):
    """Max over pool x pool cells, a partial cell at the border kept (ceil mode), by loops."""
    n, c, h, w = features.shape
    rows, cols = math.ceil(h / pool), math.ceil(w / pool)
    pooled = np.empty((n, c, rows, cols))
    for b in range(n):
        for k in range(c):
            for i in range(rows):
                for j in range(cols):
                    cell = features[b, k, i * pool : (i + 1) * pool, j * pool : (j + 1) * pool]
                    pooled[b, k, i, j] = cell.max()
    return pooled


def reference_pairwise(student, teacher):
    """sum_{n,i,j} (cos_T(i, j) - cos_S(i, j))^2 / M^2 / N over 2x2-pooled cells, float64 loops."""
    pooled_s = reference_max_pool(student.detach().double().numpy())
    pooled_t = reference_max_pool(teacher.detach().double().numpy())
    n, _, rows, cols = pooled_t.shape
    cells = rows * cols

    def cosine(a, b):
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    total = 0.0
    for b in range(n):
        vectors_s = [pooled_s[b, :, i // cols, i % cols] for i in range(cells)]
        vectors_t = [pooled_t[b, :, i // cols, i % cols] for i in range(cells)]
        for i in range(cells):
            for j in range(cells):
                total += (cosine(vectors_t[i], vectors_t[j]) - cosine(vectors_s[i], vectors_s[j])) ** 2
    return total / cells**2 / n


@pytest.mark.parametrize("size", [(4, 6), (5, 3)])  # even, and odd sides (a partial border cell)
def test_pairwise_matches_loops(size):
    student, teacher = torch.randn(2, 3, *size), torch.randn(2, 5, *size)  # channels may differ
    loss = pairwise_similarity_loss(student, teacher)
    assert math.isclose(loss.item(), reference_pairwise(student, teacher), rel_tol=1e-5)


def test_pairwise_gradient_matches_finite_differences():
    student = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 4, 4, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: pairwise_similarity_loss(s, teacher), (student,))


def test_pairwise_properties():
    features = torch.randn(2, 4, 6, 6)
    assert pairwise_similarity_loss(features, features).item() == pytest.approx(0.0, abs=1e-7)
    # Cosine similarities ignore a positive scale per image, and the teacher gets no gradient.
    teacher = torch.randn(2, 4, 6, 6, requires_grad=True)
    scaled = (features * torch.tensor([3.0, 0.5]).view(2, 1, 1, 1)).requires_grad_()
    loss = pairwise_similarity_loss(scaled, teacher)
    assert loss.item() == pytest.approx(pairwise_similarity_loss(features, teacher).item(), rel=1e-5)
    loss.backward()
    assert teacher.grad is None


def test_pairwise_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="spatial size"):
        pairwise_similarity_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 6, 6))


def make_outputs(num_classes=4):
    student = SegOutput(
        torch.randn(2, num_classes, 6, 6, requires_grad=True),
        torch.randn(2, num_classes, 6, 6, requires_grad=True),
        torch.randn(2, 3, 6, 6, requires_grad=True),
    )
    teacher = SegOutput(torch.randn(2, num_classes, 6, 6), None, torch.randn(2, 5, 6, 6))
    return student, teacher, torch.randint(-1, num_classes, (2, 24, 24))


def test_default_distiller_gives_documented_terms_and_weights():
    student, teacher, labels = make_outputs()
    distiller = build_distiller("skd", num_classes=4, feature_channels=(3, 5))
    params = distiller.params
    assert (params.kd_weight, params.pairwise_weight, params.adv_weight) == (1.0, 10.0, 0.001)
    assert (params.discriminator_weight, params.discriminator_lr) == (0.1, 4e-4)
    assert distiller.adversary_optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    critic = copy.deepcopy(distiller.adversary)  # same state: gives the scores the distiller sees
    terms = distiller(student, teacher, labels)
    assert list(terms) == ["ce", "aux", "kd", "pairwise", "adv"]
    kd = KDLoss(1.0)(student.logits, teacher.logits).item()
    pairwise = reference_pairwise(student.features, teacher.features)
    assert terms["kd"].item() == pytest.approx(kd, rel=1e-6)
    assert terms["pairwise"].item() == pytest.approx(10 * pairwise, rel=1e-5)
    scores = critic(student.logits).detach().numpy()
    assert terms["adv"].item() == pytest.approx(-0.001 * scores.mean(), rel=1e-5, abs=1e-9)


def test_each_weight_scales_its_term():
    student, teacher, labels = make_outputs()
    params = {"kd_weight": 2.0, "kd_temperature": 3.0, "pairwise_weight": 5.0, "adv_weight": 0.5}
    distiller = build_distiller("skd", num_classes=4, feature_channels=(3, 5), discriminator_width=8, **params)
    critic = copy.deepcopy(distiller.adversary)
    terms = distiller(student, teacher, labels)
    kd = KDLoss(3.0)(student.logits, teacher.logits).item()
    pairwise = reference_pairwise(student.features, teacher.features)
    assert terms["kd"].item() == pytest.approx(2.0 * kd, rel=1e-6)
    assert terms["pairwise"].item() == pytest.approx(5 * pairwise, rel=1e-5)
    assert terms["adv"].item() == pytest.approx(-0.5 * critic(student.logits).mean().item(), rel=1e-5)
    sum(terms.values()).backward()
    assert student.features.grad.abs().sum() > 0 and student.logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "field, value",
    [("kd_weight", -1.0), ("kd_temperature", 0.0), ("pairwise_weight", -10.0), ("bogus", 1)],
)
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"'skd'.*{field}"):
        build_distiller("skd", num_classes=4, **{field: value})
