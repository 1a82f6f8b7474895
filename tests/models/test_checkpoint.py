"""load_weights: the authors' full-model and ImageNet files, our checkpoints, and every failure mode."""

import logging

import pytest
import torch

from hwd_tune.models import build_model, load_weights
from tests.models.helpers import TINY
from tests.models.helpers import tiny_model as tiny


def logits_of(model, images):
    with torch.no_grad():
        return model.eval()(images).logits


def same_tensors(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("as_directory", [False, True])
def test_round_trip_gives_identical_logits(tmp_path, as_directory):
    source, target = tiny(seed=0), tiny(seed=1)
    images = torch.randn(1, 3, 64, 64)
    assert not torch.equal(logits_of(source, images), logits_of(target, images))
    torch.save(source.state_dict(), tmp_path / "model.pt")
    report = load_weights(target, tmp_path if as_directory else tmp_path / "model.pt")
    assert torch.equal(logits_of(source, images), logits_of(target, images))
    assert same_tensors(source.state_dict(), target.state_dict())
    assert report.kind == "full" and report.complete and report.source == str(tmp_path / "model.pt")
    assert len(report.loaded) == len(source.state_dict())


def test_in_memory_state_dict_and_ddp_prefix(tmp_path):
    source, target = tiny(seed=0), tiny(seed=1)
    wrapped = {"module." + key: value for key, value in source.state_dict().items()}
    torch.save(wrapped, tmp_path / "ddp.pth")
    report = load_weights(target, tmp_path / "ddp.pth")
    assert report.complete and not any(k.startswith("module.") for k in report.loaded)
    assert same_tensors(source.state_dict(), target.state_dict())
    other = tiny(seed=2)
    assert load_weights(other, wrapped).source == "<state_dict>"
    assert same_tensors(source.state_dict(), other.state_dict())


@pytest.mark.parametrize(
    "name, trunk, classifier_keys",
    [
        ("deeplabv3_resnet18", "pretrained", {"fc.weight": [1000, 64], "fc.bias": [1000]}),
        (
            "pspnet_mobilenetv2",
            "pretrained.net",
            {"features.18.0.weight": [1280, 40, 1, 1], "classifier.1.weight": [1000, 1280]},
        ),
    ],
)
def test_imagenet_backbone_file_loads_into_the_backbone_only(tmp_path, name, trunk, classifier_keys):
    source, target = tiny(name, seed=0), tiny(name, seed=1)
    head_before = {k: v.clone() for k, v in target.state_dict().items() if not k.startswith("pretrained.")}
    # keys like conv1.weight / features.0.0.weight, as in resnet18-imagenet.pth / mobilenetv2-imagenet.pth
    imagenet = dict(source.get_submodule(trunk).state_dict())
    for key, shape in classifier_keys.items():
        imagenet[key] = torch.randn(shape)
    torch.save(imagenet, tmp_path / "backbone-imagenet.pth")
    report = load_weights(target, tmp_path / "backbone-imagenet.pth")
    assert report.kind == "backbone" and report.complete
    assert report.ignored == sorted(classifier_keys)
    after = target.state_dict()
    backbone = {k: v for k, v in source.state_dict().items() if k.startswith("pretrained.")}
    assert all(torch.equal(after[k], v) for k, v in backbone.items())
    assert all(torch.equal(after[k], v) for k, v in head_before.items())
    assert all(k.startswith(trunk + ".") for k in report.loaded)


def test_imagenet_file_without_num_batches_tracked_still_loads_strictly(tmp_path):
    source, target = tiny(seed=0), tiny(seed=1)
    imagenet = {k: v for k, v in source.pretrained.state_dict().items() if not k.endswith("num_batches_tracked")}
    report = load_weights(target, imagenet)
    assert report.complete and report.missing == []
    assert torch.equal(target.pretrained.conv1.weight, source.pretrained.conv1.weight)


def test_wrong_class_count_raises_and_lists_the_wrong_shape_keys(tmp_path):
    ade20k = build_model("deeplabv3_resnet18", num_classes=150)
    torch.save(ade20k.state_dict(), tmp_path / "ade.pth")
    citys = build_model("deeplabv3_resnet18", num_classes=19)
    before = {k: v.clone() for k, v in citys.state_dict().items()}
    with pytest.raises(ValueError) as caught:
        load_weights(citys, tmp_path / "ade.pth")
    message = str(caught.value)
    assert str(tmp_path / "ade.pth") in message
    assert "head.block.4.weight: checkpoint [150, 128, 1, 1] vs model [19, 128, 1, 1]" in message
    assert "head.block.4.bias: checkpoint [150] vs model [19]" in message
    assert "auxlayer.block.4.weight: checkpoint [150, 64, 1, 1] vs model [19, 64, 1, 1]" in message
    assert "wrong shape (4)" in message
    assert same_tensors(before, citys.state_dict())  # a failed strict load changes nothing


def test_non_strict_load_reports_and_warns_what_was_skipped(caplog):
    source = build_model("deeplabv3_resnet18", 150, width_multiplier=TINY)
    target = build_model("deeplabv3_resnet18", 19, width_multiplier=TINY)
    state = dict(source.state_dict())
    del state["pretrained.bn1.weight"]
    state["head.extra.weight"] = torch.zeros(1)
    with caplog.at_level(logging.WARNING, logger="hwd_tune.models.checkpoint"):
        report = load_weights(target, state, strict=False)
    assert sorted(m.split(":")[0] for m in report.mismatched) == [
        "auxlayer.block.4.bias",
        "auxlayer.block.4.weight",
        "head.block.4.bias",
        "head.block.4.weight",
    ]
    assert report.missing == ["pretrained.bn1.weight"] and report.unexpected == ["head.extra.weight"]
    assert not report.complete
    assert len(report.loaded) == len(state) - 5
    assert torch.equal(target.pretrained.conv1.weight, source.pretrained.conv1.weight)
    assert "head.block.4.weight" in caplog.text and "pretrained.bn1.weight" in caplog.text


def test_strict_load_names_missing_and_unexpected_keys():
    model = tiny(seed=1)
    state = dict(tiny(seed=0).state_dict())
    del state["head.aspp.b0.0.weight"]
    with pytest.raises(ValueError, match=r"missing from the checkpoint \(1\): head\.aspp\.b0\.0\.weight"):
        load_weights(model, state)
    state = dict(tiny(seed=0).state_dict(), **{"head.bogus": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"unexpected in the checkpoint \(1\): head\.bogus"):
        load_weights(model, state)


def test_missing_file_and_directory_name_the_path(tmp_path):
    model = tiny(seed=1)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_weights(model, tmp_path / "nowhere.pth")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "model.pt")):
        load_weights(model, tmp_path)


def test_corrupt_and_non_state_dict_files_name_the_path(tmp_path):
    model = tiny(seed=1)
    (tmp_path / "corrupt.pth").write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*corrupt\.pth"):
        load_weights(model, tmp_path / "corrupt.pth")
    torch.save(model, tmp_path / "pickled_module.pth")  # a whole pickled object: refused by weights_only
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*pickled_module\.pth"):
        load_weights(model, tmp_path / "pickled_module.pth")
    torch.save({"state_dict": model.state_dict(), "iteration": 3}, tmp_path / "wrapped.pth")
    with pytest.raises(ValueError, match=r"wrapped\.pth is not a plain state_dict"):
        load_weights(model, tmp_path / "wrapped.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth holds a list"):
        load_weights(model, tmp_path / "list.pth")
    with pytest.raises(ValueError, match="path or a state_dict"):
        load_weights(model, 42)
