"""The named result every segmentation model returns, shared by models, losses and the loop."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class SegOutput(NamedTuple):
    """What a segmentation network produces for a batch.

    logits:     [N, K, h, w] main-head class scores at the head's resolution (1/8 of the input)
    aux_logits: [N, K, h', w'] auxiliary FCN head scores, or None when the model has no aux head
    features:   [N, F, h, w] the main head's last features before its 1x1 classifier
    """

    logits: Tensor
    aux_logits: Tensor | None
    features: Tensor
