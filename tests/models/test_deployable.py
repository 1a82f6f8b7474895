"""A checkpoint folder as a deployable network: the class maps are evaluation's predictions, and a
folder that is not a checkpoint is refused with its path."""

from __future__ import annotations

import json

import pytest
import torch

from hwd_tune.models import class_maps, load_deployable
from tests.deploy.helpers import NUM_CLASSES, reference_class_maps, write_student


def test_class_maps_are_the_argmax_of_the_upsampled_logits_evaluation_scores(tmp_path):
    checkpoint = write_student(tmp_path / "student")
    student = load_deployable(checkpoint)
    images = torch.randn(2, 3, 40, 56)
    logits, classes = student.network(images)
    assert logits.shape == (2, NUM_CLASSES, 40, 56) and classes.dtype == torch.int64
    assert torch.equal(classes, reference_class_maps(checkpoint, images))
    assert torch.equal(class_maps(student, images), classes)
    assert not student.network.training  # eval mode: BatchNorm's running statistics
    assert (student.num_classes, student.normalization, student.dataset) == (NUM_CLASSES, "imagenet", "synthetic")


def test_a_folder_that_is_not_a_checkpoint_is_refused_with_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no meta\.json"):
        load_deployable(tmp_path)
    checkpoint = write_student(tmp_path / "student")
    meta = json.loads((checkpoint / "meta.json").read_text())
    (checkpoint / "meta.json").write_text(json.dumps({**meta, "num_classes": 0}))
    with pytest.raises(ValueError, match=r"meta\.json: num_classes must be an int >= 1, got 0"):
        load_deployable(checkpoint)
    (checkpoint / "meta.json").write_text(json.dumps({**meta, "num_classes": 5}))  # weights of 4 classes
    with pytest.raises(ValueError, match="does not fit the model"):
        load_deployable(checkpoint)
