"""DIST (Huang et al., NeurIPS 2022): inter- and intra-class Pearson correlation of logits."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from hwd_tune.config import DISTParams
from hwd_tune.losses.cwd import check_logit_pair
from hwd_tune.losses.distiller import Distiller, register_distiller
from hwd_tune.outputs import SegOutput

# Added to the product of norms, as the authors' cosine similarity does (guards constant rows).
PEARSON_EPS = 1e-8


def mean_pearson_correlation(student: Tensor, teacher: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Mean over the remaining entries of the Pearson correlation along `dims` (same-shape inputs).

    corr = <a - mean a, b - mean b> / (|a - mean a| * |b - mean b| + eps).
    """
    student = student - student.mean(dim=dims, keepdim=True)
    teacher = teacher - teacher.mean(dim=dims, keepdim=True)
    covariance = (student * teacher).sum(dim=dims)
    norms = torch.linalg.vector_norm(student, dim=dims) * torch.linalg.vector_norm(teacher, dim=dims)
    return (covariance / (norms + PEARSON_EPS)).mean()


class DISTLoss(nn.Module):
    """DIST: beta * (1 - inter) + gamma * (1 - intra) on [N, C, H, W] logits.

    Pixels are the rows of an [N*H*W, C] matrix: inter = mean Pearson correlation of each pixel's
    class scores, intra = that of each class's scores over all pixels. `softmax` first turns
    the scores into class probabilities (the authors use raw logits). The teacher gets no gradient.
    """

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, softmax: bool = False) -> None:
        super().__init__()
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.softmax = bool(softmax)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        check_logit_pair(student_logits, teacher_logits)
        student, teacher = student_logits, teacher_logits.detach()
        if self.softmax:
            student, teacher = student.softmax(dim=1), teacher.softmax(dim=1)
        inter_class = 1 - mean_pearson_correlation(student, teacher, dims=(1,))
        intra_class = 1 - mean_pearson_correlation(student, teacher, dims=(0, 2, 3))
        return self.beta * inter_class + self.gamma * intra_class


@register_distiller("dist", params=DISTParams)
class DISTDistiller(Distiller[DISTParams]):
    """`{"dist": weight * DIST}` on the main-head logits (method.md: beta = gamma = 1, raw logits)."""

    def __init__(self, params: DISTParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.loss = DISTLoss(beta=params.beta, gamma=params.gamma, softmax=params.softmax)

    def distill(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        return {"dist": self.params.weight * self.loss(student.logits, teacher.logits)}
