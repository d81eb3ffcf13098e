"""Losses: cross-entropy, the noise-robust baselines (LS, CP, bootstrapping, GCE, SCE, NCE+RCE) and the
KL / JS / generalized-JS divergences behind the GJS and NRD losses, as pure functions, plus named presets.

``get_loss('sce/cifar100-sym40')(logits, labels)`` binds a loss to its papers' hyperparameters; see
:mod:`noisykd.losses.presets`.
"""

from .divergence import (
    generalized_jensen_shannon,
    gjs_loss,
    gjs_scale,
    jensen_shannon,
    js_loss,
    kl_divergence,
    target_distribution,
)
from .presets import (
    ALIASES,
    LOSS_PRESETS,
    LOSSES,
    TABLE5_SETTINGS,
    get_loss,
    list_presets,
    nrd_table5_optimizer,
)
from .robust import (
    bootstrapping_hard,
    bootstrapping_soft,
    confidence_penalty,
    cross_entropy,
    generalized_cross_entropy,
    label_smoothing,
    nce_rce,
    normalized_cross_entropy,
    reduce_loss,
    reverse_cross_entropy,
    soft_cross_entropy,
    symmetric_cross_entropy,
)

__all__ = [
    "ALIASES",
    "LOSSES",
    "LOSS_PRESETS",
    "TABLE5_SETTINGS",
    "bootstrapping_hard",
    "bootstrapping_soft",
    "confidence_penalty",
    "cross_entropy",
    "generalized_cross_entropy",
    "generalized_jensen_shannon",
    "get_loss",
    "gjs_loss",
    "gjs_scale",
    "jensen_shannon",
    "js_loss",
    "kl_divergence",
    "label_smoothing",
    "list_presets",
    "nce_rce",
    "normalized_cross_entropy",
    "nrd_table5_optimizer",
    "reduce_loss",
    "reverse_cross_entropy",
    "soft_cross_entropy",
    "symmetric_cross_entropy",
    "target_distribution",
]
