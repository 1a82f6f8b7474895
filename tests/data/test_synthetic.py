"""SyntheticShapes: determinism, variety, every class present, geometry of shapes and textures."""

import math

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from hwd_tune.data import SyntheticShapes, train_transforms
from hwd_tune.data.synthetic import (
    PATTERNS,
    SHAPES,
    _shape_inside,
    _texture_pattern,
    class_attributes,
    synthetic_class_names,
)


def test_samples_have_the_documented_types_and_shapes():
    dataset = SyntheticShapes(4, image_size=(48, 80), num_classes=7)
    image, mask = dataset[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert image.shape == (3, 48, 80)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == (48, 80)
    assert 0 <= int(mask.min()) and int(mask.max()) < 7
    assert len(dataset) == 4 and len(dataset.class_names) == 7


def test_deterministic_by_seed_split_and_index():
    first, again = SyntheticShapes(5, seed=3), SyntheticShapes(5, seed=3)
    for index in (0, 4):
        assert torch.equal(first[index][0], again[index][0])
        assert torch.equal(first[index][1], again[index][1])
        assert torch.equal(first[index][0], first[index][0])  # repeated access
    assert torch.equal(first[-1][0], first[4][0])
    others = [first[1], SyntheticShapes(5, seed=4)[0], SyntheticShapes(5, seed=3, split="val")[0]]
    for image, mask in others:
        assert not torch.equal(image, first[0][0]) and not torch.equal(mask, first[0][1])


def test_sample_does_not_depend_on_dataset_length():
    assert torch.equal(SyntheticShapes(3)[2][0], SyntheticShapes(50)[2][0])


def test_every_class_appears_in_a_small_set():
    for num_classes in (2, 6, 11, 21):
        dataset = SyntheticShapes(24, num_classes=num_classes, image_size=32)
        present = set()
        for index in range(len(dataset)):
            present |= set(dataset[index][1].unique().tolist())
        assert present == set(range(num_classes))


def test_classes_are_distinct_and_share_shapes_and_textures():
    for num_classes in range(2, 60):
        attributes = class_attributes(num_classes)
        assert len(attributes) == num_classes - 1 == len(set(attributes))
    attributes = class_attributes(6)  # the config default: 5 shape classes
    shapes = [shape for shape, _ in attributes]
    textures = [texture for _, texture in attributes]
    assert len(set(shapes)) < len(attributes) and len(set(textures)) < len(attributes)
    assert synthetic_class_names(6) == (
        "background",
        "disc/solid",
        "square/stripes",
        "triangle/checker",
        "disc/stripes",
        "square/checker",
    )


def test_shape_areas_match_their_formulas():
    radius = 200.0
    coords = np.arange(-256, 256, dtype=np.float64) + 0.5
    y, x = coords[:, None], coords[None, :]
    angle = 0.3
    u, v = math.cos(angle) * x + math.sin(angle) * y, math.cos(angle) * y - math.sin(angle) * x
    expected = {
        "disc": math.pi * radius**2,
        "square": (1.6 * radius) ** 2,
        "triangle": 3 * math.sqrt(3) / 4 * radius**2,
        "ring": math.pi * (1 - 0.55**2) * radius**2,
        "cross": (2 * 2 * radius * 2 * radius / 3) - (2 * radius / 3) ** 2,
    }
    assert set(expected) == set(SHAPES)
    for shape, area in expected.items():
        assert _shape_inside(shape, x, y, u, v, radius).sum() == pytest.approx(area, rel=0.01), shape


def test_texture_fill_fractions_match_their_formulas():
    coords = np.arange(-300, 300, dtype=np.float64) + 0.5
    y, x = coords[:, None], coords[None, :]
    expected = {"stripes": 0.5, "checker": 0.5, "dots": math.pi * 0.1, "grid": 1 - 0.75**2, "rings": 0.5}
    assert set(expected) == set(PATTERNS)
    for pattern, fraction in expected.items():
        filled = _texture_pattern(pattern, x, y, [0.1, 0.25, 0.6], period=7.0).mean()
        assert filled == pytest.approx(fraction, abs=0.01), pattern


def test_colour_alone_does_not_identify_a_class():
    """Mean colour of the pixels of one class varies between images (colours are random)."""
    dataset = SyntheticShapes(40, num_classes=3, image_size=48)
    colours = []
    for index in range(len(dataset)):
        image, mask = dataset[index]
        if int((mask == 1).sum()) > 30:
            colours.append(image[:, mask == 1].float().mean(1))
    assert len(colours) >= 10
    assert torch.stack(colours).std(0).min() > 30  # 0-255 scale


def test_transforms_are_applied():
    image, mask = SyntheticShapes(2, transforms=train_transforms(32))[1]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32) and mask.shape == (32, 32)


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticShapes(0)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticShapes(2, image_size=8)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticShapes(2, image_size=(32, 32, 3))
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticShapes(2, num_classes=1)
    with pytest.raises(ValueError, match="seed"):
        SyntheticShapes(2, seed=-1)
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes(2, split="")
    with pytest.raises(IndexError, match="index 2 out of range"):
        SyntheticShapes(2)[2]
    with pytest.raises(IndexError, match="index 2 out of range"):
        SyntheticShapes(2).sample_name(2)


def test_samples_are_named_by_split_and_index():
    assert SyntheticShapes(4, split="val").sample_name(3) == "synthetic/val/3"
    assert SyntheticShapes(4).sample_name(0) == "synthetic/train/0"
