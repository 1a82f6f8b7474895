"""Independent functional forwards (F.conv2d / F.batch_norm on a state_dict) of the authors' networks.

Written from the layer definitions in zju-SWJ/HWD (resnetv1b.py, mobilenetv2.py, deeplabv3.py,
pspnet.py), with every stride and dilation spelled out here rather than taken from our modules.
"""

import torch
import torch.nn.functional as F

# (layer, block, stride, dilation of conv1, dilation of conv2, has downsample) of the dilated ResNet-18
RESNET18_BLOCKS = [
    ("layer1", 0, 1, 1, 1, True),
    ("layer1", 1, 1, 1, 1, False),
    ("layer2", 0, 2, 1, 1, True),
    ("layer2", 1, 1, 1, 1, False),
    ("layer3", 0, 1, 1, 2, True),
    ("layer3", 1, 1, 2, 2, False),
    ("layer4", 0, 1, 2, 4, True),
    ("layer4", 1, 1, 4, 4, False),
]
# MobileNetV2 features 1..17: (expansion, stride, depthwise dilation, residual)
MOBILENETV2_BLOCKS = (
    [(1, 1, 1, False)]
    + [(6, 2, 1, False), (6, 1, 1, True)]
    + [(6, 2, 1, False), (6, 1, 1, True), (6, 1, 1, True)]
    + [(6, 1, 1, False), (6, 1, 2, True), (6, 1, 2, True), (6, 1, 2, True)]
    + [(6, 1, 2, False), (6, 1, 2, True), (6, 1, 2, True)]
    + [(6, 1, 2, False), (6, 1, 4, True), (6, 1, 4, True)]
    + [(6, 1, 4, False)]
)


def bn(x, s, p):
    mean, var, weight, bias = (s[p + n] for n in ("running_mean", "running_var", "weight", "bias"))
    return F.batch_norm(x, mean, var, weight, bias, training=False, eps=1e-5)


def conv(x, s, p, stride=1, dilation=1, groups=1):
    weight = s[p + "weight"]
    padding = dilation * (weight.shape[-1] // 2)
    return F.conv2d(x, weight, s.get(p + "bias"), stride, padding, dilation, groups)


def resnet18_backbone(s, x):
    """Returns (layer3, layer4) of the deep-stem dilated ResNet-18 stored under `pretrained.`."""
    for i in (1, 2, 3):
        x = conv(x, s, f"pretrained.conv{i}.", stride=2 if i == 1 else 1)
        x = F.relu(bn(x, s, f"pretrained.bn{i}."))
    x = F.max_pool2d(x, 3, 2, 1)
    outputs = {}
    for layer, block, stride, d1, d2, has_downsample in RESNET18_BLOCKS:
        p = f"pretrained.{layer}.{block}."
        out = F.relu(bn(conv(x, s, p + "conv1.", stride, d1), s, p + "bn1."))
        out = bn(conv(out, s, p + "conv2.", 1, d2), s, p + "bn2.")
        identity = x
        if has_downsample:
            identity = bn(conv(x, s, p + "downsample.0.", stride), s, p + "downsample.1.")
        x = F.relu(out + identity)
        outputs[layer] = x
    return outputs["layer3"], outputs["layer4"]


def mobilenetv2_backbone(s, x):
    p = "pretrained.net.features."
    x = F.relu6(bn(conv(x, s, p + "0.0.", stride=2), s, p + "0.1."))
    for index, (expansion, stride, dilation, residual) in enumerate(MOBILENETV2_BLOCKS, start=1):
        q = f"{p}{index}.conv."
        out, i = x, 0
        if expansion != 1:
            out, i = F.relu6(bn(conv(out, s, q + "0."), s, q + "1.")), 3
        out = conv(out, s, f"{q}{i}.", stride, dilation, groups=out.shape[1])  # depthwise
        out = F.relu6(bn(out, s, f"{q}{i + 1}."))
        out = bn(conv(out, s, f"{q}{i + 3}."), s, f"{q}{i + 4}.")
        x = x + out if residual else out
    return x


def deeplabv3_head(s, x):
    """(logits, features) of the DeepLabV3 head: ASPP rates 12/24/36 + image pooling."""
    branches = [F.relu(bn(conv(x, s, "head.aspp.b0.0."), s, "head.aspp.b0.1."))]
    for i, rate in zip((1, 2, 3), (12, 24, 36)):
        y = conv(x, s, f"head.aspp.b{i}.block.0.", dilation=rate)
        branches.append(F.relu(bn(y, s, f"head.aspp.b{i}.block.1.")))
    pooled = conv(x.mean((2, 3), keepdim=True), s, "head.aspp.b4.gap.1.")
    pooled = F.relu(bn(pooled, s, "head.aspp.b4.gap.2."))
    branches.append(pooled.expand(-1, -1, *x.shape[-2:]))
    y = F.relu(bn(conv(torch.cat(branches, 1), s, "head.aspp.project.0."), s, "head.aspp.project.1."))
    features = F.relu(bn(conv(y, s, "head.block.0."), s, "head.block.1."))
    return conv(features, s, "head.block.4."), features


def pspnet_head(s, x):
    size = x.shape[-2:]
    parts = [x]
    for i, bins in zip((1, 2, 3, 4), (1, 2, 3, 6)):
        y = conv(F.adaptive_avg_pool2d(x, bins), s, f"head.psp.conv{i}.0.")
        y = F.relu(bn(y, s, f"head.psp.conv{i}.1."))
        parts.append(F.interpolate(y, size, mode="bilinear", align_corners=True))
    features = F.relu(bn(conv(torch.cat(parts, 1), s, "head.block.0."), s, "head.block.1."))
    return conv(features, s, "head.classifier."), features


def fcn_aux_head(s, x):
    return conv(F.relu(bn(conv(x, s, "auxlayer.block.0."), s, "auxlayer.block.1.")), s, "auxlayer.block.4.")


def forward(name, s, images):
    """(logits, aux_logits or None, features) of model `name` in eval mode."""
    if name.endswith("resnet18"):
        middle, last = resnet18_backbone(s, images)
    else:
        middle, last = None, mobilenetv2_backbone(s, images)
    head = deeplabv3_head if name.startswith("deeplabv3") else pspnet_head
    logits, features = head(s, last)
    aux = fcn_aux_head(s, middle) if "auxlayer.block.0.weight" in s else None
    return logits, aux, features
