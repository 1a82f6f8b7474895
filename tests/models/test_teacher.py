"""freeze_teacher: no trainable parameters, eval mode that survives train(), deterministic outputs."""

import copy
import pickle

import pytest
import torch
from torch import nn

from hwd_tune.models import freeze_teacher
from tests.models.helpers import tiny_model as tiny_teacher


def test_frozen_teacher_has_no_trainable_parameters_and_stays_in_eval():
    teacher = freeze_teacher(tiny_teacher())
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # a loop calling train() on every module must not re-enable BN updates or dropout
    assert not any(m.training for m in teacher.modules())
    stats_before = teacher.pretrained.bn1.running_mean.clone()
    images = torch.randn(2, 3, 48, 48)
    first, second = teacher(images), teacher(images)
    assert torch.equal(first.logits, second.logits) and torch.equal(first.aux_logits, second.aux_logits)
    assert torch.equal(teacher.pretrained.bn1.running_mean, stats_before)
    assert not first.logits.requires_grad


def test_frozen_output_equals_eval_output_of_the_same_weights():
    model = tiny_teacher()
    images = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        expected = model.eval()(images).logits
    assert torch.equal(freeze_teacher(model)(images).logits, expected)


def test_channels_last_and_bfloat16():
    model = tiny_teacher().eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(images).logits
    teacher = freeze_teacher(model, channels_last=True, dtype=torch.bfloat16)
    conv = teacher.pretrained.conv1.weight
    assert conv.dtype == torch.bfloat16 and conv.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = teacher(images.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).logits
    assert got.dtype == torch.bfloat16
    relative_error = (got.float() - expected).norm() / expected.norm()
    assert relative_error < 0.05  # bf16 keeps ~3 significant digits per op


def test_frozen_teacher_stays_frozen_through_copy_and_pickle():
    teacher = freeze_teacher(tiny_teacher())
    images = torch.randn(1, 3, 32, 32)
    for clone in (copy.deepcopy(teacher), pickle.loads(pickle.dumps(teacher))):
        nn.Module.train(clone, True)  # bypass the override: now every module is in training mode
        clone.train()  # the clone's own override must bring the clone (not the original) back to eval
        assert not any(m.training for m in clone.modules())
        assert not any(p.requires_grad for p in clone.parameters())
        assert torch.equal(clone(images).logits, teacher(images).logits)


@pytest.mark.parametrize("dtype", [torch.int8, "bfloat16"])
def test_invalid_dtype(dtype):
    with pytest.raises(ValueError, match="dtype"):
        freeze_teacher(tiny_teacher(), dtype=dtype)
