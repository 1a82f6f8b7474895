"""The data check on the other datasets: pixels per class against counts made here, the sampling."""

import numpy as np

from hwd_tune.config import DataConfig
from hwd_tune.data import build_dataset
from hwd_tune.data.check import sample_indices
from hwd_tune.data.from_config import check_data
from tests.data.layouts import label_with_values, write_label
from tests.data.test_ade20k import TRAIN, VAL, make_ade


def test_scan_reads_at_most_n_masks_spread_over_the_split():
    assert sample_indices(10, 0) == list(range(10)) and sample_indices(3, 5) == [0, 1, 2]
    assert sample_indices(10, 4) == [0, 3, 6, 9]
    assert sample_indices(2000, 200)[:3] == [0, 10, 20] and len(sample_indices(2000, 200)) == 200


def test_the_check_counts_the_synthetic_dataset_pixels():
    data = DataConfig.model_validate(
        {"synthetic": {"num_classes": 4, "image_size": 32, "train_samples": 6, "val_samples": 3}}
    )
    report = check_data(data, samples=4)
    assert report.ok and [(s.split, s.size, s.scanned) for s in report.splits] == [("train", 6, 4), ("val", 3, 3)]
    train_masks = [
        build_dataset("synthetic", split="train", num_samples=6, image_size=32, num_classes=4)[i][1]
        for i in (0, 2, 3, 5)
    ]
    expected = [sum(int((mask == k).sum()) for mask in train_masks) for k in range(4)]
    assert report.splits[0].class_pixels.tolist() == expected and sum(expected) == 4 * 32 * 32
    assert report.splits[0].ignored_pixels == 0 and int(report.splits[1].class_pixels.sum()) == 3 * 32 * 32


def test_the_check_counts_ade20k_pixels_and_names_a_label_outside_its_mapping(tmp_path):
    base = make_ade(tmp_path)
    data = DataConfig(name="ade20k", root=str(tmp_path))
    report = check_data(data)
    assert report.ok, report.error_message()
    for scan, samples in zip(report.splits, (TRAIN, VAL)):
        labels = [label_with_values(values) for _, values in samples.values()]
        expected = np.zeros(150, np.int64)
        for label in labels:
            for value in range(1, 151):
                expected[value - 1] += int((label == value).sum())
        assert scan.class_pixels.tolist() == expected.tolist()
        assert scan.ignored_pixels == sum(int((label == 0).sum()) for label in labels)
    write_label(base / "annotations" / "validation" / "ADE_val_00000001.png", label_with_values([151, 3]))
    problems = check_data(data).error_message()
    assert "label files the dataset cannot map" in problems and "ADE_val_00000001.png has values [151]" in problems
