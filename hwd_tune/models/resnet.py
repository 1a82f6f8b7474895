"""Dilated ResNet-V1b backbones with the deep stem (ResNet-18/50/101), output stride 8.

Module names follow the authors' `resnetv1b.py` (zju-SWJ/HWD, winycg/CIRKD) so that their
ImageNet files (`resnet18-imagenet.pth`, keys `conv1.weight`, `layer1.0.downsample.0.weight`, ...)
and full-model files (the same keys under `pretrained.`) load unchanged. torchvision's ResNet
cannot be used: its BasicBlock refuses dilation and it has no deep stem.
"""

from __future__ import annotations

from torch import Tensor, nn

from hwd_tune.models.common import BackboneFeatures, NormLayer, init_backbone_weights, scale_width

# (3x3 dilation of the block's first conv, of its second conv) for the first block of a layer
# with the given dilation; later blocks use the layer's dilation throughout. This is the
# authors' convention (layer3.0 of ResNet-18: 1 then 2; layer4.0: 2 then 4). A Bottleneck has a
# single 3x3 conv, which takes the first value.
FIRST_BLOCK_DILATIONS = {1: (1, 1), 2: (1, 2), 4: (2, 4)}

# (planes, stride, dilation) of layer1..layer4: strides 4 -> 8 then dilation keeps 1/8.
LAYER_SETTINGS = ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; [N, in, H, W] -> [N, planes, H/stride, W/stride]."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int,
        dilations: tuple[int, int],
        downsample: nn.Module | None,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride, dilations[0])
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilations[1])
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided/dilated), 1x1 expand x4, with a residual."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int,
        dilations: tuple[int, int],
        downsample: nn.Module | None,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilations[0])
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DilatedResNet(nn.Module):
    """ResNet-V1b with a deep stem (3x3 convs 64/64/128), dilated to output stride 8.

    forward: [N, 3, H, W] -> BackboneFeatures(middle = layer3 [N, 256*e, H/8, W/8],
    last = layer4 [N, 512*e, H/8, W/8]) with e = block expansion (1 or 4).
    """

    imagenet_key_prefix = ""  # ImageNet files name this module's parameters without a prefix
    imagenet_classifier_prefixes = ("fc.",)  # present in ImageNet files, unused for segmentation

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks_per_layer: tuple[int, int, int, int],
        *,
        width_multiplier: float = 1.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        stem_width, stem_out = scale_width(64, width_multiplier), scale_width(128, width_multiplier)
        self.conv1 = _conv3x3(3, stem_width, stride=2)
        self.bn1 = norm_layer(stem_width)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(stem_width, stem_width)
        self.bn2 = norm_layer(stem_width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = _conv3x3(stem_width, stem_out)
        self.bn3 = norm_layer(stem_out)
        self.relu3 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        in_channels = stem_out
        stages = []
        for (planes, stride, dilation), num_blocks in zip(LAYER_SETTINGS, blocks_per_layer):
            planes = scale_width(planes, width_multiplier)
            stage, in_channels = _make_layer(block, in_channels, planes, num_blocks, stride, dilation, norm_layer)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.middle_channels = scale_width(256, width_multiplier) * block.expansion
        self.out_channels = in_channels
        init_backbone_weights(self)

    def forward(self, x: Tensor) -> BackboneFeatures:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.layer2(self.layer1(self.maxpool(x)))
        middle = self.layer3(x)
        return BackboneFeatures(middle=middle, last=self.layer4(middle))


def _make_layer(
    block: type[BasicBlock] | type[Bottleneck],
    in_channels: int,
    planes: int,
    num_blocks: int,
    stride: int,
    dilation: int,
    norm_layer: NormLayer,
) -> tuple[nn.Sequential, int]:
    """One ResNet stage; a 1x1 projection (`downsample`) whenever shape or width changes."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            norm_layer(out_channels),
        )
    blocks = [
        block(
            in_channels,
            planes,
            stride=stride,
            dilations=FIRST_BLOCK_DILATIONS[dilation],
            downsample=downsample,
            norm_layer=norm_layer,
        )
    ]
    for _ in range(1, num_blocks):
        blocks.append(
            block(
                out_channels,
                planes,
                stride=1,
                dilations=(dilation, dilation),
                downsample=None,
                norm_layer=norm_layer,
            )
        )
    return nn.Sequential(*blocks), out_channels


def resnet18(*, width_multiplier: float = 1.0, norm_layer: NormLayer = nn.BatchNorm2d) -> DilatedResNet:
    """Deep-stem dilated ResNet-18: 512 output channels (at width 1)."""
    return DilatedResNet(BasicBlock, (2, 2, 2, 2), width_multiplier=width_multiplier, norm_layer=norm_layer)


def resnet50(*, width_multiplier: float = 1.0, norm_layer: NormLayer = nn.BatchNorm2d) -> DilatedResNet:
    """Deep-stem dilated ResNet-50: 2048 output channels (at width 1)."""
    return DilatedResNet(Bottleneck, (3, 4, 6, 3), width_multiplier=width_multiplier, norm_layer=norm_layer)


def resnet101(*, width_multiplier: float = 1.0, norm_layer: NormLayer = nn.BatchNorm2d) -> DilatedResNet:
    """Deep-stem dilated ResNet-101: 2048 output channels (at width 1)."""
    return DilatedResNet(Bottleneck, (3, 4, 23, 3), width_multiplier=width_multiplier, norm_layer=norm_layer)
