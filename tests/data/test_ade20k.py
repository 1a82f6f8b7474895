"""ADE20K on a tiny tree written here: pairing, the 0 -> ignore / v -> v - 1 mapping, errors."""

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from hwd_tune.data import ADE20K, dataset_info
from tests.data.layouts import HEIGHT, WIDTH, band_values, label_with_values, write_image, write_label

# sample name -> (red brightness of its image, label values of its bands)
TRAIN = {"ADE_train_00000001": (40, [0, 5, 150, 1]), "ADE_train_00000002": (200, [12, 0, 77, 3])}
VAL = {"ADE_val_00000001": (120, [150, 149, 0, 2])}


def make_ade(root, train=TRAIN, val=VAL):
    base = root / "ADEChallengeData2016"
    for folder, samples in (("training", train), ("validation", val)):
        for name, (brightness, values) in samples.items():
            write_image(base / "images" / folder / f"{name}.jpg", brightness)
            write_label(base / "annotations" / folder / f"{name}.png", label_with_values(values))
    return base


def test_samples_pair_images_with_their_mapped_labels(tmp_path):
    make_ade(tmp_path)
    train, val = ADE20K(tmp_path, split="train"), ADE20K(tmp_path, split="val")
    assert (len(train), len(val)) == (2, 1)
    for dataset, samples in ((train, TRAIN), (val, VAL)):
        for index, (brightness, values) in enumerate(samples[name] for name in sorted(samples)):
            image, mask = dataset[index]
            assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
            assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64
            assert image.shape == (3, HEIGHT, WIDTH) and mask.shape == (HEIGHT, WIDTH)
            assert abs(int(image[0].float().mean().round()) - brightness) <= 2  # the right image
            expected = [-1 if v == 0 else v - 1 for v in values]
            assert band_values(mask, len(values)) == expected


def test_known_values_map_other_to_ignore_and_shift_the_rest(tmp_path):
    make_ade(tmp_path)
    _, mask = ADE20K(tmp_path)[0]  # bands 0, 5, 150, 1
    assert band_values(mask, 4) == [-1, 4, 149, 0]
    assert set(mask.unique().tolist()) == {-1, 4, 149, 0}


def test_root_may_point_at_the_challenge_folder_itself(tmp_path):
    base = make_ade(tmp_path)
    assert len(ADE20K(base, split="val")) == 1


def test_info_without_files():
    info = dataset_info("ade20k")
    assert (info.num_classes, len(info.class_names), info.ignore_index) == (150, 150, -1)
    assert info.class_names[0] == "wall" and info.class_names[149] == "flag"
    assert len(set(info.class_names)) == 150


def test_missing_directory_shows_the_expected_layout(tmp_path):
    base = make_ade(tmp_path)
    for path in sorted((base / "annotations" / "validation").iterdir()):
        path.unlink()
    (base / "annotations" / "validation").rmdir()
    with pytest.raises(FileNotFoundError) as error:
        ADE20K(tmp_path, split="val")
    message = str(error.value)
    assert "missing directory" in message and "annotations/validation" in message
    assert "expected layout" in message and "images/" in message and "training/" in message


def test_empty_root_names_the_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="ADEChallengeData2016/images/training"):
        ADE20K(tmp_path)


def test_image_without_label_and_label_without_image_are_named(tmp_path):
    base = make_ade(tmp_path)
    (base / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="without a label.*ADE_train_00000002.jpg"):
        ADE20K(tmp_path)
    write_label(base / "annotations" / "training" / "ADE_train_00000002.png", label_with_values([1]))
    (base / "images" / "training" / "ADE_train_00000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="without an image.*ADE_train_00000001.png"):
        ADE20K(tmp_path)


def test_values_outside_the_mapping_name_file_and_values(tmp_path):
    make_ade(tmp_path, val={"ADE_val_00000001": (120, [3, 151, 200, 0])})
    dataset = ADE20K(tmp_path, split="val")
    with pytest.raises(ValueError, match=r"ADE_val_00000001\.png.*\[151, 200\]"):
        dataset[0]


def test_image_and_label_of_different_sizes_are_rejected(tmp_path):
    base = make_ade(tmp_path)
    wider = np.ones((HEIGHT, WIDTH + 2), np.uint8)
    write_label(base / "annotations" / "validation" / "ADE_val_00000001.png", wider)
    with pytest.raises(ValueError, match="ADE_val_00000001.*same height and width"):
        ADE20K(tmp_path, split="val")[0]


def test_unknown_split_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown split 'test'.*'train', 'val'"):
        ADE20K(tmp_path, split="test")
