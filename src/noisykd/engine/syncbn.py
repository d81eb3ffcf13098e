"""Synchronised BatchNorm (``distributed.sync_batchnorm``): the batch statistics of the global batch, not of
each process's part.

On CUDA the engine uses ``torch.nn.SyncBatchNorm``. That class refuses CPU tensors, so on the CPU (gloo) the
engine swaps in :class:`CPUSyncBatchNorm`, which computes the same statistics with two differentiable
all-reduces whose backward sums the gradients over the ranks (:class:`_SumOverRanks`; what makes every rank's loss
reach every rank's activations): the channel sums and counts, then the
sums of squared deviations from the global mean (two passes, as stable as one-process BatchNorm).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _SumOverRanks(torch.autograd.Function):
    """y = the sum of x over the ranks; dL/dx = the sum of dL/dy over the ranks (every rank's loss depends on
    every rank's x through y)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the batch of every process (any input of shape (B, C, ...)). In eval mode, or on one
    process, it is ordinary BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        synced = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not synced:
            return super().forward(input)
        all_reduce = _SumOverRanks.apply
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input if input.dtype == torch.float64 else input.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        totals = all_reduce(torch.cat([x.sum(dims), count]))
        n = totals[-1].detach()
        mean = totals[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n  # biased: what normalises the batch
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and float(n) > 0:
            with torch.no_grad():
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                unbiased = var.detach() * n / max(float(n) - 1, 1.0)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return out.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm layer synchronised over the processes (in place where possible; returns
    the module to use): ``torch.nn.SyncBatchNorm`` on CUDA, :class:`CPUSyncBatchNorm` elsewhere. Parameters
    and buffers are kept (the same tensors), so an optimiser built before still holds them."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        new = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = _convert_cpu(child)
        if converted is not child:
            module.add_module(name, converted)
    return module

