"""Mask files of a folder dataset to class ids: index masks checked, RGB masks matched to a palette."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from hwd_tune.config import IGNORE_INDEX
from hwd_tune.data.folder_classes import CLASSES_FILE, FolderClasses

INDEX_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B", "1")  # single channel: the value is the class id
RGB_MODES = ("RGB", "RGBA")  # colours, matched to the palette (alpha dropped)
SHOWN_VALUES = 10  # values or colours named in one message


class MaskFileError(ValueError):
    """A mask file that cannot become class ids; `kind` says why and `found` lists what was found.

    kind: "values" (ids outside the classes), "rgb" (RGB without a palette), "colours" (RGB colours
    not in the palette) or "mode" (an image mode that is neither class ids nor RGB).
    """

    def __init__(self, path: Path, kind: str, message: str, found: tuple = ()) -> None:
        super().__init__(f"mask {path}: {message}")
        self.path = path
        self.kind = kind
        self.found = found


def read_class_ids(path: Path, classes: FolderClasses) -> np.ndarray:
    """Class ids [H, W] int64 of a mask file, with the ignore value (or colour) read as IGNORE_INDEX (-1)."""
    with PILImage.open(path) as mask:
        mode = mask.mode
        if mode in INDEX_MODES:
            values = np.asarray(mask, dtype=np.uint8) if mode == "1" else np.asarray(mask)
            return index_values_to_ids(values, classes, path)
        if mode in RGB_MODES:
            rgb = np.asarray(mask.convert("RGB"))  # [H, W, 3]
            return colours_to_ids(rgb, classes, path)
    raise MaskFileError(
        path, "mode", f"image mode {mode} is neither a single-channel class-id mask (L, P, I;16) nor RGB", (mode,)
    )


def index_values_to_ids(values: np.ndarray, classes: FolderClasses, path: Path) -> np.ndarray:
    """[H, W] mask values -> int64 class ids; the ignore value -> -1, any other value >= C is an error."""
    ids = values.astype(np.int64)
    ignored = ids == classes.ignore_value
    outside = ((ids < 0) | (ids >= classes.num_classes)) & ~ignored
    if outside.any():
        found = tuple(int(v) for v in np.unique(ids[outside]))
        raise MaskFileError(
            path,
            "values",
            f"label values {_shown(found)} outside the class ids 0..{classes.num_classes - 1} "
            f"(ignore value {classes.ignore_value}; {classes.source})",
            found,
        )
    ids[ignored] = IGNORE_INDEX
    return ids


def colours_to_ids(rgb: np.ndarray, classes: FolderClasses, path: Path) -> np.ndarray:
    """[H, W, 3] uint8 colours -> int64 class ids by exact match with the palette (ignore_color -> -1)."""
    if classes.palette is None:
        hint = (
            " (its three channels are equal everywhere: probably class ids saved as RGB; save it in mode L)"
            if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
            else ""
        )
        raise MaskFileError(
            path,
            "rgb",
            f"is an RGB mask but no palette is given{hint}; add 'palette' (one [r, g, b] per class) to "
            f"{CLASSES_FILE} or data.folder, or convert the masks to single-channel class ids",
        )
    colours = list(classes.palette) + ([classes.ignore_color] if classes.ignore_color is not None else [])
    ids_of_colours = [*range(classes.num_classes), *([IGNORE_INDEX] if classes.ignore_color is not None else [])]
    keys = _colour_keys(np.asarray(colours, dtype=np.uint8))
    order = np.argsort(keys)
    sorted_keys, sorted_ids = keys[order], np.asarray(ids_of_colours, dtype=np.int64)[order]
    pixel_keys = _colour_keys(rgb)
    position = np.minimum(np.searchsorted(sorted_keys, pixel_keys), len(sorted_keys) - 1)
    known = sorted_keys[position] == pixel_keys
    if not known.all():
        unknown = np.unique(pixel_keys[~known])
        found = tuple((int(k) >> 16, (int(k) >> 8) & 255, int(k) & 255) for k in unknown)
        raise MaskFileError(
            path,
            "colours",
            f"colours {_shown([list(c) for c in found])} are not in the palette ({classes.source})",
            found,
        )
    return sorted_ids[position]


def _colour_keys(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 colours -> [...] int32 keys r * 65536 + g * 256 + b."""
    channels = rgb.astype(np.int32)
    return (channels[..., 0] << 16) | (channels[..., 1] << 8) | channels[..., 2]


def _shown(found: list | tuple) -> str:
    """The first SHOWN_VALUES items, and how many more."""
    more = f" and {len(found) - SHOWN_VALUES} more" if len(found) > SHOWN_VALUES else ""
    return f"{list(found[:SHOWN_VALUES])}{more}"
