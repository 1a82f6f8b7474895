"""Shared test helpers: tiny models with non-trivial normalisation statistics."""

import torch
from torch import nn

from hwd_tune.models import build_model

TINY = 0.125  # width multiplier for fast CPU tests


def randomize_norm_statistics(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random BN affine and running statistics, so eval-mode comparisons test real values."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
            module.weight.data.copy_(1 + 0.2 * torch.randn(c, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(c, generator=generator))
    return model


def tiny_model(name: str = "deeplabv3_resnet18", num_classes: int = 5, seed: int = 0) -> nn.Module:
    """A width-0.125 model whose weights and BN statistics depend only on `seed`."""
    torch.manual_seed(seed)
    return randomize_norm_statistics(build_model(name, num_classes, width_multiplier=TINY), seed=seed + 1)
