"""COCO-Stuff 164k: 171 annotated classes (contiguous train ids), or the authors' 182 ids.

The PNGs hold the 0-based ids 0..181 and 255 = unlabeled. "cocostuff" maps the 171 ids that
are annotated to 0..170. "cocostuff_182" keeps the PNG value as the train id, as the authors'
code does (its models have 182 outputs, the eleven never-annotated ones included): use it with
their checkpoints.
"""

from __future__ import annotations

from pathlib import Path

from hwd_tune.config import IGNORE_INDEX
from hwd_tune.data.class_names import (
    COCO_STUFF_171_CLASSES,
    COCO_STUFF_182_CLASSES,
    COCO_STUFF_UNUSED_IDS,
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

COCO_STUFF_LAYOUT = """\
<root>/
├── images/
│   ├── train2017/   000000000009.jpg ...
│   └── val2017/     000000000139.jpg ...
└── annotations/
    ├── train2017/   000000000009.png ...   (ids 0..181, 255 = unlabeled)
    └── val2017/     000000000139.png ..."""

COCO_STUFF_SPLITS = {"train": "train2017", "val": "val2017"}

_USED_IDS = [v for v in range(len(COCO_STUFF_182_CLASSES)) if v not in COCO_STUFF_UNUSED_IDS]


@register_dataset("cocostuff")
class COCOStuff(LabelledImageFiles):
    """COCO-Stuff 164k with the 171 annotated ids mapped to 0..170 (255 ignored).

    A never-annotated id in a file is an error: it usually means 1-based labels.
    """

    class_names = COCO_STUFF_171_CLASSES
    label_table = lookup_table({**{v: k for k, v in enumerate(_USED_IDS)}, 255: IGNORE_INDEX})

    def __init__(self, root: str | Path, *, split: str = "train", transforms: Transforms | None = None) -> None:
        folder = check_split(split, COCO_STUFF_SPLITS, "cocostuff")
        root = Path(root)
        image_dir = require_directory(root / "images" / folder, root, COCO_STUFF_LAYOUT)
        label_dir = require_directory(root / "annotations" / folder, root, COCO_STUFF_LAYOUT)
        pairs = pair_files(image_dir, ".jpg", label_dir, ".png", root=root, layout=COCO_STUFF_LAYOUT)
        super().__init__(pairs, transforms)


@register_dataset("cocostuff_182")
class COCOStuff182(COCOStuff):
    """COCO-Stuff 164k in the authors' convention: train id = PNG value 0..181, 255 ignored."""

    class_names = COCO_STUFF_182_CLASSES
    label_table = lookup_table({**{v: v for v in range(182)}, 255: IGNORE_INDEX})
