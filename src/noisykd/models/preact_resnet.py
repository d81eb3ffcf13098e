"""Pre-activation ResNets for small images (He et al. 2016, "Identity Mappings in Deep Residual Networks").

Two registered variants, each reproducing a reference implementation used by the papers:

- ``preact_resnet18``: the DivideMix ``PreResNet.ResNet18`` that BKD uses (4 stages, widths 64-512).
- ``preact_resnet34_gjs``: the 3-stage net that GJS and NRD call "PreActResNet-34" (widths 32-128, ~1.9 M
  parameters; not the 21 M-parameter ImageNet-style ResNet-34).

Both are size-agnostic (global average pooling); stride-2 3x3 convolutions with padding 1 never reduce a
side below 1, so 8x8 inputs reach the last stage as 1x1 maps.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .registry import INIT_SCHEMES, ClassifierNet, init_weights, register_model

__all__ = ["PreActBlock", "PreActResNet", "conv3x3", "scaled_widths", "preact_resnet18", "preact_resnet34_gjs"]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows or precedes it)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut; (B, C_in, H, W) -> (B, C_out, H/stride, W/stride).

    The projection shortcut (1x1 conv, no BN, used when the stride or width changes) reads the pre-activated
    input relu(bn1(x)), as in every reference. For the identity shortcut the references differ:
    ``identity_from_preactivation=False`` adds x itself (He et al., kuangliu, GJS);
    ``True`` adds relu(bn1(x)) (DivideMix's PreResNet.py, hence BKD).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 identity_from_preactivation: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.identity_from_preactivation = identity_from_preactivation
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        if self.shortcut is not None:
            skip = self.shortcut(pre)
        else:
            skip = pre if self.identity_from_preactivation else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(ClassifierNet):
    """conv3x3 stem -> stages of :class:`PreActBlock` -> [BN-ReLU] -> global avg-pool -> Linear.

    num_blocks: blocks per stage; widths: channels per stage (stage i > 0 starts with stride 2).
    stem_bn: BN-ReLU right after the stem conv (DivideMix). final_bn: BN-ReLU after the last stage (textbook
    pre-activation ResNet, GJS). identity_from_preactivation: see :class:`PreActBlock`. init: ``kaiming``
    (Kaiming-normal fan_out convolutions, DivideMix's code) or ``torch_default`` (PyTorch's own, GJS's code).

    Shapes: x (B, in_channels, H, W) -> feature_maps (B, widths[-1], H/2^(S-1), W/2^(S-1)) (ceil) ->
    features (B, widths[-1]) -> logits (B, num_classes).
    """

    def __init__(self, num_blocks: Sequence[int], widths: Sequence[int], num_classes: int, in_channels: int = 3,
                 stem_bn: bool = False, final_bn: bool = True, identity_from_preactivation: bool = False,
                 init: str = "kaiming"):
        super().__init__()
        if init not in INIT_SCHEMES:  # before building anything
            raise ConfigError(f"init must be one of {', '.join(INIT_SCHEMES)}, got {init!r}")
        if len(num_blocks) != len(widths) or not num_blocks:
            raise ConfigError(f"num_blocks {list(num_blocks)} and widths {list(widths)} must have the same length")
        self.stem = conv3x3(in_channels, widths[0])
        self.stem_bn = nn.BatchNorm2d(widths[0]) if stem_bn else None
        stages = []
        channels = widths[0]
        for index, (blocks, width) in enumerate(zip(num_blocks, widths)):
            stride = 1 if index == 0 else 2
            layers = []
            for b in range(blocks):
                layers.append(PreActBlock(channels, width, stride if b == 0 else 1, identity_from_preactivation))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.final_bn = nn.BatchNorm2d(channels) if final_bn else None
        self.linear = nn.Linear(channels, num_classes)
        self.feature_dim = channels
        self.num_classes = num_classes
        init_weights(self, init)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage maps (B, feature_dim, h, w) before pooling (after the final BN-ReLU if there is one)."""
        out = self.stem(x)
        if self.stem_bn is not None:
            out = F.relu(self.stem_bn(out))
        out = self.stages(out)
        if self.final_bn is not None:
            out = F.relu(self.final_bn(out))
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.feature_maps(x), 1), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def scaled_widths(widths: Sequence[int], width: float) -> list[int]:
    """Channel counts multiplied by ``width`` and rounded (at least 1 each)."""
    if not width > 0:
        raise ConfigError(f"width must be > 0, got {width}")
    return [max(1, int(round(w * width))) for w in widths]


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int, in_channels: int = 3, image_size=32, width: float = 1.0,
                    stem_bn: bool = True, final_bn: bool = False,
                    identity_from_preactivation: bool = True, init: str = "kaiming") -> PreActResNet:
    """PreAct-ResNet-18 as in DivideMix/BKD: blocks [2,2,2,2], widths 64-512, 11,171,274 params (10 classes).

    Defaults reproduce DivideMix's ``PreResNet.ResNet18`` exactly: conv3x3 stem -> BN-ReLU -> PreActBlocks
    (identity shortcuts add the pre-activated input) -> global avg-pool -> Linear, no BN after the last stage.
    image_size is not needed (size-agnostic).

    width:       multiplies every stage's width (64/128/256/512), each rounded, at least 1.
    stem_bn:     BN-ReLU right after the stem conv (DivideMix); false gives kuangliu's PreActResNet18
                 (11,171,146 params for 10 classes; the two differ only by the 128 parameters of the stem BN).
    final_bn:    the textbook BN-ReLU after the last stage, before pooling (+2*512 params).
    identity_from_preactivation: an identity shortcut adds the pre-activated input relu(bn1(x)) (DivideMix's
                 PreResNet.py, hence BKD); false adds x itself (He et al., kuangliu, GJS).
    init:        ``kaiming`` (DivideMix's code: Kaiming-normal fan_out convolutions) or ``torch_default``
                 (PyTorch's own initialisation).
    """
    return PreActResNet([2, 2, 2, 2], scaled_widths([64, 128, 256, 512], width), num_classes, in_channels,
                        stem_bn=stem_bn, final_bn=final_bn, identity_from_preactivation=identity_from_preactivation,
                        init=init)


@register_model("preact_resnet34_gjs")
def preact_resnet34_gjs(num_classes: int, in_channels: int = 3, image_size=32, width: float = 1.0,
                        init: str = "torch_default") -> PreActResNet:
    """GJS/NRD "PreActResNet-34": 3 stages of [5,5,5] PreActBlocks, widths 32/64/128, 1,860,138 params (10 cl.).

    Reproduces ``models/preact_resnet.py`` of the GJS code (Englesson & Azizpour 2021), which NRD reuses:
    conv3x3 stem to 32 channels (no BN), PreActBlocks with x on identity shortcuts, BN-ReLU after the last
    stage, global avg-pool, Linear(128, C). Its 15 blocks are deep (31 3x3 convolutions) but narrow, about
    1.9 M parameters: it is NOT the 21 M-parameter 4-stage ResNet-34 (that one is ``resnet34``).

    width: multiplies every stage's width (32/64/128), each rounded, at least 1.
    init:  ``torch_default`` (GJS's code sets no initialisation, so PyTorch's own applies) or ``kaiming``
           (Kaiming-normal fan_out convolutions, as our other CIFAR nets).
    """
    return PreActResNet([5, 5, 5], scaled_widths([32, 64, 128], width), num_classes, in_channels,
                        stem_bn=False, final_bn=True, identity_from_preactivation=False, init=init)
