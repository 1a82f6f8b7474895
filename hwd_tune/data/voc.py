"""Pascal VOC 2012 with the SBD augmented labels (SegmentationClassAug): 21 classes."""

from __future__ import annotations

from pathlib import Path

from hwd_tune.config import IGNORE_INDEX
from hwd_tune.data.class_names import VOC_CLASSES
from hwd_tune.data.files import (
    LabelledImageFiles,
    Transforms,
    check_split,
    layout_error,
    lookup_table,
    require_directory,
)
from hwd_tune.data.registry import register_dataset

VOC_LAYOUT = """\
<root>/   (root may also be VOCdevkit/ above VOC2012/, or VOC2012/ itself)
└── VOC2012/
    ├── JPEGImages/             2007_000032.jpg ...
    ├── SegmentationClassAug/   2007_000032.png ...   (0..20, 255 = ignore)
    └── ImageSets/Segmentation/
        ├── train_aug.txt       (or trainaug.txt) one id per line, e.g. 2007_000032
        └── val.txt             (or lines such as
                                /JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png)"""

# split -> list files tried in order
VOC_SPLITS = {"train": ("train_aug.txt", "trainaug.txt"), "val": ("val.txt",)}


def _find_voc2012(root: Path) -> Path:
    """The VOC2012 folder: root/VOC2012, root/VOCdevkit/VOC2012, or root itself."""
    for candidate in (root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if candidate.is_dir():
            return candidate
    if (root / "JPEGImages").is_dir():
        return root
    raise layout_error(f"missing directory {root / 'VOC2012'}", root, VOC_LAYOUT)


def _read_ids(list_file: Path) -> list[str]:
    """Image ids of a split list: the first token of each line, without folder and extension."""
    ids = []
    for line in list_file.read_text().splitlines():
        if line.strip():
            ids.append(Path(line.split()[0]).stem)
    return ids


@register_dataset("voc")
class VOCAug(LabelledImageFiles):
    """VOC 2012 + SBD: PNG values 0..20 are the train ids, 255 (object borders) is ignored."""

    class_names = VOC_CLASSES
    label_table = lookup_table({**{v: v for v in range(21)}, 255: IGNORE_INDEX})

    def __init__(self, root: str | Path, *, split: str = "train", transforms: Transforms | None = None) -> None:
        list_names = check_split(split, VOC_SPLITS, "voc")
        root = Path(root)
        base = _find_voc2012(root)
        image_dir = require_directory(base / "JPEGImages", root, VOC_LAYOUT)
        label_dir = require_directory(base / "SegmentationClassAug", root, VOC_LAYOUT)
        list_dir = require_directory(base / "ImageSets" / "Segmentation", root, VOC_LAYOUT)
        list_files = [list_dir / name for name in list_names if (list_dir / name).is_file()]
        if not list_files:
            raise layout_error(f"missing split list {list_dir / list_names[0]}", root, VOC_LAYOUT)
        pairs = []
        for image_id in _read_ids(list_files[0]):
            image_path, label_path = image_dir / f"{image_id}.jpg", label_dir / f"{image_id}.png"
            if not image_path.is_file():
                raise FileNotFoundError(f"{list_files[0]} lists {image_id!r} but {image_path} is missing")
            if not label_path.is_file():
                raise FileNotFoundError(f"image {image_path} has no label file: expected {label_path}")
            pairs.append((image_path, label_path))
        if not pairs:
            raise layout_error(f"split list {list_files[0]} is empty", root, VOC_LAYOUT)
        super().__init__(pairs, transforms)
