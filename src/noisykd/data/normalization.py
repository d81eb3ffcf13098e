"""The per-channel (mean, std) that images are normalised with: a fact about the data, not about a method.

Published CIFAR results use fixed constants (methods.md, "Shared protocol"), which the CIFAR loaders attach to
their data sets; every other source is normalised with its own training images' statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, DataError

# The widely copied CIFAR std values are a mean of per-image stds; the true per-pixel std of CIFAR-10 is about
# (0.2470, 0.2435, 0.2616), which dataset_stats returns. Published results use these constants.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# CIFAR-100: the widely copied 4-decimal constants. The GJS reference code (ErikEnglesson/GJS at f124785,
# datasets/transforms.py, get_cifar100_transforms) uses 3-decimal values: mean (0.507, 0.487, 0.441), std
# (0.267, 0.256, 0.276); ours minus GJS's: (+0.0001, -0.0003, -0.0002) and (+0.0005, +0.0005, +0.0001), at
# most 0.0005 (0.2% of a std): a normalised pixel moves by at most 0.005 (at x = 0 or 1; 0.001 near the mean),
# negligible next to augmentation, so we keep these constants. Its CIFAR-10 constants equal ours.
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std in [0, 1] units (``x_normalised = (x_u8 / 255 - mean) / std``) and where they
    come from (``"CIFAR-10 standard constants"``, ``"training images"``)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ConfigError(f"normalisation needs one mean and one std per channel, got {self.mean} and {self.std}")
        if any(not s > 0 for s in self.std):
            raise ConfigError(f"normalisation std must be positive, got {self.std}")

    @classmethod
    def of_images(cls, images_u8) -> "Normalization":
        """The statistics of uint8 N x H x W x C images (see :func:`dataset_stats`)."""
        mean, std = dataset_stats(images_u8)
        return cls(mean, std, "training images")


CIFAR10_NORMALIZATION = Normalization(CIFAR10_MEAN, CIFAR10_STD, "CIFAR-10 standard constants")
CIFAR100_NORMALIZATION = Normalization(CIFAR100_MEAN, CIFAR100_STD, "CIFAR-100 standard constants")


def dataset_stats(images_u8, chunk_size: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of uint8 N x H x W x C images, in [0, 1] units (population std, over pixels).

    images_u8: numpy array (a memmap is fine) or torch tensor on any device. Reads ``chunk_size`` images at a
    time and accumulates integer sums and sums of squares (exact in int64), so memory stays bounded and the
    result does not depend on the chunk size.
    """
    if images_u8.ndim != 4:
        raise DataError(f"dataset_stats: images must be N x H x W x C, got shape {tuple(images_u8.shape)}")
    is_tensor = isinstance(images_u8, torch.Tensor)
    dtype = images_u8.dtype
    if (dtype != torch.uint8) if is_tensor else (np.dtype(dtype) != np.uint8):
        raise DataError(f"dataset_stats: images must be uint8 (0-255), got dtype {dtype}")
    n, c = images_u8.shape[0], images_u8.shape[3]
    if n == 0:
        raise DataError("dataset_stats: no images")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    device = images_u8.device if is_tensor else torch.device("cpu")
    total = torch.zeros(c, dtype=torch.int64, device=device)
    total_sq = torch.zeros(c, dtype=torch.int64, device=device)
    for start in range(0, n, chunk_size):  # a loop over chunks of images, not over images
        chunk = images_u8[start:start + chunk_size]
        chunk = chunk if is_tensor else torch.from_numpy(np.ascontiguousarray(chunk))
        pix = chunk.reshape(-1, c).to(torch.int64)
        total += pix.sum(0)
        total_sq += (pix * pix).sum(0)
    count = n * images_u8.shape[1] * images_u8.shape[2]
    mean = total.double().cpu() / count
    var = (total_sq.double().cpu() / count - mean * mean).clamp_min(0)
    return tuple((mean / 255).tolist()), tuple((var.sqrt() / 255).tolist())
