"""SKD/IFVD adversarial part: hinge losses, the SAGAN discriminator and the adversary's training.

References are written here: hinge values worked out by hand, self-attention by explicit
loops over positions, singular values by torch.linalg on the normalised weights.
"""

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from hwd_tune.losses import build_distiller
from hwd_tune.losses.adversarial import (
    LogitDiscriminator,
    SelfAttention,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from hwd_tune.outputs import SegOutput

NUM_CLASSES = 5
ADVERSARIAL_METHODS = ["skd", "ifvd"]


# ------------------------------------------------------------------------------------------
# Hinge losses: golden numbers worked out by hand
# ------------------------------------------------------------------------------------------
def test_hinge_discriminator_loss_golden_numbers():
    real = torch.tensor([2.0, 0.5, -1.0]).view(3, 1, 1, 1)
    fake = torch.tensor([-2.0, 0.0, 1.5]).view(3, 1, 1, 1)
    # real: relu(1 - [2, 0.5, -1]) = [0, 0.5, 2] -> mean 2.5/3
    # fake: relu(1 + [-2, 0, 1.5]) = [0, 1, 2.5] -> mean 3.5/3;  total 6/3 = 2
    assert math.isclose(hinge_discriminator_loss(real, fake).item(), 2.0, rel_tol=1e-6)
    # Confident, correct critic: real >= 1 and fake <= -1 cost nothing.
    assert hinge_discriminator_loss(torch.full((2, 1), 3.0), torch.full((2, 1), -1.0)).item() == 0


def test_hinge_generator_loss_golden_number_and_gradient():
    fake = torch.tensor([-2.0, 0.0, 1.5, 1.0], requires_grad=True)
    loss = hinge_generator_loss(fake)
    assert math.isclose(loss.item(), -0.125, rel_tol=1e-6)  # -(-2 + 0 + 1.5 + 1) / 4
    assert math.isclose(hinge_generator_loss(torch.tensor([1.0, 2.0])).item(), -1.5, rel_tol=1e-6)
    loss.backward()
    assert torch.allclose(fake.grad, torch.full((4,), -0.25))


def test_hinge_rejects_scores_of_different_shapes():
    with pytest.raises(ValueError, match="same shape"):
        hinge_discriminator_loss(torch.zeros(2, 1, 1, 1), torch.zeros(3, 1, 1, 1))


# ------------------------------------------------------------------------------------------
# The discriminator
# ------------------------------------------------------------------------------------------
def reference_self_attention(x, attention):
    """x + gamma * sum_j softmax_j(q_i . k_j) v_j, one query position at a time (float64)."""

    def weights(conv):
        return conv.weight[:, :, 0, 0].detach().double().numpy(), conv.bias.detach().double().numpy()

    (wq, bq), (wk, bk) = weights(attention.query), weights(attention.key)
    wv, bv = weights(attention.value)
    gamma = attention.gamma.item()
    n, c, h, w = x.shape
    out = np.empty((n, c, h, w))
    for b in range(n):
        cells = x[b].double().numpy().reshape(c, h * w).T  # [P, C]
        queries, keys, values = cells @ wq.T + bq, cells @ wk.T + bk, cells @ wv.T + bv
        for i in range(h * w):
            energies = np.array([queries[i] @ keys[j] for j in range(h * w)])
            weights = np.exp(energies - energies.max())
            weights /= weights.sum()
            attended = sum(weights[j] * values[j] for j in range(h * w))
            out[b, :, i // w, i % w] = cells[i] + gamma * attended
    return out


def test_self_attention_matches_loops_and_starts_as_identity():
    attention = SelfAttention(16)
    x = torch.randn(2, 16, 3, 4)
    assert torch.equal(attention(x), x)  # gamma = 0 at initialisation, as SAGAN
    with torch.no_grad():
        attention.gamma.fill_(0.7)
    expected = reference_self_attention(x, attention)
    np.testing.assert_allclose(attention(x).detach().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_discriminator_layer_widths_follow_the_authors():
    disc = LogitDiscriminator(19, width=64)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (4, 4)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (19, 64, (2, 2)),
        (64, 128, (2, 2)),
        (128, 256, (2, 2)),
        (256, 512, (2, 2)),
        (512, 1, (1, 1)),
    ]
    attentions = [m for m in disc.modules() if isinstance(m, SelfAttention)]
    assert [a.value.in_channels for a in attentions] == [256, 512]
    assert [a.query.out_channels for a in attentions] == [32, 64]
    normalised = [c for c in convs if hasattr(c, "parametrizations")]
    assert len(normalised) == 4 and convs[-1] not in normalised  # the score conv is plain
    assert disc.input_norm.num_features == 19


@pytest.mark.parametrize(
    "size, expected", [((64, 64), (1, 1)), ((64, 128), (1, 5)), ((80, 96), (2, 3)), ((8, 12), (1, 1))]
)
def test_discriminator_score_map_size(size, expected):
    disc = LogitDiscriminator(NUM_CLASSES, width=4)
    scores = disc(torch.randn(2, NUM_CLASSES, *size))
    assert scores.shape == (2, 1, *expected)  # floor(max(side, 64) / 16) - 3; small maps padded
    assert torch.isfinite(scores).all()


def test_spectral_norm_makes_largest_singular_value_one():
    disc = LogitDiscriminator(NUM_CLASSES, width=8)
    x = torch.randn(2, NUM_CLASSES, 16, 16)
    for _ in range(10):  # each training-mode forward runs one power iteration per conv
        disc(x)
    normalised = [m for m in disc.modules() if hasattr(m, "parametrizations")]
    assert len(normalised) == 4
    for conv in normalised:
        weight = conv.weight.detach()
        raw = conv.parametrizations.weight.original.detach()
        largest = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2).item()
        raw_largest = torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2).item()
        assert abs(largest - 1.0) < 5e-3
        assert abs(raw_largest - 1.0) > 0.05  # so the normalisation did the work
        assert torch.allclose(weight * raw_largest, raw, rtol=1e-2, atol=1e-6)


def test_discriminator_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_classes"):
        LogitDiscriminator(0)
    with pytest.raises(ValueError, match="width"):
        LogitDiscriminator(NUM_CLASSES, width=1)


# ------------------------------------------------------------------------------------------
# The adversary inside SKD and IFVD distillers
# ------------------------------------------------------------------------------------------
class TinyStudent(nn.Module):
    """A one-layer "segmentation network" so gradients reach real student parameters."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 6, 1)
        self.classifier = nn.Conv2d(6, NUM_CLASSES, 1)

    def forward(self, images):
        features = torch.relu(self.body(images))
        return SegOutput(self.classifier(features), None, features)


def make_batch():
    images = torch.randn(2, 3, 8, 8)
    teacher = SegOutput(torch.randn(2, NUM_CLASSES, 8, 8), None, torch.randn(2, 7, 8, 8))
    labels = torch.randint(-1, NUM_CLASSES, (2, 16, 16))
    return images, teacher, labels


def build(method, **params):
    """A distiller with a narrow discriminator (width 8 instead of 64) to keep the tests fast."""
    params = {"discriminator_width": 8, **params}
    return build_distiller(method, num_classes=NUM_CLASSES, feature_channels=(6, 7), **params)


def twin(distiller, method, **params):
    """A second distiller with the same parameters, buffers and optimiser state."""
    copy = build(method, **params)
    copy.load_state_dict(distiller.state_dict())
    return copy


def adversary_parameters(distiller):
    return {name: p.detach().clone() for name, p in distiller.adversary.named_parameters()}


@pytest.mark.parametrize("method", ADVERSARIAL_METHODS)
def test_student_parameters_exclude_the_discriminator(method):
    distiller = build(method)
    discriminator_ids = {id(p) for p in distiller.adversary.parameters()}
    assert len(discriminator_ids) > 0
    assert not discriminator_ids & {id(p) for p in distiller.student_parameters()}
    assert list(distiller.student_parameters()) == []  # SKD and IFVD add nothing to the student


@pytest.mark.parametrize("method", ADVERSARIAL_METHODS)
def test_adversary_step_trains_only_the_discriminator(method):
    student, distiller = TinyStudent(), build(method)
    images, teacher, labels = make_batch()
    out = student(images)
    sum(distiller(out, teacher, labels).values()).backward()
    student_before = {n: p.detach().clone() for n, p in student.named_parameters()}
    student_grads = {n: p.grad.clone() for n, p in student.named_parameters()}
    disc_before = adversary_parameters(distiller)
    reference = twin(distiller, method)

    logged = distiller.adversary_step(out, teacher, labels)

    assert set(logged) == {"d"} and not logged["d"].requires_grad
    for name, parameter in student.named_parameters():
        assert torch.equal(parameter, student_before[name])
        assert torch.equal(parameter.grad, student_grads[name])
    # The logged value is 0.1 * hinge of the critic's scores (student first, then teacher).
    fake = reference.adversary(out.logits.detach()).detach().numpy()
    real = reference.adversary(teacher.logits).detach().numpy()
    expected = 0.1 * (np.maximum(0, 1 - real).mean() + np.maximum(0, 1 + fake).mean())
    assert math.isclose(logged["d"].item(), expected, rel_tol=1e-5)
    # A first Adam step (lr 4e-4, no weight decay) moves each weight by -lr * g / (|g| + 1e-8).
    for name, parameter in distiller.adversary.named_parameters():
        grad = parameter.grad
        expected_step = -4e-4 * grad / (grad.abs() + 1e-8)
        assert torch.allclose(parameter - disc_before[name], expected_step, atol=1e-7), name
    moved = [n for n, p in distiller.adversary.named_parameters() if not torch.equal(p, disc_before[n])]
    assert any("stages.0.0" in n for n in moved) and any("score" in n for n in moved)


@pytest.mark.parametrize("method", ADVERSARIAL_METHODS)
def test_student_adversarial_term_leaves_no_stale_gradient_in_the_discriminator(method):
    # A large adv_weight makes the generator's gradients on D big enough to change Adam's step.
    params = {"adv_weight": 1.0}
    student, images, teacher, labels = TinyStudent(), *make_batch()
    with_backward = build(method, **params)
    without_backward = twin(with_backward, method, **params)
    out = student(images)
    sum(with_backward(out, teacher, labels).values()).backward()  # leaves grads on its D
    grads = [p.grad for p in with_backward.adversary.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    without_backward(out, teacher, labels)  # same forward (BatchNorm, power iteration), no backward

    with_backward.adversary_step(out, teacher, labels)
    without_backward.adversary_step(out, teacher, labels)
    for name, tensor in with_backward.adversary.state_dict().items():
        assert torch.allclose(tensor, without_backward.adversary.state_dict()[name], atol=1e-7), name


@pytest.mark.parametrize("method", ADVERSARIAL_METHODS)
def test_discriminator_optimiser_state_round_trips_through_state_dict(method):
    params = {"discriminator_lr": 1e-3, "discriminator_beta1": 0.5}
    distiller = build(method, **params)
    images, teacher, labels = make_batch()
    out = TinyStudent()(images)
    for _ in range(2):
        distiller.adversary_step(out, teacher, labels)

    buffer = io.BytesIO()
    torch.save(distiller.state_dict(), buffer)
    buffer.seek(0)
    restored = build(method, **params)
    restored.load_state_dict(torch.load(buffer, weights_only=True))

    saved, loaded = distiller.adversary_optimizer.state_dict(), restored.adversary_optimizer.state_dict()
    assert len(saved["state"]) == len(list(distiller.adversary.parameters())) > 0
    for index, slots in saved["state"].items():
        for key, value in slots.items():
            assert torch.equal(loaded["state"][index][key], value), (index, key)
    assert loaded["param_groups"][0]["betas"] == (0.5, 0.99)
    assert loaded["param_groups"][0]["lr"] == 1e-3
    # The restored Adam continues exactly as the original would.
    distiller.adversary_step(out, teacher, labels)
    restored.adversary_step(out, teacher, labels)
    for name, tensor in distiller.adversary.state_dict().items():
        assert torch.equal(tensor, restored.adversary.state_dict()[name]), name


@pytest.mark.parametrize("method", ADVERSARIAL_METHODS)
def test_bad_extra_state_is_rejected(method):
    with pytest.raises(ValueError, match="adversary_optimizer"):
        build(method).set_extra_state({"something": 1})


@pytest.mark.parametrize("method", ADVERSARIAL_METHODS)
@pytest.mark.parametrize(
    "field, value",
    [
        ("adv_weight", -1.0),
        ("discriminator_weight", -0.1),
        ("discriminator_lr", 0.0),
        ("discriminator_beta1", 1.0),
        ("discriminator_beta2", -0.5),
        ("discriminator_width", 1),
    ],
)
def test_invalid_adversarial_params_name_the_field(method, field, value):
    with pytest.raises(ValueError, match=f"'{method}'.*{field}"):
        build(method, **{field: value})
