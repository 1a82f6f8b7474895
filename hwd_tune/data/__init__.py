"""Segmentation datasets (ADE20K, Cityscapes, COCO-Stuff 164k, Pascal VOC aug, your own folder,
synthetic shapes), their transforms, the held-out tuning split (`holdout_indices`) and the data
check. Importing the package registers every dataset for `build_dataset(name)`.

Samples are `(tv_tensors.Image [3, H, W], tv_tensors.Mask int64 [H, W])`, ignore = -1; images
are uint8 until a transform (`train_transforms()`, `eval_transforms()`) makes them float32.
"""

from hwd_tune.data.ade20k import ADE20K
from hwd_tune.data.check import DataProblems, DataReport
from hwd_tune.data.cityscapes import Cityscapes
from hwd_tune.data.coco_stuff import COCOStuff, COCOStuff182
from hwd_tune.data.folder import FolderDataset
from hwd_tune.data.folder_classes import FolderClasses, load_folder_classes
from hwd_tune.data.folder_masks import MaskFileError
from hwd_tune.data.holdout import holdout_count, holdout_indices, training_indices
from hwd_tune.data.registry import (
    DatasetInfo,
    available_datasets,
    build_dataset,
    dataset_info,
    register_dataset,
)
from hwd_tune.data.synthetic import SyntheticShapes
from hwd_tune.data.transforms import (
    NORMALIZATIONS,
    eval_transforms,
    normalization,
    train_transforms,
)
from hwd_tune.data.voc import VOCAug

__all__ = [
    "ADE20K",
    "NORMALIZATIONS",
    "COCOStuff",
    "COCOStuff182",
    "Cityscapes",
    "DataProblems",
    "DataReport",
    "DatasetInfo",
    "FolderClasses",
    "FolderDataset",
    "MaskFileError",
    "SyntheticShapes",
    "VOCAug",
    "available_datasets",
    "build_dataset",
    "dataset_info",
    "eval_transforms",
    "holdout_count",
    "holdout_indices",
    "load_folder_classes",
    "normalization",
    "register_dataset",
    "train_transforms",
    "training_indices",
]
