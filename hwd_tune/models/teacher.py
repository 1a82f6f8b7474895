"""Prepares a trained network as a frozen distillation teacher."""

from __future__ import annotations

import functools

import torch
from torch import nn


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """Replacement for `train()` on a frozen teacher: BN statistics and dropout stay in eval mode."""
    return nn.Module.train(module, False)


def freeze_teacher(model: nn.Module, *, channels_last: bool = False, dtype: torch.dtype | None = None) -> nn.Module:
    """Eval mode for good (a later `model.train()` is a no-op), no gradients, optional channels_last/bf16.

    With `dtype` set, the caller feeds inputs of that dtype (e.g. `images.to(torch.bfloat16)`).
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype such as torch.bfloat16, got {dtype!r}")
    model.requires_grad_(False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if dtype is not None:
        model.to(dtype=dtype)
    # an instance attribute (a partial, so the teacher still pickles and deep-copies)
    model.train = functools.partial(_stay_in_eval, model)  # type: ignore[method-assign]
    model.eval()
    return model
