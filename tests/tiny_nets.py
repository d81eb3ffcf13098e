"""Tiny networks for tests that need a network whose output they choose."""

from __future__ import annotations

import torch
from torch import nn


class Scaled(nn.Module):
    """logits = w * x: a network whose output the test chooses."""

    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return self.w * x
