"""Training and evaluation transforms (torchvision.transforms.v2) for `(Image, Mask)` pairs.

Training follows the paper's recipe (method.md): random scale 0.5-2.0 (bilinear image, nearest
mask), random crop padded with 0 / ignore when the scaled image is smaller, random horizontal
flip, float conversion and normalisation. Evaluation only converts and normalises whole images.

Masks must already hold int64 train ids with ignore = -1 (the datasets do this), so padding with
the ignore index is exact. Two normalisations exist: the usual ImageNet RGB mean/std on 0-1
values, and the authors' (BGR channel order, mean subtracted from 0-255 values, no std
division), which their checkpoints expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from hwd_tune.config import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, on 0-1 values
IMAGENET_STD = (0.229, 0.224, 0.225)
AUTHORS_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)  # B, G, R on 0-255 (authors' datasets.py)


class Normalization(NamedTuple):
    """Pixels become `(x / (255 if unit_range else 1) - mean) / std`, channels in BGR order if bgr."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool
    unit_range: bool


NORMALIZATIONS: dict[str, Normalization] = {
    "imagenet": Normalization(IMAGENET_MEAN, IMAGENET_STD, bgr=False, unit_range=True),
    "authors_bgr": Normalization(AUTHORS_BGR_MEAN, (1.0, 1.0, 1.0), bgr=True, unit_range=False),
}


def normalization(name: str) -> dict[str, Any]:
    """Keyword arguments of a named normalisation: `train_transforms(**normalization("imagenet"))`."""
    if name not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {name!r}; expected one of {sorted(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]._asdict()


class RandomScale(v2.Transform):
    """Resizes image and mask by one factor drawn uniformly from `scale_range` (torch RNG).

    Custom because v2 has no relative random scale: v2.RandomResize draws an absolute length for
    the shorter side and v2.ScaleJitter scales relative to a fixed target size, while the recipe
    scales each image (ADE20K sizes vary) by 0.5-2.0 of its own size. The factor is continuous;
    the authors' code draws it from the 16 steps 0.5, 0.6, ..., 2.0.
    """

    def __init__(self, scale_range: tuple[float, float]) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {tuple(scale_range)}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _spatial_size(flat_inputs)
        low, high = self.scale_range
        factor = low + (high - low) * float(torch.rand(()))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # NEAREST_EXACT samples the source pixel whose centre is nearest, the same pixel-centre
        # geometry as the image's bilinear resize, so labels stay aligned with the image.
        is_mask = isinstance(inpt, tv_tensors.Mask)
        mode = InterpolationMode.NEAREST_EXACT if is_mask else InterpolationMode.BILINEAR
        return self._call_kernel(F.resize, inpt, size=params["size"], interpolation=mode, antialias=True)


class ToBGR(v2.Transform):
    """Reverses the channel order of images (RGB -> BGR); masks pass through.

    Custom because v2 only offers a random channel permutation, not a fixed one.
    """

    _transformed_types = (tv_tensors.Image,)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.permute_channels, inpt, permutation=[2, 1, 0])


def _spatial_size(flat_inputs: list[Any]) -> tuple[int, int]:
    """(H, W) of the first image or mask among the inputs."""
    for inpt in flat_inputs:
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            height, width = F.get_size(inpt)
            return height, width
    raise ValueError("RandomScale needs a tv_tensors.Image or tv_tensors.Mask among its inputs")


def _check_channels(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (one per channel), got {tuple(values)}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def _to_normalised_float(
    mean: Sequence[float], std: Sequence[float], bgr: bool, unit_range: bool
) -> list[v2.Transform]:
    """uint8 image -> float32 (0-1 if unit_range, else 0-255), optional BGR, then (x - mean) / std."""
    mean, std = _check_channels("mean", mean), _check_channels("std", std)
    if min(std) <= 0:
        raise ValueError(f"std must be > 0 in every channel, got {std}")
    steps: list[v2.Transform] = [v2.ToDtype(torch.float32, scale=unit_range)]
    if bgr:
        steps.append(ToBGR())
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return steps


def train_transforms(
    crop_size: int | tuple[int, int] = 512,
    scale_range: tuple[float, float] = (0.5, 2.0),
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    bgr: bool = False,
    unit_range: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> v2.Compose:
    """Random scale, crop to `crop_size` (pad image 0 / mask ignore_index), flip, float, normalise.

    Takes `(Image uint8 [3, H, W], Mask int64 [H, W])`; returns float32 [3, h, w] and int64 [h, w].
    """
    crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if len(crop) != 2 or min(crop) < 1:
        raise ValueError(f"crop_size must be a positive int or (height, width), got {crop_size!r}")
    return v2.Compose(
        [
            RandomScale(scale_range),
            v2.RandomCrop(
                crop,
                pad_if_needed=True,
                fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index},
                padding_mode="constant",
            ),
            v2.RandomHorizontalFlip(p=0.5),
            *_to_normalised_float(mean, std, bgr, unit_range),
        ]
    )


def eval_transforms(
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    bgr: bool = False,
    unit_range: bool = True,
) -> v2.Compose:
    """Whole-image evaluation: float conversion and normalisation only (no resize, no crop)."""
    return v2.Compose(_to_normalised_float(mean, std, bgr, unit_range))
