"""Small pieces shared by the backbones and heads: width scaling, conv-BN-ReLU, backbone outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor, nn

NormLayer = Callable[[int], nn.Module]  # e.g. nn.BatchNorm2d or nn.SyncBatchNorm


class BackboneFeatures(NamedTuple):
    """What a backbone hands to the heads.

    middle: [N, C3, h, w] layer3 output (input of the auxiliary FCN head), None for MobileNetV2
    last:   [N, C4, h, w] final stage output (input of the main head), h = H / 8
    """

    middle: Tensor | None
    last: Tensor


def scale_width(channels: int, width_multiplier: float) -> int:
    """`channels * width_multiplier` rounded, at least 1 (1.0 keeps the published widths)."""
    return max(1, round(channels * width_multiplier))


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    norm_layer: NormLayer,
    dilation: int = 1,
) -> nn.Sequential:
    """[conv (no bias), norm, ReLU] with 'same' padding; indices 0/1/2 match the authors' keys."""
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        norm_layer(out_channels),
        nn.ReLU(inplace=True),
    )


def init_backbone_weights(module: nn.Module) -> None:
    """He (fan-out) init for convolutions, weight 1 / bias 0 for norms, as the authors' backbones do."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)) and layer.affine:
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
