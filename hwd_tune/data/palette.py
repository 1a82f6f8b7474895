"""Class colours for pictures of class maps: a fixed colour per class id, the same on every machine.

`default_palette` gives each class id a distinct colour, never pure white (kept for ignored pixels);
a folder dataset's own colours (classes.yaml `palette`) go into a `Palette` as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE_COLOUR = (255, 255, 255)  # pixels outside [0, K): "not labelled"


@dataclass(frozen=True)
class Palette:
    """One RGB colour per class ([K, 3] uint8) and the colour of ids outside [0, K)."""

    colours: np.ndarray
    ignore_colour: tuple[int, int, int] = IGNORE_COLOUR

    @property
    def num_classes(self) -> int:
        return len(self.colours)


def default_palette(num_classes: int) -> np.ndarray:
    """[K, 3] uint8 distinct colours: class id k's bits go round-robin to R, G, B, from each
    channel's top bit down, so neighbouring ids get clearly different colours (as VOC's map does)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    ids = np.arange(num_classes, dtype=np.int64)
    colours = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return colours.astype(np.uint8)


def colorize(labels: np.ndarray | torch.Tensor, palette: Palette) -> np.ndarray:
    """[H, W, 3] uint8 picture of class ids [H, W]; ids outside [0, K) get the ignore colour."""
    ids = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if ids.ndim != 2:
        raise ValueError(f"labels must be [H, W] class ids, got shape {ids.shape}")
    ids = ids.astype(np.int64)
    known = (ids >= 0) & (ids < palette.num_classes)
    picture = np.empty((*ids.shape, 3), dtype=np.uint8)
    picture[...] = palette.ignore_colour
    picture[known] = palette.colours[ids[known]]
    return picture
