"""A folder dataset through the launcher: the data check stops a bad one before anything starts, and
a good one trains in the real loop."""

from __future__ import annotations

import math

import pytest

from tests.data.layouts import FOLDER_CLASSES, folder_mask, write_folder_dataset, write_label
from tests.trainables.helpers import tiny_config
from trainables.checkpointing import read_meta
from trainables.evaluation import evaluate_checkpoint
from trainables.launch import preflight, run_training


def folder_data(root) -> dict:
    return {"name": "folder", "root": str(root), "crop_size": 32, "loader_workers": 0}


def test_preflight_names_a_bad_mask_before_training(tmp_path):
    write_folder_dataset(tmp_path / "data")
    bad = folder_mask(2)
    bad[4, :3] = [3, 4, 250]
    write_label(tmp_path / "data" / "masks" / "train" / "d.png", bad)
    config = tiny_config(tmp_path, data=folder_data(tmp_path / "data"))
    with pytest.raises(ValueError, match=r"found \[3, 4, 250\]; 1 file\(s\): .*masks/train/d\.png"):
        preflight(config, None)


@pytest.mark.slow
def test_a_folder_dataset_trains_in_the_real_loop(ray_local, tmp_path, monkeypatch):
    """The root is relative, as a user writes it: the workers, in another directory, still find it."""
    write_folder_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    config = tiny_config(
        tmp_path / "out",
        data=folder_data("data"),
        schedule={"max_iters": 4, "batch_size": 2, "val_interval": 2, "log_interval": 2},
    )
    outcome = run_training(config)
    metrics = outcome["metrics"]
    assert metrics["iteration"] == 4
    numbers = {name: value for name, value in metrics.items() if isinstance(value, (int, float))}
    assert all(math.isfinite(value) for value in numbers.values()), numbers
    assert 0.0 <= metrics["val_miou"] <= 100.0
    assert read_meta(outcome["checkpoint"])["num_classes"] == len(FOLDER_CLASSES)  # from classes.yaml
    evaluated = evaluate_checkpoint(outcome["checkpoint"], "folder", root=str(tmp_path / "data"))
    assert evaluated["class_names"] == FOLDER_CLASSES and 0.0 <= evaluated["miou"] <= 100.0
