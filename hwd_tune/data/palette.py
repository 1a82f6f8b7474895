"""Class colours of a dataset and label maps painted with them, for pictures of predictions.

A folder dataset's `palette` (classes.yaml or data.folder) is used as given; every other dataset
gets `default_palette`, a fixed colour per class id that is the same on every machine and run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hwd_tune.config import DataConfig
from hwd_tune.data.folder_classes import load_folder_classes
from hwd_tune.data.from_config import info_from_config

IGNORE_COLOUR = (255, 255, 255)  # "not labelled" pixels; default_palette never yields pure white


@dataclass(frozen=True)
class Palette:
    """One RGB colour per class ([K, 3] uint8) and the colour of ignored pixels."""

    colours: np.ndarray
    ignore_colour: tuple[int, int, int] = IGNORE_COLOUR

    def __post_init__(self) -> None:
        if self.colours.ndim != 2 or self.colours.shape[1] != 3 or self.colours.dtype != np.uint8:
            raise ValueError(f"colours must be [K, 3] uint8, got {self.colours.shape} {self.colours.dtype}")

    @property
    def num_classes(self) -> int:
        return len(self.colours)


def default_palette(num_classes: int) -> np.ndarray:
    """[K, 3] uint8 colours, one per class id and all distinct: the id's bits are dealt to the
    channels in turn, from each channel's highest bit down (the scheme of the Pascal VOC colour maps)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    colours = np.zeros((num_classes, 3), dtype=np.int64)
    ids = np.arange(num_classes)
    for bit in range(8):  # bit b of the id's three-bit groups lands on bit (7 - b) of each channel
        for channel in range(3):
            colours[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return colours.astype(np.uint8)


def dataset_palette(data: DataConfig) -> Palette:
    """The palette of the configured dataset: a folder dataset's own colours when it has them."""
    if data.name == "folder":
        classes = load_folder_classes(data.root, data.folder)
        if classes.palette is not None:
            return Palette(np.asarray(classes.palette, dtype=np.uint8), classes.ignore_color or IGNORE_COLOUR)
    return Palette(default_palette(info_from_config(data).num_classes))


def colorize(labels: np.ndarray | torch.Tensor, palette: Palette) -> np.ndarray:
    """[H, W, 3] uint8 picture of class ids [H, W]; ids outside [0, K) (ignore, -1) get the ignore colour."""
    ids = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if ids.ndim != 2:
        raise ValueError(f"labels must be [H, W] class ids, got shape {ids.shape}")
    ids = ids.astype(np.int64)
    known = (ids >= 0) & (ids < palette.num_classes)
    picture = np.empty((*ids.shape, 3), dtype=np.uint8)
    picture[...] = palette.ignore_colour
    picture[known] = palette.colours[ids[known]]
    return picture
