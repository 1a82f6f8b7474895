"""The held-out tuning split: which training images a sweep validates on, a pure seeded function.

Tuning on the validation split and then reporting it makes the best score optimistic, so trials
are scored on a fixed part of the training images instead. The part is the first `count` entries
of a seeded permutation of the image indices: the same (num_images, fraction, max_images, seed)
always gives the same split (a resumed sweep tunes on the same images), and raising the fraction
or the cap only adds images.
"""

from __future__ import annotations

import torch


def holdout_count(num_images: int, fraction: float, max_images: int | None) -> int:
    """How many of `num_images` are held out: round(fraction x num_images), at most max_images,
    at least 1, and never all of them (at least one image is left to train on)."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 2:
        raise ValueError(
            f"too few training images to hold any out: need at least 2 (one held out, one to train on), "
            f"got num_images={num_images!r}"
        )
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got fraction={fraction!r}")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"holdout max_images must be None or an int >= 1, got max_images={max_images!r}")
    count = round(fraction * num_images)
    if max_images is not None:
        count = min(count, max_images)
    return min(max(count, 1), num_images - 1)


def _permutation(num_images: int, seed: int) -> list[int]:
    """The image indices 0..num_images-1 in the seeded order the held-out images are taken from."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_images, generator=generator).tolist()


def holdout_indices(num_images: int, fraction: float, max_images: int | None, seed: int) -> list[int]:
    """Sorted indices of the held-out images (see `holdout_count` for how many)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"holdout seed must be an int, got seed={seed!r}")
    count = holdout_count(num_images, fraction, max_images)
    return sorted(_permutation(num_images, seed)[:count])


def training_indices(num_images: int, fraction: float, max_images: int | None, seed: int) -> list[int]:
    """Sorted indices of the images left to train on: the complement of `holdout_indices`."""
    held_out = set(holdout_indices(num_images, fraction, max_images, seed))
    return [index for index in range(num_images) if index not in held_out]
