"""Segmentation metrics: a confusion matrix giving IoU, mIoU and pixel accuracy, and evaluate().

Every score here is a fraction in 0-1; callers that report percentages (`val_miou` is 0-100)
multiply by 100. Two mIoU conventions are offered because they differ on small validation sets:
`miou()` averages over the classes that occur (the standard one, reported as `val_miou`), and
`miou_all_classes()` averages over all K classes with an absent class scoring 0, as the authors'
`SegmentationMetric` does (IoU = intersection / (eps + union), then a plain mean over K).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from hwd_tune.config import IGNORE_INDEX
from hwd_tune.outputs import SegOutput

_MAX_BAD_VALUES_SHOWN = 10


class ConfusionMatrix:
    """Pixel counts `matrix[target, prediction]`, int64 [K, K], accumulated over updates.

    Pixels whose target equals `ignore_index` are skipped. The matrix is a plain tensor, so it
    is summed across distributed workers with one all-reduce (`all_reduce()`).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index must lie outside the class ids [0, {num_classes}), got {ignore_index}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device or "cpu")

    # ---------------------------------------------------------------------------------------
    # Accumulation
    # ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add the pixels of predicted class ids `pred` [N, H, W] against `target` [N, H, W].

        One bincount over `target * K + pred`; ignored pixels go to a spare bin that is dropped.
        """
        pred, target = self._checked_inputs(pred, target)
        k = self.num_classes
        flat_index = target * k  # in place from here on: one temporary for 8x512x512 inputs
        flat_index += pred
        flat_index.masked_fill_(target == self.ignore_index, k * k)
        counts = torch.bincount(flat_index.reshape(-1), minlength=k * k + 1)[: k * k]
        self.matrix += counts.reshape(k, k).to(self.matrix.device)

    def _checked_inputs(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Validate shapes, dtypes and value ranges; return both as int64 on pred's device."""
        for name, tensor in (("pred", pred), ("target", target)):
            if not isinstance(tensor, Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
            if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
                raise ValueError(f"{name} must hold integer class ids (e.g. int64), got dtype {tensor.dtype}")
            if tensor.dim() != 3:
                raise ValueError(f"{name} must be [N, H, W], got shape {tuple(tensor.shape)}")
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        pred = pred.long()
        target = target.to(device=pred.device, dtype=torch.long)
        k = self.num_classes
        if pred.numel() == 0:
            return pred, target
        pred_min, pred_max = torch.aminmax(pred)
        if pred_min < 0 or pred_max >= k:
            bad = torch.unique(pred[(pred < 0) | (pred >= k)])
            raise ValueError(f"pred holds class ids outside [0, {k}): {_show_values(bad)}")
        target_min, target_max = torch.aminmax(target)
        # fast path: every value is a class id, or the common ignore -1 is the only other one
        lowest_allowed = -1 if self.ignore_index == -1 else 0
        if target_min < lowest_allowed or target_max >= k:
            out_of_range = (target != self.ignore_index) & ((target < 0) | (target >= k))
            if out_of_range.any():
                bad = torch.unique(target[out_of_range])
                raise ValueError(
                    f"target holds values that are neither class ids in [0, {k}) nor "
                    f"ignore_index={self.ignore_index}: {_show_values(bad)}"
                )
        return pred, target

    def reset(self) -> None:
        """Zero the counts (start a new validation pass)."""
        self.matrix.zero_()

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (same K and ignore_index); returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise ValueError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                "cannot merge confusion matrices with different settings: "
                f"num_classes {self.num_classes} vs {other.num_classes}, "
                f"ignore_index {self.ignore_index} vs {other.ignore_index}"
            )
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over all torch.distributed workers in place; no-op when not initialised.

        Under NCCL the matrix travels through the current CUDA device and comes back.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self
        matrix = self.matrix
        if dist.get_backend() == dist.Backend.NCCL and matrix.device.type != "cuda":
            matrix = matrix.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(matrix, op=dist.ReduceOp.SUM)
        if matrix is not self.matrix:
            self.matrix.copy_(matrix)
        return self

    # ---------------------------------------------------------------------------------------
    # Scores (all in 0-1)
    # ---------------------------------------------------------------------------------------
    def iou(self) -> Tensor:
        """Per-class IoU, float64 [K]: TP / (TP + FP + FN); NaN where the class is in neither."""
        counts = self.matrix.double()
        true_positive = counts.diagonal()
        union = counts.sum(dim=1) + counts.sum(dim=0) - true_positive
        return torch.where(union > 0, true_positive / union, torch.full_like(union, float("nan")))

    def miou(self) -> float:
        """Mean IoU over the classes present in targets or predictions (NaN if none); 0-1."""
        return torch.nanmean(self.iou()).item()

    def miou_all_classes(self) -> float:
        """Mean IoU over all K classes, an absent class counting 0 (authors' convention); 0-1."""
        return torch.nan_to_num(self.iou(), nan=0.0).mean().item()

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted (non-ignored) pixels; NaN before any pixel is counted; 0-1."""
        total = self.matrix.sum()
        if total == 0:
            return float("nan")
        return (self.matrix.diagonal().sum().double() / total.double()).item()

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )


def _show_values(values: Tensor) -> str:
    """A short listing of offending values for error messages."""
    shown = values[:_MAX_BAD_VALUES_SHOWN].tolist()
    more = f" (and {values.numel() - len(shown)} more)" if values.numel() > len(shown) else ""
    return f"{shown}{more}"


# -------------------------------------------------------------------------------------------
# Whole-image evaluation of a model
# -------------------------------------------------------------------------------------------
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    *,
    device: torch.device | str = "cpu",
    ignore_index: int = IGNORE_INDEX,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> ConfusionMatrix:
    """Confusion matrix of `model` over `loader`'s (image [N, 3, H, W], mask [N, H, W]) batches.

    The model must already be on `device`; its train/eval mode is restored afterwards. Call
    `.all_reduce()` on the result to combine distributed workers.
    """
    scales = _checked_scales(scales)
    confusion = ConfusionMatrix(num_classes, ignore_index, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch_index, batch in enumerate(loader):
                image, mask = _checked_batch(batch, batch_index)
                image, mask = image.to(device), mask.to(device)
                scores = predict_scores(model, image, mask.shape[-2:], flip=flip, scales=scales)
                if scores.shape[1] != num_classes:
                    raise ValueError(f"model returned {scores.shape[1]} classes, expected num_classes={num_classes}")
                confusion.update(scores.argmax(dim=1), mask)
    finally:
        model.train(was_training)
    return confusion


def predict_scores(
    model: nn.Module,
    image: Tensor,
    label_size: Sequence[int],
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> Tensor:
    """Class scores [N, K, H, W] at `label_size` whose argmax is the prediction.

    With one scale and no flip: the logits, bilinearly upsampled (align_corners=True, as the
    authors' eval.py). Otherwise the sum of softmax probabilities over scales, each the mean of
    the plain and the horizontally flipped (then flipped back) input; the authors' eval.py sums
    the upsampled logits instead, which gives the same argmax only for one unflipped scale.
    """
    height, width = int(label_size[0]), int(label_size[1])
    if len(scales) == 1 and scales[0] == 1.0 and not flip:
        return _upsampled_logits(model, image, (height, width))
    summed_probs: Tensor | None = None
    for scale in scales:
        scaled = image
        if scale != 1.0:
            scaled_height = max(1, round(image.shape[-2] * scale))
            scaled_width = max(1, round(image.shape[-1] * scale))
            scaled = F.interpolate(image, (scaled_height, scaled_width), mode="bilinear", align_corners=True)
        probs = _upsampled_logits(model, scaled, (height, width)).softmax(dim=1)
        if flip:
            flipped = _upsampled_logits(model, scaled.flip(-1), (height, width)).softmax(dim=1)
            probs = 0.5 * (probs + flipped.flip(-1))
        summed_probs = probs if summed_probs is None else summed_probs + probs
    assert summed_probs is not None  # scales is non-empty
    return summed_probs


def _upsampled_logits(model: nn.Module, image: Tensor, size: tuple[int, int]) -> Tensor:
    """The main head's logits for `image`, bilinearly resized to `size` (align_corners=True)."""
    output = model(image)
    if not isinstance(output, SegOutput):
        raise ValueError(f"model must return hwd_tune.outputs.SegOutput, got {type(output).__name__}")
    logits = output.logits
    if logits.dim() != 4 or logits.shape[0] != image.shape[0]:
        raise ValueError(f"model logits must be [N={image.shape[0]}, K, h, w], got {tuple(logits.shape)}")
    if tuple(logits.shape[-2:]) != size:
        logits = F.interpolate(logits, size, mode="bilinear", align_corners=True)
    return logits


def _checked_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """Scales as a non-empty tuple of positive floats."""
    scales = tuple(float(scale) for scale in scales)
    if not scales or any(not scale > 0 for scale in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales}")
    return scales


def _checked_batch(batch: object, batch_index: int) -> tuple[Tensor, Tensor]:
    """(image [N, 3, H, W], mask [N, H, W]) from a loader batch, or a ValueError naming it."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(f"loader batch {batch_index} must be (image, mask), got {type(batch).__name__}")
    image, mask = batch[0], batch[1]
    if not isinstance(image, Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"loader batch {batch_index}: image must be [N, 3, H, W], got {shape}")
    if not isinstance(mask, Tensor) or mask.dim() != 3 or mask.shape[0] != image.shape[0]:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"loader batch {batch_index}: mask must be [N={image.shape[0]}, H, W], got {shape}")
    return image, mask
