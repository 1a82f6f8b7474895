"""The paper's segmentation networks by name: `build_model("deeplabv3_resnet18", num_classes=150)`.

Every model is a `SegmentationModel` whose submodules are named as in the authors' code
(`pretrained` = backbone, `head`, `auxlayer`), so `model.state_dict()` has the same keys as
their released checkpoints and files load in both directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from hwd_tune.models.common import NormLayer, scale_width
from hwd_tune.models.heads import DeepLabV3Head, FCNHead, PSPHead
from hwd_tune.models.mobilenet import mobilenetv2
from hwd_tune.models.resnet import resnet18, resnet50, resnet101
from hwd_tune.outputs import SegOutput

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "mobilenetv2": mobilenetv2,
}
HEADS: dict[str, type[nn.Module]] = {"deeplabv3": DeepLabV3Head, "pspnet": PSPHead}


@dataclass(frozen=True)
class ModelSpec:
    """How to assemble one named model (widths at width_multiplier = 1)."""

    backbone: str
    head: str
    head_width: int  # channels of SegOutput.features
    has_aux_head: bool  # the authors' model has an auxiliary FCN head on layer3


# Head widths from the authors' code: DeepLabV3 128 on ResNet-18 (512 ch) and MobileNetV2
# (320 ch), 256 on 2048-ch backbones; PSPNet 128 on ResNet-18 and MobileNetV2. Their
# MobileNetV2 models have no auxiliary head.
MODEL_SPECS: dict[str, ModelSpec] = {
    "deeplabv3_resnet18": ModelSpec("resnet18", "deeplabv3", 128, True),
    "deeplabv3_resnet50": ModelSpec("resnet50", "deeplabv3", 256, True),
    "deeplabv3_resnet101": ModelSpec("resnet101", "deeplabv3", 256, True),
    "deeplabv3_mobilenetv2": ModelSpec("mobilenetv2", "deeplabv3", 128, False),
    "pspnet_resnet18": ModelSpec("resnet18", "pspnet", 128, True),
    "pspnet_mobilenetv2": ModelSpec("mobilenetv2", "pspnet", 128, False),
}


class SegmentationModel(nn.Module):
    """Backbone `pretrained`, main head `head`, optional auxiliary FCN head `auxlayer` on layer3.

    forward: images [N, 3, H, W] -> SegOutput(logits [N, K, H/8, W/8], aux_logits
    [N, K, H/8, W/8] or None, features [N, F, H/8, W/8]).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, auxlayer: nn.Module | None) -> None:
        super().__init__()
        self.pretrained = backbone
        self.head = head
        self.auxlayer = auxlayer

    @property
    def backbone_key_prefix(self) -> str:
        """Prefix that maps a key of the authors' ImageNet backbone file to a key of this model."""
        return "pretrained." + self.pretrained.imagenet_key_prefix

    @property
    def imagenet_classifier_prefixes(self) -> tuple[str, ...]:
        """Keys of an ImageNet backbone file that belong to its classifier and are not loaded."""
        return self.pretrained.imagenet_classifier_prefixes

    def forward(self, images: Tensor) -> SegOutput:
        stages = self.pretrained(images)
        logits, features = self.head(stages.last)
        aux_logits = self.auxlayer(stages.middle) if self.auxlayer is not None else None
        return SegOutput(logits=logits, aux_logits=aux_logits, features=features)


def available_models() -> list[str]:
    """Names accepted by `build_model`, sorted."""
    return sorted(MODEL_SPECS)


def _spec(name: str) -> ModelSpec:
    if name not in MODEL_SPECS:
        raise ValueError(f"unknown model {name!r}; expected one of {available_models()}")
    return MODEL_SPECS[name]


def _check_width_multiplier(width_multiplier: float) -> None:
    valid = isinstance(width_multiplier, (int, float)) and not isinstance(width_multiplier, bool)
    if not (valid and math.isfinite(width_multiplier) and width_multiplier > 0):
        raise ValueError(f"width_multiplier must be a finite number > 0, got {width_multiplier!r}")


def feature_channels(name: str, width_multiplier: float = 1.0) -> int:
    """Channels F of `SegOutput.features` of model `name`, known before the model is built."""
    _check_width_multiplier(width_multiplier)
    return scale_width(_spec(name).head_width, width_multiplier)


def build_model(
    name: str,
    num_classes: int,
    aux: bool = True,
    *,
    width_multiplier: float = 1.0,
    norm_layer: NormLayer | None = None,
) -> SegmentationModel:
    """Builds the named network with `num_classes` outputs.

    aux: add the auxiliary FCN head where the authors' model has one (ignored for MobileNetV2,
    which has none). width_multiplier scales backbone and head widths (1.0 = published widths,
    the only one the authors' checkpoints fit). norm_layer defaults to nn.BatchNorm2d.
    """
    spec = _spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    _check_width_multiplier(width_multiplier)
    if norm_layer is None:
        norm_layer = nn.BatchNorm2d
    elif not callable(norm_layer):
        raise ValueError(f"norm_layer must be a callable like nn.BatchNorm2d, got {norm_layer!r}")

    backbone = BACKBONES[spec.backbone](width_multiplier=width_multiplier, norm_layer=norm_layer)
    head_width = scale_width(spec.head_width, width_multiplier)
    head = HEADS[spec.head](backbone.out_channels, head_width, num_classes, norm_layer)
    auxlayer = None
    if aux and spec.has_aux_head:
        auxlayer = FCNHead(backbone.middle_channels, num_classes, norm_layer)
    return SegmentationModel(backbone, head, auxlayer)
