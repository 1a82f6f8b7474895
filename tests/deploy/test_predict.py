"""`hwd-tune predict`'s files: class-index PNGs equal to the argmax recomputed here, overlays of the
image and the palette's colours, and clear errors before anything is written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hwd_tune.data import SyntheticShapes
from hwd_tune.data.palette import Palette, colorize, default_palette
from hwd_tune.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from hwd_tune.deploy import predict_images, read_images
from hwd_tune.models import load_deployable
from tests.deploy.helpers import NUM_CLASSES, reference_class_maps, write_student


def synthetic_pngs(folder, count=2):
    """The first synthetic val images, written as RGB PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (image, _) in enumerate(SyntheticShapes(count, split="val", image_size=48, num_classes=NUM_CLASSES)):
        path = folder / f"val-{index}.png"
        Image.fromarray(np.asarray(image).transpose(1, 2, 0)).save(path)
        paths.append(path)
    return paths


def test_class_pngs_equal_the_argmax_and_overlays_blend_the_palette(tmp_path):
    checkpoint = write_student(tmp_path / "student")
    paths = synthetic_pngs(tmp_path / "images")
    written = predict_images(load_deployable(checkpoint), paths, tmp_path / "out")
    assert [files.image for files in written] == paths
    palette = Palette(default_palette(NUM_CLASSES))
    for files in written:
        rgb = np.asarray(Image.open(files.image).convert("RGB"))
        normalised = (rgb / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)  # the pipeline's, by hand
        images = torch.from_numpy(normalised.transpose(2, 0, 1)).float().unsqueeze(0)
        expected = reference_class_maps(checkpoint, images)[0].numpy()
        with Image.open(files.classes) as saved:
            assert saved.mode == "L" and saved.size == (48, 48)
            assert np.array_equal(np.asarray(saved), expected)
        overlay = np.asarray(Image.open(files.overlay)).astype(int)
        blended = np.round(0.5 * rgb + 0.5 * colorize(expected, palette)).astype(int)
        assert np.abs(overlay - blended).max() <= 1  # rounding only


def test_default_palette_colours_are_distinct_fixed_and_ignore_is_white():
    colours = default_palette(300)
    assert colours.dtype == np.uint8 and len({tuple(colour) for colour in colours}) == 300
    assert colours[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    picture = colorize(np.array([[0, 2], [-1, 7]]), Palette(default_palette(4)))
    assert picture[1, 0].tolist() == [255, 255, 255] and picture[1, 1].tolist() == [255, 255, 255]
    assert picture[0, 1].tolist() == [0, 128, 0]


def test_many_classes_are_written_as_16_bit_pngs(tmp_path):
    checkpoint = write_student(tmp_path / "student", num_classes=300)
    [files] = predict_images(load_deployable(checkpoint), synthetic_pngs(tmp_path / "images", 1), tmp_path / "out")
    with Image.open(files.classes) as saved:
        values = np.asarray(saved)
    assert values.dtype == np.uint16 or saved.mode.startswith("I")
    assert values.max() < 300


def test_a_file_that_is_not_an_image_is_named_and_nothing_is_written(tmp_path):
    checkpoint = write_student(tmp_path / "student")
    [good] = synthetic_pngs(tmp_path / "images", 1)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.png: not a readable image") as raised:
        predict_images(load_deployable(checkpoint), [good, bad, tmp_path / "gone.jpg"], tmp_path / "out")
    assert "gone.jpg: no such file" in str(raised.value)
    assert not (tmp_path / "out").exists()
    twin = tmp_path / "other" / "val-0.jpg"
    twin.parent.mkdir()
    Image.open(good).save(twin)
    with pytest.raises(ValueError, match="would write the same files"):
        predict_images(load_deployable(checkpoint), [good, twin], tmp_path / "out")
    assert len(read_images([good, twin])) == 2
