"""Prediction pictures on a real sqlite run: stepped MLflow images, and plain PNG files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hwd_tune import tracking
from tests.tracking.helpers import download, new_run


def test_panels_are_logged_as_stepped_images_and_as_files(store, client, tmp_path):
    run_id = new_run(store, "predictions")
    logger = tracking.RunLogger(store[1], run_id)
    panel = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert tracking.log_prediction_panels(logger, {"val_0000": panel}, step=7) == ["predictions/val_0000"]
    names = [info.path for info in client.list_artifacts(run_id, "images")]
    stepped = [
        name for name in names if name.startswith("images/predictions~val_0000+step+7+") and name.endswith(".png")
    ]
    assert len(stepped) == 1, names
    assert np.array_equal(np.asarray(Image.open(download(client, run_id, stepped[0], tmp_path))), panel)

    paths = tracking.log_prediction_files(logger, {"val_0001": panel}, "sweep/predictions")
    assert paths == ["sweep/predictions/val_0001.png"]
    assert np.array_equal(np.asarray(Image.open(download(client, run_id, paths[0], tmp_path / "b"))), panel)


def test_a_panel_that_is_not_an_rgb_picture_is_refused(store):
    logger = tracking.RunLogger(store[1], new_run(store, "predictions-bad"))
    with pytest.raises(ValueError, match=r"panel 'x' must be a uint8 \[H, W, 3\] array, got ndarray \(4, 4\)"):
        tracking.log_prediction_panels(logger, {"x": np.zeros((4, 4), np.uint8)}, step=1)
