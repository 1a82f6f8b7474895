"""Dilated MobileNetV2 backbone (output stride 8, 320 channels), in the authors' key layout.

The authors wrap torchvision-style `features` in `net` (keys `pretrained.net.features.N...`)
and drop the last 1x1 conv to 1280 channels and the classifier. The last two downsampling
stages are replaced by dilation: block 7 (first 64-channel block) keeps stride 1 and dilation 1,
blocks 8-13 use dilation 2, block 14 (first 160-channel block) dilation 2, blocks 15-17
dilation 4 (zju-SWJ/HWD models/base_models/mobilenetv2.py, dilate_scale=8).
"""

from __future__ import annotations

from torch import Tensor, nn

from hwd_tune.models.common import BackboneFeatures, NormLayer, init_backbone_weights, scale_width

STEM_CHANNELS = 32
# (expansion t, output channels c, blocks n, first stride s) of the MobileNetV2 paper, Table 2
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
OUTPUT_STRIDE = 8


class InvertedResidual(nn.Module):
    """Expand 1x1 (skipped when t = 1), depthwise 3x3 (strided or dilated), project 1x1; ReLU6."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        dilation: int,
        expand_ratio: int,
        use_residual: bool,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [
                nn.Conv2d(in_channels, hidden, 1, bias=False),
                norm_layer(hidden),
                nn.ReLU6(inplace=True),
            ]
        layers += [
            nn.Conv2d(
                hidden,
                hidden,
                3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                groups=hidden,
                bias=False,
            ),
            norm_layer(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            norm_layer(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = use_residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2Trunk(nn.Module):
    """Holds `features` so the keys read `net.features.N...`, as in the authors' files."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class DilatedMobileNetV2(nn.Module):
    """forward: [N, 3, H, W] -> BackboneFeatures(middle=None, last=[N, 320, H/8, W/8])."""

    imagenet_key_prefix = "net."  # ImageNet files name the trunk's parameters `features.N...`
    # the ImageNet file's final 1x1 conv (features.18) and classifier, unused for segmentation
    imagenet_classifier_prefixes = ("features.18.", "classifier.")

    def __init__(self, *, width_multiplier: float = 1.0, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        in_channels = scale_width(STEM_CHANNELS, width_multiplier)
        blocks: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(3, in_channels, 3, stride=2, padding=1, bias=False),
                norm_layer(in_channels),
                nn.ReLU6(inplace=True),
            )
        ]
        current_stride, dilation = 2, 1
        for expand_ratio, channels, num_blocks, first_stride in INVERTED_RESIDUAL_SETTINGS:
            out_channels = scale_width(channels, width_multiplier)
            for index in range(num_blocks):
                nominal_stride = first_stride if index == 0 else 1
                stride, block_dilation = nominal_stride, dilation
                if nominal_stride == 2 and current_stride >= OUTPUT_STRIDE:
                    # trade the stride for dilation: this block keeps the old rate, later ones double it
                    stride, dilation = 1, dilation * 2
                else:
                    current_stride *= stride
                blocks.append(
                    InvertedResidual(
                        in_channels,
                        out_channels,
                        stride=stride,
                        dilation=block_dilation,
                        expand_ratio=expand_ratio,
                        use_residual=nominal_stride == 1 and in_channels == out_channels,
                        norm_layer=norm_layer,
                    )
                )
                in_channels = out_channels
        self.net = MobileNetV2Trunk(nn.Sequential(*blocks))
        self.middle_channels = None
        self.out_channels = in_channels
        init_backbone_weights(self)

    def forward(self, x: Tensor) -> BackboneFeatures:
        return BackboneFeatures(middle=None, last=self.net(x))


def mobilenetv2(*, width_multiplier: float = 1.0, norm_layer: NormLayer = nn.BatchNorm2d) -> DilatedMobileNetV2:
    """Dilated MobileNetV2: 320 output channels at output stride 8 (at width 1)."""
    return DilatedMobileNetV2(width_multiplier=width_multiplier, norm_layer=norm_layer)
