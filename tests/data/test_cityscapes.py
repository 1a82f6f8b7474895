"""Cityscapes on a tiny tree written here: the 34 label ids -> 19 train ids, pairing, errors."""

import numpy as np
import pytest
import torch

from hwd_tune.data import Cityscapes, dataset_info
from tests.data.layouts import band_values, label_with_values, write_image, write_label

# The standard Cityscapes trainId of each label id, transcribed from its labels.py; -1 = ignored.
REFERENCE_TRAIN_ID = {
    0: -1, 1: -1, 2: -1, 3: -1, 4: -1, 5: -1, 6: -1, 7: 0, 8: 1, 9: -1, 10: -1, 11: 2, 12: 3,
    13: 4, 14: -1, 15: -1, 16: -1, 17: 5, 18: -1, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 29: -1, 30: -1, 31: 16, 32: 17, 33: 18, 255: -1,
}  # fmt: skip

SAMPLES = {  # (split, city, frame) -> (red brightness, label ids of the bands)
    ("train", "aachen", "aachen_000000_000019"): (30, [7, 26, 0, 255]),
    ("train", "bochum", "bochum_000000_000313"): (220, [33, 24, 11, 1]),
    ("val", "frankfurt", "frankfurt_000000_000294"): (130, [8, 21, 23, 5]),
}


def make_cityscapes(root, samples=SAMPLES):
    for (split, city, frame), (brightness, ids) in samples.items():
        write_image(root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", brightness)
        label = label_with_values(ids)
        write_label(root / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png", label)
        # the other gtFine files of the release must not be taken for labels
        write_label(root / "gtFine" / split / city / f"{frame}_gtFine_instanceIds.png", label)
        write_image(root / "gtFine" / split / city / f"{frame}_gtFine_color.png", 0)


def test_pairs_and_known_ids(tmp_path):
    make_cityscapes(tmp_path)
    train, val = Cityscapes(tmp_path, split="train"), Cityscapes(tmp_path, split="val")
    assert (len(train), len(val)) == (2, 1)
    image, mask = train[0]  # aachen: road, car, unlabeled, license plate
    assert mask.dtype == torch.int64 and image.dtype == torch.uint8
    assert image[0].float().mean().round() == 30
    assert band_values(mask, 4) == [0, 13, -1, -1]
    image, mask = train[1]
    assert image[0].float().mean().round() == 220
    assert band_values(mask, 4) == [18, 11, 2, -1]
    assert band_values(val[0][1], 4) == [1, 8, 10, -1]


def test_every_label_id_maps_as_the_reference_table(tmp_path):
    ids = sorted(REFERENCE_TRAIN_ID)
    label = np.array(ids, dtype=np.uint8).repeat(2)[None].repeat(3, axis=0)  # [3, 70]
    write_image(tmp_path / "leftImg8bit/val/lindau/lindau_1_leftImg8bit.png", 9, height=3, width=70)
    write_label(tmp_path / "gtFine/val/lindau/lindau_1_gtFine_labelIds.png", label)
    _, mask = Cityscapes(tmp_path, split="val")[0]
    assert mask[0, ::2].tolist() == [REFERENCE_TRAIN_ID[i] for i in ids]


def test_info_without_files():
    info = dataset_info("cityscapes")
    assert (info.num_classes, len(info.class_names), info.ignore_index) == (19, 19, -1)
    assert info.class_names[0] == "road" and info.class_names[13] == "car"


def test_missing_gtfine_shows_layout(tmp_path):
    write_image(tmp_path / "leftImg8bit/train/aachen/aachen_1_leftImg8bit.png", 9)
    with pytest.raises(FileNotFoundError) as error:
        Cityscapes(tmp_path)
    message = str(error.value)
    assert "missing directory" in message and "gtFine/train" in message
    assert "_gtFine_labelIds.png" in message and "leftImg8bit/" in message


def test_missing_label_file_is_named(tmp_path):
    make_cityscapes(tmp_path)
    (tmp_path / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="bochum_000000_000313_leftImg8bit.png"):
        Cityscapes(tmp_path)


def test_ids_above_33_other_than_255_are_rejected(tmp_path):
    make_cityscapes(tmp_path, {("val", "ulm", "ulm_1"): (10, [7, 34, 254, 255])})
    with pytest.raises(ValueError, match=r"ulm_1_gtFine_labelIds\.png.*\[34, 254\]"):
        Cityscapes(tmp_path, split="val")[0]
