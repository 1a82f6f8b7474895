"""Writers of tiny dataset trees in each real layout, for the dataset tests (40 x 60 images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 40, 60


def write_image(path: Path, brightness: int, *, height: int = HEIGHT, width: int = WIDTH) -> None:
    """A constant-colour RGB image (JPEG or PNG by suffix) whose red channel is `brightness`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = brightness, 255 - brightness, 128
    Image.fromarray(pixels).save(path, **({"quality": 100} if path.suffix == ".jpg" else {}))


def label_with_values(values: list[int], *, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """[H, W] uint8 label made of vertical bands, one per value, left to right."""
    label = np.zeros((height, width), dtype=np.uint8)
    for band, value in enumerate(values):
        label[:, band * width // len(values) : (band + 1) * width // len(values)] = value
    return label


def write_label(path: Path, label: np.ndarray, *, palette: bool = False) -> None:
    """A single-channel PNG (mode L, or mode P with a palette as in the VOC files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:
        image = Image.new("P", (label.shape[1], label.shape[0]))
        image.putpalette([channel for index in range(256) for channel in (index, 0, 255 - index)])
        image.putdata(label.ravel().tolist())
    else:
        image = Image.fromarray(label)
    image.save(path)


def band_values(mask, num_bands: int) -> list[int]:
    """The value at the centre of each of the `num_bands` vertical bands of a mask (row 0)."""
    row = np.asarray(mask)[0]
    width = row.shape[0]
    return [int(row[(2 * band + 1) * width // (2 * num_bands)]) for band in range(num_bands)]
