"""HWD loss (eq. 1) against a slow float64 reference written here with loops over images and channels."""

import math

import pytest
import torch

from hwd_tune.losses import build_distiller
from hwd_tune.losses.cwd import CWDLoss
from hwd_tune.losses.hwd import HWDLoss, class_pixel_counts, nearest_resize_labels
from hwd_tune.outputs import SegOutput

N, C, H, W = 2, 5, 4, 4
LABEL_SIZE = 8  # labels at twice the logits' resolution, as the input is to the head output


# ------------------------------------------------------------------------------------------
# Reference: one (image, channel) at a time, float64, the weights with plain Python floats
# ------------------------------------------------------------------------------------------
def reference_label_counts(labels, num_classes, size, ignore_index):
    """1 + pixels of class c in labels nearest-resized to `size`, counted pixel by pixel."""
    n, in_h, in_w = labels.shape
    out_h, out_w = size
    counts = [[1.0] * num_classes for _ in range(n)]
    for b in range(n):
        for y in range(out_h):
            for x in range(out_w):
                value = int(labels[b, (y * in_h) // out_h, (x * in_w) // out_w])
                if value != ignore_index and 0 <= value < num_classes:
                    counts[b][value] += 1
    return counts


def reference_pixel_distance(a, b, distance):
    gap = a - b
    if distance == "mse":
        return float((gap**2).sum())
    if distance == "l1":
        return float(gap.abs().sum())
    huber = [0.5 * g * g if abs(g) < 1 else abs(g) - 0.5 for g in gap.tolist()]
    return sum(huber)


def reference_weights(distances, *, mu, beta, process, weight_tau):
    """One image's weights from its C channel distances (plain floats)."""
    c = len(distances)
    mean = sum(distances) / c
    std = math.sqrt(sum((d - mean) ** 2 for d in distances) / (c - 1))
    z = [(d - mean) / std + mu if std > 0 else mu for d in distances]
    if process == "exp":
        logits = list(z) if beta == 1 else [(1 - beta**v) / (1 - beta) for v in z]
    else:
        logits = [v / weight_tau for v in z]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    return [c * e / sum(exps) for e in exps]


def reference_hwd(
    student,
    teacher,
    labels=None,
    *,
    tau=4.0,
    mu=0.0,
    beta=0.1,
    distance="mse",
    process="exp",
    weight_tau=1.0,
    on="probs",
    pixel_norm="none",
    ignore_index=-1,
):
    """(loss, weights [N][C]); the loss is differentiable in `student`, the weights are constants."""
    n, c, h, w = student.shape
    counts = reference_label_counts(labels, c, (h, w), ignore_index) if pixel_norm != "none" else None
    norm = {"none": lambda k: 1.0, "n": lambda k: k, "sqrt_n": math.sqrt, "n2": lambda k: k * k}
    loss = torch.zeros((), dtype=torch.float64)
    all_weights = []
    for b in range(n):
        divergences, distances = [], []
        for k in range(c):
            s = student[b, k].double().flatten() / tau
            t = teacher[b, k].double().flatten().detach() / tau
            log_ps = s - torch.logsumexp(s, 0)
            log_pt = t - torch.logsumexp(t, 0)
            kl = (log_pt.exp() * (log_pt - log_ps)).sum()
            divergences.append(kl)
            with torch.no_grad():
                if distance == "kl":
                    d = float(kl)
                elif on == "probs":
                    d = reference_pixel_distance(log_ps.exp(), log_pt.exp(), distance)
                else:
                    d = reference_pixel_distance(s * tau, t * tau, distance)
                if counts is not None:
                    d /= norm[pixel_norm](counts[b][k])
            distances.append(d)
        weights = reference_weights(distances, mu=mu, beta=beta, process=process, weight_tau=weight_tau)
        all_weights.append(weights)
        for k in range(c):
            loss = loss + weights[k] * divergences[k]
    return loss * tau**2 / (n * c), all_weights


def random_inputs(dtype=torch.float64, scale=2.0):
    student = (scale * torch.randn(N, C, H, W, dtype=dtype)).requires_grad_()
    teacher = scale * torch.randn(N, C, H, W, dtype=dtype)
    labels = torch.randint(-1, C, (N, LABEL_SIZE, LABEL_SIZE))
    labels[0, :4] = 2  # a class with many pixels, so counts differ clearly
    return student, teacher, labels


CONFIGS = [
    dict(),
    dict(distance="l1", mu=1.0),
    dict(distance="smooth_l1", on="logits", process="softmax", weight_tau=2.0),
    dict(distance="smooth_l1", mu=0.1),
    dict(distance="kl", beta=1.0),
    dict(distance="kl", process="softmax", weight_tau=0.5, pixel_norm="sqrt_n"),
    dict(distance="mse", on="logits", beta=0.5, mu=-5.0),
    dict(distance="mse", mu=5.0, pixel_norm="n"),
    dict(distance="l1", on="logits", process="softmax", pixel_norm="sqrt_n"),
    dict(distance="mse", beta=0.999999, pixel_norm="n2", tau=2.0),
    dict(distance="l1", beta=1.0, mu=-5.0, pixel_norm="n", tau=1.0),
    dict(distance="mse", on="logits", beta=0.01, mu=5.0, tau=8.0),
]


# ------------------------------------------------------------------------------------------
# Values and gradients
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS, ids=lambda cfg: "-".join(f"{k}={v}" for k, v in cfg.items()) or "default")
def test_value_weights_and_gradient_match_reference(config):
    student, teacher, labels = random_inputs()
    loss_fn = HWDLoss(**config)
    loss = loss_fn(student, teacher, labels)
    (grad,) = torch.autograd.grad(loss, student)

    expected_loss, expected_weights = reference_hwd(student, teacher, labels, **config)
    (expected_grad,) = torch.autograd.grad(expected_loss, student)

    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-9)
    weights = loss_fn.channel_weights(student, teacher, labels)
    torch.testing.assert_close(weights, torch.tensor(expected_weights, dtype=weights.dtype), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-7, atol=1e-12)


def test_float32_matches_reference_and_keeps_dtype():
    student, teacher, labels = random_inputs(dtype=torch.float32)
    loss = HWDLoss(pixel_norm="n")(student, teacher, labels)
    (grad,) = torch.autograd.grad(loss, student)
    expected_loss, _ = reference_hwd(student, teacher, labels, pixel_norm="n")
    (expected_grad,) = torch.autograd.grad(expected_loss, student)
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    torch.testing.assert_close(grad, expected_grad.float(), rtol=1e-4, atol=1e-7)


def test_backward_scales_with_upstream_gradient_and_teacher_gets_none():
    student, teacher, _ = random_inputs()
    teacher.requires_grad_()
    loss_fn = HWDLoss()
    (grad_once,) = torch.autograd.grad(loss_fn(student, teacher), student)
    (3.0 * loss_fn(student, teacher)).backward()
    torch.testing.assert_close(student.grad, 3.0 * grad_once)
    assert teacher.grad is None


def test_closed_form_gradient_matches_autograd_of_weighted_kl():
    """dL/dS = tau * w * (p^S - p^T) / (N*C): check against autograd through log_softmax."""
    student, teacher, _ = random_inputs()
    loss_fn = HWDLoss(tau=3.0, mu=0.5)
    (grad,) = torch.autograd.grad(loss_fn(student, teacher), student)
    weights = loss_fn.channel_weights(student, teacher)
    log_ps = torch.log_softmax(student.flatten(2) / 3.0, -1)
    log_pt = torch.log_softmax(teacher.flatten(2) / 3.0, -1)
    weighted = (weights * (log_pt.exp() * (log_pt - log_ps)).sum(-1)).sum() * 9.0 / (N * C)
    (expected,) = torch.autograd.grad(weighted, student)
    torch.testing.assert_close(grad, expected)


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------
def test_equals_cwd_when_channels_are_indistinguishable():
    """Identical channels give equal distances, std 0, every weight 1: HWD is CWD (non-zero)."""
    student = torch.randn(N, 1, H, W, dtype=torch.float64).expand(N, C, H, W).clone().requires_grad_()
    teacher = torch.randn(N, 1, H, W, dtype=torch.float64).expand(N, C, H, W).clone()
    for config in [dict(), dict(mu=5.0, beta=1.0), dict(distance="kl", process="softmax")]:
        hwd_loss = HWDLoss(tau=2.0, **config)
        torch.testing.assert_close(hwd_loss.channel_weights(student, teacher), torch.ones(N, C, dtype=torch.float64))
        expected = CWDLoss(tau=2.0)(student, teacher)
        assert expected.item() > 0.01
        actual = hwd_loss(student, teacher)
        assert actual.item() == pytest.approx(expected.item(), rel=1e-12)
        (grad,) = torch.autograd.grad(actual, student)
        (expected_grad,) = torch.autograd.grad(expected, student)
        torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("config", CONFIGS[:9])
def test_weights_sum_to_num_channels_and_loss_is_non_negative(config):
    student, teacher, labels = random_inputs(dtype=torch.float32)
    loss_fn = HWDLoss(**config)
    weights = loss_fn.channel_weights(student, teacher, labels)
    assert weights.shape == (N, C) and not weights.requires_grad
    torch.testing.assert_close(weights.sum(dim=1), torch.full((N,), float(C)))
    assert (weights >= 0).all()
    assert loss_fn(student, teacher, labels).item() >= 0


def test_far_channels_get_larger_weights():
    student = torch.zeros(1, 3, H, W)
    teacher = torch.zeros(1, 3, H, W)
    teacher[0, 1, 0, 0] = 3.0
    teacher[0, 2, 0, 0] = 6.0
    weights = HWDLoss().channel_weights(student, teacher)[0]
    assert weights[0] < weights[1] < weights[2]


@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(mu=5.0),
        dict(mu=-5.0, beta=1.0),
        dict(distance="kl"),
        dict(on="logits", process="softmax", pixel_norm="n"),
    ],
)
def test_student_equal_to_teacher_gives_zero_loss_and_unit_weights(config):
    logits = torch.randn(N, C, H, W)
    labels = torch.randint(-1, C, (N, LABEL_SIZE, LABEL_SIZE))
    loss_fn = HWDLoss(**config)
    student = logits.clone().requires_grad_()
    loss = loss_fn(student, logits, labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(student.grad, torch.zeros_like(logits))
    torch.testing.assert_close(loss_fn.channel_weights(logits, logits, labels), torch.ones(N, C))


@pytest.mark.parametrize(
    "config",
    [
        dict(mu=5.0),
        dict(mu=-5.0),
        dict(mu=-5.0, beta=1e-6),
        dict(mu=5.0, beta=1e-6),
        dict(on="logits", mu=-5.0),
        dict(distance="kl", mu=5.0, beta=0.999999),
    ],
)
def test_large_logits_and_extreme_shift_stay_finite(config):
    student = (1e4 * torch.randn(N, C, H, W)).requires_grad_()
    teacher = 1e4 * torch.randn(N, C, H, W)
    loss_fn = HWDLoss(**config)
    loss = loss_fn(student, teacher)
    loss.backward()
    weights = loss_fn.channel_weights(student, teacher)
    assert torch.isfinite(loss) and loss.item() >= 0
    assert torch.isfinite(student.grad).all()
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.full((N,), float(C)))


def test_extreme_shift_weights_match_reference_at_the_limits():
    """mu = +-5 pushes z to about +-7 here; float64 weights still match plain-float math."""
    student, teacher, _ = random_inputs()
    for mu in (-5.0, 5.0):
        weights = HWDLoss(mu=mu, beta=0.1).channel_weights(student, teacher)
        _, expected = reference_hwd(student, teacher, mu=mu, beta=0.1)
        torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float64), rtol=1e-7, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Pixel counting
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ignore_index", [-1, 3, 255])
def test_pixel_counts_match_loop_and_skip_ignored(ignore_index):
    labels = torch.randint(-1, C + 2, (3, 10, 10))  # includes -1 and labels >= C, never counted
    labels[1, :5] = 3
    labels[2, 0, 0] = 255
    counts = class_pixel_counts(labels, C, ignore_index)
    expected = reference_label_counts(labels, C, (10, 10), ignore_index)
    torch.testing.assert_close(counts, torch.tensor(expected, dtype=torch.float64))
    if ignore_index == 3:
        assert (counts[:, 3] == 1).all()


def test_all_ignored_labels_count_one_per_class():
    labels = torch.full((2, 6, 6), -1)
    assert torch.equal(class_pixel_counts(labels, C), torch.ones(2, C, dtype=torch.float64))


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (8, 8)])
def test_nearest_resize_matches_index_formula(size):
    labels = torch.randint(-1, 7, (2, 8, 8))
    resized = nearest_resize_labels(labels, size)
    rows = [(y * 8) // size[0] for y in range(size[0])]
    cols = [(x * 8) // size[1] for x in range(size[1])]
    assert resized.dtype == torch.int64
    assert torch.equal(resized, labels[:, rows][:, :, cols])


@pytest.mark.parametrize("in_size, size", [((512, 512), (64, 64)), ((97, 130), (13, 17)), ((14, 20), (20, 14))])
def test_nearest_resize_picks_the_same_pixels_as_interpolate(in_size, size):
    labels = torch.randint(-1, 150, (2, *in_size))
    expected = torch.nn.functional.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    assert torch.equal(nearest_resize_labels(labels, size), expected)


def test_ignore_index_of_the_loss_is_used_for_counts():
    student, teacher, labels = random_inputs()
    labels[labels == 4] = 7  # 7 is out of range: never counted, like the ignore index
    with_ignore_4 = HWDLoss(pixel_norm="n", ignore_index=4)(student, teacher, torch.where(labels == 7, 4, labels))
    expected, _ = reference_hwd(student, teacher, labels, pixel_norm="n")
    assert with_ignore_4.item() == pytest.approx(expected.item(), rel=1e-9)


# ------------------------------------------------------------------------------------------
# Invalid arguments
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(tau=0.0), "tau"),
        (dict(tau=-1.0), "tau"),
        (dict(beta=0.0), "beta"),
        (dict(beta=1.5), "beta"),
        (dict(weight_tau=0.0), "weight_tau"),
        (dict(mu=float("nan")), "mu"),
        (dict(distance="cosine"), "distance"),
        (dict(process="E"), "process"),
        (dict(on="features"), "on"),
        (dict(pixel_norm="N"), "pixel_norm"),
        (dict(distance="kl", on="logits"), "kl"),
    ],
)
def test_invalid_construction_raises_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HWDLoss(**kwargs)


def test_invalid_inputs_raise_naming_the_argument():
    student, teacher, labels = random_inputs()
    loss_fn = HWDLoss(pixel_norm="n")
    with pytest.raises(ValueError, match="teacher_logits"):
        loss_fn(student, teacher[:, :3], labels)
    with pytest.raises(ValueError, match="student_logits must be 4-D"):
        loss_fn(student[0], teacher[0], labels)
    with pytest.raises(ValueError, match="labels must be"):
        loss_fn(student, teacher, labels[0])
    with pytest.raises(ValueError, match="labels must be"):
        loss_fn(student, teacher, labels[:1])
    with pytest.raises(ValueError, match="labels must be an integer"):
        loss_fn(student, teacher, labels.float())
    with pytest.raises(ValueError, match="labels are required"):
        loss_fn(student, teacher)
    assert HWDLoss()(student, teacher).item() > 0  # pixel_norm "none" needs no labels


# ------------------------------------------------------------------------------------------
# Distiller
# ------------------------------------------------------------------------------------------
def test_distiller_returns_weighted_hwd_on_main_logits_and_keeps_weights():
    student, teacher, labels = random_inputs(dtype=torch.float32)
    aux = torch.randn(N, C, H, W)
    distiller = build_distiller("hwd", num_classes=C)
    student_out = SegOutput(student, aux, torch.randn(N, 3, H, W))
    teacher_out = SegOutput(teacher, torch.randn(N, C, H, W), torch.randn(N, 6, H, W))
    terms = distiller(student_out, teacher_out, labels)
    assert set(terms) == {"ce", "aux", "hwd"}
    expected, expected_weights = reference_hwd(student, teacher, labels)  # published defaults
    assert terms["hwd"].item() == pytest.approx(3.0 * expected.item(), rel=1e-5)
    assert distiller.last_channel_weights.shape == (C,)
    assert not distiller.last_channel_weights.requires_grad
    torch.testing.assert_close(
        distiller.last_channel_weights, torch.tensor(expected_weights).float().mean(0), rtol=1e-4, atol=1e-6
    )


def test_distiller_passes_params_and_ignore_index():
    student, teacher, labels = random_inputs()
    labels[labels == -1] = 2  # the task's ignore index here, so neither CE nor the counts use it
    distiller = build_distiller(
        "hwd",
        num_classes=C,
        ignore_index=2,
        tau=2.0,
        mu=1.0,
        beta=0.5,
        weight=1.5,
        distance="l1",
        on="logits",
        pixel_norm="n",
    )
    terms = distiller(SegOutput(student, None, student), SegOutput(teacher, None, teacher), labels)
    expected, _ = reference_hwd(
        student, teacher, labels, tau=2.0, mu=1.0, beta=0.5, distance="l1", on="logits", pixel_norm="n", ignore_index=2
    )
    assert set(terms) == {"ce", "hwd"}
    assert terms["hwd"].item() == pytest.approx(1.5 * expected.item(), rel=1e-9)


def test_distiller_rejects_bad_params_by_name():
    with pytest.raises(ValueError, match="'hwd'.*beta"):
        build_distiller("hwd", num_classes=C, beta=0.0)
    with pytest.raises(ValueError, match="'hwd'.*distance"):
        build_distiller("hwd", num_classes=C, distance="cosine")
