"""Cityscapes (fine annotations): the 34 label ids mapped to the 19 standard train ids."""

from __future__ import annotations

from pathlib import Path

from hwd_tune.config import IGNORE_INDEX
from hwd_tune.data.class_names import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_NUM_LABEL_IDS,
)
from hwd_tune.data.files import (
    LabelledImageFiles,
    Transforms,
    check_split,
    lookup_table,
    pair_files,
    require_directory,
)
from hwd_tune.data.registry import register_dataset

CITYSCAPES_LAYOUT = """\
<root>/
├── leftImg8bit/
│   ├── train/<city>/<city>_<seq>_<frame>_leftImg8bit.png
│   └── val/<city>/...
└── gtFine/
    ├── train/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png   (label ids 0..33, 255)
    └── val/<city>/..."""

CITYSCAPES_SPLITS = {"train": "train", "val": "val"}

_ID_TO_TRAIN_ID = {
    **{label_id: IGNORE_INDEX for label_id in range(CITYSCAPES_NUM_LABEL_IDS)},
    **CITYSCAPES_ID_TO_TRAIN_ID,
    255: IGNORE_INDEX,  # license plate (id -1) as written into a uint8 PNG
}


@register_dataset("cityscapes")
class Cityscapes(LabelledImageFiles):
    """Cityscapes gtFine: label ids 0..33 -> 19 train ids (road 7 -> 0, car 26 -> 13), rest ignored."""

    class_names = CITYSCAPES_CLASSES
    label_table = lookup_table(_ID_TO_TRAIN_ID)

    def __init__(self, root: str | Path, *, split: str = "train", transforms: Transforms | None = None) -> None:
        folder = check_split(split, CITYSCAPES_SPLITS, "cityscapes")
        root = Path(root)
        image_dir = require_directory(root / "leftImg8bit" / folder, root, CITYSCAPES_LAYOUT)
        label_dir = require_directory(root / "gtFine" / folder, root, CITYSCAPES_LAYOUT)
        pairs = pair_files(
            image_dir,
            "_leftImg8bit.png",
            label_dir,
            "_gtFine_labelIds.png",
            root=root,
            layout=CITYSCAPES_LAYOUT,
        )
        super().__init__(pairs, transforms)
