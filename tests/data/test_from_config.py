"""Datasets from a DataConfig: the training and validation sets with and without held-out images,
the held-out samples' names (synthetic indices, file paths under the root), and the data section
of a training or a sweep file (for `hwd-tune data check`)."""

from __future__ import annotations

import pytest
import torch

from hwd_tune.config import DataConfig
from hwd_tune.data import ADE20K, SyntheticShapes
from hwd_tune.data.from_config import data_config_from_file, held_out_samples, training_set, validation_set
from tests.data.test_ade20k import make_ade

SYNTHETIC = {"num_classes": 4, "image_size": 32, "train_samples": 20, "val_samples": 3, "seed": 5}
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])  # ImageNet, RGB


def synthetic_data(**holdout) -> DataConfig:
    return DataConfig(name="synthetic", synthetic=SYNTHETIC, holdout=holdout)


def raw_split(split: str, num_samples: int) -> SyntheticShapes:
    """The synthetic split built directly, untransformed: the reference the sets are compared with."""
    options = {key: value for key, value in SYNTHETIC.items() if key not in ("train_samples", "val_samples")}
    return SyntheticShapes(num_samples, split=split, **options)


def image_bytes(sample) -> bytes:
    image, mask = sample
    return image.numpy().tobytes() + mask.numpy().tobytes()


def test_without_holdout_the_whole_training_split_trains_and_val_validates():
    data = synthetic_data()
    dataset, transforms = training_set(data)
    assert len(dataset) == 20 and transforms is not None
    assert [image_bytes(dataset[index]) for index in range(20)] == [
        image_bytes(sample) for sample in raw_split("train", 20)
    ]
    validation = validation_set(data)
    reference = raw_split("val", 3)
    assert len(validation) == 3
    for (image, mask), (raw_image, raw_mask) in zip(validation, reference):
        assert torch.equal(mask, raw_mask)
        expected = (raw_image.float() / 255 - MEAN[:, None, None]) / STD[:, None, None]
        torch.testing.assert_close(image, expected)


def test_held_out_images_leave_the_training_set_and_become_the_validation_set():
    data = synthetic_data(fraction=0.25, seed=3, validate_on="holdout")
    raw = [image_bytes(sample) for sample in raw_split("train", 20)]
    generator = torch.Generator().manual_seed(3)
    held_out = sorted(torch.randperm(20, generator=generator)[:5].tolist())  # round(0.25 x 20) = 5

    dataset, _ = training_set(data)
    trained = [image_bytes(dataset[index]) for index in range(len(dataset))]
    assert sorted(trained) == sorted(raw[index] for index in range(20) if index not in held_out)

    validation = validation_set(data)
    reference = raw_split("train", 20)
    assert len(validation) == len(held_out) == 5
    for (image, mask), index in zip(validation, held_out):  # in index order, eval transforms only
        raw_image, raw_mask = reference[index]
        assert torch.equal(mask, raw_mask)
        torch.testing.assert_close(image, (raw_image.float() / 255 - MEAN[:, None, None]) / STD[:, None, None])


def test_holdout_can_shrink_training_and_still_validate_on_val():
    data = synthetic_data(fraction=0.5, seed=0, validate_on="val")
    assert len(training_set(data)[0]) == 10
    validation = validation_set(data)
    assert len(validation) == 3
    for (_, mask), (_, raw_mask) in zip(validation, raw_split("val", 3)):
        assert torch.equal(mask, raw_mask)


def test_held_out_synthetic_samples_are_named_by_split_and_index():
    samples = held_out_samples(synthetic_data(fraction=0.25, seed=3))
    generator = torch.Generator().manual_seed(3)
    expected = sorted(torch.randperm(20, generator=generator)[:5].tolist())
    assert samples.names == [f"synthetic/train/{index}" for index in expected]
    assert samples.num_images == 20


def test_held_out_files_are_named_by_their_path_under_the_root(tmp_path):
    train = {f"ADE_train_{index:08d}": (10 * index, [index % 3 + 1, 0]) for index in range(1, 9)}
    make_ade(tmp_path, train=train)
    data = DataConfig(name="ade20k", root=str(tmp_path), holdout={"fraction": 0.25, "seed": 1})
    samples = held_out_samples(data)
    files = sorted(f"ADEChallengeData2016/images/training/{name}.jpg" for name in train)
    generator = torch.Generator().manual_seed(1)
    expected = [files[index] for index in sorted(torch.randperm(8, generator=generator)[:2].tolist())]
    assert (samples.names, samples.num_images) == (expected, 8)
    assert ADE20K(tmp_path).sample_name(0) == f"{tmp_path.as_posix()}/{files[0]}"  # the dataset's own name
    dataset, _ = training_set(data)
    assert len(dataset) == 6


def test_too_small_a_training_split_is_named_with_the_dataset():
    data = DataConfig(name="synthetic", synthetic={**SYNTHETIC, "train_samples": 1}, holdout={"fraction": 0.5})
    expected = r"data\.holdout of dataset 'synthetic' \(training split\): too few training images .*num_images=1"
    with pytest.raises(ValueError, match=expected):
        training_set(data)
    with pytest.raises(ValueError, match=r"data\.holdout\.fraction is 0 for dataset 'synthetic'"):
        held_out_samples(synthetic_data())


def test_the_data_section_is_read_from_a_training_or_a_sweep_file(tmp_path):
    train = tmp_path / "train.yaml"
    train.write_text("data: {name: folder, root: /d}\nteacher: {arch: x}\n")
    assert data_config_from_file(train).root == "/d"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: s\ntrain:\n  data: {name: folder, root: /d}\nsearch: {num_samples: 2}\n")
    assert data_config_from_file(sweep, ["train.data.root=/e"]).root == "/e"
    sweep.write_text("train:\n  data: {name: folder, check_samples: -1}\n")
    with pytest.raises(ValueError, match=r"sweep\.yaml \(train\.data\): check_samples: Input should be greater"):
        data_config_from_file(sweep)
