"""Seeded, reproducible label noise with numpy in and out.

Generators return a :class:`NoisyLabels` (labels to train on, clean labels, open-set mask, kind, params),
which can be saved to and loaded from an ``.npz`` so that runs compare on identical labels::

    from noisykd.noise import make_noise, NoisyLabels
    noisy = make_noise("sym:0.4", train.labels, num_classes=10, seed=1)
    noisy.save("noise/cifar10-sym40-s1.npz")
    noisy = NoisyLabels.load("noise/cifar10-sym40-s1.npz", num_samples=len(train), num_classes=10)
"""

from .labels import FILE_FORMAT, NoisyLabels
from .openset import fit_images, open_set
from .synthetic import (
    CIFAR10_ASYM_MAP,
    CIFAR100_COARSE_LABELS,
    CIFAR100_GROUPINGS,
    CIFAR100_SUPERCLASSES,
    NOISE_KINDS,
    NOISE_SPECS,
    SYMMETRIC_CONVENTIONS,
    asymmetric_cifar10,
    asymmetric_cifar100,
    cifar10_asym_targets,
    cifar100_asym_targets,
    from_labelset,
    instance_dependent,
    make_noise,
    no_noise,
    pair_flip,
    symmetric,
)

__all__ = [
    "NoisyLabels", "FILE_FORMAT",
    "symmetric", "asymmetric_cifar10", "asymmetric_cifar100", "pair_flip", "instance_dependent", "no_noise",
    "from_labelset", "make_noise", "NOISE_SPECS", "NOISE_KINDS", "SYMMETRIC_CONVENTIONS",
    "CIFAR10_ASYM_MAP", "CIFAR100_SUPERCLASSES", "CIFAR100_COARSE_LABELS", "CIFAR100_GROUPINGS",
    "cifar10_asym_targets", "cifar100_asym_targets",
    "open_set", "fit_images",
]
