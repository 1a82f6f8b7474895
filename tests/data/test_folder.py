"""Folder datasets written here in both layouts: samples equal the files, classes from classes.yaml
or the config, RGB masks through a palette, and one test per problem the data check must name."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision import tv_tensors

from hwd_tune.config import DataConfig
from hwd_tune.data import DataProblems, build_dataset, dataset_info
from hwd_tune.data.from_config import check_data, info_from_config, training_set, validation_set
from tests.data.layouts import (
    FOLDER_CLASSES,
    FOLDER_SAMPLES,
    HEIGHT,
    WIDTH,
    folder_mask,
    write_folder_dataset,
    write_label,
)

PALETTE = [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
IGNORE_COLOUR = [255, 255, 255]


def folder_config(root, **fields) -> DataConfig:
    return DataConfig.model_validate({"name": "folder", "root": str(root), **fields})


def expected_ids(mask: np.ndarray, ignore_value: int = 255) -> list[list[int]]:
    """Class ids as a plain loop reads them: the ignore value becomes -1, the rest stays."""
    return [[-1 if int(v) == ignore_value else int(v) for v in row] for row in mask]


@pytest.mark.parametrize("layout", ["images/masks", "mmseg"])
def test_both_layouts_give_the_written_images_and_masks(tmp_path, layout):
    written = write_folder_dataset(tmp_path, layout=layout)
    for split, keys in FOLDER_SAMPLES.items():
        dataset = build_dataset("folder", root=str(tmp_path), split=split)
        assert len(dataset) == len(keys)
        for index, key in enumerate(sorted(keys)):  # pairs are sorted by relative path
            pixels, mask = written[(split, key)]
            image, ids = dataset[index]
            assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
            assert isinstance(ids, tv_tensors.Mask) and ids.dtype == torch.int64
            assert image.shape == (3, HEIGHT, WIDTH) and ids.shape == (HEIGHT, WIDTH)
            difference = np.abs(image.permute(1, 2, 0).numpy().astype(int) - pixels.astype(int))
            assert difference.max() <= (0 if keys[key] == ".png" else 4)  # JPEG: a few levels at most
            assert ids.tolist() == expected_ids(mask)


def test_no_layout_or_two_layouts_show_the_expected_tree(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing directory .*images \(or .*img_dir\)") as error:
        build_dataset("folder", root=str(tmp_path))
    assert "expected layout" in str(error.value) and "ann_dir" in str(error.value)
    write_folder_dataset(tmp_path)
    (tmp_path / "img_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="both images/ \\+ masks/ and img_dir/ \\+ ann_dir/"):
        build_dataset("folder", root=str(tmp_path))


def test_two_images_of_one_sample_are_named(tmp_path):
    write_folder_dataset(tmp_path)
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "images" / "train" / "a.jpg")  # beside a.png
    with pytest.raises(ValueError, match=r"two files for one sample: .*train/a\.jpg and .*train/a\.png"):
        build_dataset("folder", root=str(tmp_path))


def test_classes_come_from_classes_yaml_through_the_config(tmp_path):
    write_folder_dataset(tmp_path)
    info = info_from_config(folder_config(tmp_path))
    assert (info.num_classes, info.class_names, info.ignore_index) == (3, FOLDER_CLASSES, -1)
    assert dataset_info("folder", root=str(tmp_path)) == info


def test_training_and_validation_sets_from_the_config(tmp_path):
    written = write_folder_dataset(tmp_path)
    data = folder_config(tmp_path, crop_size=16, scale_range=(1.0, 1.0))
    dataset, transforms = training_set(data)
    assert len(dataset) == len(FOLDER_SAMPLES["train"])
    image, mask = transforms(*dataset[0])
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 16, 16) and tuple(mask.shape) == (16, 16)
    val = validation_set(data)
    image, mask = val[1]  # "f", a JPEG
    pixels, written_mask = written[("val", "f")]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    restored = (image * std[:, None, None] + mean[:, None, None]) * 255
    assert (restored.permute(1, 2, 0) - torch.from_numpy(pixels).float()).abs().max() <= 4.5
    assert mask.tolist() == expected_ids(written_mask)


def test_the_config_block_overrides_classes_yaml_field_by_field(tmp_path):
    write_folder_dataset(tmp_path)  # classes.yaml: 3 classes, ignore 255
    mask = folder_mask(7)
    mask[1] = 9  # the config says 9 means "not labelled"; 255 is then an ordinary (invalid) value
    mask[0] = 9
    write_label(tmp_path / "masks" / "train" / "a.png", mask)
    data = folder_config(tmp_path, folder={"ignore_index": 9})
    assert info_from_config(data).class_names == FOLDER_CLASSES  # names still from the file
    dataset = build_dataset("folder", root=str(tmp_path), classes=data.folder)
    assert dataset[0][1].tolist() == expected_ids(mask, ignore_value=9)
    report = check_data(data)  # the other masks' 255 is no longer the ignore value
    assert [problem.found for problem in report.problems] == [{255}]

    renamed = folder_config(tmp_path, folder={"classes": ["sky", "land", "sea"], "ignore_index": 9})
    assert info_from_config(renamed).class_names == ("sky", "land", "sea")


def test_the_config_block_alone_is_enough(tmp_path):
    write_folder_dataset(tmp_path, classes_yaml=None)
    data = folder_config(tmp_path, folder={"classes": list(FOLDER_CLASSES)})
    assert info_from_config(data).class_names == FOLDER_CLASSES
    assert check_data(data).ok


def test_without_classes_the_error_says_where_to_write_them(tmp_path):
    write_folder_dataset(tmp_path, classes_yaml=None)
    with pytest.raises(ValueError, match=r"no classes\.yaml and no data\.folder") as error:
        info_from_config(folder_config(tmp_path))
    assert str(tmp_path / "classes.yaml") in str(error.value) and "ignore_index: 255" in str(error.value)


@pytest.mark.parametrize(
    ("classes_yaml", "expected"),
    [
        ("classes: [a, b]\nignore_index: 1\n", "ignore_index 1 is a class id"),
        ("classes: [a, b]\npalette: [[0, 0, 0]]\n", "'palette' has 1 colours but there are 2 classes"),
        ("classes: [a, b]\npalette: [[0, 0, 0], [0, 0, 300]]\n", r"palette\.1\.2: Input should be less than"),
        ("classes: [a, a]\n", r"repeated: \['a'\]"),
        ("clases: [a, b]\n", "clases: Extra inputs are not permitted"),
        ("ignore_index: 255\n", "'classes' is required"),
    ],
)
def test_a_bad_classes_yaml_is_named_with_the_field(tmp_path, classes_yaml, expected):
    write_folder_dataset(tmp_path, classes_yaml=classes_yaml)
    with pytest.raises(ValueError, match=expected) as error:
        info_from_config(folder_config(tmp_path))
    assert "classes.yaml" in str(error.value)


def test_class_names_such_as_no_and_on_stay_strings(tmp_path):
    write_folder_dataset(tmp_path, classes_yaml="classes: [no, on, off]\n")
    assert info_from_config(folder_config(tmp_path)).class_names == ("no", "on", "off")


def test_a_folder_block_needs_name_folder():
    with pytest.raises(ValueError, match="data.folder describes a 'folder' dataset, but data.name is 'synthetic'"):
        DataConfig.model_validate({"folder": {"classes": ["a", "b"]}})


def write_rgb_mask(path, mask: np.ndarray, colours: dict[int, list[int]]) -> None:
    """An RGB PNG painting each class id (and 255) with its colour, pixel by pixel."""
    rgb = np.zeros((*mask.shape, 3), np.uint8)
    for row in range(mask.shape[0]):
        for column in range(mask.shape[1]):
            rgb[row, column] = colours[int(mask[row, column])]
    Image.fromarray(rgb).save(path)


def test_rgb_masks_become_class_ids_by_exact_palette_match(tmp_path):
    written = write_folder_dataset(tmp_path)
    colours = {**dict(enumerate(PALETTE)), 255: IGNORE_COLOUR}
    for split, keys in FOLDER_SAMPLES.items():
        for key in keys:
            write_rgb_mask(tmp_path / "masks" / split / f"{key}.png", written[(split, key)][1], colours)
    (tmp_path / "classes.yaml").write_text(
        yaml.safe_dump({"classes": list(FOLDER_CLASSES), "palette": PALETTE, "ignore_color": IGNORE_COLOUR})
    )
    data = folder_config(tmp_path)
    dataset, _ = training_set(data)  # the check passes: every colour is known
    for index, key in enumerate(sorted(FOLDER_SAMPLES["train"])):
        assert dataset[index][1].tolist() == expected_ids(written[("train", key)][1])


def test_class_pixels_of_the_check_equal_a_count_of_the_written_masks(tmp_path):
    written = write_folder_dataset(tmp_path)
    report = check_data(folder_config(tmp_path))
    assert report.ok, report.error_message()
    for scan in report.splits:
        masks = [mask for (split, _), (_, mask) in written.items() if split == scan.split]
        expected = [sum(int((mask == k).sum()) for mask in masks) for k in range(3)]
        assert (scan.size, scan.scanned) == (len(masks), len(masks))
        assert scan.class_pixels.tolist() == expected
        assert scan.ignored_pixels == sum(int((mask == 255).sum()) for mask in masks)


# --- one test per problem: each names the file and what is wrong, before training starts ------------


def test_images_without_masks_and_masks_without_images_are_counted_and_named(tmp_path):
    write_folder_dataset(tmp_path)
    for number in range(7):
        Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "images" / "train" / f"orphan{number}.jpg")
    write_label(tmp_path / "masks" / "val" / "lonely.png", folder_mask(0))
    with pytest.raises(DataProblems) as error:
        training_set(folder_config(tmp_path))
    message = str(error.value)
    assert (
        f"train split: 7 image(s) without a mask (expected <name>.png under {tmp_path / 'masks' / 'train'})" in message
    )
    assert str(tmp_path / "images" / "train" / "orphan4.jpg") in message
    assert "orphan5.jpg" not in message  # the first five are named, the count says the rest
    assert "val split: 1 mask(s) without an image" in message and "lonely.png" in message
    with pytest.raises(FileNotFoundError, match="7 image.*without a mask"):
        build_dataset("folder", root=str(tmp_path))  # and the dataset itself refuses them


def test_a_mask_whose_size_differs_from_its_image_is_named(tmp_path):
    write_folder_dataset(tmp_path)
    write_label(tmp_path / "masks" / "val" / "e.png", folder_mask(0, height=HEIGHT, width=WIDTH - 2))
    with pytest.raises(DataProblems) as error:
        training_set(folder_config(tmp_path))
    message = str(error.value)
    assert "height and width differ" in message
    assert f"{tmp_path / 'masks' / 'val' / 'e.png'} is {WIDTH - 2}x{HEIGHT}, image e.png is {WIDTH}x{HEIGHT}" in message
    with pytest.raises(ValueError, match="expected the same height and width"):
        validation_set(folder_config(tmp_path))[0]  # and when read during training


def test_label_values_outside_the_classes_are_reported_with_values_files_and_the_sampling(tmp_path):
    samples = {"train": {f"s{number:02d}": ".png" for number in range(10)}, "val": {"v": ".png"}}
    write_folder_dataset(tmp_path, samples=samples)
    for name, values in (("s00", (3, 7)), ("s03", (200,)), ("s05", (9,))):  # s05 is not among 4 sampled
        mask = folder_mask(1)
        mask[1, : len(values)] = values
        write_label(tmp_path / "masks" / "train" / f"{name}.png", mask)
    with pytest.raises(DataProblems) as error:
        training_set(folder_config(tmp_path, check_samples=4))  # reads s00, s03, s06, s09
    message = str(error.value)
    assert "label values outside the class ids 0..2 that are not the ignore value 255: found [3, 7, 200]" in message
    assert "2 file(s)" in message and "s00.png (values [3, 7])" in message and "s03.png (values [200])" in message
    assert "s05" not in message
    assert "read 4 of 10 train masks and 1 of 1 val masks (evenly spaced" in message
    all_read = check_data(folder_config(tmp_path), samples=0)
    assert "s05.png (values [9])" in all_read.error_message()


def test_rgb_masks_without_a_palette_ask_for_one_or_a_conversion(tmp_path):
    written = write_folder_dataset(tmp_path)
    write_rgb_mask(
        tmp_path / "masks" / "train" / "b.png",
        written[("train", "b")][1],
        {0: [0, 0, 0], 1: [9, 9, 9], 2: [5, 5, 5], 255: [255, 255, 255]},
    )
    with pytest.raises(DataProblems) as error:
        training_set(folder_config(tmp_path))
    message = str(error.value)
    assert "RGB masks but no palette: add 'palette'" in message and "convert the masks" in message
    assert f"1 file(s): {tmp_path / 'masks' / 'train' / 'b.png'}" in message


def test_rgb_colours_missing_from_the_palette_are_named(tmp_path):
    written = write_folder_dataset(tmp_path)
    colours = {**dict(enumerate(PALETTE)), 255: [1, 2, 3]}  # 255 painted in a colour of no class
    write_rgb_mask(tmp_path / "masks" / "val" / "f.png", written[("val", "f")][1], colours)
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump({"classes": list(FOLDER_CLASSES), "palette": PALETTE}))
    with pytest.raises(DataProblems) as error:
        training_set(folder_config(tmp_path))
    message = str(error.value)
    assert "colours that are not in the palette: found [[1, 2, 3]]" in message
    assert f"{tmp_path / 'masks' / 'val' / 'f.png'} (colours [[1, 2, 3]])" in message
