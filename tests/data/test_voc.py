"""Pascal VOC 2012 + SBD aug: list-file splits, 21 classes with 255 ignored, accepted roots."""

import pytest

from hwd_tune.data import VOCAug, dataset_info
from tests.data.layouts import band_values, label_with_values, write_image, write_label

SAMPLES = {  # id -> (red brightness, label values of the bands)
    "2007_000032": (60, [0, 15, 255, 20]),
    "2007_000039": (160, [1, 0, 7, 255]),
    "2008_000001": (230, [12, 12, 0, 3]),
}


def make_voc(voc2012, train_list="train_aug.txt", train_lines=None):
    for image_id, (brightness, values) in SAMPLES.items():
        write_image(voc2012 / "JPEGImages" / f"{image_id}.jpg", brightness)
        label = label_with_values(values)
        write_label(voc2012 / "SegmentationClassAug" / f"{image_id}.png", label, palette=True)
    lists = voc2012 / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / train_list).write_text("\n".join(train_lines or ["2007_000032", "2007_000039"]) + "\n")
    (lists / "val.txt").write_text("2008_000001\n")


def test_splits_follow_the_list_files_and_labels_map(tmp_path):
    make_voc(tmp_path / "VOC2012")
    train, val = VOCAug(tmp_path, split="train"), VOCAug(tmp_path, split="val")
    assert (len(train), len(val)) == (2, 1)
    image, mask = train[0]
    assert abs(int(image[0].float().mean().round()) - 60) <= 2
    assert band_values(mask, 4) == [0, 15, -1, 20]
    assert band_values(train[1][1], 4) == [1, 0, 7, -1]
    assert band_values(val[0][1], 4) == [12, 12, 0, 3]


def test_alternative_list_name_line_format_and_roots(tmp_path):
    lines = ["/JPEGImages/2008_000001.jpg /SegmentationClassAug/2008_000001.png"]
    make_voc(tmp_path / "VOCdevkit" / "VOC2012", train_list="trainaug.txt", train_lines=lines)
    for root in (tmp_path, tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2012"):
        train = VOCAug(root, split="train")
        assert len(train) == 1 and band_values(train[0][1], 4) == [12, 12, 0, 3]


def test_info_without_files():
    info = dataset_info("voc")
    assert (info.num_classes, len(info.class_names), info.ignore_index) == (21, 21, -1)
    assert info.class_names[0] == "background" and info.class_names[15] == "person"


def test_missing_list_file_and_label_are_named(tmp_path):
    make_voc(tmp_path / "VOC2012")
    (tmp_path / "VOC2012/ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="(?s)val.txt.*expected layout.*SegmentationClassAug"):
        VOCAug(tmp_path, split="val")
    (tmp_path / "VOC2012/SegmentationClassAug/2007_000039.png").unlink()
    with pytest.raises(FileNotFoundError, match="2007_000039.jpg has no label.*2007_000039.png"):
        VOCAug(tmp_path, split="train")


def test_missing_root_shows_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)missing directory.*VOC2012.*JPEGImages/"):
        VOCAug(tmp_path / "nowhere")


def test_values_21_to_254_are_rejected(tmp_path):
    make_voc(tmp_path / "VOC2012")
    label = label_with_values([21, 0, 254, 255])
    write_label(tmp_path / "VOC2012/SegmentationClassAug/2008_000001.png", label)
    with pytest.raises(ValueError, match=r"2008_000001\.png.*\[21, 254\]"):
        VOCAug(tmp_path, split="val")[0]
