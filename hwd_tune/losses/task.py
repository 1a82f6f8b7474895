"""The segmentation task loss: cross-entropy with ignore, plus the weighted auxiliary head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hwd_tune.outputs import SegOutput


def segmentation_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Mean CE of `logits` [N, K, h, w] bilinearly upsampled to `labels` [N, H, W].

    Upsampling uses align_corners=True, as the authors' SegCrossEntropyLoss does.
    """
    if labels.dim() != 3 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be [N, H, W] with N={logits.shape[0]}, got shape {tuple(labels.shape)}")
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, labels.shape[-2:], mode="bilinear", align_corners=True)
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)


class TaskLoss(nn.Module):
    """`{"ce": CE(main), "aux": aux_weight * CE(aux)}`; "aux" only when the model has an aux head."""

    def __init__(self, aux_weight: float = 0.4, ignore_index: int = -1) -> None:
        super().__init__()
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index

    def forward(self, student: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        terms = {"ce": segmentation_cross_entropy(student.logits, labels, self.ignore_index)}
        if student.aux_logits is not None and self.aux_weight > 0:
            aux = segmentation_cross_entropy(student.aux_logits, labels, self.ignore_index)
            terms["aux"] = self.aux_weight * aux
        return terms


def total_loss(terms: dict[str, Tensor]) -> Tensor:
    """Sum of the named, already weighted loss terms of a distiller."""
    return torch.stack(list(terms.values())).sum()
