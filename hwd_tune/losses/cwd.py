"""Channel-wise distillation (CWD, Shu et al., ICCV 2021): KL between per-channel spatial softmaxes.

Also holds `check_logit_pair`, the shape check shared by the logit losses (CWD, HWD, KD, DIST).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from hwd_tune.config import CWDParams
from hwd_tune.losses.distiller import Distiller, register_distiller
from hwd_tune.outputs import SegOutput


def check_logit_pair(student_logits: Tensor, teacher_logits: Tensor) -> None:
    """Raises ValueError unless both logits are 4-D [N, C, H, W] tensors of the same shape."""
    if student_logits.dim() != 4:
        raise ValueError(f"student_logits must be 4-D [N, C, H, W], got shape {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits must have the student's shape {tuple(student_logits.shape)}, "
            f"got {tuple(teacher_logits.shape)}"
        )


class CWDLoss(nn.Module):
    """CWD: tau^2 / (N*C) * sum_{n,c} KL(softmax_pixels(T/tau) || softmax_pixels(S/tau)).

    Each class channel of `[N, C, H, W]` logits becomes a distribution over its H*W pixels.
    This is HWD's eq. 1 with every channel weight equal to 1. The teacher gets no gradient.
    """

    def __init__(self, tau: float = 4.0) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        check_logit_pair(student_logits, teacher_logits)
        n, c = student_logits.shape[:2]
        student_log_probs = F.log_softmax(student_logits.flatten(2) / self.tau, dim=-1)
        teacher_log_probs = F.log_softmax(teacher_logits.detach().flatten(2) / self.tau, dim=-1)
        divergence = F.kl_div(student_log_probs, teacher_log_probs, reduction="sum", log_target=True)
        return divergence * (self.tau**2 / (n * c))


@register_distiller("cwd", params=CWDParams)
class CWDDistiller(Distiller[CWDParams]):
    """`{"cwd": weight * CWD}` on the main-head logits (the authors' CWD baseline, logit term only)."""

    def __init__(self, params: CWDParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.loss = CWDLoss(tau=params.tau)

    def distill(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        return {"cwd": self.params.weight * self.loss(student.logits, teacher.logits)}
