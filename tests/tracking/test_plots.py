"""hwd_tune.tracking.plots through the run logger: per-class IoU tables and chart, channel-weight heatmap."""

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hwd_tune import tracking
from tests.tracking.helpers import (
    download,
    new_run,
)


def test_class_iou_table_and_chart(store, client, tmp_path):
    run_logger = tracking.RunLogger(store[1], new_run(store, "iou", experiment="artifacts"))
    iou = [0.5, float("nan"), 0.123456789012345, 1.0]
    names = ["wall", "sky, blue", "floor|tile", "tree"]
    folder = run_logger.log_class_iou(iou, names, step=400)
    assert folder == "class_iou/step_0000400"
    local = download(client, run_logger.run_id, folder, tmp_path)
    with open(local / "class_iou.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class_name"] for row in rows] == names
    assert [int(row["class_id"]) for row in rows] == [0, 1, 2, 3]
    for row, expected in zip(rows, iou):
        value = float(row["iou"])
        assert (math.isnan(value) and math.isnan(expected)) or value == expected
    markdown = (local / "class_iou.md").read_text()
    assert "| 1 | sky, blue | n/a |" in markdown and "| 2 | floor/tile | 0.1235 |" in markdown
    assert f"{np.nanmean(iou):.4f}" in markdown
    with Image.open(local / "class_iou.png") as image:
        assert image.format == "PNG" and image.width > 100
    with pytest.raises(ValueError, match="one value per class"):
        run_logger.log_class_iou([0.5], names, step=1)
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        run_logger.log_class_iou(iou, names, step=2.5)


def test_channel_weights_heatmap_and_raw_values(store, client, tmp_path):
    run_logger = tracking.RunLogger(store[1], new_run(store, "weights", experiment="artifacts"))
    iterations = [400, 800, 1200]
    weights = torch.rand(3, 4) * 4  # list of per-iteration tensors, as the loop collects them
    names = ["a", "b", "c", "d"]
    folder = run_logger.log_channel_weights(iterations, list(weights), names)
    local = download(client, run_logger.run_id, folder, tmp_path)
    np.testing.assert_array_equal(np.load(local / "channel_weights.npy"), weights.double().numpy())
    np.testing.assert_array_equal(np.load(local / "iterations.npy"), iterations)
    with open(local / "channel_weights.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["iteration", *names]
    assert [int(row[0]) for row in rows[1:]] == iterations
    np.testing.assert_array_equal(np.array([[float(v) for v in row[1:]] for row in rows[1:]]), weights.double().numpy())
    with Image.open(local / "channel_weights.png") as image:
        assert image.format == "PNG"
    with pytest.raises(ValueError, match=r"weights must be \[T, C\] = \[2 iterations, 4 classes\]"):
        run_logger.log_channel_weights([1, 2], weights, names)
