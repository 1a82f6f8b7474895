"""ADE20K (SceneParsing, ADEChallengeData2016): 150 classes; label 0 ("other") is ignored."""

from __future__ import annotations

from pathlib import Path

from hwd_tune.config import IGNORE_INDEX
from hwd_tune.data.class_names import ADE20K_CLASSES
from hwd_tune.data.files import (
    LabelledImageFiles,
    Transforms,
    check_split,
    lookup_table,
    pair_files,
    require_directory,
)
from hwd_tune.data.registry import register_dataset

ADE20K_LAYOUT = """\
ADEChallengeData2016/            (root may also be this folder itself)
├── images/
│   ├── training/    ADE_train_00000001.jpg ...
│   └── validation/  ADE_val_00000001.jpg ...
└── annotations/
    ├── training/    ADE_train_00000001.png ...   (0 = other, 1..150 = classes)
    └── validation/  ADE_val_00000001.png ..."""

ADE20K_SPLITS = {"train": "training", "val": "validation"}


@register_dataset("ade20k")
class ADE20K(LabelledImageFiles):
    """ADE20K scene parsing; PNG value v in 1..150 is train id v - 1, 0 is ignored (-1)."""

    class_names = ADE20K_CLASSES
    label_table = lookup_table({0: IGNORE_INDEX, **{v: v - 1 for v in range(1, 151)}})

    def __init__(self, root: str | Path, *, split: str = "train", transforms: Transforms | None = None) -> None:
        folder = check_split(split, ADE20K_SPLITS, "ade20k")
        root = Path(root)
        base = root / "ADEChallengeData2016"
        if not base.is_dir() and ((root / "images").is_dir() or (root / "annotations").is_dir()):
            base = root
        image_dir = require_directory(base / "images" / folder, root, ADE20K_LAYOUT)
        label_dir = require_directory(base / "annotations" / folder, root, ADE20K_LAYOUT)
        pairs = pair_files(image_dir, ".jpg", label_dir, ".png", root=root, layout=ADE20K_LAYOUT)
        super().__init__(pairs, transforms)
