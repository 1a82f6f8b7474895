"""MGD: the masked generative loss against explicit numpy convolutions, the mask, the distiller."""

import math

import numpy as np
import pytest
import torch

from hwd_tune.losses import build_distiller
from hwd_tune.losses.mgd import MGDLoss
from hwd_tune.outputs import SegOutput


def numpy_weights(conv):
    return conv.weight.detach().double().numpy(), conv.bias.detach().double().numpy()


def reference_conv(x, weight, bias):
    """Stride-1 'same' convolution (zero padding k // 2), one output value at a time."""
    n, _, h, w = x.shape
    out_channels, _, k, _ = weight.shape
    pad = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty((n, out_channels, h, w))
    for b in range(n):
        for o in range(out_channels):
            for i in range(h):
                for j in range(w):
                    out[b, o, i, j] = np.sum(padded[b, :, i : i + k, j : j + k] * weight[o]) + bias[o]
    return out


def reference_mgd(loss_module, student, teacher, mask):
    """sum (G(mask * align(S)) - T)^2 / N with G = conv3x3 - ReLU - conv3x3, in float64."""
    aligned = reference_conv(student.detach().double().numpy(), *numpy_weights(loss_module.align))
    masked = aligned * mask.double().numpy()
    hidden = np.maximum(reference_conv(masked, *numpy_weights(loss_module.generation[0])), 0.0)
    rebuilt = reference_conv(hidden, *numpy_weights(loss_module.generation[2]))
    return float(np.sum((rebuilt - teacher.double().numpy()) ** 2) / student.shape[0])


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_loss_matches_numpy_reference_with_a_fixed_mask():
    loss_module = MGDLoss(student_channels=3, teacher_channels=4, mask_ratio=0.5)
    student, teacher = torch.randn(2, 3, 5, 4), torch.randn(2, 4, 5, 4)
    mask = loss_module.random_mask(2, 5, 4, generator=seeded(7))
    assert 0 < mask.sum() < mask.numel()  # some pixels masked, some kept
    loss = loss_module(student, teacher, generator=seeded(7))
    assert math.isclose(loss.item(), reference_mgd(loss_module, student, teacher, mask), rel_tol=1e-5)


def test_gradients_match_finite_differences():
    loss_module = MGDLoss(student_channels=2, teacher_channels=3, mask_ratio=0.5).double()
    student = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    align_weight = loss_module.align.weight.detach().clone().requires_grad_()
    teacher = torch.randn(2, 3, 3, 3, dtype=torch.float64)

    def loss_of(features, weight):  # the same mask on every call: a freshly seeded generator
        params = {"align.weight": weight}
        inputs = (features, teacher)
        return torch.func.functional_call(loss_module, params, inputs, {"generator": seeded(3)})

    assert torch.autograd.gradcheck(loss_of, (student, align_weight))


def test_masked_pixels_get_no_gradient_and_teacher_none():
    loss_module = MGDLoss(student_channels=3, teacher_channels=4)
    student = torch.randn(2, 3, 6, 6, requires_grad=True)
    teacher = torch.randn(2, 4, 6, 6, requires_grad=True)
    loss_module(student, teacher, generator=seeded(11)).backward()
    masked = loss_module.random_mask(2, 6, 6, generator=seeded(11)) == 0  # [N, 1, h, w]
    assert masked.any()
    assert torch.all(student.grad.masked_select(masked.expand_as(student)) == 0)
    assert student.grad.masked_select(~masked.expand_as(student)).abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.75])
def test_mask_zeroes_the_requested_fraction_of_pixels(ratio):
    loss_module = MGDLoss(student_channels=1, teacher_channels=1, mask_ratio=ratio)
    mask = loss_module.random_mask(2, 100, 100, generator=seeded(0))
    assert mask.shape == (2, 1, 100, 100)  # one draw per pixel, shared by every channel
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert abs((mask == 0).float().mean().item() - ratio) < 0.01  # 20000 pixels: std ~0.003
    assert torch.equal(mask, loss_module.random_mask(2, 100, 100, generator=seeded(0)))


def test_same_generator_seed_same_loss_different_seed_different_loss():
    loss_module = MGDLoss(student_channels=3, teacher_channels=4)
    student, teacher = torch.randn(2, 3, 6, 6), torch.randn(2, 4, 6, 6)
    first = loss_module(student, teacher, generator=seeded(1))
    assert torch.equal(first, loss_module(student, teacher, generator=seeded(1)))
    assert not torch.equal(first, loss_module(student, teacher, generator=seeded(2)))


def test_distiller_term_and_its_trainable_modules():
    distiller = build_distiller("mgd", num_classes=4, feature_channels=(3, 5))
    assert (distiller.params.weight, distiller.params.mask_ratio) == (2e-5, 0.75)
    student = SegOutput(torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6), torch.randn(2, 3, 6, 6))
    teacher = SegOutput(torch.randn(2, 4, 6, 6), None, torch.randn(2, 5, 6, 6))
    labels = torch.randint(-1, 4, (2, 24, 24))
    torch.manual_seed(5)
    terms = distiller(student, teacher, labels)
    assert list(terms) == ["ce", "aux", "mgd"]
    torch.manual_seed(5)  # without a generator the mask comes from the global RNG
    mask = distiller.mgd.random_mask(2, 6, 6)
    expected = 2e-5 * reference_mgd(distiller.mgd, student.features, teacher.features, mask)
    assert terms["mgd"].item() == pytest.approx(expected, rel=1e-5)
    # The align conv and the generation block train with the student; there is no adversary.
    assert {id(p) for p in distiller.student_parameters()} == {id(p) for p in distiller.mgd.parameters()}
    assert len(list(distiller.student_parameters())) == 6 and distiller.adversary is None
    assert distiller.adversary_step(student, teacher, labels) == {}


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="feature_channels"):
        build_distiller("mgd", num_classes=4)  # default (0, 0): the loop must pass the widths
    with pytest.raises(ValueError, match="'mgd'.*mask_ratio"):
        build_distiller("mgd", num_classes=4, feature_channels=(3, 5), mask_ratio=1.0)
    with pytest.raises(ValueError, match="'mgd'.*weight"):
        build_distiller("mgd", num_classes=4, feature_channels=(3, 5), weight=-1.0)
    with pytest.raises(ValueError, match="mask_ratio"):
        MGDLoss(3, 5, mask_ratio=-0.1)
    loss_module = MGDLoss(3, 5)
    with pytest.raises(ValueError, match="student features have 4 channels"):
        loss_module(torch.randn(1, 4, 4, 4), torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match="teacher features have 6 channels"):
        loss_module(torch.randn(1, 3, 4, 4), torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match="spatial size"):
        loss_module(torch.randn(1, 3, 4, 4), torch.randn(1, 5, 3, 4))
