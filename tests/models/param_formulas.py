"""Parameter counts of the authors' layers by hand (weights + biases, BN affine; buffers excluded)."""


def conv(in_channels, out_channels, kernel, bias=False, groups=1):
    return out_channels * (in_channels // groups) * kernel * kernel + (out_channels if bias else 0)


def bn(channels):
    return 2 * channels


def resnet_v1s(block, blocks_per_layer):
    """Deep stem 3x3 convs 3->64->64->128, then 4 layers of planes 64/128/256/512."""
    total = conv(3, 64, 3) + bn(64) + conv(64, 64, 3) + bn(64) + conv(64, 128, 3) + bn(128)
    in_channels = 128
    for planes, num_blocks in zip((64, 128, 256, 512), blocks_per_layer):
        for index in range(num_blocks):
            if block == "basic":
                out = planes
                total += conv(in_channels, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            else:
                out = 4 * planes
                total += conv(in_channels, planes, 1) + bn(planes) + conv(planes, planes, 3) + bn(planes)
                total += conv(planes, out, 1) + bn(out)
            if index == 0:  # every first block projects: the stem gives 128 channels, not 64 / 256
                total += conv(in_channels, out, 1) + bn(out)
            in_channels = out
    return total


# (expansion, output channels, blocks)
MOBILENETV2_SETTINGS = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]


def mobilenetv2():
    total = conv(3, 32, 3) + bn(32)
    in_channels = 32
    for expansion, out, num_blocks in MOBILENETV2_SETTINGS:
        for _ in range(num_blocks):
            hidden = in_channels * expansion
            if expansion != 1:
                total += conv(in_channels, hidden, 1) + bn(hidden)
            total += conv(hidden, hidden, 3, groups=hidden) + bn(hidden) + conv(hidden, out, 1) + bn(out)
            in_channels = out
    return total


def deeplabv3_head(in_channels, width, num_classes):
    branches = 2 * (conv(in_channels, width, 1) + bn(width)) + 3 * (conv(in_channels, width, 3) + bn(width))
    project = conv(5 * width, width, 1) + bn(width)
    return branches + project + conv(width, width, 3) + bn(width) + conv(width, num_classes, 1, bias=True)


def pspnet_head(in_channels, width, num_classes):
    pyramid = 4 * (conv(in_channels, in_channels // 4, 1) + bn(in_channels // 4))
    return pyramid + conv(2 * in_channels, width, 3) + bn(width) + conv(width, num_classes, 1, bias=True)


def fcn_head(in_channels, num_classes):
    inner = in_channels // 4
    return conv(in_channels, inner, 3) + bn(inner) + conv(inner, num_classes, 1, bias=True)


def total(name, num_classes, aux=True):
    """Parameters of model `name` (with its aux head when it has one and aux=True)."""
    backbone, head, head_in, width, aux_in = {
        "deeplabv3_resnet18": (resnet_v1s("basic", (2, 2, 2, 2)), deeplabv3_head, 512, 128, 256),
        "deeplabv3_resnet50": (resnet_v1s("bottleneck", (3, 4, 6, 3)), deeplabv3_head, 2048, 256, 1024),
        "deeplabv3_resnet101": (resnet_v1s("bottleneck", (3, 4, 23, 3)), deeplabv3_head, 2048, 256, 1024),
        "deeplabv3_mobilenetv2": (mobilenetv2(), deeplabv3_head, 320, 128, None),
        "pspnet_resnet18": (resnet_v1s("basic", (2, 2, 2, 2)), pspnet_head, 512, 128, 256),
        "pspnet_mobilenetv2": (mobilenetv2(), pspnet_head, 320, 128, None),
    }[name]
    count = backbone + head(head_in, width, num_classes)
    if aux and aux_in is not None:
        count += fcn_head(aux_in, num_classes)
    return count
