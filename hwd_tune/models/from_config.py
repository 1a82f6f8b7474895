"""The network a `ModelConfig` describes: the one place a config becomes `build_model(...)`."""

from __future__ import annotations

from torch import nn

from hwd_tune.config import ModelConfig
from hwd_tune.models.registry import build_model


def model_from_config(model: ModelConfig, num_classes: int) -> nn.Module:
    """The network a `ModelConfig` describes (random weights)."""
    norm_layer = (lambda channels: nn.Identity()) if model.norm == "none" else None
    network = build_model(
        model.arch, num_classes, aux=model.aux, width_multiplier=model.width_multiplier, norm_layer=norm_layer
    )
    if not model.dropout:
        for module in network.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    return network
