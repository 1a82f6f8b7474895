"""Task loss and the distiller registry, against plain loops written here."""

import math

import pytest
import torch
import torch.nn.functional as F

from hwd_tune.losses import build_distiller, total_loss
from hwd_tune.outputs import SegOutput


def reference_ce(logits, labels, ignore_index):
    """Mean over valid pixels of -log softmax, one pixel at a time."""
    up = F.interpolate(logits, labels.shape[-2:], mode="bilinear", align_corners=True)
    total, count = 0.0, 0
    n, _k, h, w = up.shape
    for b in range(n):
        for y in range(h):
            for x in range(w):
                target = int(labels[b, y, x])
                if target == ignore_index:
                    continue
                scores = up[b, :, y, x].double()
                total += -(scores[target] - torch.logsumexp(scores, 0)).item()
                count += 1
    return total / count


def test_student_only_is_ce_plus_weighted_aux():
    logits, aux = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    labels = torch.randint(-1, 5, (2, 12, 12))
    out = SegOutput(logits, aux, torch.randn(2, 3, 4, 4))
    terms = build_distiller("none", num_classes=5, aux_weight=0.4)(out, None, labels)
    assert set(terms) == {"ce", "aux"}
    assert math.isclose(terms["ce"].item(), reference_ce(logits, labels, -1), rel_tol=1e-5)
    assert math.isclose(terms["aux"].item(), 0.4 * reference_ce(aux, labels, -1), rel_tol=1e-5)
    assert math.isclose(total_loss(terms).item(), terms["ce"].item() + terms["aux"].item(), rel_tol=1e-6)


def test_no_aux_head_gives_no_aux_term():
    out = SegOutput(torch.randn(1, 3, 4, 4), None, torch.randn(1, 2, 4, 4))
    terms = build_distiller("none", num_classes=3)(out, None, torch.randint(0, 3, (1, 8, 8)))
    assert set(terms) == {"ce"}


def test_unknown_method_and_bad_params_are_named():
    with pytest.raises(ValueError, match="unknown distillation method 'nope'"):
        build_distiller("nope", num_classes=3)
    with pytest.raises(ValueError, match="'none'.*bogus"):
        build_distiller("none", num_classes=3, bogus=1)
    with pytest.raises(ValueError, match="aux_weight"):
        build_distiller("none", num_classes=3, aux_weight=-1.0)


def test_labels_of_wrong_shape_are_rejected():
    out = SegOutput(torch.randn(2, 3, 4, 4), None, torch.randn(2, 2, 4, 4))
    with pytest.raises(ValueError, match="labels must be"):
        build_distiller("none", num_classes=3)(out, None, torch.zeros(8, 8, dtype=torch.long))
