"""Full-width models against the authors' key names, shapes, dilations and parameter counts.

The expected keys and shapes are listed here by hand from the authors' module definitions
(zju-SWJ/HWD models/*.py), so a renamed or reshaped layer would stop their checkpoints loading.
"""

import pytest
import torch

from tests.models import param_formulas

ALL_MODELS = [
    "deeplabv3_mobilenetv2",
    "deeplabv3_resnet101",
    "deeplabv3_resnet18",
    "deeplabv3_resnet50",
    "pspnet_mobilenetv2",
    "pspnet_resnet18",
]

SENTINEL_KEYS = {
    "deeplabv3_resnet18": {
        "pretrained.conv1.weight": [64, 3, 3, 3],
        "pretrained.bn1.running_mean": [64],
        "pretrained.conv3.weight": [128, 64, 3, 3],
        "pretrained.bn3.num_batches_tracked": [],
        "pretrained.layer1.0.downsample.0.weight": [64, 128, 1, 1],
        "pretrained.layer1.0.downsample.1.running_var": [64],
        "pretrained.layer2.0.conv1.weight": [128, 64, 3, 3],
        "pretrained.layer3.0.downsample.0.weight": [256, 128, 1, 1],
        "pretrained.layer4.1.conv2.weight": [512, 512, 3, 3],
        "head.aspp.b0.0.weight": [128, 512, 1, 1],
        "head.aspp.b1.block.0.weight": [128, 512, 3, 3],
        "head.aspp.b3.block.1.weight": [128],
        "head.aspp.b4.gap.1.weight": [128, 512, 1, 1],
        "head.aspp.b4.gap.2.running_mean": [128],
        "head.aspp.project.0.weight": [128, 640, 1, 1],
        "head.block.0.weight": [128, 128, 3, 3],
        "head.block.1.num_batches_tracked": [],
        "head.block.4.weight": [19, 128, 1, 1],
        "head.block.4.bias": [19],
        "auxlayer.block.0.weight": [64, 256, 3, 3],
        "auxlayer.block.1.weight": [64],
        "auxlayer.block.4.weight": [19, 64, 1, 1],
        "auxlayer.block.4.bias": [19],
    },
    "deeplabv3_resnet101": {
        "pretrained.conv3.weight": [128, 64, 3, 3],
        "pretrained.layer1.0.conv1.weight": [64, 128, 1, 1],
        "pretrained.layer1.0.downsample.0.weight": [256, 128, 1, 1],
        "pretrained.layer3.22.conv3.weight": [1024, 256, 1, 1],
        "pretrained.layer4.2.bn3.running_var": [2048],
        "head.aspp.b0.0.weight": [256, 2048, 1, 1],
        "head.aspp.project.0.weight": [256, 1280, 1, 1],
        "head.block.4.weight": [19, 256, 1, 1],
        "auxlayer.block.0.weight": [256, 1024, 3, 3],
        "auxlayer.block.4.weight": [19, 256, 1, 1],
    },
    "deeplabv3_mobilenetv2": {
        "pretrained.net.features.0.0.weight": [32, 3, 3, 3],
        "pretrained.net.features.0.1.running_mean": [32],
        "pretrained.net.features.1.conv.0.weight": [32, 1, 3, 3],
        "pretrained.net.features.1.conv.3.weight": [16, 32, 1, 1],
        "pretrained.net.features.2.conv.0.weight": [96, 16, 1, 1],
        "pretrained.net.features.2.conv.3.weight": [96, 1, 3, 3],
        "pretrained.net.features.17.conv.6.weight": [320, 960, 1, 1],
        "pretrained.net.features.17.conv.7.num_batches_tracked": [],
        "head.aspp.b0.0.weight": [128, 320, 1, 1],
        "head.block.4.weight": [19, 128, 1, 1],
    },
    "pspnet_resnet18": {
        "pretrained.layer1.0.downsample.0.weight": [64, 128, 1, 1],
        "head.psp.conv1.0.weight": [128, 512, 1, 1],
        "head.psp.conv4.1.running_mean": [128],
        "head.block.0.weight": [128, 1024, 3, 3],
        "head.block.1.weight": [128],
        "head.classifier.weight": [19, 128, 1, 1],
        "head.classifier.bias": [19],
        "auxlayer.block.0.weight": [64, 256, 3, 3],
    },
    "pspnet_mobilenetv2": {
        "pretrained.net.features.17.conv.6.weight": [320, 960, 1, 1],
        "head.psp.conv1.0.weight": [80, 320, 1, 1],
        "head.block.0.weight": [128, 640, 3, 3],
        "head.classifier.weight": [19, 128, 1, 1],
    },
}


@pytest.mark.parametrize("name", sorted(SENTINEL_KEYS))
def test_sentinel_keys_have_the_authors_names_and_shapes(name, full_width_model):
    state = full_width_model(name).state_dict()
    found = {key: list(state[key].shape) for key in SENTINEL_KEYS[name] if key in state}
    assert found == SENTINEL_KEYS[name]
    assert all(key.startswith(("pretrained.", "head.", "auxlayer.")) for key in state)
    # every norm layer carries num_batches_tracked, as the authors' files do
    norms = sum(k.endswith("running_mean") for k in state)
    assert norms == sum(k.endswith("num_batches_tracked") for k in state)


def test_mobilenet_models_have_no_aux_head_nor_imagenet_classifier(full_width_model):
    state = full_width_model("deeplabv3_mobilenetv2").state_dict()
    absent = ("auxlayer.", "pretrained.net.features.18.", "pretrained.net.classifier")
    assert not any(k.startswith(absent) for k in state)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_counts_match_hand_formulas(name, full_width_model):
    model = full_width_model(name)
    assert sum(p.numel() for p in model.parameters()) == param_formulas.total(name, 19)


def test_parameter_totals_match_published_sizes(full_width_model):
    """Cityscapes (19 classes) sizes with the aux head, as the CIRKD paper lists them (in millions)."""
    published = {
        "deeplabv3_resnet101": 61.1,
        "deeplabv3_resnet18": 13.6,
        "deeplabv3_mobilenetv2": 3.2,
        "pspnet_resnet18": 12.9,
    }
    measured = {name: round(sum(p.numel() for p in full_width_model(name).parameters()) / 1e6, 1) for name in published}
    assert measured == published


def test_resnet18_uneven_dilations_inside_blocks(full_width_model):
    backbone = full_width_model("deeplabv3_resnet18").pretrained
    expected = {  # (conv1 stride, conv1 dilation, conv2 dilation), the authors' BasicBlockV1b
        "layer1.0": (1, 1, 1),
        "layer2.0": (2, 1, 1),
        "layer2.1": (1, 1, 1),
        "layer3.0": (1, 1, 2),
        "layer3.1": (1, 2, 2),
        "layer4.0": (1, 2, 4),
        "layer4.1": (1, 4, 4),
    }
    found = {}
    for name in expected:
        block = backbone.get_submodule(name)
        found[name] = (block.conv1.stride[0], block.conv1.dilation[0], block.conv2.dilation[0])
        assert block.conv1.padding == block.conv1.dilation and block.conv2.padding == block.conv2.dilation
    assert found == expected


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "deeplabv3_resnet101"])
def test_bottleneck_dilations(name, full_width_model):
    backbone = full_width_model(name).pretrained
    last3 = len(backbone.layer3) - 1
    expected = {
        "layer2.0": (2, 1),
        "layer3.0": (1, 1),
        "layer3.1": (1, 2),
        f"layer3.{last3}": (1, 2),
        "layer4.0": (1, 2),
        "layer4.1": (1, 4),
        "layer4.2": (1, 4),
    }
    convs = {n: backbone.get_submodule(n).conv2 for n in expected}
    found = {n: (conv.stride[0], conv.dilation[0]) for n, conv in convs.items()}
    assert found == expected


def test_mobilenetv2_strides_and_dilations(full_width_model):
    features = full_width_model("deeplabv3_mobilenetv2").pretrained.net.features
    depthwise = [block.conv[-5] for block in list(features)[1:]]  # the 3x3 depthwise conv of blocks 1..17
    assert all(conv.kernel_size == (3, 3) and conv.groups == conv.in_channels for conv in depthwise)
    strides = [conv.stride[0] for conv in depthwise]
    dilations = [conv.dilation[0] for conv in depthwise]
    assert strides == [1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert dilations == [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4]
    assert features[0][0].stride == (2, 2)
    residual = [int(block.use_residual) for block in list(features)[1:]]
    assert residual == [0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0]


def test_full_width_output_shapes(full_width_model):
    model = full_width_model("deeplabv3_resnet18").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.logits.shape == out.aux_logits.shape == (1, 19, 8, 8)
    assert out.features.shape == (1, 128, 8, 8)
