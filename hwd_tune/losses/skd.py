"""Structured Knowledge Distillation (Liu et al., TPAMI 2020): the SKD baseline of Table II.

Three signals: pixel-wise KD on the class scores, pair-wise distillation of the feature
similarity between spatial cells (the paper's Sec. 3.2), and holistic adversarial distillation
of the class-score maps (Sec. 3.3, shared with IFVD in `adversarial.py`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from hwd_tune.config import SKDParams
from hwd_tune.losses.adversarial import AdversarialDistiller
from hwd_tune.losses.distiller import register_distiller
from hwd_tune.outputs import SegOutput

PAIRWISE_POOL = 2  # the authors' CriterionPairWise: 2x2 max-pooled cells (ceil mode)


def cell_similarity(features: Tensor) -> Tensor:
    """Cosine similarity between all spatial cells: [N, C, h, w] -> [N, h*w, h*w]."""
    cells = F.normalize(features.flatten(2), p=2, dim=1)  # [N, C, M], unit length per cell
    return cells.transpose(1, 2) @ cells


def pairwise_similarity_loss(student_features: Tensor, teacher_features: Tensor, pool: int = PAIRWISE_POOL) -> Tensor:
    """SKD pair-wise loss: sum over (n, i, j) of (a^T_ij - a^S_ij)^2 / M^2 / N.

    Features [N, Cs, h, w] and [N, Ct, h, w] (channels may differ) are max-pooled into
    pool x pool cells (ceil mode), giving M cells; a_ij is the cosine similarity of cells i, j.
    """
    if student_features.shape[0] != teacher_features.shape[0] or (
        student_features.shape[-2:] != teacher_features.shape[-2:]
    ):
        raise ValueError(
            f"student features {tuple(student_features.shape)} and teacher features "
            f"{tuple(teacher_features.shape)} must share batch and spatial size"
        )
    student_cells = F.max_pool2d(student_features, pool, stride=pool, ceil_mode=True)
    teacher_cells = F.max_pool2d(teacher_features.detach(), pool, stride=pool, ceil_mode=True)
    num_cells = teacher_cells.shape[-2] * teacher_cells.shape[-1]
    difference = cell_similarity(teacher_cells) - cell_similarity(student_cells)
    return difference.pow(2).sum() / (num_cells**2 * teacher_cells.shape[0])


@register_distiller("skd", params=SKDParams)
class SKDDistiller(AdversarialDistiller[SKDParams]):
    """Terms "kd" (logits), "pairwise" (features), "adv" (logits, hinge); D trained separately."""

    def distill(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        return {
            "kd": self.kd_term(student, teacher),
            "pairwise": self.params.pairwise_weight * pairwise_similarity_loss(student.features, teacher.features),
            "adv": self.adversarial_term(student.logits),
        }
