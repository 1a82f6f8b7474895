"""COCO-Stuff 164k: 171 contiguous classes, or the authors' 182 ids; pairing and errors."""

import pytest

from hwd_tune.data import COCOStuff, COCOStuff182, build_dataset, dataset_info
from tests.data.layouts import band_values, label_with_values, write_image, write_label

# PNG values (0-based COCO-Stuff ids) of the 11 thing ids that COCO never annotated
# (official ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91).
UNUSED = [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]

SAMPLES = {  # (folder, name) -> (red brightness, PNG values of the bands)
    ("train2017", "000000000009"): (50, [0, 12, 91, 255]),
    ("train2017", "000000000025"): (150, [181, 10, 92, 255]),
    ("val2017", "000000000139"): (240, [13, 0, 0, 180]),
}


def make_coco(root, samples=SAMPLES):
    for (folder, name), (brightness, values) in samples.items():
        write_image(root / "images" / folder / f"{name}.jpg", brightness)
        write_label(root / "annotations" / folder / f"{name}.png", label_with_values(values))


def reference_contiguous(value):
    """Train id of a PNG value: its rank among the annotated ids (plain loop)."""
    if value == 255:
        return -1
    rank = 0
    for candidate in range(value):
        if candidate not in UNUSED:
            rank += 1
    return rank


def test_contiguous_171_mapping_on_known_values(tmp_path):
    make_coco(tmp_path)
    train = COCOStuff(tmp_path, split="train")
    assert len(train) == 2 and len(COCOStuff(tmp_path, split="val")) == 1
    image, mask = train[0]
    assert abs(int(image[0].float().mean().round()) - 50) <= 2
    # person 0 -> 0, stop sign 12 -> 11, banner 91 -> 80, unlabeled 255 -> ignore
    assert band_values(mask, 4) == [0, 11, 80, -1]
    assert band_values(train[1][1], 4) == [170, 10, 81, -1]


def test_every_annotated_value_maps_to_its_rank(tmp_path):
    import numpy as np

    values = [v for v in range(182) if v not in UNUSED] + [255]
    label = np.array(values, dtype=np.uint8)[None].repeat(2, axis=0)
    write_image(tmp_path / "images/val2017/1.jpg", 9, height=2, width=len(values))
    write_label(tmp_path / "annotations/val2017/1.png", label)
    _, mask = COCOStuff(tmp_path, split="val")[0]
    assert mask[0].tolist() == [reference_contiguous(v) for v in values]
    assert mask[0, :-1].tolist() == list(range(171))


def test_authors_182_convention_keeps_the_png_value(tmp_path):
    make_coco(tmp_path, {("val2017", "1"): (9, [11, 181, 0, 255])})
    _, mask = build_dataset("cocostuff_182", root=str(tmp_path), split="val")[0]
    assert band_values(mask, 4) == [11, 181, 0, -1]
    with pytest.raises(ValueError, match=r"1\.png.*\[11\]"):
        COCOStuff(tmp_path, split="val")[0]  # 11 is never annotated: 1-based labels, say


def test_out_of_range_values_are_named(tmp_path):
    make_coco(tmp_path, {("val2017", "2"): (9, [0, 182, 200, 255])})
    with pytest.raises(ValueError, match=r"2\.png.*\[182, 200\]"):
        COCOStuff182(tmp_path, split="val")[0]


def test_info_and_class_names_without_files():
    info, authors = dataset_info("cocostuff"), dataset_info("cocostuff_182")
    assert (info.num_classes, len(info.class_names), info.ignore_index) == (171, 171, -1)
    assert (authors.num_classes, len(authors.class_names)) == (182, 182)
    assert info.class_names[0] == "person" and info.class_names[80] == "banner"
    assert info.class_names[170] == "wood" and authors.class_names[91] == "banner"
    unused = [i for i, name in enumerate(authors.class_names) if name.startswith("(unused)")]
    assert unused == UNUSED


def test_missing_annotations_and_missing_label_file(tmp_path):
    write_image(tmp_path / "images/train2017/1.jpg", 9)
    with pytest.raises(FileNotFoundError, match="(?s)annotations/train2017.*expected layout.*val2017"):
        COCOStuff(tmp_path)
    make_coco(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"without a label.*images/train2017/1\.jpg"):
        COCOStuff(tmp_path)
