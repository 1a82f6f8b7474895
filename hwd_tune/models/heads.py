"""Segmentation heads in the authors' key layout: DeepLabV3 (ASPP), PSPNet (pyramid pooling), FCN (aux).

Main heads return `(logits [N, K, h, w], features [N, F, h, w])`, the features being the last
activations before the 1x1 classifier (what the authors' heads return as their second value).
Dropout rates and widths are the authors' (zju-SWJ/HWD models/deeplabv3.py, pspnet.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hwd_tune.models.common import NormLayer, conv_bn_relu

ASPP_RATES = (12, 24, 36)  # DeepLabV3 atrous rates at output stride 8
PYRAMID_BINS = (1, 2, 3, 6)  # PSPNet pooled grid sizes
ASPP_DROPOUT = 0.5  # after the ASPP projection
HEAD_DROPOUT = 0.1  # before every 1x1 classifier


class ASPPConv(nn.Module):
    """One atrous 3x3 branch: `block` = [conv(rate), norm, ReLU]."""

    def __init__(self, in_channels: int, out_channels: int, rate: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.block = conv_bn_relu(in_channels, out_channels, 3, dilation=rate, norm_layer=norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ASPPPooling(nn.Module):
    """Image-level branch: global average pool, 1x1 conv, norm, ReLU, broadcast back to [h, w]."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.gap = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), *conv_bn_relu(in_channels, out_channels, 1, norm_layer=norm_layer)
        )

    def forward(self, x: Tensor) -> Tensor:
        # upsampling a 1x1 map (bilinear, align_corners=True in the authors' code) is a broadcast
        return self.gap(x).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three atrous 3x3, image pooling; concat, 1x1 project."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.b0 = conv_bn_relu(in_channels, out_channels, 1, norm_layer=norm_layer)
        self.b1 = ASPPConv(in_channels, out_channels, ASPP_RATES[0], norm_layer)
        self.b2 = ASPPConv(in_channels, out_channels, ASPP_RATES[1], norm_layer)
        self.b3 = ASPPConv(in_channels, out_channels, ASPP_RATES[2], norm_layer)
        self.b4 = ASPPPooling(in_channels, out_channels, norm_layer)
        self.project = nn.Sequential(
            *conv_bn_relu(5 * out_channels, out_channels, 1, norm_layer=norm_layer), nn.Dropout(ASPP_DROPOUT)
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.b0(x), self.b1(x), self.b2(x), self.b3(x), self.b4(x)]
        return self.project(torch.cat(branches, dim=1))


class DeepLabV3Head(nn.Module):
    """ASPP, then `block` = [3x3 conv, norm, ReLU, dropout, 1x1 classifier].

    Returns (logits, features), the features being the input of the 1x1 classifier.
    """

    def __init__(self, in_channels: int, width: int, num_classes: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, width, norm_layer)
        self.block = nn.Sequential(
            *conv_bn_relu(width, width, 3, norm_layer=norm_layer),
            nn.Dropout(HEAD_DROPOUT),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.aspp(x)
        for layer in self.block[:-1]:
            features = layer(features)
        return self.block[-1](features), features


class PyramidPooling(nn.Module):
    """Input concatenated with four pooled-and-upsampled 1x1 branches of width in/4 (bins 1, 2, 3, 6)."""

    def __init__(self, in_channels: int, norm_layer: NormLayer) -> None:
        super().__init__()
        branch_width = max(1, in_channels // 4)
        self.conv1 = conv_bn_relu(in_channels, branch_width, 1, norm_layer=norm_layer)
        self.conv2 = conv_bn_relu(in_channels, branch_width, 1, norm_layer=norm_layer)
        self.conv3 = conv_bn_relu(in_channels, branch_width, 1, norm_layer=norm_layer)
        self.conv4 = conv_bn_relu(in_channels, branch_width, 1, norm_layer=norm_layer)
        self.out_channels = in_channels + 4 * branch_width

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(conv(F.adaptive_avg_pool2d(x, bins)), size, mode="bilinear", align_corners=True)
            for conv, bins in zip((self.conv1, self.conv2, self.conv3, self.conv4), PYRAMID_BINS)
        ]
        return torch.cat([x, *pooled], dim=1)


class PSPHead(nn.Module):
    """Pyramid pooling, `block` = [3x3 conv, norm, ReLU, dropout], then `classifier` (1x1)."""

    def __init__(self, in_channels: int, width: int, num_classes: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.psp = PyramidPooling(in_channels, norm_layer)
        self.block = nn.Sequential(
            *conv_bn_relu(self.psp.out_channels, width, 3, norm_layer=norm_layer), nn.Dropout(HEAD_DROPOUT)
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.block(self.psp(x))
        return self.classifier(features), features


class FCNHead(nn.Module):
    """Auxiliary head on layer3: `block` = [3x3 conv to in/4, norm, ReLU, dropout, 1x1 classifier]."""

    def __init__(self, in_channels: int, num_classes: int, norm_layer: NormLayer) -> None:
        super().__init__()
        inner = max(1, in_channels // 4)
        self.block = nn.Sequential(
            *conv_bn_relu(in_channels, inner, 3, norm_layer=norm_layer),
            nn.Dropout(HEAD_DROPOUT),
            nn.Conv2d(inner, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)
