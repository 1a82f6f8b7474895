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


FOLDER_CLASSES = ("background", "road", "car")
FOLDER_DIRS = {"images/masks": ("images", "masks"), "mmseg": ("img_dir", "ann_dir")}
# sample key (relative path without suffix) -> image suffix, per split; a subfolder and every suffix
FOLDER_SAMPLES = {
    "train": {"a": ".png", "b": ".jpg", "city/c": ".jpeg", "d": ".png"},
    "val": {"e": ".png", "f": ".jpg"},
}


def folder_pixels(index: int, *, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """[H, W, 3] uint8 smooth gradient, different per index (smooth, so JPEG keeps it within a few levels)."""
    rows, columns = np.mgrid[0:height, 0:width]
    return np.stack(
        [(rows * 3 + index * 20) % 256, (columns * 2 + index * 7) % 256, np.full_like(rows, 90 + index)], -1
    ).astype(np.uint8)


def folder_mask(index: int, *, height: int = HEIGHT, width: int = WIDTH, num_classes: int = 3) -> np.ndarray:
    """[H, W] uint8 class ids drawn at random (seeded by index), with the first row 255 (not labelled)."""
    mask = np.random.default_rng(index).integers(0, num_classes, (height, width)).astype(np.uint8)
    mask[0] = 255
    return mask


def write_folder_dataset(
    root: Path,
    *,
    layout: str = "images/masks",
    samples: dict[str, dict[str, str]] = FOLDER_SAMPLES,
    classes_yaml: str | None = "classes: [background, road, car]\nignore_index: 255\n",
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """A folder dataset under root; returns {(split, key): (pixels [H, W, 3], mask [H, W]) as written}."""
    image_dir, mask_dir = FOLDER_DIRS[layout]
    written = {}
    for split, keys in samples.items():
        for index, (key, suffix) in enumerate(sorted(keys.items())):
            number = index + (100 if split == "val" else 0)
            pixels, mask = folder_pixels(number), folder_mask(number)
            image_path = root / image_dir / split / f"{key}{suffix}"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(image_path, **({"quality": 100, "subsampling": 0} if suffix != ".png" else {}))
            write_label(root / mask_dir / split / f"{key}.png", mask)
            written[(split, key)] = (pixels, mask)
    if classes_yaml is not None:
        (root / "classes.yaml").write_text(classes_yaml)
    return written
