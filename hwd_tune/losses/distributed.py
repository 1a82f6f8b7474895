"""DDP-aware gathers for losses that look across the whole global batch (CIRKD's cross-image terms).

Every helper is a no-op (returns its input) when torch.distributed is not initialised or the
world has one worker, so the same loss code runs in a single process, in tests and under DDP.
All workers must call a helper together and pass tensors of the same shape (DistributedSampler
gives every worker the same batch size).
"""

from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group with more than one worker is initialised."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    return torch_dist.get_world_size() > 1


def world_size() -> int:
    """Number of workers in the default process group (1 when not distributed)."""
    return torch_dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This worker's index in the default process group (0 when not distributed)."""
    return torch_dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def gather_without_grad(tensor: Tensor) -> Tensor:
    """[n, ...] on each worker -> [world_size * n, ...] in rank order, detached (teacher side)."""
    if not is_distributed():
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(torch_dist.get_world_size())]
    torch_dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every worker's gradient for this worker's slice.

    Each worker's loss may depend on every other worker's rows, so the gradient reaching a
    worker's own rows is the sum over workers (all_reduce SUM), not only its own share.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(torch_dist.get_world_size())]
        torch_dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_gathered: Tensor) -> Tensor:  # type: ignore[override]
        grad_gathered = grad_gathered.contiguous()
        torch_dist.all_reduce(grad_gathered, op=torch_dist.ReduceOp.SUM)
        start = torch_dist.get_rank() * ctx.rows
        return grad_gathered[start : start + ctx.rows]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """[n, ...] on each worker -> [world_size * n, ...] in rank order, differentiable.

    The backward gives this worker d(sum over workers of their losses)/d(its rows); with DDP's
    gradient averaging, a per-worker loss whose mean over workers is the global loss therefore
    gets exactly the single-process gradient of the global loss.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def sum_across_workers(tensor: Tensor) -> Tensor:
    """Element-wise sum over workers (a new tensor, no gradient); e.g. global pixel counts."""
    total = tensor.detach().clone()
    if is_distributed():
        torch_dist.all_reduce(total, op=torch_dist.ReduceOp.SUM)
    return total
