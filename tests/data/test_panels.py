"""The prediction panel: tiles where `tile_box` says, painted with the palette, titles, a legend."""

from __future__ import annotations

import numpy as np
import pytest

from hwd_tune.data.palette import Palette
from hwd_tune.data.panels import DISPLAY_MAX_SIDE, MARGIN, TITLE_HEIGHT, display_size, render_panel, tile_box

COLOURS = np.array([[10, 20, 30], [200, 0, 0], [0, 200, 0]], dtype=np.uint8)
NAMES = ("background", "road", "car")


def crop(panel: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return panel[top:bottom, left:right]


def test_tiles_hold_the_image_and_each_label_map_painted_pixel_by_pixel():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    truth = rng.integers(-1, 3, (30, 50))
    student = rng.integers(0, 3, (30, 50))
    palette = Palette(COLOURS, ignore_colour=(255, 255, 0))
    panel = render_panel(image, [("ground truth", truth), ("student", student)], palette, NAMES)
    assert panel.dtype == np.uint8 and panel.shape[2] == 3
    assert np.array_equal(crop(panel, tile_box(0, 30, 50)), image)
    expected_truth = np.where((truth >= 0)[..., None], COLOURS[truth.clip(0)], np.array([255, 255, 0], np.uint8))
    assert np.array_equal(crop(panel, tile_box(1, 30, 50)), expected_truth)
    assert np.array_equal(crop(panel, tile_box(2, 30, 50)), COLOURS[student])
    assert panel.shape[1] >= tile_box(2, 30, 50)[2] + MARGIN
    assert panel.shape[0] > MARGIN + TITLE_HEIGHT + 30  # a legend below the tiles
    title_row = panel[MARGIN : MARGIN + TITLE_HEIGHT - 2, MARGIN : MARGIN + 50]
    assert (title_row < 128).any()  # the title "image" is written in dark text
    legend = panel[tile_box(0, 30, 50)[3] :]
    for colour in [*COLOURS.tolist(), [255, 255, 0]]:  # every class present, and "ignored"
        assert (legend == colour).all(axis=-1).any(), colour


def test_the_legend_shows_only_the_classes_present():
    image = np.zeros((3, 20, 20), dtype=np.uint8)  # channels first is accepted too
    only_road = np.ones((20, 20), dtype=np.int64)
    panel = render_panel(image, [("student", only_road)], Palette(COLOURS), NAMES)
    legend = panel[tile_box(0, 20, 20)[3] :]
    assert (legend == COLOURS[1]).all(axis=-1).any()
    assert not (legend == COLOURS[2]).all(axis=-1).any() and not (legend == COLOURS[0]).all(axis=-1).any()


def test_large_images_are_shrunk_for_display_and_labels_keep_their_colours():
    height, width = 2 * DISPLAY_MAX_SIDE, 4 * DISPLAY_MAX_SIDE
    labels = np.zeros((height, width), dtype=np.int64)
    labels[:, width // 2 :] = 2
    panel = render_panel(np.zeros((height, width, 3), np.uint8), [("truth", labels)], Palette(COLOURS), NAMES)
    tile_height, tile_width = display_size(height, width)
    assert (tile_height, tile_width) == (DISPLAY_MAX_SIDE // 2, DISPLAY_MAX_SIDE)
    tile = crop(panel, tile_box(1, tile_height, tile_width))
    assert np.array_equal(tile[:, : tile_width // 2], np.broadcast_to(COLOURS[0], (tile_height, tile_width // 2, 3)))
    assert np.array_equal(tile[:, tile_width // 2 :], np.broadcast_to(COLOURS[2], (tile_height, tile_width // 2, 3)))


def test_a_label_map_of_another_size_is_an_error_naming_the_column():
    with pytest.raises(ValueError, match=r"column 'teacher': labels of shape \(4, 4\), expected the image's \(5, 5\)"):
        render_panel(np.zeros((5, 5, 3), np.uint8), [("teacher", np.zeros((4, 4)))], Palette(COLOURS), NAMES)
