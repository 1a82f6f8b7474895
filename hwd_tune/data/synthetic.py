"""SyntheticShapes: procedurally drawn segmentation images for the quickstart and the tests.

Each image is a smooth, randomly coloured background (class 0, "background") with 2-5 shapes
drawn on top, later shapes occluding earlier ones. A foreground class is a pair (shape geometry,
texture pattern); the colours of every shape are drawn at random, so colour says nothing about
the class: a network must recognise outline and texture, and classes are arranged so that each
shape appears with several textures and each texture on several shapes. Brightness, contrast,
colour cast and pixel noise vary per image. Everything is generated on the fly with numpy,
deterministically from (seed, split, index); no files are read or written.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from hwd_tune.config import IGNORE_INDEX, SyntheticDataParams
from hwd_tune.data.files import Transforms
from hwd_tune.data.registry import DatasetInfo, register_dataset

SHAPES = ("disc", "square", "triangle", "ring", "cross")
# Texture 0 is "solid"; texture t >= 1 is PATTERNS[(t - 1) % 5] with period x 2 ** ((t - 1) // 5).
PATTERNS = ("stripes", "checker", "dots", "grid", "rings")

# Drawing parameters, as fractions of the image's shorter side (so any image size looks alike).
SHAPES_PER_IMAGE = (2, 5)  # inclusive range
RADIUS_RANGE = (0.12, 0.25)
TEXTURE_PERIOD = 0.08  # finest texture period; at least 3 pixels
BACKGROUND_GRID = 4  # the background is a bilinearly upsampled 4 x 4 grid of random colours
PIXEL_NOISE_STD = 0.03  # on 0-1 intensities
NOISE_BANK_MARGIN = 32  # pixel noise is a window of a (H + 32) x (W + 32) bank made once per dataset
_UNIFORMS_PER_SHAPE = 12

_DEFAULTS = SyntheticDataParams()


def class_attributes(num_classes: int) -> list[tuple[int, int]]:
    """(shape index, texture index) of the foreground classes 1..num_classes-1, in class order.

    Classes run along diagonals of the shape x texture grid over the first ~sqrt(n) shapes, so
    even a few classes share shapes and textures: neither alone identifies a class.
    """
    num_foreground = num_classes - 1
    shapes_used = min(len(SHAPES), max(1, math.ceil(math.sqrt(num_foreground))))
    return [(j % shapes_used, j // shapes_used + j % shapes_used) for j in range(num_foreground)]


def texture_name(texture: int) -> str:
    """'solid', 'stripes', ..., then 'stripes x2' for the coarser repeats of the patterns."""
    if texture == 0:
        return "solid"
    pattern, level = PATTERNS[(texture - 1) % len(PATTERNS)], (texture - 1) // len(PATTERNS)
    return pattern if level == 0 else f"{pattern} x{2**level}"


def synthetic_class_names(num_classes: int) -> tuple[str, ...]:
    """("background", "disc/solid", "square/stripes", ...): class 0 is the background."""
    attributes = class_attributes(num_classes)
    names = [f"{SHAPES[shape]}/{texture_name(texture)}" for shape, texture in attributes]
    return ("background", *names)


def _bilinear_matrix(size: int, grid: int) -> np.ndarray:
    """[size, grid] weights that bilinearly upsample `grid` samples to `size` (align corners)."""
    positions = np.linspace(0.0, grid - 1.0, size)
    lower = np.clip(np.floor(positions).astype(int), 0, grid - 2)
    upper_weight = positions - lower
    matrix = np.zeros((size, grid), dtype=np.float32)
    matrix[np.arange(size), lower] = 1.0 - upper_weight
    matrix[np.arange(size), lower + 1] = upper_weight
    return matrix


def _shape_inside(shape: str, x: np.ndarray, y: np.ndarray, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of a shape of circumradius `radius`; (x, y) centred, (u, v) also rotated."""
    if shape == "disc":
        return x * x + y * y <= radius * radius
    if shape == "square":
        half = 0.8 * radius
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "triangle":  # equilateral: three edges at distance radius / 2 from the centre
        inside = v <= 0.5 * radius
        for angle in (math.radians(210.0), math.radians(330.0)):
            inside &= u * math.cos(angle) + v * math.sin(angle) <= 0.5 * radius
        return inside
    if shape == "ring":
        squared = x * x + y * y
        return (squared <= radius * radius) & (squared >= (0.55 * radius) ** 2)
    if shape == "cross":
        arm, length = radius / 3.0, radius
        abs_u, abs_v = np.abs(u), np.abs(v)
        return ((abs_u <= arm) & (abs_v <= length)) | ((abs_v <= arm) & (abs_u <= length))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _texture_pattern(pattern: str, x: np.ndarray, y: np.ndarray, uniforms: list[float], period: float) -> np.ndarray:
    """Boolean pattern at centred pixel coordinates (x, y); uniforms fix its angle and phases."""
    if pattern == "rings":  # concentric around the shape's centre
        return ((np.sqrt(x * x + y * y) / period + uniforms[1]) % 1.0) < 0.5
    angle = 2 * math.pi * uniforms[0]
    cos, sin = math.cos(angle), math.sin(angle)
    a = (cos * x + sin * y) * (1.0 / period) + uniforms[1]  # texture coordinates, in periods
    b = (cos * y - sin * x) * (1.0 / period) + uniforms[2]
    if pattern == "stripes":
        return (a % 1.0) < 0.5
    if pattern == "checker":
        return ((np.floor(a) + np.floor(b)) % 2.0) < 1.0
    if pattern == "dots":
        return ((a % 1.0) - 0.5) ** 2 + ((b % 1.0) - 0.5) ** 2 < 0.1
    if pattern == "grid":
        return ((a % 1.0) < 0.25) | ((b % 1.0) < 0.25)
    raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")


def _shape_colours(uniforms: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Two contrasting RGB colours [3] in 0-1 from 4 uniforms (the texture alternates between them)."""
    first = np.array(uniforms[:3], dtype=np.float32)
    first = np.where(first < 0.5, 0.7 * first, 0.3 + 0.7 * first)  # away from mid-grey
    second = first + (1.0 - 2.0 * first) * np.float32(0.6 + 0.35 * uniforms[3])
    return first, second


@register_dataset("synthetic")
class SyntheticShapes(Dataset):
    """`num_samples` generated `(Image uint8 [3, H, W], Mask int64 [H, W])` pairs (no ignore pixels).

    Sample i is a pure function of (seed, split, i); any split name gives an independent stream.
    `transforms(image, mask)` is applied when given, as for the file datasets.
    """

    needs_root: ClassVar[bool] = False

    def __init__(
        self,
        num_samples: int,
        *,
        image_size: int | tuple[int, int] = _DEFAULTS.image_size,
        num_classes: int = _DEFAULTS.num_classes,
        seed: int = _DEFAULTS.seed,
        split: str = "train",
        transforms: Transforms | None = None,
    ) -> None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or min(size) < 16:
            raise ValueError(f"image_size must be an int or (height, width), each >= 16, got {image_size!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background + 1 shape class), got {num_classes!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        self.num_samples = num_samples
        self.height, self.width = int(size[0]), int(size[1])
        self.num_classes = num_classes
        self.seed = seed
        self.split = split
        self.transforms = transforms
        self.class_names = synthetic_class_names(num_classes)
        self._attributes = class_attributes(num_classes)
        self._split_code = zlib.crc32(split.encode())
        self._rows = _bilinear_matrix(self.height, BACKGROUND_GRID)
        self._columns_t = _bilinear_matrix(self.width, BACKGROUND_GRID).T.copy()
        noise_rng = np.random.default_rng([seed, self._split_code, 2**32])  # a stream no sample uses
        bank_shape = (3, self.height + NOISE_BANK_MARGIN, self.width + NOISE_BANK_MARGIN)
        self._noise = PIXEL_NOISE_STD * noise_rng.standard_normal(bank_shape, dtype=np.float32)

    @classmethod
    def info(cls, num_classes: int = _DEFAULTS.num_classes) -> DatasetInfo:
        """Class count and names for `num_classes` (class 0 = background); nothing is ignored."""
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        return DatasetInfo(num_classes, synthetic_class_names(num_classes), IGNORE_INDEX)

    def __len__(self) -> int:
        return self.num_samples

    def sample_name(self, index: int) -> str:
        """`synthetic/<split>/<index>`: names sample `index` in logs (nothing is drawn)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return f"synthetic/{self.split}/{index}"

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        index %= self.num_samples
        rng = np.random.default_rng([self.seed, self._split_code, index])
        pixels, labels = self._draw(rng)
        image = tv_tensors.Image(torch.from_numpy(pixels))
        mask = tv_tensors.Mask(torch.from_numpy(labels))
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [3, H, W] pixels and int64 [H, W] labels of one image."""
        height, width = self.height, self.width
        grid = rng.random((3, BACKGROUND_GRID, BACKGROUND_GRID), dtype=np.float32)
        image = 0.15 + 0.7 * (self._rows @ grid @ self._columns_t)  # [3, H, W] smooth colours
        labels = np.zeros((height, width), dtype=np.int64)
        num_shapes = int(rng.integers(SHAPES_PER_IMAGE[0], SHAPES_PER_IMAGE[1] + 1))
        class_ids = rng.integers(1, self.num_classes, size=num_shapes)
        # One draw for everything random about the shapes (numpy calls, not numbers, cost time).
        uniforms = rng.random((num_shapes, _UNIFORMS_PER_SHAPE))
        for class_id, shape_uniforms in zip(class_ids.tolist(), uniforms):
            self._draw_shape(image, labels, class_id, shape_uniforms.tolist())
        photometric = rng.random(7)
        gain = (0.75 + 0.5 * photometric[0]) * (0.9 + 0.2 * photometric[1:4])  # contrast, colour cast
        image *= gain.astype(np.float32)[:, None, None]
        image += np.float32(0.3 * photometric[4] - 0.15)  # brightness
        # Pixel noise: a random window (and sign) of a fixed noise bank, far cheaper than fresh normals.
        top = int(photometric[5] * (self._noise.shape[1] - height + 1))
        left = int(photometric[6] * (self._noise.shape[2] - width + 1))
        noise = self._noise[:, top : top + height, left : left + width]
        if top % 2:
            image -= noise
        else:
            image += noise
        np.clip(image, 0.0, 1.0, out=image)
        return (image * 255.0 + 0.5).astype(np.uint8), labels

    def _draw_shape(self, image: np.ndarray, labels: np.ndarray, class_id: int, uniforms: list[float]) -> None:
        """Paints one textured shape of `class_id` into image [3, H, W] and labels [H, W] in place.

        uniforms: _UNIFORMS_PER_SHAPE numbers in [0, 1) that fix size, place, angles and colours.
        """
        shape, texture = self._attributes[class_id - 1]
        shorter = min(self.height, self.width)
        radius = (RADIUS_RANGE[0] + (RADIUS_RANGE[1] - RADIUS_RANGE[0]) * uniforms[0]) * shorter
        centre_y, centre_x = uniforms[1] * self.height, uniforms[2] * self.width
        y0, y1 = max(0, int(centre_y - radius) - 1), min(self.height, int(centre_y + radius) + 2)
        x0, x1 = max(0, int(centre_x - radius) - 1), min(self.width, int(centre_x + radius) + 2)
        y = (np.arange(y0, y1, dtype=np.float32) + 0.5 - centre_y)[:, None]
        x = (np.arange(x0, x1, dtype=np.float32) + 0.5 - centre_x)[None, :]
        angle = 2 * math.pi * uniforms[3]
        cos, sin = math.cos(angle), math.sin(angle)
        inside = _shape_inside(SHAPES[shape], x, y, cos * x + sin * y, cos * y - sin * x, radius)

        first, second = _shape_colours(uniforms[4:8])
        if texture == 0:
            colours = np.broadcast_to(first[:, None, None], (3, *inside.shape))
        else:
            level = (texture - 1) // len(PATTERNS)
            period = max(3.0, TEXTURE_PERIOD * shorter) * 2**level * (0.85 + 0.3 * uniforms[8])
            pattern_name = PATTERNS[(texture - 1) % len(PATTERNS)]
            pattern = _texture_pattern(pattern_name, x, y, uniforms[9:12], period)
            colours = np.where(pattern[None], second[:, None, None], first[:, None, None])
        np.copyto(image[:, y0:y1, x0:x1], colours, where=inside[None])
        labels[y0:y1, x0:x1][inside] = class_id
