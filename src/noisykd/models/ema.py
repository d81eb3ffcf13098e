"""Exponential moving average of a network's weights: the shadow (EMA) teacher of NRD and of mean-teacher methods."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ContractError


@torch.no_grad()
def ema_update(shadow: nn.Module, online: nn.Module, decay: float) -> None:
    """theta_shadow <- decay * theta_shadow + (1 - decay) * theta_online, in place; buffers are copied.

    Parameters are averaged (methods.md, NRD: "average parameters, copy BN buffers"); buffers such as BatchNorm
    running statistics and counters are copied from ``online``, since averaging a counter means nothing and
    the online statistics are the current ones. ``shadow`` and ``online`` must have the same architecture.
    ``decay`` in [0, 1]: 0 copies the online network, 1 freezes the shadow.
    """
    if not 0.0 <= decay <= 1.0:
        raise ConfigError(f"EMA decay must lie in [0, 1], got {decay}")
    shadow_params = dict(shadow.named_parameters())
    online_params = dict(online.named_parameters())
    if shadow_params.keys() != online_params.keys():
        raise ContractError("ema_update: the shadow and the online network have different parameters")
    for name, param in online_params.items():
        shadow_params[name].lerp_(param.detach().to(shadow_params[name].dtype), 1.0 - decay)
    shadow_buffers = dict(shadow.named_buffers())
    for name, buffer in online.named_buffers():
        shadow_buffers[name].copy_(buffer)
