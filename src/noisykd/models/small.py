"""Small networks for small images and quick experiments: ``small_cnn`` and ``mlp``.

``small_cnn`` trains sklearn's 8x8 digits to > 90% test accuracy in about a second on a CPU; it also fits
28x28 (MNIST-like) and 32x32 (CIFAR-like) images, pooling only while the maps stay at least 4 pixels wide.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from .preact_resnet import scaled_widths
from .registry import ClassifierNet, image_hw_of, init_weights, register_model

#: the widest hidden layer an MLP takes (a typo of 100000000 would allocate gigabytes)
MAX_HIDDEN = 65_536

__all__ = ["ConvBNReLU", "SmallCNN", "MLP", "small_cnn", "mlp"]


class ConvBNReLU(nn.Sequential):
    """conv3x3 (padding 1, no bias) - BN - ReLU; (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class SmallCNN(ClassifierNet):
    """Stages of ``convs_per_stage`` :class:`ConvBNReLU`, each followed by a 2x2 max-pool while the map stays
    at least ``min_map_size`` wide -> global avg-pool -> [dropout] -> Linear.

    With the defaults (channels 32/64/128, min_map_size 4): 8x8 -> 4x4 (one pool), 28x28 -> 7x7 (two),
    32x32 -> 4x4 (three), 64x64 -> 8x8 (three). ``pooled_after`` lists the stages followed by a pool.

    Shapes: x (B, in_channels, H, W) -> features (B, channels[-1]) -> logits (B, num_classes).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int | Sequence[int] = 32,
                 channels: Sequence[int] = (32, 64, 128), convs_per_stage: int = 1, min_map_size: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        if not channels or convs_per_stage < 1:
            raise ConfigError("small_cnn needs at least one stage and one conv per stage")
        side = min(image_hw_of(image_size))
        stages, self.pooled_after = [], []
        c_in = in_channels
        for index, c_out in enumerate(channels):
            layers: list[nn.Module] = []
            for _ in range(convs_per_stage):
                layers.append(ConvBNReLU(c_in, c_out))
                c_in = c_out
            if side // 2 >= min_map_size:
                layers.append(nn.MaxPool2d(2))
                side //= 2
                self.pooled_after.append(index)
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(c_in, num_classes)
        self.feature_dim = c_in
        self.num_classes = num_classes
        init_weights(self)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage maps (B, feature_dim, h, w) before pooling."""
        return self.stages(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.feature_maps(x), 1), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))


class MLP(ClassifierNet):
    """Flatten -> [Linear - (BN) - ReLU - (dropout)] per hidden size -> Linear.

    Features are the last hidden activations (B, hidden_sizes[-1]); with no hidden layers, the flattened
    input (B, C*H*W) (a linear classifier). Inputs must have the (C, H, W) shape given at construction.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int | Sequence[int] = 32,
                 hidden_sizes: Sequence[int] = (256, 256), batch_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        h, w = image_hw_of(image_size)
        self.input_shape = (in_channels, h, w)
        width = in_channels * h * w
        layers: list[nn.Module] = []
        for size in hidden_sizes:
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_HIDDEN:
                raise ConfigError(f"model.kwargs.hidden_sizes: each layer's width must be an integer in [1, "
                                  f"{MAX_HIDDEN:,}], got {list(hidden_sizes)}")
            layers.append(nn.Linear(width, size, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.hidden = nn.Sequential(*layers)
        self.linear = nn.Linear(width, num_classes)
        self.feature_dim = width
        self.num_classes = num_classes
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(f"mlp was built for inputs (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        return self.hidden(torch.flatten(x, 1))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


@register_model("small_cnn")
def small_cnn(num_classes: int, in_channels: int = 3, image_size=32, width: float = 1.0,
              channels: Sequence[int] = (32, 64, 128), convs_per_stage: int = 1, min_map_size: int = 4,
              dropout: float = 0.0) -> SmallCNN:
    """Small fast CNN: 3 conv-BN-ReLU stages (32/64/128 x width), pooling adapted to image_size, avg-pool.

    width:           multiplies every stage's channel count, each rounded, at least 1.
    channels:        the channels of each stage (one stage per entry), before ``width``.
    convs_per_stage: conv-BN-ReLU layers per stage.
    min_map_size:    a stage is followed by a 2x2 max-pool only while the pooled map stays at least this wide
                     (8x8 images: one pool; 32x32: three).
    dropout:         dropout probability before the final Linear layer (0: none).
    """
    return SmallCNN(num_classes, in_channels, image_size, scaled_widths(channels, width), convs_per_stage,
                    min_map_size, dropout)


@register_model("mlp")
def mlp(num_classes: int, in_channels: int = 3, image_size=32, hidden_sizes: Sequence[int] = (256, 256),
        batch_norm: bool = False, dropout: float = 0.0) -> MLP:
    """Multi-layer perceptron on flattened images: hidden layers (256, 256) with ReLU (optional BN, dropout).

    hidden_sizes: the width of each hidden layer (none: a linear classifier on the pixels).
    batch_norm:   BatchNorm after each hidden Linear layer (which then has no bias).
    dropout:      dropout probability after each hidden layer's ReLU (0: none).
    """
    return MLP(num_classes, in_channels, image_size, hidden_sizes, batch_norm, dropout)
