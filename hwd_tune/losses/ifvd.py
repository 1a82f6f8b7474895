"""Intra-class Feature Variation Distillation (Wang et al., ECCV 2020): the IFVD baseline.

Each pixel's feature is compared (cosine) with the prototype of its class, the mean feature of
that class in the same image; the student learns to match the teacher's map of these
similarities (the paper's IFV map and loss), beside pixel-wise KD and SKD's adversarial term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hwd_tune.config import IFVDParams
from hwd_tune.losses.adversarial import AdversarialDistiller
from hwd_tune.losses.distiller import register_distiller
from hwd_tune.outputs import SegOutput


def labels_at(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Labels [N, H, W] nearest-resized to `size` (h, w) -> [N, h, w] int64, as the authors."""
    if labels.dim() != 3:
        raise ValueError(f"labels must be [N, H, W], got shape {tuple(labels.shape)}")
    resized = F.interpolate(labels[:, None].float(), size=size, mode="nearest")
    return resized[:, 0].long()


def prototype_similarity(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Cosine of each pixel's feature to its class prototype: [N, C, h, w], [N, h, w] -> [N, h, w].

    Prototype = mean feature over the pixels of that class in the same image (the IFV map).
    Pixels whose label is not a class in [0, num_classes) (the ignore index) have no
    prototype: like the authors' code, which leaves those features unchanged, they are
    compared with themselves (cosine 1 for student and teacher alike, so they add nothing).
    """
    n, c, h, w = features.shape
    if labels.shape != (n, h, w):
        raise ValueError(f"labels must be [N, h, w] = {(n, h, w)}, got {tuple(labels.shape)}")
    pixels = features.permute(0, 2, 3, 1).reshape(n * h * w, c)  # [P, C], P = N*h*w
    labels = labels.reshape(n * h * w)
    has_class = (labels >= 0) & (labels < num_classes)
    # One slot per (image, class): sums and counts by index_add, no loop over classes.
    image_of_pixel = torch.arange(n, device=labels.device).repeat_interleave(h * w)
    slot = image_of_pixel * num_classes + labels.clamp(0, num_classes - 1)
    weight = has_class.to(pixels.dtype)[:, None]
    sums = pixels.new_zeros(n * num_classes, c).index_add(0, slot, pixels * weight)
    counts = pixels.new_zeros(n * num_classes).index_add(0, slot, weight[:, 0])
    prototypes = sums / counts.clamp_min(1.0)[:, None]
    own_prototype = torch.where(has_class[:, None], prototypes[slot], pixels)
    return F.cosine_similarity(pixels, own_prototype, dim=1).view(n, h, w)


def intra_class_variation_loss(
    student_features: Tensor, teacher_features: Tensor, labels: Tensor, num_classes: int
) -> Tensor:
    """IFVD loss: mean over (N, h, w) of (IFV_S - IFV_T)^2 between the two IFV maps.

    Features [N, Cs, h, w] and [N, Ct, h, w] share their spatial size; labels [N, H, W] are
    nearest-resized to it. Gradients reach the student through its pixels and prototypes.
    """
    if student_features.shape[0] != teacher_features.shape[0] or (
        student_features.shape[-2:] != teacher_features.shape[-2:]
    ):
        raise ValueError(
            f"student features {tuple(student_features.shape)} and teacher features "
            f"{tuple(teacher_features.shape)} must share batch and spatial size"
        )
    labels = labels_at(labels, tuple(student_features.shape[-2:]))
    student_map = prototype_similarity(student_features, labels, num_classes)
    teacher_map = prototype_similarity(teacher_features.detach(), labels, num_classes)
    return F.mse_loss(student_map, teacher_map)


@register_distiller("ifvd", params=IFVDParams)
class IFVDDistiller(AdversarialDistiller[IFVDParams]):
    """Terms "kd" (logits), "ifv" (features + labels), "adv" (logits); D trained separately."""

    def distill(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        ifv = intra_class_variation_loss(student.features, teacher.features, labels, self.num_classes)
        return {
            "kd": self.kd_term(student, teacher),
            "ifv": self.params.ifv_weight * ifv,
            "adv": self.adversarial_term(student.logits),
        }
