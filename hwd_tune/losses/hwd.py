"""Holistic Weighted Distillation (HWD, ICME 2023): channel-wise KL with per-channel weights (eq. 1).

The weights (no gradient) grow with how far the student's channel is from the teacher's:
a per-channel distance, optionally divided by the class's pixel count, z-scored across the
channels of each image, shifted by mu and turned into weights that sum to C per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hwd_tune.config import IGNORE_INDEX, HWDParams
from hwd_tune.losses.cwd import check_logit_pair
from hwd_tune.losses.distiller import Distiller, register_distiller
from hwd_tune.outputs import SegOutput

DISTANCES = ("mse", "l1", "smooth_l1", "kl")
PROCESSES = ("exp", "softmax")  # the paper's "E" and "T"
COMPARED_TENSORS = ("probs", "logits")
PIXEL_NORMS = ("none", "n", "sqrt_n", "n2")

# beta^(-z) overflows float64 past exp(709); capping the exponent keeps weights finite for tiny beta.
_MAX_EXPONENT = 700.0


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raises ValueError naming the argument when `value` is not one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def nearest_resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Labels [N, H', W'] resized to `size` by nearest neighbour (as the authors do), int64 [N, h, w]."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    # Interpolating index ramps gives exactly the rows/columns F.interpolate would pick, and
    # gathering them avoids converting the full-resolution labels to float.
    in_h, in_w = labels.shape[-2:]
    ramp = torch.arange(max(in_h, in_w), dtype=torch.float32, device=labels.device)
    rows = F.interpolate(ramp[None, None, :in_h, None], size=(size[0], 1), mode="nearest")
    cols = F.interpolate(ramp[None, None, None, :in_w], size=(1, size[1]), mode="nearest")
    rows, cols = rows.flatten().long(), cols.flatten().long()
    return labels[:, rows[:, None], cols[None, :]].long()


def class_pixel_counts(labels: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """1 + number of pixels of each class per image, float [N, C], from labels [N, h, w].

    One bincount over n * C + label; ignored pixels and labels outside [0, C) are not counted.
    """
    n = labels.shape[0]
    flat = labels.reshape(n, -1)
    valid = (flat >= 0) & (flat < num_classes)
    if 0 <= ignore_index < num_classes:
        valid &= flat != ignore_index
    image_offset = torch.arange(n, device=labels.device)[:, None] * num_classes
    overflow_bin = n * num_classes  # invalid pixels land here and are dropped
    bins = torch.where(valid, flat + image_offset, overflow_bin)
    counts = torch.bincount(bins.flatten(), minlength=overflow_bin + 1)[:overflow_bin]
    return counts.view(n, num_classes).to(torch.float64) + 1.0


def channel_distance(difference: Tensor, distance: str) -> Tensor:
    """Sum over pixels of mse | l1 | smooth_l1 applied to `difference` = a - b [N, C, P] -> [N, C]."""
    if distance == "mse":
        return torch.linalg.vecdot(difference, difference)
    if distance == "l1":
        return difference.abs().sum(-1)
    if distance == "smooth_l1":  # Huber with threshold 1, as nn.SmoothL1Loss's default
        return F.smooth_l1_loss(difference, torch.zeros_like(difference), reduction="none").sum(-1)
    raise ValueError(f"distance {distance!r} is not an elementwise distance")


def weights_from_distance(distance: Tensor, *, mu: float, beta: float, process: str, weight_tau: float) -> Tensor:
    """Channel weights [N, C] (float64, sum C per image) from channel distances [N, C] (steps 3-4).

    z = (d - mean_c d) / std_c d + mu (z = mu when std is 0); "exp": w = C softmax((1 - beta^z)/(1 - beta)),
    "softmax": w = C softmax(z / weight_tau).
    """
    distance = distance.to(torch.float64)
    num_channels = distance.shape[1]
    centred = distance - distance.mean(dim=1, keepdim=True)
    spread = distance.std(dim=1, keepdim=True) if num_channels > 1 else torch.zeros_like(centred[:, :1])
    has_spread = spread > 0
    z = torch.where(has_spread, centred / torch.where(has_spread, spread, 1.0), 0.0) + mu
    if process == "exp":
        if beta == 1.0:
            smoothed = z  # the limit of (1 - beta^z) / (1 - beta) as beta -> 1
        else:
            exponent = (z * math.log(beta)).clamp(max=_MAX_EXPONENT)
            smoothed = -torch.expm1(exponent) / (1.0 - beta)
    else:
        smoothed = z / weight_tau
    return num_channels * torch.softmax(smoothed, dim=1)


class _WeightedChannelKL(torch.autograd.Function):
    """Eq. 1 with a closed-form backward: dL/dS = tau * w * (p^S - p^T) / (N*C) * grad_output.

    The spatial softmaxes are computed once and shared by the weights and the KL; the teacher
    and the weights get no gradient. Returns (loss, weights [N, C]).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student_logits: Tensor,
        teacher_logits: Tensor,
        tau: float,
        weigh: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor],
    ) -> tuple[Tensor, Tensor]:
        n, c = student_logits.shape[:2]
        compute_dtype = torch.promote_types(student_logits.dtype, torch.float32)
        student = student_logits.detach().flatten(2).to(compute_dtype)
        teacher = teacher_logits.detach().flatten(2).to(compute_dtype)
        student_log_probs = torch.log_softmax(student / tau, dim=-1)
        teacher_log_probs = torch.log_softmax(teacher / tau, dim=-1)
        student_probs = student_log_probs.exp()
        teacher_probs = teacher_log_probs.exp()
        # KL[n, c] = sum_i p^T (log p^T - log p^S); the log-ratio reuses the teacher's buffer.
        log_ratio = teacher_log_probs.sub_(student_log_probs)
        divergence = torch.linalg.vecdot(teacher_probs, log_ratio)
        probs_gap = student_probs.sub_(teacher_probs)  # p^S - p^T: for the weights and the backward
        weights = weigh(student, teacher, probs_gap, divergence).to(compute_dtype)
        loss = (weights * divergence).sum() * (tau**2 / (n * c))
        ctx.save_for_backward(probs_gap, weights)
        ctx.tau, ctx.logits_shape, ctx.logits_dtype = tau, student_logits.shape, student_logits.dtype
        ctx.mark_non_differentiable(weights)
        return loss, weights

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, grad_weights: Tensor) -> tuple[Tensor | None, ...]:
        probs_gap, weights = ctx.saved_tensors
        n, c = weights.shape
        scale = weights * (grad_loss * (ctx.tau / (n * c)))
        grad_student = (probs_gap * scale[..., None]).view(ctx.logits_shape).to(ctx.logits_dtype)
        return grad_student, None, None, None


class HWDLoss(nn.Module):
    """HWD, eq. 1: tau^2 / (N*C) * sum_{n,c} w[n,c] * KL(p^T_{n,c} || p^S_{n,c}) over H*W pixels.

    Logits are [N, C, H, W]; labels (only for pixel_norm != "none") are [N, H', W'] int64, resized
    to H x W by nearest neighbour. With every w = 1 this is `CWDLoss(tau)`.
    """

    def __init__(
        self,
        tau: float = 4.0,
        mu: float = 0.0,
        beta: float = 0.1,
        *,
        distance: str = "mse",
        process: str = "exp",
        weight_tau: float = 1.0,
        on: str = "probs",
        pixel_norm: str = "none",
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if not math.isfinite(mu):
            raise ValueError(f"mu must be a finite number, got {mu}")
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        if not weight_tau > 0:
            raise ValueError(f"weight_tau must be > 0, got {weight_tau}")
        check_choice("distance", distance, DISTANCES)
        check_choice("process", process, PROCESSES)
        check_choice("on", on, COMPARED_TENSORS)
        check_choice("pixel_norm", pixel_norm, PIXEL_NORMS)
        if distance == "kl" and on == "logits":
            raise ValueError('distance "kl" compares distributions: it needs on="probs", got on="logits"')
        self.tau = float(tau)
        self.mu = float(mu)
        self.beta = float(beta)
        self.distance = distance
        self.process = process
        self.weight_tau = float(weight_tau)
        self.on = on
        self.pixel_norm = pixel_norm
        self.ignore_index = ignore_index

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.loss_and_weights(student_logits, teacher_logits, labels)[0]

    def loss_and_weights(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(scalar loss, detached channel weights [N, C]) from one pass over the logits."""
        check_logit_pair(student_logits, teacher_logits)
        counts = self._pixel_counts(labels, student_logits)

        def weigh(student: Tensor, teacher: Tensor, probs_gap: Tensor, divergence: Tensor) -> Tensor:
            # student/teacher: logits [N, C, P]; probs_gap: p^S - p^T [N, C, P]; divergence: KL [N, C]
            if self.distance == "kl":
                distance = divergence
            elif self.on == "probs":
                distance = channel_distance(probs_gap, self.distance)
            else:
                distance = channel_distance(student - teacher, self.distance)
            return self._weights_from_distance(distance, counts)

        return _WeightedChannelKL.apply(student_logits, teacher_logits, self.tau, weigh)

    @torch.no_grad()
    def channel_weights(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None) -> Tensor:
        """The weights w [N, C] of eq. 1 (no gradient); each image's weights sum to C."""
        return self.loss_and_weights(student_logits, teacher_logits, labels)[1]

    def _pixel_counts(self, labels: Tensor | None, logits: Tensor) -> Tensor | None:
        """1 + class pixel counts [N, C] at the logits' resolution, or None when not needed."""
        n, _, h, w = logits.shape
        if labels is not None:
            if labels.dim() != 3 or labels.shape[0] != n:
                raise ValueError(f"labels must be [N, H', W'] with N={n}, got shape {tuple(labels.shape)}")
            if labels.dtype.is_floating_point or labels.dtype == torch.bool:
                raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        if self.pixel_norm == "none":
            return None
        if labels is None:
            raise ValueError(f'labels are required when pixel_norm={self.pixel_norm!r} (not "none")')
        resized = nearest_resize_labels(labels, (h, w))
        return class_pixel_counts(resized, logits.shape[1], self.ignore_index)

    def _weights_from_distance(self, distance: Tensor, counts: Tensor | None) -> Tensor:
        distance = distance.to(torch.float64)
        if self.pixel_norm == "n":
            distance = distance / counts
        elif self.pixel_norm == "sqrt_n":
            distance = distance / counts.sqrt()
        elif self.pixel_norm == "n2":
            distance = distance / counts.square()
        return weights_from_distance(
            distance, mu=self.mu, beta=self.beta, process=self.process, weight_tau=self.weight_tau
        )


@register_distiller("hwd", params=HWDParams)
class HWDDistiller(Distiller[HWDParams]):
    """`{"hwd": weight * HWD}` on the main-head logits only, as published.

    Keeps the batch-mean channel weights of the last call in `last_channel_weights` ([C], detached).
    """

    def __init__(self, params: HWDParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.loss = HWDLoss(
            tau=params.tau,
            mu=params.mu,
            beta=params.beta,
            distance=params.distance,
            process=params.process,
            weight_tau=params.weight_tau,
            on=params.on,
            pixel_norm=params.pixel_norm,
            ignore_index=self.task.ignore_index,
        )
        self.last_channel_weights: Tensor | None = None

    def distill(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        loss, weights = self.loss.loss_and_weights(student.logits, teacher.logits, labels)
        self.last_channel_weights = weights.mean(dim=0).detach()
        return {"hwd": self.params.weight * loss}
