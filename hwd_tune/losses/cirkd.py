"""CIRKD (Yang et al., CVPR 2022): cross-image relational KD over the global batch and a memory.

Three relational terms on the heads' features (`SegOutput.features`), plus pixel-wise KD on logits:
- mini-batch pixel-to-pixel: for every ordered pair of images (i, j) of the global batch, the
  student's pixel similarity map S_i S_j^T / t mimics the teacher's (row-wise KL);
- memory pixel-to-pixel and pixel-to-region: each student pixel (through a trained projection
  head) mimics the teacher's similarity distribution over teacher pixel / class-region embeddings
  sampled from per-class memory queues that are filled from the teacher on the global batch.

DDP convention (every term): each worker returns a value whose mean over workers equals the loss
of one process on the concatenated global batch, so DDP's gradient averaging gives exactly that
single-process gradient. With one worker the value is the single-process loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hwd_tune.config import CIRKDParams
from hwd_tune.losses.distiller import Distiller, register_distiller
from hwd_tune.losses.distributed import (
    gather_with_grad,
    gather_without_grad,
    sum_across_workers,
    world_size,
)
from hwd_tune.losses.kd import KDLoss
from hwd_tune.outputs import SegOutput


# --------------------------------------------------------------------------------------------
# Mini-batch pixel-to-pixel relation (CIRKD, "mini-batch-based pixel-to-pixel distillation")
# --------------------------------------------------------------------------------------------
def minibatch_pixel_relation_loss(student_features: Tensor, teacher_features: Tensor, temperature: float) -> Tensor:
    """Mean over image pairs (i, j) of KL_rows(softmax(T_i T_j^T / t) || softmax(S_i S_j^T / t)).

    Features [n, C_s, h, w] and [n, C_t, h, w] (this worker's n images), L2-normalised over
    channels; each pair's KL is summed over its h*w rows and divided by h*w (batchmean). This
    worker scores its own images i against every image j of the global batch (teacher gathered
    without grad, student with grad), so the B^2 pairs are split over workers, not recomputed.
    """
    _check_feature_pair(student_features, teacher_features)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student_pixels = F.normalize(student_features.flatten(2), dim=1).transpose(1, 2)  # [n, P, Cs]
    teacher_pixels = F.normalize(teacher_features.detach().flatten(2), dim=1).transpose(1, 2)
    all_student_pixels = gather_with_grad(student_pixels)  # [B, P, Cs]
    all_teacher_pixels = gather_without_grad(teacher_pixels)  # [B, P, Ct]

    student_log_probs = F.log_softmax(
        torch.einsum("ipc,jqc->ijpq", student_pixels, all_student_pixels) / temperature, dim=-1
    )  # [n, B, P, P]: row p of image i against every pixel q of image j
    with torch.no_grad():
        teacher_log_probs = F.log_softmax(
            torch.einsum("ipc,jqc->ijpq", teacher_pixels, all_teacher_pixels) / temperature, dim=-1
        )
    divergence = F.kl_div(student_log_probs, teacher_log_probs, reduction="sum", log_target=True)
    global_batch, pixels = all_student_pixels.shape[:2]
    return divergence * (world_size() / (global_batch**2 * pixels))


# --------------------------------------------------------------------------------------------
# Memory of teacher embeddings (CIRKD, "memory-based pixel-to-pixel / pixel-to-region")
# --------------------------------------------------------------------------------------------
def write_to_class_queues(queue: Tensor, pointer: Tensor, classes: Tensor, values: Tensor) -> None:
    """Appends `values` [E, D] to the ring queues `queue` [K, M, D] of `classes` [E], in place.

    Entries of one class are written in the given order at pointer, pointer+1, ... (mod M), so
    the oldest are overwritten; `pointer` [K] advances by the number written (mod M).
    """
    num_classes, capacity = queue.shape[:2]
    order = torch.argsort(classes, stable=True)
    sorted_classes = classes[order]
    per_class = torch.bincount(classes, minlength=num_classes)
    first_of_class = torch.cumsum(per_class, 0) - per_class
    position = torch.arange(classes.numel(), device=classes.device) - first_of_class[sorted_classes]
    survives = position >= per_class[sorted_classes] - capacity  # only the last M of a class remain
    slots = (pointer[sorted_classes] + position) % capacity
    queue[sorted_classes[survives], slots[survives]] = values[order[survives]].to(queue.dtype)
    pointer.copy_((pointer + per_class) % capacity)


def choose_per_group(groups: Tensor, limit: int, generator: torch.Generator) -> Tensor:
    """Indices of up to `limit` random members of each group id in `groups` [V], ordered by group.

    Random keys come from the CPU `generator`, so workers with equal seeds choose alike.
    """
    keys = torch.rand(groups.numel(), generator=generator).to(groups.device)
    by_key = torch.argsort(keys)
    order = by_key[torch.argsort(groups[by_key], stable=True)]
    sorted_groups = groups[order]
    _unique_groups, group_sizes = torch.unique_consecutive(sorted_groups, return_counts=True)
    first_of_group = torch.cumsum(group_sizes, 0) - group_sizes
    position = torch.arange(groups.numel(), device=groups.device) - torch.repeat_interleave(first_of_group, group_sizes)
    return order[position < limit]


def class_region_means(embeddings: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Mean embedding of each (image, class) present: embeddings [B, D, h, w], labels [B, h, w].

    Returns (means [R, D], classes [R]) ordered by image then class; labels outside
    [0, num_classes) are ignored. A batched matmul with one-hot masks keeps it deterministic.
    """
    batch, dim = embeddings.shape[:2]
    flat_labels = labels.reshape(batch, -1)
    in_range = (flat_labels >= 0) & (flat_labels < num_classes)
    one_hot = F.one_hot(torch.where(in_range, flat_labels, num_classes), num_classes + 1)
    masks = one_hot[..., :num_classes].transpose(1, 2).to(embeddings.dtype)  # [B, K, P]
    sums = torch.bmm(masks, embeddings.reshape(batch, dim, -1).transpose(1, 2))  # [B, K, D]
    counts = masks.sum(-1)  # [B, K]
    present = counts.reshape(-1) > 0
    means = (sums.reshape(-1, dim) / counts.reshape(-1, 1).clamp(min=1))[present]
    classes = torch.arange(num_classes, device=labels.device).repeat(batch)[present]
    return means, classes


class CrossImageMemory(nn.Module):
    """Per-class ring queues of L2-normalised teacher pixel embeddings and class-region means.

    Buffers (in the state_dict): pixel_queue [K, M_pixel, D], region_queue [K, M_region, D],
    their write pointers [K], and `updates_done`, which seeds each step's sampling generator so
    every DDP worker (same seed, same gathered batch) draws alike and keeps an identical bank.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        embedding_dim: int,
        pixel_memory_size: int,
        region_memory_size: int,
        pixels_per_update: int,
        seed: int = 0,
        ignore_index: int = -1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.pixels_per_update = pixels_per_update
        self.seed = seed
        self.ignore_index = ignore_index
        init = torch.Generator().manual_seed(seed)
        pixels = torch.randn(num_classes, pixel_memory_size, embedding_dim, generator=init)
        regions = torch.randn(num_classes, region_memory_size, embedding_dim, generator=init)
        self.register_buffer("pixel_queue", F.normalize(pixels, dim=2))
        self.register_buffer("pixel_pointer", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("region_queue", F.normalize(regions, dim=2))
        self.register_buffer("region_pointer", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("updates_done", torch.zeros((), dtype=torch.long))

    def step_generator(self) -> torch.Generator:
        """A CPU generator seeded from (seed, updates_done): equal on every worker, resumable."""
        step = int(self.updates_done)
        return torch.Generator().manual_seed(((self.seed << 32) + step) % 2**64)

    @torch.no_grad()
    def enqueue(self, teacher_embeddings: Tensor, labels: Tensor, generator: torch.Generator) -> None:
        """Queues one global batch: embeddings [B, D, h, w] (L2-normalised), labels [B, h, w].

        For each image and class present: its region mean (re-normalised) and up to
        `pixels_per_update` of its pixels chosen at random, in image order.
        """
        means, region_classes = class_region_means(teacher_embeddings, labels, self.num_classes)
        write_to_class_queues(self.region_queue, self.region_pointer, region_classes, F.normalize(means, dim=1))
        batch, dim = teacher_embeddings.shape[:2]
        flat_embeddings = teacher_embeddings.permute(0, 2, 3, 1).reshape(-1, dim)
        flat_labels = labels.reshape(-1)
        images = torch.arange(batch, device=labels.device).repeat_interleave(labels[0].numel())
        valid = flat_labels != self.ignore_index
        groups = images[valid] * self.num_classes + flat_labels[valid]  # image-major, then class
        chosen = choose_per_group(groups, self.pixels_per_update, generator)
        write_to_class_queues(
            self.pixel_queue,
            self.pixel_pointer,
            flat_labels[valid][chosen],
            F.normalize(flat_embeddings[valid][chosen], dim=1),
        )
        self.updates_done += 1

    @torch.no_grad()
    def sample(self, per_class: int, queue_name: str, generator: torch.Generator) -> Tensor:
        """[K * n, D] contrast embeddings: the same n = min(per_class, M) random slots per class.

        queue_name is "pixel" or "region"; sharing slots across classes follows the authors' code.
        """
        if queue_name not in ("pixel", "region"):
            raise ValueError(f"queue_name must be 'pixel' or 'region', got {queue_name!r}")
        queue = self.pixel_queue if queue_name == "pixel" else self.region_queue
        slots = torch.randperm(queue.shape[1], generator=generator)[:per_class]
        return queue[:, slots.to(queue.device)].reshape(-1, queue.shape[2])


def contrast_distillation(
    student_anchors: Tensor,
    teacher_anchors: Tensor,
    contrast: Tensor,
    temperature: float,
    kd_temperature: float,
) -> Tensor:
    """Per-anchor KL(teacher || student) over a memory contrast set, times kd_temperature^2: [A].

    Anchors [A, D] (L2-normalised), contrast [M, D]; logits = anchor . contrast / temperature,
    softened by kd_temperature (CIRKD memory pixel-to-pixel and pixel-to-region terms).
    """
    student_logits = student_anchors @ contrast.T.to(student_anchors.dtype) / temperature
    with torch.no_grad():
        teacher_logits = teacher_anchors.detach() @ contrast.T.to(teacher_anchors.dtype)
        teacher_logits = teacher_logits / temperature
        teacher_log_probs = F.log_softmax(teacher_logits / kd_temperature, dim=1)
    student_log_probs = F.log_softmax(student_logits / kd_temperature, dim=1)
    divergence = teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)
    return divergence.sum(1) * kd_temperature**2


def contrast_per_class(total: int, num_classes: int) -> int:
    """Contrast embeddings drawn per class from a total budget: total // K + 1 (train_cirkd.py)."""
    return total // num_classes + 1


# --------------------------------------------------------------------------------------------
# The distiller
# --------------------------------------------------------------------------------------------
@register_distiller("cirkd", params=CIRKDParams)
class CIRKDDistiller(Distiller[CIRKDParams]):
    """`{"kd", "minibatch_pixel", "memory_pixel", "memory_region"}`, each weighted from CIRKDParams.

    `projector` (1x1 conv C_s->C_t, BN, ReLU, 1x1 conv C_t->C_t) maps student features into the
    teacher's space for the memory terms and trains with the student; `memory` holds the banks,
    which are updated (before sampling, as the authors do) only in training mode.
    """

    def __init__(self, params: CIRKDParams, **kwargs) -> None:
        super().__init__(params, **kwargs)
        student_channels, teacher_channels = self.feature_channels
        if student_channels < 1 or teacher_channels < 1:
            raise ValueError(
                f"cirkd needs feature_channels=(student, teacher) channels >= 1, got {self.feature_channels}"
            )
        self.kd = KDLoss(params.kd_temperature)
        self.projector = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
            nn.BatchNorm2d(teacher_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False),
        )
        self.memory = CrossImageMemory(
            num_classes=self.num_classes,
            embedding_dim=teacher_channels,
            pixel_memory_size=params.pixel_memory_size,
            region_memory_size=params.region_memory_size,
            pixels_per_update=params.pixel_update_per_class,
            seed=params.sampling_seed,
            ignore_index=self.task.ignore_index,
        )

    def distill(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        params = self.params
        memory_pixel, memory_region = self.memory_losses(student.features, teacher.features, labels)
        minibatch = minibatch_pixel_relation_loss(student.features, teacher.features, params.contrast_temperature)
        return {
            "kd": params.kd_weight * self.kd(student.logits, teacher.logits),
            "minibatch_pixel": params.minibatch_pixel_weight * minibatch,
            "memory_pixel": params.memory_pixel_weight * memory_pixel,
            "memory_region": params.memory_region_weight * memory_region,
        }

    def memory_losses(
        self, student_features: Tensor, teacher_features: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(pixel-to-pixel, pixel-to-region) memory terms, unweighted; features [n, C, h, w].

        Each is the mean over the global batch's labelled pixels of `contrast_distillation`;
        in training mode the gathered teacher embeddings are queued first.
        """
        _check_feature_pair(student_features, teacher_features)
        if teacher_features.shape[1] != self.feature_channels[1]:
            raise ValueError(
                f"teacher features must have {self.feature_channels[1]} channels "
                f"(feature_channels[1]), got {teacher_features.shape[1]}"
            )
        small_labels = self._labels_at(labels, student_features.shape[-2:])
        student_embeddings = F.normalize(self.projector(student_features), dim=1)
        teacher_embeddings = F.normalize(teacher_features.detach(), dim=1)

        generator = self.memory.step_generator()
        if self.training:
            all_embeddings = gather_without_grad(teacher_embeddings)
            self.memory.enqueue(all_embeddings, gather_without_grad(small_labels), generator)
        pixels_per_class = contrast_per_class(self.params.pixel_contrast_size, self.num_classes)
        regions_per_class = contrast_per_class(self.params.region_contrast_size, self.num_classes)
        pixel_contrast = self.memory.sample(pixels_per_class, "pixel", generator)
        region_contrast = self.memory.sample(regions_per_class, "region", generator)

        labelled = small_labels.reshape(-1) != self.task.ignore_index
        dim = student_embeddings.shape[1]
        student_anchors = student_embeddings.permute(0, 2, 3, 1).reshape(-1, dim)[labelled]
        teacher_anchors = teacher_embeddings.permute(0, 2, 3, 1).reshape(-1, dim)[labelled]
        global_labelled = sum_across_workers(labelled.sum()).clamp(min=1)
        scale = world_size() / global_labelled
        temperatures = (self.params.contrast_temperature, self.params.contrast_kd_temperature)
        anchors = (student_anchors, teacher_anchors)
        pixel = contrast_distillation(*anchors, pixel_contrast, *temperatures)
        region = contrast_distillation(*anchors, region_contrast, *temperatures)
        return pixel.sum() * scale, region.sum() * scale

    def _labels_at(self, labels: Tensor, size: torch.Size) -> Tensor:
        """Labels [N, H, W] nearest-resized to [h, w]; each must be a class or the ignore index."""
        if labels.dim() != 3:
            raise ValueError(f"labels must be [N, H, W], got shape {tuple(labels.shape)}")
        small = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")
        small = small[:, 0].long()
        labelled = small != self.task.ignore_index
        out_of_range = labelled & ((small < 0) | (small >= self.num_classes))
        if bool(out_of_range.any()):
            bad = int(small[out_of_range][0])
            raise ValueError(
                f"labels must be in [0, {self.num_classes}) or the ignore index {self.task.ignore_index}, got {bad}"
            )
        return small


def _check_feature_pair(student: Tensor, teacher: Tensor) -> None:
    """Raises ValueError unless both features are [n, C, h, w] with the same n, h, w."""
    if student.dim() != 4:
        raise ValueError(f"student features must be [n, C, h, w], got shape {tuple(student.shape)}")
    if teacher.dim() != 4:
        raise ValueError(f"teacher features must be [n, C, h, w], got shape {tuple(teacher.shape)}")
    if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
        raise ValueError(
            "teacher features must match the student's batch and spatial size "
            f"{(student.shape[0], *student.shape[2:])}, got {tuple(teacher.shape)}"
        )
