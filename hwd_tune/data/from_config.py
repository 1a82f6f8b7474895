"""Datasets and transforms described by a `DataConfig` (the training loop's single entry point)."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from hwd_tune.config import DataConfig
from hwd_tune.data.registry import DatasetInfo, build_dataset, dataset_info
from hwd_tune.data.transforms import eval_transforms, normalization, train_transforms


def _source_arguments(data: DataConfig, split: str) -> dict[str, Any]:
    if data.name != "synthetic":
        return {"root": data.root}
    synthetic = data.synthetic
    return {
        "num_samples": synthetic.train_samples if split == "train" else synthetic.val_samples,
        "image_size": synthetic.image_size,
        "num_classes": synthetic.num_classes,
        "seed": synthetic.seed,
    }


def info_from_config(data: DataConfig) -> DatasetInfo:
    """Class count and names of the configured dataset, without reading files."""
    if data.name == "synthetic":
        return dataset_info("synthetic", num_classes=data.synthetic.num_classes)
    return dataset_info(data.name)


def training_set(data: DataConfig) -> tuple[Dataset, Any]:
    """(untransformed training dataset, training transforms): the stream applies the transforms
    itself so that augmentation is seeded by stream position."""
    dataset = build_dataset(data.name, split="train", **_source_arguments(data, "train"))
    transforms = train_transforms(data.crop_size, data.scale_range, **normalization(data.normalization))
    return dataset, transforms


def validation_set(data: DataConfig) -> Dataset:
    """Validation dataset on whole images, normalised."""
    return build_dataset(
        data.name,
        split="val",
        transforms=eval_transforms(**normalization(data.normalization)),
        **_source_arguments(data, "val"),
    )
