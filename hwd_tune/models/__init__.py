"""The paper's segmentation networks (DeepLabV3 / PSPNet on ResNet-V1b, MobileNetV2) and checkpoints."""

from hwd_tune.models.checkpoint import LoadReport, load_weights
from hwd_tune.models.deployable import (
    ClassMapNetwork,
    DeployableStudent,
    class_maps,
    load_deployable,
    read_checkpoint_meta,
)
from hwd_tune.models.from_config import model_from_config
from hwd_tune.models.registry import (
    SegmentationModel,
    available_models,
    build_model,
    feature_channels,
)
from hwd_tune.models.teacher import freeze_teacher

__all__ = [
    "ClassMapNetwork",
    "DeployableStudent",
    "LoadReport",
    "SegmentationModel",
    "available_models",
    "build_model",
    "class_maps",
    "feature_channels",
    "freeze_teacher",
    "load_deployable",
    "load_weights",
    "model_from_config",
    "read_checkpoint_meta",
]
