"""Masked Generative Distillation (Yang et al., ECCV 2022): the MGD baseline of Table II.

The student's features are aligned to the teacher's width, a random fraction of their pixels
is zeroed, and a small generation block must rebuild the teacher's full features from what is
left (the paper's Sec. 3: random mask, generation block, squared error). The align conv and the
generation block train with the student.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hwd_tune.config import MGDParams
from hwd_tune.losses.distiller import Distiller, register_distiller
from hwd_tune.losses.task import TaskLoss
from hwd_tune.outputs import SegOutput


class MGDLoss(nn.Module):
    """MGD loss: sum over (N, C, h, w) of (G(mask * align(S)) - T)^2, divided by N.

    align: 1x1 conv student -> teacher channels; G: conv3x3-ReLU-conv3x3 at teacher width.
    A pixel is masked (zeroed on every channel) with probability `mask_ratio`.
    """

    def __init__(self, student_channels: int, teacher_channels: int, mask_ratio: float = 0.75):
        super().__init__()
        if student_channels < 1 or teacher_channels < 1:
            raise ValueError(
                "feature_channels must be (student, teacher) channel counts >= 1, got "
                f"({student_channels}, {teacher_channels})"
            )
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.mask_ratio = mask_ratio
        self.teacher_channels = teacher_channels
        self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        self.generation = nn.Sequential(
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
        )

    def random_mask(
        self,
        batch: int,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
    ) -> Tensor:
        """[batch, 1, height, width] of 0 (masked, probability mask_ratio) and 1 (kept).

        Drawn on the generator's device when one is given (a seeded generator repeats the
        mask), else from the global RNG on `device`.
        """
        if generator is not None:
            device = generator.device
        uniform = torch.rand((batch, 1, height, width), generator=generator, device=device)
        return (uniform <= 1.0 - self.mask_ratio).float()

    def forward(
        self,
        student_features: Tensor,
        teacher_features: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Scalar loss of student [N, Cs, h, w] against teacher [N, Ct, h, w] features."""
        if student_features.shape[1] != self.align.in_channels:
            raise ValueError(
                f"student features have {student_features.shape[1]} channels, expected "
                f"{self.align.in_channels} (feature_channels[0])"
            )
        if teacher_features.shape[1] != self.teacher_channels:
            raise ValueError(
                f"teacher features have {teacher_features.shape[1]} channels, expected "
                f"{self.teacher_channels} (feature_channels[1])"
            )
        n, _, h, w = teacher_features.shape
        if student_features.shape[0] != n or student_features.shape[-2:] != (h, w):
            raise ValueError(
                f"student features {tuple(student_features.shape)} and teacher features "
                f"{tuple(teacher_features.shape)} must share batch and spatial size"
            )
        aligned = self.align(student_features)
        mask = self.random_mask(n, h, w, generator, aligned.device)
        mask = mask.to(aligned.device, aligned.dtype)
        rebuilt = self.generation(aligned * mask)
        return (rebuilt - teacher_features.detach()).pow(2).sum() / n


@register_distiller("mgd", params=MGDParams)
class MGDDistiller(Distiller[MGDParams]):
    """Term "mgd" = weight * MGDLoss on `SegOutput.features`; its convs train with the student."""

    def __init__(
        self,
        params: MGDParams,
        *,
        num_classes: int,
        feature_channels: tuple[int, int],
        task: TaskLoss,
    ) -> None:
        super().__init__(params, num_classes=num_classes, feature_channels=feature_channels, task=task)
        if len(feature_channels) != 2:
            raise ValueError(f"feature_channels must be (student, teacher) channels, got {feature_channels!r}")
        student_channels, teacher_channels = feature_channels
        self.mgd = MGDLoss(student_channels, teacher_channels, mask_ratio=params.mask_ratio)

    def distill(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        return {"mgd": self.params.weight * self.mgd(student.features, teacher.features)}
