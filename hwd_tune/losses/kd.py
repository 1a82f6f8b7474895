"""Pixel-wise knowledge distillation (Hinton et al., 2015): KL between class softmaxes per pixel."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from hwd_tune.config import KDParams
from hwd_tune.losses.cwd import check_logit_pair
from hwd_tune.losses.distiller import Distiller, register_distiller
from hwd_tune.outputs import SegOutput


class KDLoss(nn.Module):
    """T^2 * sum_pixels KL(softmax_c(T_logits/T) || softmax_c(S_logits/T)) / (N*H*W).

    Logits are [N, C, H, W]; "batchmean" over the N*H*W pixels, as the authors' CriterionKD.
    The teacher gets no gradient. Reused by SKD, IFVD and CIRKD.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        check_logit_pair(student_logits, teacher_logits)
        n, _, h, w = student_logits.shape
        student_log_probs = F.log_softmax(student_logits / self.temperature, dim=1)
        teacher_log_probs = F.log_softmax(teacher_logits.detach() / self.temperature, dim=1)
        divergence = F.kl_div(student_log_probs, teacher_log_probs, reduction="sum", log_target=True)
        return divergence * (self.temperature**2 / (n * h * w))


@register_distiller("kd", params=KDParams)
class KDDistiller(Distiller[KDParams]):
    """`{"kd": weight * KD}` on the main-head logits (method.md: T = 1, weight 1.0)."""

    def __init__(self, params: KDParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.loss = KDLoss(temperature=params.temperature)

    def distill(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        return {"kd": self.params.weight * self.loss(student.logits, teacher.logits)}
