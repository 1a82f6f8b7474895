"""Your own data: images and masks in a folder (two common layouts), classes in classes.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torchvision import tv_tensors

from hwd_tune.config import IGNORE_INDEX, FolderClassesConfig
from hwd_tune.data.files import LabelledImageFiles, Transforms, check_split, layout_error
from hwd_tune.data.folder_classes import FolderClasses, load_folder_classes
from hwd_tune.data.folder_masks import read_class_ids
from hwd_tune.data.registry import DatasetInfo, register_dataset

FOLDER_LAYOUT = """\
<root>/
├── classes.yaml          classes: [background, road, car]  (ignore_index: 255, palette: optional)
├── images/               (or img_dir/, as mmsegmentation writes it)
│   ├── train/  a.jpg b.png ...    (.jpg, .jpeg or .png; subfolders allowed)
│   └── val/    c.jpg ...
└── masks/                (or ann_dir/ beside img_dir/)
    ├── train/  a.png b.png ...    (same relative path and stem as the image; class ids, or RGB + palette)
    └── val/    c.png ..."""

# (images folder, masks folder) of each layout, tried in this order
FOLDER_LAYOUTS = {"images/masks": ("images", "masks"), "mmseg": ("img_dir", "ann_dir")}
FOLDER_SPLITS = {"train": "train", "val": "val"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = ".png"
NAMED_FILES = 5  # unmatched files named in an error (and the count of all)


def detect_layout(root: Path) -> tuple[str, str]:
    """(images folder, masks folder) names of the layout found under root; an error shows both layouts."""
    if not root.is_dir():
        raise layout_error(f"folder dataset root {root} is not a directory", root, FOLDER_LAYOUT)
    present = [dirs for dirs in FOLDER_LAYOUTS.values() if any((root / name).is_dir() for name in dirs)]
    if len(present) > 1:
        raise layout_error(
            f"{root} holds both images/ + masks/ and img_dir/ + ann_dir/; keep one layout", root, FOLDER_LAYOUT
        )
    if not present:
        raise layout_error(f"missing directory {root / 'images'} (or {root / 'img_dir'})", root, FOLDER_LAYOUT)
    return present[0]


def index_files(directory: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """{relative path without suffix: path} of the files under `directory` ending in one of `suffixes`
    (any letter case); two files with the same key (a.jpg and a.png) are an error naming both."""
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        if path.suffix.lower() not in suffixes or path.name.startswith(".") or not path.is_file():
            continue
        key = path.relative_to(directory).with_suffix("").as_posix()
        if key in found:
            raise ValueError(f"two files for one sample: {found[key]} and {path}; keep one")
        found[key] = path
    return found


def pair_images_and_masks(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by relative path and stem; unmatched files on either side are
    one error that names the first few of each and counts them all."""
    images = index_files(image_dir, IMAGE_SUFFIXES)
    masks = index_files(mask_dir, (MASK_SUFFIX,))
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {image_dir}")
    without_mask = sorted(set(images) - set(masks))
    without_image = sorted(set(masks) - set(images))
    problems = []
    if without_mask:
        named = ", ".join(str(images[key]) for key in without_mask[:NAMED_FILES])
        problems.append(
            f"{len(without_mask)} image(s) without a mask (expected <name>{MASK_SUFFIX} under {mask_dir}): {named}"
        )
    if without_image:
        named = ", ".join(str(masks[key]) for key in without_image[:NAMED_FILES])
        problems.append(
            f"{len(without_image)} mask(s) without an image "
            f"(expected <name>{'/'.join(IMAGE_SUFFIXES)} under {image_dir}): {named}"
        )
    if problems:
        raise FileNotFoundError("; ".join(problems))
    return [(images[key], masks[key]) for key in sorted(images)]


@register_dataset("folder")
class FolderDataset(LabelledImageFiles):
    """Images and masks under `root` in the images/masks or mmseg layout; classes from classes.yaml
    (overridden by `classes`, the config's data.folder). Mask value k is class k, the ignore value -1."""

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        transforms: Transforms | None = None,
        classes: FolderClassesConfig | Mapping[str, Any] | None = None,
    ) -> None:
        folder = check_split(split, FOLDER_SPLITS, "folder")
        root = Path(root)
        image_name, mask_name = detect_layout(root)
        image_dir, mask_dir = root / image_name / folder, root / mask_name / folder
        for directory in (image_dir, mask_dir):
            if not directory.is_dir():
                raise layout_error(f"missing directory {directory}", root, FOLDER_LAYOUT)
        self.classes: FolderClasses = load_folder_classes(root, classes)
        self.class_names = self.classes.names
        self.root = root
        super().__init__(pair_images_and_masks(image_dir, mask_dir), transforms)

    @classmethod
    def info(  # type: ignore[override]
        cls, root: str | Path | None = None, classes: FolderClassesConfig | Mapping[str, Any] | None = None
    ) -> DatasetInfo:
        """Class count and names from <root>/classes.yaml and `classes`; reads no image or mask."""
        if root is None:
            raise ValueError("dataset 'folder' reads its classes from <root>/classes.yaml: data.root is required")
        resolved = load_folder_classes(root, classes)
        return DatasetInfo(resolved.num_classes, resolved.names, IGNORE_INDEX)

    def load_label(self, index: int) -> tv_tensors.Mask:
        """Class ids [H, W] int64 of sample `index` (ignore = -1), before any transform."""
        return tv_tensors.Mask(torch.from_numpy(read_class_ids(self.pairs[index][1], self.classes)))
