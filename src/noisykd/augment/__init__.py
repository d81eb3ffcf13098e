"""Batched, per-sample-random image augmentation on whatever device the batch lives on.

Why: reference implementations crop and flip one PIL image at a time on CPU workers, which cannot feed a GPU
(engineering.md, "Speed"). Here the data set stays on the device as uint8 and every op transforms a whole batch
with index arithmetic: no per-image Python loop, no host round trip.

Layout convention (one rule, two sides of it):

* A **stored batch** is uint8 ``B x H x W x C``, exactly as the engine keeps the data set and gathers a batch by
  index. :class:`AugmentPipeline`, every policy, and :func:`dataset_stats` take this layout.
* The **ops** (:func:`random_crop`, :func:`random_flip`, :func:`random_crop_flip`, :func:`cutout`,
  :func:`to_float_normalized`) take and return ``B x C x H x W``, the torch model layout. Turn a stored batch
  into that layout with :func:`channels_first` (a free ``permute`` view, no copy).
* What comes out of a policy is float32 ``B x C x H x W``, normalised with the data set's (mean, std).

Randomness: every random draw comes from the ``torch.Generator`` passed in, never from the global RNG, so
the engine can checkpoint and restore generator states and replay a run exactly. Draws happen on the
generator's device and are moved to the batch's device; on a GPU pass ``torch.Generator(device="cuda")`` to
keep them there. A CPU and a CUDA generator with the same seed give different (each reproducible) streams.

Order inside the ``weak`` policies (as in torchvision / DeVries & Taylor reference code): crop and flip on the
uint8 image (so zero padding is black, as ``RandomCrop(32, padding=4)`` on a PIL image), then normalise,
then cutout (so the erased square is 0 after normalisation, i.e. the data set's mean colour).

RandAugment (torchvision's table, :class:`RandAugment`, policy ``randaugment``; GJS's, from
ildoonet/pytorch-randaugment, :class:`GJSRandAugment`, policy ``randaugment_gjs``) and AugMix (:class:`AugMix`) give
every image its own ops, drawn from the generator, and apply each op to the images that drew it (a loop over
op types, chain depth and mixture width, never over images); the ops, with PIL's semantics, are in
:mod:`noisykd.augment.ops`.

Adding a policy::

    @register_policy("my_policy")
    def _my_policy(*, mean, std, image_size, strength=1.0):
        return MyPolicy(mean, std, strength)       # a Policy: (batch_u8 BHWC, generator) -> BCHW float

A library that only draws from the global RNG (e.g. kornia's augmentations) can be wrapped in
:func:`global_rng_from`, which seeds a forked global RNG from the generator and restores it afterwards.

The package, in the order the data flows:

* :mod:`~noisykd.augment.sampling`: every random draw, from the generator passed in;
* :mod:`~noisykd.augment.ops`: batched image ops with PIL's semantics (RandAugment's and AugMix's building blocks);
* :mod:`~noisykd.augment.crop_flip`: layout, normalisation, crop / flip / cutout;
* :mod:`~noisykd.augment.policies`: the Policy base, the weak policies and the policy registry;
* :mod:`~noisykd.augment.randaugment` and :mod:`~noisykd.augment.augmix`: the per-image random policies;
* :mod:`~noisykd.augment.pipeline`: a policy bound to a data set (what the engine holds);
* :mod:`~noisykd.augment.views`: view specs (``"randaugment_gjs(n=1, m=3)"``) parsed and built.
"""

from __future__ import annotations

# The normalisation constants and statistics belong to the data layer; re-exported here for convenience.
from ..data.normalization import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, dataset_stats
from . import ops
from .augmix import AUGMIX_ALL_OPS, AUGMIX_CROP_FLIP, AUGMIX_OPS, AugMix, AugMixDraw
from .crop_flip import (PADDING_MODES, channels_first, cutout, random_crop, random_crop_flip, random_flip,
                        to_float_normalized)
from .pipeline import AugmentPipeline
from .policies import (MAX_AUGMENT_COUNT, POLICIES, CropFlipCutout, MultiView, NormalizeOnly, Policy,
                       available_policies, get_policy, policy_options, register_policy)
from .randaugment import (GJS_CUTOUT_FILL, GJS_PIXEL_OPS, GJS_RANDAUGMENT_OPS, GJS_RANDAUGMENT_RANGES, GJS_SIGNED_OPS,
                          RANDAUGMENT_OPS, GJSRandAugment, GJSRandAugmentDraw, RandAugment, cutout_abs,
                          gjs_randaugment_values, randaugment_magnitudes, solarize_add)
from .sampling import global_rng_from, sample_beta, sample_dirichlet, sample_log_gamma
from .views import CommonOptions, ViewSpec, build_views, default_padding, parse_view_spec

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "PADDING_MODES", "MAX_AUGMENT_COUNT", "ops",
    "channels_first", "to_float_normalized", "random_crop", "random_flip", "random_crop_flip", "cutout",
    "Policy", "NormalizeOnly", "CropFlipCutout", "MultiView", "RandAugment", "AugMix", "AugMixDraw",
    "RANDAUGMENT_OPS", "GJSRandAugment", "GJSRandAugmentDraw", "GJS_RANDAUGMENT_OPS", "GJS_RANDAUGMENT_RANGES",
    "GJS_SIGNED_OPS", "GJS_CUTOUT_FILL", "GJS_PIXEL_OPS", "gjs_randaugment_values", "cutout_abs", "solarize_add",
    "AUGMIX_OPS", "AUGMIX_ALL_OPS", "AUGMIX_CROP_FLIP", "randaugment_magnitudes", "sample_log_gamma",
    "sample_dirichlet", "sample_beta", "register_policy", "get_policy", "POLICIES",
    "available_policies", "policy_options", "AugmentPipeline", "dataset_stats", "global_rng_from",
    "ViewSpec", "parse_view_spec", "CommonOptions", "default_padding", "build_views",
]
