"""Evaluating a checkpoint: always on the dataset's official val split, even for a checkpoint
whose training held images out and validated on them (a sweep trial's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from hwd_tune.config import ModelConfig
from hwd_tune.data import SyntheticShapes
from hwd_tune.sweep.config import trial_train_config
from tests.sweep.helpers import PAPER_POINT, tiny_sweep
from tests.trainables.helpers import TINY_STUDENT
from trainables.evaluation import evaluate_checkpoint
from trainables.loop import model_from_config

NUM_CLASSES, PREDICTED, VAL_IMAGES = 4, 1, 3


def class_share(masks) -> float:
    """Share (%) of the pixels labelled PREDICTED: the pixel accuracy of a model that predicts it everywhere."""
    labels = np.concatenate([np.asarray(mask).ravel() for mask in masks])
    return 100.0 * float(np.mean(labels == PREDICTED))


def test_a_trial_checkpoint_is_evaluated_on_val_not_on_its_held_out_images(tmp_path):
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
    meta = {"num_classes": NUM_CLASSES, "arch": TINY_STUDENT["arch"], "config": trained}
    (checkpoint / "meta.json").write_text(json.dumps(meta))

    result = evaluate_checkpoint(checkpoint, "synthetic")

    options = {"image_size": 48, "num_classes": NUM_CLASSES, "seed": 0}
    val = class_share(mask for _, mask in SyntheticShapes(VAL_IMAGES, split="val", **options))
    train = SyntheticShapes(64, split="train", **options)
    held_out = class_share(train[index][1] for index in (3, 17, 21, 44, 46, 47))  # seed 0's six of 64
    assert abs(val - held_out) > 0.5  # the two splits tell apart
    assert result["pixel_acc"] == pytest.approx(val, abs=1e-4)
