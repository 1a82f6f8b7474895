"""Shared machinery of the file-based datasets: pairing image and label files, checking the
directory layout, and mapping the files' label ids to train ids with a lookup table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import Dataset
from torchvision import tv_tensors

from hwd_tune.config import IGNORE_INDEX
from hwd_tune.data.registry import DatasetInfo

# Marks label ids that have no entry in a dataset's mapping (a lookup table value that can
# never be a train id or the ignore index).
NOT_IN_MAPPING = np.iinfo(np.int64).min

Transforms = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Any, Any]]


def lookup_table(id_to_train_id: Mapping[int, int], size: int = 256) -> np.ndarray:
    """[size] int64 table: table[label id] = train id (or IGNORE_INDEX); unlisted ids are invalid."""
    table = np.full(size, NOT_IN_MAPPING, dtype=np.int64)
    for label_id, train_id in id_to_train_id.items():
        table[label_id] = train_id
    return table


def map_label_ids(label_ids: np.ndarray, table: np.ndarray, source: str | Path) -> np.ndarray:
    """Maps label ids [H, W] to int64 train ids [H, W] in one table look-up.

    Raises a ValueError naming `source` and the offending values when an id is outside the table.
    """
    if label_ids.dtype.kind not in "ui":
        raise ValueError(f"label file {source}: expected integer label ids, got dtype {label_ids.dtype}")
    if label_ids.dtype != np.uint8 and label_ids.size:
        low, high = int(label_ids.min()), int(label_ids.max())
        if low < 0 or high >= table.size:
            values = np.unique(label_ids[(label_ids < 0) | (label_ids >= table.size)])
            raise ValueError(
                f"label file {source} has values {values[:20].tolist()} outside the dataset's "
                f"mapping (ids 0..{table.size - 1} with a defined train id)"
            )
    train_ids = table[label_ids]
    unmapped = train_ids == NOT_IN_MAPPING
    if unmapped.any():
        values = np.unique(label_ids[unmapped])
        expected = np.flatnonzero(table != NOT_IN_MAPPING)
        raise ValueError(
            f"label file {source} has values {values[:20].tolist()} outside the dataset's mapping; "
            f"expected only {_describe_ids(expected)}"
        )
    return train_ids


def _describe_ids(ids: np.ndarray) -> str:
    """'0..150' for a contiguous run, else runs joined: '0..10, 12..24, 255'."""
    runs: list[str] = []
    start = previous = int(ids[0])
    for value in [*map(int, ids[1:]), None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        runs.append(f"{start}..{previous}" if previous > start else f"{start}")
        if value is not None:
            start = previous = value
    return ", ".join(runs)


def read_label_ids(path: Path) -> np.ndarray:
    """Label ids [H, W] of a single-channel PNG (greyscale or palette indices)."""
    with PILImage.open(path) as label_image:
        if label_image.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(
                f"label file {path}: expected a single-channel (L or P mode) PNG, got mode {label_image.mode}"
            )
        return np.asarray(label_image)


def read_rgb_image(path: Path) -> tv_tensors.Image:
    """uint8 RGB image [3, H, W] (greyscale or palette files are converted to RGB).

    PIL rather than torchvision.io, whose decoders are deprecated since torchvision 0.29.
    """
    with PILImage.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))  # [H, W, 3], read-only
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))))


def layout_error(message: str, root: Path, layout: str) -> FileNotFoundError:
    """A FileNotFoundError that says what is missing and shows the expected tree under root."""
    return FileNotFoundError(f"{message}\nexpected layout under {root}:\n{layout}")


def require_directory(path: Path, root: Path, layout: str) -> Path:
    """`path` if it is a directory, else a layout error naming it."""
    if not path.is_dir():
        raise layout_error(f"missing directory {path}", root, layout)
    return path


def pair_files(
    image_dir: Path,
    image_suffix: str,
    label_dir: Path,
    label_suffix: str,
    *,
    root: Path,
    layout: str,
) -> list[tuple[Path, Path]]:
    """(image, label) pairs matched by relative path minus suffix, searched recursively.

    Every image needs its label and every label its image; the first unmatched ones are named.
    """
    images = _index_by_key(image_dir, image_suffix)
    labels = _index_by_key(label_dir, label_suffix)
    if not images:
        raise layout_error(f"no '*{image_suffix}' images under {image_dir}", root, layout)
    missing_labels = sorted(set(images) - set(labels))
    if missing_labels:
        named = [f"{images[k]} (expected {label_dir / (k + label_suffix)})" for k in missing_labels[:5]]
        raise FileNotFoundError(f"{len(missing_labels)} image(s) without a label file: " + "; ".join(named))
    missing_images = sorted(set(labels) - set(images))
    if missing_images:
        named = [f"{labels[k]} (expected {image_dir / (k + image_suffix)})" for k in missing_images[:5]]
        raise FileNotFoundError(f"{len(missing_images)} label file(s) without an image: " + "; ".join(named))
    return [(images[key], labels[key]) for key in sorted(images)]


def _index_by_key(directory: Path, suffix: str) -> dict[str, Path]:
    """{relative path without suffix: path} of the files under `directory` ending in `suffix`."""
    found: dict[str, Path] = {}
    for path in directory.rglob(f"*{suffix}"):
        relative = path.relative_to(directory).as_posix()
        found[relative[: -len(suffix)]] = path
    return found


class LabelledImageFiles(Dataset):
    """Image/label file pairs; label ids are mapped to train ids by the class's lookup table.

    Samples are `(tv_tensors.Image uint8 [3, H, W], tv_tensors.Mask int64 [H, W])` with ignore = -1,
    passed through `transforms(image, mask)` when given (float32 image after the usual ones).
    """

    needs_root: ClassVar[bool] = True
    class_names: ClassVar[tuple[str, ...]] = ()
    label_table: ClassVar[np.ndarray]

    def __init__(self, pairs: Sequence[tuple[Path, Path]], transforms: Transforms | None) -> None:
        self.pairs = list(pairs)
        self.transforms = transforms

    @classmethod
    def info(cls) -> DatasetInfo:
        """Number of classes, their names and the ignore index, without the files."""
        return DatasetInfo(len(cls.class_names), cls.class_names, IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.pairs)

    def sample_name(self, index: int) -> str:
        """The image file of sample `index`, as listed (no file is read): names it in logs."""
        return self.pairs[index][0].as_posix()

    def load_label(self, index: int) -> tv_tensors.Mask:
        """Train ids [H, W] int64 of sample `index` (ignore = -1), before any transform."""
        label_path = self.pairs[index][1]
        train_ids = map_label_ids(read_label_ids(label_path), self.label_table, label_path)
        return tv_tensors.Mask(torch.from_numpy(train_ids))

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image_path, label_path = self.pairs[index]
        image = read_rgb_image(image_path)
        mask = self.load_label(index)
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            raise ValueError(
                f"image {image_path} is {tuple(image.shape[-2:])} but its label {label_path} "
                f"is {tuple(mask.shape)}; expected the same height and width"
            )
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask


def check_split(split: str, folders: Mapping[str, Any], dataset: str) -> Any:
    """The folder (or list file names) of `split`, or a ValueError naming the accepted splits."""
    if split not in folders:
        raise ValueError(f"{dataset}: unknown split {split!r}; expected one of {sorted(folders)}")
    return folders[split]
