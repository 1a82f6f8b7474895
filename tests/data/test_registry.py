"""Datasets by name: build_dataset, dataset_info, available_datasets and their argument errors."""

import pytest
import torch
from torchvision import tv_tensors

from hwd_tune.data import (
    ADE20K,
    SyntheticShapes,
    available_datasets,
    build_dataset,
    dataset_info,
    eval_transforms,
)
from tests.data.test_ade20k import make_ade

EXPECTED_CLASSES = {
    "ade20k": 150,
    "cityscapes": 19,
    "cocostuff": 171,
    "cocostuff_182": 182,
    "voc": 21,
    "synthetic": 6,  # config.SyntheticDataParams default
}


def test_every_dataset_is_registered_with_its_class_count():
    assert available_datasets() == sorted([*EXPECTED_CLASSES, "folder"])  # folder: classes from its root
    for name, num_classes in EXPECTED_CLASSES.items():
        info = dataset_info(name)
        assert info.num_classes == num_classes == len(info.class_names)
        assert info.ignore_index == -1


def test_build_dataset_reads_files_and_applies_transforms(tmp_path):
    make_ade(tmp_path)
    dataset = build_dataset("ade20k", root=str(tmp_path), split="val", transforms=eval_transforms())
    assert isinstance(dataset, ADE20K) and len(dataset) == 1
    image, mask = dataset[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32
    assert image.shape == (3, 40, 60)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64


def test_build_synthetic_takes_its_own_arguments():
    dataset = build_dataset("synthetic", split="val", num_samples=3, num_classes=9, image_size=32)
    assert isinstance(dataset, SyntheticShapes) and len(dataset) == 3 and dataset.split == "val"
    assert dataset_info("synthetic", num_classes=9).class_names == dataset.class_names


def test_bad_names_and_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*'ade20k'"):
        build_dataset("imagenet", root=str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dataset_info("nope")
    with pytest.raises(ValueError, match="'cityscapes' reads files: root is required"):
        build_dataset("cityscapes")
    with pytest.raises(ValueError, match="'synthetic' is generated, it takes no root"):
        build_dataset("synthetic", root="data", num_samples=2)
    with pytest.raises(ValueError, match="dataset 'voc'.*crop"):
        build_dataset("voc", root=str(tmp_path), crop=3)
    with pytest.raises(ValueError, match="dataset 'synthetic'.*num_samples"):
        build_dataset("synthetic")
    with pytest.raises(ValueError, match="dataset 'ade20k'.*num_classes"):
        dataset_info("ade20k", num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        dataset_info("synthetic", num_classes=1)
