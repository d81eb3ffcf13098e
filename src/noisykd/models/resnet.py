"""CIFAR ResNets in the style of kuangliu/pytorch-cifar (used by CMD and MODUL): post-activation blocks,
3x3 stem with 64 channels, stride 1, no max-pool; four stages of widths 64-512; global avg-pool; Linear.

Parameter counts for 10 classes: resnet18 11,173,962; resnet34 21,282,122; resnet50 23,520,842, equal to
the reference implementation. Size-agnostic: 32x32 inputs end at 4x4 maps, 8x8 inputs at 1x1.
"""

from __future__ import annotations

from typing import Sequence, Type

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .preact_resnet import scaled_widths, conv3x3
from .registry import ClassifierNet, init_weights, register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN shortcut when the shape changes, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU; (B, C_in, H, W) -> (B, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + skip)


class Bottleneck(nn.Module):
    """1x1 (planes) - 3x3 (planes, stride) - 1x1 (4*planes) with BN, + shortcut, then ReLU.

    (B, C_in, H, W) -> (B, 4*planes, H/stride, W/stride); stride on the 3x3 conv, as in kuangliu's code.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = self.expansion * planes
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + skip)


class ResNet(ClassifierNet):
    """conv3x3-BN-ReLU stem -> stages of blocks (stage i > 0 starts with stride 2) -> global avg-pool -> Linear.

    Shapes: x (B, in_channels, H, W) -> feature_maps (B, expansion*widths[-1], ceil(H/8), ceil(W/8)) for four
    stages -> features (B, feature_dim) -> logits (B, num_classes).
    """

    def __init__(self, block: Type[BasicBlock] | Type[Bottleneck], num_blocks: Sequence[int],
                 widths: Sequence[int], num_classes: int, in_channels: int = 3):
        super().__init__()
        if len(num_blocks) != len(widths) or not num_blocks:
            raise ConfigError(f"num_blocks {list(num_blocks)} and widths {list(widths)} must have the same length")
        self.stem = nn.Sequential(conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages = []
        channels = widths[0]
        for index, (blocks, planes) in enumerate(zip(num_blocks, widths)):
            layers = []
            for b in range(blocks):
                layers.append(block(channels, planes, (1 if index == 0 else 2) if b == 0 else 1))
                channels = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.linear = nn.Linear(channels, num_classes)
        self.feature_dim = channels
        self.num_classes = num_classes
        init_weights(self)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage maps (B, feature_dim, h, w) before pooling (MODUL's "layer-4" features)."""
        return self.stages(self.stem(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.feature_maps(x), 1), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


_WIDTHS = [64, 128, 256, 512]


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, image_size=32, width: float = 1.0) -> ResNet:
    """CIFAR ResNet-18 (kuangliu): BasicBlock [2,2,2,2], widths 64-512, 11,173,962 params (10 classes).

    width: multiplies every stage's width (64/128/256/512), each rounded, at least 1.
    """
    return ResNet(BasicBlock, [2, 2, 2, 2], scaled_widths(_WIDTHS, width), num_classes, in_channels)


@register_model("resnet34")
def resnet34(num_classes: int, in_channels: int = 3, image_size=32, width: float = 1.0) -> ResNet:
    """CIFAR ResNet-34 (kuangliu): BasicBlock [3,4,6,3], widths 64-512, 21,282,122 params (10 classes).

    width: multiplies every stage's width (64/128/256/512), each rounded, at least 1.
    """
    return ResNet(BasicBlock, [3, 4, 6, 3], scaled_widths(_WIDTHS, width), num_classes, in_channels)


@register_model("resnet50")
def resnet50(num_classes: int, in_channels: int = 3, image_size=32, width: float = 1.0) -> ResNet:
    """CIFAR ResNet-50 (kuangliu): Bottleneck [3,4,6,3], widths 64-512 (x4 out), 23,520,842 params (10 cl.).

    width: multiplies every stage's width (64/128/256/512), each rounded, at least 1.
    """
    return ResNet(Bottleneck, [3, 4, 6, 3], scaled_widths(_WIDTHS, width), num_classes, in_channels)
