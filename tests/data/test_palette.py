"""Class colours: the default palette against a slow reference, a folder dataset's own palette, colorize."""

from __future__ import annotations

import numpy as np
import pytest

from hwd_tune.config import DataConfig
from hwd_tune.data.palette import IGNORE_COLOUR, Palette, colorize, dataset_palette, default_palette
from tests.data.layouts import write_folder_dataset


def reference_colour(class_id: int) -> tuple[int, int, int]:
    """The Pascal VOC colour-map rule, one bit at a time: bits 0, 1, 2 of the id go to the top bit of
    r, g, b; bits 3, 4, 5 to the next bit down; and so on."""
    red = green = blue = 0
    for shift in range(8):
        red |= ((class_id >> (3 * shift)) & 1) << (7 - shift)
        green |= ((class_id >> (3 * shift + 1)) & 1) << (7 - shift)
        blue |= ((class_id >> (3 * shift + 2)) & 1) << (7 - shift)
    return red, green, blue


def test_the_default_palette_follows_the_voc_rule_and_its_colours_are_distinct():
    palette = default_palette(256)
    assert palette.dtype == np.uint8 and palette.shape == (256, 3)
    assert [tuple(colour) for colour in palette] == [reference_colour(i) for i in range(256)]
    assert palette[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]  # VOC's first colours
    assert len({tuple(colour) for colour in palette}) == 256
    assert IGNORE_COLOUR not in {tuple(colour) for colour in default_palette(2000)}
    assert np.array_equal(default_palette(150), default_palette(256)[:150])  # fixed per id, whatever the count


def test_colorize_paints_each_id_and_ignored_pixels():
    palette = Palette(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8), ignore_colour=(9, 9, 9))
    labels = np.array([[0, 1], [-1, 7]])
    assert colorize(labels, palette).tolist() == [[[1, 2, 3], [4, 5, 6]], [[9, 9, 9], [9, 9, 9]]]
    with pytest.raises(ValueError, match=r"labels must be \[H, W\] class ids, got shape \(2,\)"):
        colorize(np.array([0, 1]), palette)


def test_a_folder_palette_is_used_as_given_and_other_datasets_get_the_default(tmp_path):
    yaml_text = "classes: [background, road, car]\npalette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]\n"
    write_folder_dataset(tmp_path / "with", classes_yaml=yaml_text + "ignore_color: [1, 1, 1]\n")
    write_folder_dataset(tmp_path / "without")
    given = dataset_palette(DataConfig(name="folder", root=str(tmp_path / "with")))
    assert given.colours.tolist() == [[0, 0, 0], [128, 64, 128], [0, 0, 142]] and given.ignore_colour == (1, 1, 1)
    plain = dataset_palette(DataConfig(name="folder", root=str(tmp_path / "without")))
    assert np.array_equal(plain.colours, default_palette(3)) and plain.ignore_colour == IGNORE_COLOUR
    synthetic = dataset_palette(DataConfig.model_validate({"synthetic": {"num_classes": 5}}))
    assert np.array_equal(synthetic.colours, default_palette(5))
