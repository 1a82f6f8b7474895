"""Evaluating a checkpoint: always on the dataset's official val split, even for a checkpoint
whose training held images out and validated on them (a sweep trial's); a model registered in
MLflow is downloaded first (models:/name@alias)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hwd_tune.config import ModelConfig
from hwd_tune.data import SyntheticShapes
from hwd_tune.sweep.config import trial_train_config
from tests.sweep.helpers import PAPER_POINT, tiny_sweep
from tests.trainables.helpers import TINY_STUDENT, register_in_new_store
from trainables.evaluation import evaluate_checkpoint, evaluate_model
from trainables.loop import model_from_config

NUM_CLASSES, PREDICTED, VAL_IMAGES = 4, 1, 3


def class_share(masks) -> float:
    """Share (%) of the pixels labelled PREDICTED: the pixel accuracy of a model that predicts it everywhere."""
    labels = np.concatenate([np.asarray(mask).ravel() for mask in masks])
    return 100.0 * float(np.mean(labels == PREDICTED))


def constant_checkpoint(tmp_path) -> Path:
    """A trial's checkpoint (trained with images held out) whose model predicts class PREDICTED everywhere."""
    trial = trial_train_config(tiny_sweep(tmp_path, "teacher.pt"), PAPER_POINT)
    assert trial.data.holdout.validate_on == "holdout"
    model = model_from_config(ModelConfig(**TINY_STUDENT), NUM_CLASSES)
    with torch.no_grad():  # 1x1 classifiers with zero weights and a bias: class 1 at every pixel
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.out_channels == NUM_CLASSES:
                module.weight.zero_()
                module.bias.zero_()
                module.bias[PREDICTED] = 10.0
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    torch.save(model.state_dict(), checkpoint / "model.pt")
    trained = trial.model_dump(mode="json")
    trained["data"]["synthetic"]["val_samples"] = VAL_IMAGES  # fewer forward passes on a busy CPU
    meta = {"num_classes": NUM_CLASSES, "arch": TINY_STUDENT["arch"], "iteration": 8, "config": trained}
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    return checkpoint


def val_share() -> float:
    """The share of PREDICTED in the val split's VAL_IMAGES masks."""
    options = {"image_size": 48, "num_classes": NUM_CLASSES, "seed": 0}
    return class_share(mask for _, mask in SyntheticShapes(VAL_IMAGES, split="val", **options))


def test_a_trial_checkpoint_is_evaluated_on_val_not_on_its_held_out_images(tmp_path):
    checkpoint = constant_checkpoint(tmp_path)

    result = evaluate_checkpoint(checkpoint, "synthetic")

    options = {"image_size": 48, "num_classes": NUM_CLASSES, "seed": 0}
    val = val_share()
    train = SyntheticShapes(64, split="train", **options)
    held_out = class_share(train[index][1] for index in (3, 17, 21, 44, 46, 47))  # seed 0's six of 64
    assert abs(val - held_out) > 0.5  # the two splits tell apart
    assert result["pixel_acc"] == pytest.approx(val, abs=1e-4)


def test_a_registered_model_is_downloaded_from_mlflow_and_evaluated(tmp_path):
    """`hwd-tune evaluate models:/name@alias`: the version's files come from the store; the same
    numbers as the folder they were registered from; an unknown alias names the ones that exist."""
    from typer.testing import CliRunner

    from hwd_tune.cli import app

    checkpoint = constant_checkpoint(tmp_path)
    uri = register_in_new_store(tmp_path / "store", checkpoint, TINY_STUDENT["arch"], "iter-8")
    source = f"models:/teacher-synthetic-{TINY_STUDENT['arch']}@iter-8"
    moved = checkpoint.rename(tmp_path / "moved")  # only the store's copy is left to read

    result = evaluate_model(source, "synthetic", tracking_uri=uri)

    assert result["pixel_acc"] == pytest.approx(val_share(), abs=1e-4)
    assert result == evaluate_checkpoint(moved, "synthetic")
    shown = CliRunner().invoke(app, ["evaluate", source, "--data", "synthetic", "--tracking-uri", uri])
    assert shown.exit_code == 0, shown.output
    assert f"pixel accuracy {result['pixel_acc']:.2f}" in shown.output
    wrong = CliRunner().invoke(app, ["evaluate", source.replace("iter-8", "iter-9"), "--data", "synthetic",
                                     "--tracking-uri", uri])  # fmt: skip
    assert wrong.exit_code == 2 and "iter-8" in wrong.output, wrong.output
