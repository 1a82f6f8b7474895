"""Datasets and transforms described by a `DataConfig` (the training loop's single entry point)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError
from torch.utils.data import Dataset, Subset

from hwd_tune.config import ConfigError, DataConfig, apply_overrides, format_validation_error, read_yaml
from hwd_tune.data.check import DataProblems, DataReport, check_dataset
from hwd_tune.data.holdout import holdout_indices, training_indices
from hwd_tune.data.registry import DatasetInfo, build_dataset, dataset_info
from hwd_tune.data.transforms import eval_transforms, normalization, train_transforms


def _source_arguments(data: DataConfig, split: str) -> dict[str, Any]:
    if data.name == "folder":
        return {"root": data.root, "classes": data.folder}
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
    """Class count and names of the configured dataset, without reading images or labels
    (a folder dataset's come from its classes.yaml and data.folder)."""
    if data.name == "synthetic":
        return dataset_info("synthetic", num_classes=data.synthetic.num_classes)
    if data.name == "folder":
        return dataset_info("folder", root=data.root, classes=data.folder)
    return dataset_info(data.name)


def _split_indices(data: DataConfig, num_images: int, *, held_out: bool) -> list[int]:
    """The held-out (or the remaining) indices of the training split under data.holdout."""
    holdout = data.holdout
    choose = holdout_indices if held_out else training_indices
    try:
        return choose(num_images, holdout.fraction, holdout.max_images, holdout.seed)
    except ValueError as error:
        raise ValueError(f"data.holdout of dataset {data.name!r} (training split): {error}") from None


def check_data(data: DataConfig, samples: int | None = None) -> DataReport:
    """The data check of both splits, reading `samples` masks of each (default data.check_samples; 0 = all)."""
    builders = {split: partial(_untransformed, data, split) for split in ("train", "val")}
    label = data.name if data.root is None else f"{data.name} at {data.root}"
    samples = data.check_samples if samples is None else samples
    return check_dataset(label, builders, partial(info_from_config, data), samples)


def _untransformed(data: DataConfig, split: str) -> Dataset:
    return build_dataset(data.name, split=split, **_source_arguments(data, split))


def training_set(data: DataConfig) -> tuple[Dataset, Any]:
    """(untransformed training dataset, training transforms): the stream applies the transforms
    itself so that augmentation is seeded by stream position. Held-out images are left out.

    A folder dataset is checked first (both splits, data.check_samples masks of each): a missing
    mask, a size mismatch or a stray label value raises DataProblems before training starts.
    """
    if data.name == "folder":
        report = check_data(data)
        if not report.ok:
            raise DataProblems(report.error_message())
    dataset = build_dataset(data.name, split="train", **_source_arguments(data, "train"))
    if data.holdout.fraction:
        dataset = Subset(dataset, _split_indices(data, len(dataset), held_out=False))
    transforms = train_transforms(data.crop_size, data.scale_range, **normalization(data.normalization))
    return dataset, transforms


def validation_set(data: DataConfig, *, normalised: bool = True) -> Dataset:
    """Validation dataset on whole images, normalised (or as stored, uint8, for pictures): the
    official val split, or the held-out training images when data.holdout.validate_on is "holdout"."""
    on_holdout = data.holdout.validate_on == "holdout"
    dataset = build_dataset(
        data.name,
        split="train" if on_holdout else "val",
        transforms=eval_transforms(**normalization(data.normalization)) if normalised else None,
        **_source_arguments(data, "train" if on_holdout else "val"),
    )
    if on_holdout:
        return Subset(dataset, _split_indices(data, len(dataset), held_out=True))
    return dataset


class HeldOutSamples(NamedTuple):
    """The held-out training samples by name, and how many images the training split has in all."""

    names: list[str]
    num_images: int


def held_out_samples(data: DataConfig) -> HeldOutSamples:
    """Names of the held-out samples (image paths relative to data.root, or `synthetic/train/<index>`),
    for logs; lists the split's files but reads no image."""
    if not data.holdout.fraction:
        raise ValueError(f"data.holdout.fraction is 0 for dataset {data.name!r}: no training image is held out")
    dataset = build_dataset(data.name, split="train", **_source_arguments(data, "train"))
    names = [
        _relative_name(dataset.sample_name(index), data.root)
        for index in _split_indices(data, len(dataset), held_out=True)
    ]
    return HeldOutSamples(names, len(dataset))


def _relative_name(name: str, root: str | None) -> str:
    """`name` relative to the dataset root when it lies under it (logs then hold no machine's paths)."""
    if root is None:
        return name
    try:
        return Path(name).relative_to(root).as_posix()
    except ValueError:
        return name


def data_config_from_file(path: str | Path, overrides: Sequence[str] = ()) -> DataConfig:
    """The `data:` section of a training YAML, or the `train.data:` section of a sweep YAML (a file
    with a `train:` mapping), with `--set` overrides; only that section is validated."""
    raw = apply_overrides(read_yaml(path), list(overrides))
    section = "data"
    if isinstance(raw.get("train"), dict) and "data" not in raw:
        raw, section = raw["train"], "train.data"
    data = raw.get("data") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {section}: expected a mapping, got {type(data).__name__}")
    try:
        return DataConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, f"{path} ({section})")) from None
