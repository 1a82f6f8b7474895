"""The paper's segmentation networks (DeepLabV3 / PSPNet on ResNet-V1b, MobileNetV2) and checkpoints."""

from hwd_tune.models.checkpoint import LoadReport, load_weights
from hwd_tune.models.registry import (
    SegmentationModel,
    available_models,
    build_model,
    feature_channels,
)
from hwd_tune.models.teacher import freeze_teacher

__all__ = [
    "LoadReport",
    "SegmentationModel",
    "available_models",
    "build_model",
    "feature_channels",
    "freeze_teacher",
    "load_weights",
]
