"""IFVD: prototypes and similarity maps against an explicit per-class loop, and the distiller."""

import copy
import math

import numpy as np
import pytest
import torch

from hwd_tune.losses import build_distiller
from hwd_tune.losses.ifvd import intra_class_variation_loss, labels_at, prototype_similarity
from hwd_tune.losses.kd import KDLoss
from hwd_tune.outputs import SegOutput


def reference_labels_at(labels, h, w):
    """Nearest neighbour: output row i reads input row floor(i * H / h), likewise columns."""
    n, big_h, big_w = labels.shape
    out = np.empty((n, h, w), dtype=np.int64)
    for i in range(h):
        for j in range(w):
            out[:, i, j] = labels[:, (i * big_h) // h, (j * big_w) // w]
    return out


def reference_similarity(features, labels, num_classes):
    """Per image and per class: prototype = mean feature of its pixels; cosine of each pixel to it.

    Pixels without a class keep their own feature as prototype (the authors' loop), cosine 1.
    """
    features = features.detach().double().numpy()
    n, _, h, w = features.shape
    similarity = np.ones((n, h, w))
    for b in range(n):
        for k in range(num_classes):
            members = [(i, j) for i in range(h) for j in range(w) if labels[b, i, j] == k]
            if not members:
                continue
            prototype = np.mean([features[b, :, i, j] for i, j in members], axis=0)
            for i, j in members:
                pixel = features[b, :, i, j]
                norms = np.linalg.norm(pixel) * np.linalg.norm(prototype)
                similarity[b, i, j] = pixel @ prototype / norms
    return similarity


def reference_ifv_loss(student, teacher, labels, num_classes):
    small = reference_labels_at(labels.numpy(), *student.shape[-2:])
    student_map = reference_similarity(student, small, num_classes)
    teacher_map = reference_similarity(teacher, small, num_classes)
    return float(np.mean((student_map - teacher_map) ** 2))


@pytest.mark.parametrize("big, small", [((12, 16), (6, 8)), ((10, 7), (4, 3))])
def test_labels_are_resized_by_nearest_neighbour(big, small):
    labels = torch.randint(-1, 5, (2, *big))
    assert np.array_equal(labels_at(labels, small).numpy(), reference_labels_at(labels.numpy(), *small))


def test_prototype_similarity_matches_per_class_loop():
    features = torch.randn(2, 4, 5, 6)
    labels = torch.randint(-1, 3, (2, 5, 6))
    labels[1] = torch.where(labels[1] == 2, 0, labels[1])  # class 2 absent from image 1
    got = prototype_similarity(features, labels, num_classes=3)
    expected = reference_similarity(features, labels.numpy(), 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    ignored = got[labels == -1]  # compared with themselves: cosine 1
    assert ignored.numel() > 0 and torch.allclose(ignored, torch.ones_like(ignored))


def test_single_pixel_classes_and_all_ignored_images():
    features = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [-1, -1]]])  # each class has one pixel: its own prototype
    assert torch.allclose(prototype_similarity(features, labels, num_classes=2), torch.ones(1, 2, 2))
    student, teacher = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    ignored = torch.full((2, 8, 8), -1)
    loss = intra_class_variation_loss(student, teacher, ignored, num_classes=3)
    assert loss.item() == pytest.approx(0, abs=1e-10)


@pytest.mark.parametrize("num_classes", [3, 6])
def test_ifv_loss_matches_reference(num_classes):
    student, teacher = torch.randn(2, 3, 4, 5), torch.randn(2, 6, 4, 5)  # channels may differ
    labels = torch.randint(-1, num_classes, (2, 16, 20))
    loss = intra_class_variation_loss(student, teacher, labels, num_classes)
    expected = reference_ifv_loss(student, teacher, labels, num_classes)
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    same = intra_class_variation_loss(teacher, teacher, labels, num_classes)
    assert same.item() == pytest.approx(0, abs=1e-10)


def test_ifv_gradient_through_pixels_and_prototypes():
    student = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 4, 3, 4, dtype=torch.float64)
    labels = torch.randint(-1, 3, (2, 6, 8))

    def loss_of(features):
        return intra_class_variation_loss(features, teacher, labels, 3)

    assert torch.autograd.gradcheck(loss_of, (student,))


def test_ifv_rejects_bad_shapes():
    with pytest.raises(ValueError, match="spatial size"):
        intra_class_variation_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5, 4), torch.zeros(2, 8, 8), 3)
    with pytest.raises(ValueError, match="labels must be"):
        intra_class_variation_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.zeros(8, 8), 3)


def make_outputs(num_classes=4):
    student = SegOutput(
        torch.randn(2, num_classes, 6, 6, requires_grad=True),
        None,
        torch.randn(2, 3, 6, 6, requires_grad=True),
    )
    teacher = SegOutput(torch.randn(2, num_classes, 6, 6), None, torch.randn(2, 5, 6, 6))
    return student, teacher, torch.randint(-1, num_classes, (2, 24, 24))


def test_default_distiller_gives_documented_terms_and_weights():
    student, teacher, labels = make_outputs()
    distiller = build_distiller("ifvd", num_classes=4, feature_channels=(3, 5))
    params = distiller.params
    assert (params.kd_weight, params.ifv_weight, params.adv_weight) == (1.0, 20.0, 0.001)
    assert (params.discriminator_weight, params.discriminator_lr) == (0.1, 4e-4)
    critic = copy.deepcopy(distiller.adversary)
    terms = distiller(student, teacher, labels)
    assert list(terms) == ["ce", "kd", "ifv", "adv"]  # no aux head in this student
    kd = KDLoss(1.0)(student.logits, teacher.logits).item()
    assert terms["kd"].item() == pytest.approx(kd, rel=1e-6)
    expected_ifv = 20 * reference_ifv_loss(student.features, teacher.features, labels, 4)
    assert terms["ifv"].item() == pytest.approx(expected_ifv, rel=1e-5)
    adv = -0.001 * critic(student.logits).mean().item()
    assert terms["adv"].item() == pytest.approx(adv, rel=1e-5, abs=1e-9)
    logged = distiller.adversary_step(student, teacher, labels)
    assert set(logged) == {"d"} and logged["d"].item() > 0


def test_each_weight_scales_its_term():
    student, teacher, labels = make_outputs()
    params = {"kd_weight": 0.5, "kd_temperature": 2.0, "ifv_weight": 3.0, "adv_weight": 2.0}
    distiller = build_distiller("ifvd", num_classes=4, feature_channels=(3, 5), discriminator_width=8, **params)
    critic = copy.deepcopy(distiller.adversary)
    terms = distiller(student, teacher, labels)
    kd = KDLoss(2.0)(student.logits, teacher.logits).item()
    assert terms["kd"].item() == pytest.approx(0.5 * kd, rel=1e-6)
    expected_ifv = 3 * reference_ifv_loss(student.features, teacher.features, labels, 4)
    assert terms["ifv"].item() == pytest.approx(expected_ifv, rel=1e-5)
    assert terms["adv"].item() == pytest.approx(-2.0 * critic(student.logits).mean().item(), rel=1e-5)


@pytest.mark.parametrize("field, value", [("kd_weight", -1.0), ("kd_temperature", 0.0), ("ifv_weight", -20.0)])
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"'ifvd'.*{field}"):
        build_distiller("ifvd", num_classes=4, **{field: value})
