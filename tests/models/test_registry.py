"""build_model, available_models, feature_channels and the forward pass, against a reference here."""

import math

import pytest
import torch
from torch import nn

from hwd_tune.models import available_models, build_model, feature_channels
from hwd_tune.outputs import SegOutput
from tests.models import reference
from tests.models.helpers import TINY, randomize_norm_statistics

MODELS_WITH_AUX = {"deeplabv3_resnet18", "deeplabv3_resnet50", "deeplabv3_resnet101", "pspnet_resnet18"}
ALL_MODELS = sorted(MODELS_WITH_AUX | {"deeplabv3_mobilenetv2", "pspnet_mobilenetv2"})


def test_available_models_lists_the_papers_networks():
    assert available_models() == ALL_MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
def test_output_stride_8_aux_presence_and_feature_channels(name):
    model = build_model(name, num_classes=7, aux=True, width_multiplier=TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert isinstance(out, SegOutput)
    assert out.logits.shape == (1, 7, 8, 12)
    assert out.features.shape == (1, feature_channels(name, TINY), 8, 12)
    if name in MODELS_WITH_AUX:
        assert out.aux_logits.shape == (1, 7, 8, 12)
    else:
        assert out.aux_logits is None
        assert not any(key.startswith("auxlayer.") for key in model.state_dict())


@pytest.mark.parametrize("name", sorted(MODELS_WITH_AUX))
def test_aux_false_drops_the_aux_head_and_its_keys(name):
    model = build_model(name, num_classes=3, aux=False, width_multiplier=TINY).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).aux_logits is None
    assert not any(key.startswith("auxlayer.") for key in model.state_dict())


def test_feature_channels_at_full_width_are_the_authors_head_widths():
    expected = {
        "deeplabv3_resnet18": 128,
        "deeplabv3_resnet50": 256,
        "deeplabv3_resnet101": 256,
        "deeplabv3_mobilenetv2": 128,
        "pspnet_resnet18": 128,
        "pspnet_mobilenetv2": 128,
    }
    assert {name: feature_channels(name) for name in ALL_MODELS} == expected
    assert feature_channels("deeplabv3_resnet101", 0.25) == 64


@pytest.mark.parametrize(
    "name", ["deeplabv3_resnet18", "pspnet_resnet18", "deeplabv3_mobilenetv2", "pspnet_mobilenetv2"]
)
def test_forward_matches_functional_reference(name):
    """Eval outputs equal a plain F.conv2d/F.batch_norm forward with the authors' strides/dilations."""
    model = randomize_norm_statistics(build_model(name, num_classes=5, width_multiplier=TINY)).eval()
    images = torch.randn(1, 3, 120, 120)  # 15x15 at 1/8, so the rate-12 ASPP taps reach real pixels
    with torch.no_grad():
        out = model(images)
        logits, aux, features = reference.forward(name, model.state_dict(), images)
    torch.testing.assert_close(out.features, features, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits, logits, rtol=1e-4, atol=1e-5)
    if aux is None:
        assert out.aux_logits is None
    else:
        torch.testing.assert_close(out.aux_logits, aux, rtol=1e-4, atol=1e-5)


def test_every_trainable_parameter_gets_a_gradient_in_training():
    model = build_model("pspnet_resnet18", num_classes=4, width_multiplier=TINY).train()
    out = model(torch.randn(2, 3, 48, 48))
    (out.logits.square().mean() + out.aux_logits.square().mean()).backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert without_grad == []


def test_norm_layer_is_used_everywhere():
    def group_norm(channels):
        return nn.GroupNorm(1, channels)

    model = build_model("deeplabv3_resnet18", 4, width_multiplier=TINY, norm_layer=group_norm)
    kinds = {type(m) for m in model.modules()}
    assert nn.GroupNorm in kinds and nn.BatchNorm2d not in kinds
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).logits.shape == (1, 4, 4, 4)


def test_unknown_model_names_the_name_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'deeplabv3_resnet34'.*deeplabv3_resnet18"):
        build_model("deeplabv3_resnet34", 19)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        feature_channels("nope")


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True, "19"])
def test_invalid_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        build_model("deeplabv3_resnet18", num_classes, width_multiplier=TINY)


@pytest.mark.parametrize("width", [0, -0.5, math.nan, math.inf, "1"])
def test_invalid_width_multiplier(width):
    with pytest.raises(ValueError, match="width_multiplier"):
        build_model("deeplabv3_resnet18", 19, width_multiplier=width)
    with pytest.raises(ValueError, match="width_multiplier"):
        feature_channels("deeplabv3_resnet18", width)


def test_invalid_norm_layer():
    with pytest.raises(ValueError, match="norm_layer"):
        build_model("deeplabv3_resnet18", 19, width_multiplier=TINY, norm_layer="batchnorm")
