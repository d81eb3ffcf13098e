"""The augmentation pipeline the engine holds: a named policy bound to a data set's (mean, std) and image size.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError, DataError
from .crop_flip import _as_hw, _check_4d
from .policies import MultiView, NormalizeOnly, get_policy
from .sampling import _check_generator


# --------------------------------------------------------------------------------------------------------
# Pipeline: what the engine holds
# --------------------------------------------------------------------------------------------------------

class AugmentPipeline:
    """A named policy bound to a data set's (mean, std) and image size.

    ``pipeline(batch_u8, generator)``: uint8 B x H x W x C (as stored) -> float32 B x C x H x W, or a tuple
    of ``num_views`` of them for multi-view policies. ``pipeline.eval_transform(batch_u8)``: normalise only,
    no randomness. Outputs are contiguous (or channels-last-contiguous with ``channels_last=True``).
    ``count``: the number of views wanted; a one-view policy is then drawn ``count`` times, one draw after
    another (a policy that makes another number of views is a ConfigError). None: whatever the policy makes.

    Example::

        pipe = AugmentPipeline("weak", CIFAR10_MEAN, CIFAR10_STD, 32, padding_mode="reflect")
        g = torch.Generator(device=images.device).manual_seed(0)
        x = pipe(images[idx], g)               # B x 3 x 32 x 32 float32
    """

    def __init__(self, policy_name: str, mean: Sequence[float], std: Sequence[float],
                 image_size: int | tuple[int, int], channels_last: bool = False, count: int | None = None,
                 **policy_kwargs):
        self.policy_name = policy_name
        self.image_size = _as_hw(image_size)
        self.policy_kwargs = dict(policy_kwargs)
        self.policy = get_policy(policy_name, mean=mean, std=std, image_size=self.image_size, **policy_kwargs)
        if count is not None and count != self.policy.num_views:
            if self.policy.num_views != 1 or not isinstance(count, int) or count < 1:
                raise ConfigError(f"policy {policy_name!r} makes {self.policy.num_views} views of each image, not "
                                  f"{count}")
            # k independent draws of a one-view policy, one after another from the generator
            self.policy = MultiView([self.policy] + [
                get_policy(policy_name, mean=mean, std=std, image_size=self.image_size, **policy_kwargs)
                for _ in range(count - 1)])
        self._eval = NormalizeOnly(mean, std)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    @property
    def num_views(self) -> int:
        return self.policy.num_views

    @property
    def mean(self) -> tuple[float, ...]:
        return self.policy.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.policy.std

    def __call__(self, batch_u8: torch.Tensor, generator: torch.Generator):
        self._check_batch(batch_u8)
        _check_generator(generator)
        out = self.policy(batch_u8, generator)
        if isinstance(out, tuple):
            return tuple(v.contiguous(memory_format=self.memory_format) for v in out)
        return out.contiguous(memory_format=self.memory_format)

    def eval_transform(self, batch_u8: torch.Tensor) -> torch.Tensor:
        """uint8 B x H x W x C -> normalised float32 B x C x H x W; no randomness."""
        self._check_batch(batch_u8)
        return self._eval(batch_u8).contiguous(memory_format=self.memory_format)

    def config(self) -> dict:
        """Plain-data description, for the resolved run config."""
        return {"policy": self.policy_name, "mean": list(self.mean), "std": list(self.std),
                "image_size": list(self.image_size), **self.policy_kwargs}

    def __repr__(self) -> str:
        return f"AugmentPipeline({self.policy_name!r}, image_size={self.image_size}, policy={self.policy!r})"

    def _check_batch(self, batch_u8: torch.Tensor) -> None:
        _check_4d(batch_u8, "batch_u8")
        if batch_u8.dtype != torch.uint8:
            raise DataError(f"augmentation input must be uint8 B x H x W x C, got dtype {batch_u8.dtype}")
        _, h, w, c = batch_u8.shape
        if (h, w) != self.image_size or c != len(self.mean):
            raise DataError(f"augmentation input must be B x {self.image_size[0]} x {self.image_size[1]} x "
                            f"{len(self.mean)} (channels last, as stored), got {tuple(batch_u8.shape)}")
