"""Divergences between categorical distributions: KL, Jensen-Shannon and generalized Jensen-Shannon (GJS).

Distributions are float (B, C) tensors whose rows sum to 1 (not checked: that costs a device sync). Every
function returns a scalar for ``reduction='mean'`` (default) or ``'sum'``, per-sample values (B,) for ``'none'``.
Natural logarithms throughout. The GJS loss of Englesson & Azizpour 2021 is also the NRD loss (NRD Eq. 19/25):
NRD calls :func:`generalized_jensen_shannon` with (onehot(y), student p, detached EMA-teacher p).

Numerics: the mixture m is clamped at 1e-7 before its log, and a term p_i,k ln(p_i,k / m_k) with p_i,k = 0 is 0
(its limit), so one-hot targets give finite values and gradients. The GJS reference code (``ErikEnglesson/GJS``,
``losses.py`` at f124785: ``JensenShannonDivergenceWeightedScaled`` and ``custom_kl_div``) does both too, and
differs in two clamps we do not apply:

* it takes ``mean_distrib.clamp(1e-7, 1.0).log()``: m is also clamped at <= 1. m <= 1 holds exactly; only
  float rounding (a one-hot label plus a confident prediction) gives m = 1 + a few ulp, where the reference has
  ln m = 0 with no gradient through that entry and we have ln m ~ 1e-7 with its gradient;
* it takes ln p_i,k as ``target.clamp(min=1e-7).log()``: an entry 0 < p_i,k < 1e-7 enters as
  p_i,k (ln 1e-7 - ln m_k), with no gradient through its log; we take the exact ln p_i,k. Each such entry
  changes the value by at most 1e-7/e (the maximum of p ln(1e-7/p)), i.e. at most C * 3.7e-8 per sample
  before the GJS scale.

Both only touch entries below 1e-7 or above 1 by rounding: on float32 batches (C = 10 and 100, logits of standard
deviation 3 to 30) our GJS loss equals the reference's to 5e-7 and its gradient to 3e-9. ``kl_divergence``
clamps q at ``eps`` from below only; the reference's KL (``JSDissect``) clamps q at [1e-7, 1] and ln p as above.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError

from .robust import check_labels, check_logits, reduce_loss

__all__ = [
    "kl_divergence",
    "jensen_shannon",
    "gjs_scale",
    "generalized_jensen_shannon",
    "target_distribution",
    "js_loss",
    "gjs_loss",
]

MIXTURE_EPS = 1e-7  # lower clamp for m (and for q in KL) before the log, as in the GJS reference code
_WEIGHT_TOL = 1e-6  # weights are floats typed by people: (0.1, 0.45, 0.45) must count as summing to 1


def _check_distribution(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() != 2:
        got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise DataError(f"{name} must be a float tensor of probabilities with shape (B, C), got {got}")


def _plogp_ratio(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Row sums of p * (ln p - log_q), with 0 where p = 0.

    The double ``where`` keeps the gradient finite at p = 0: log is taken of 1 there, never of 0.
    """
    positive = p > 0
    log_p = torch.where(positive, p, torch.ones_like(p)).log()
    return torch.where(positive, p * (log_p - log_q), torch.zeros_like(p)).sum(dim=1)


def kl_divergence(
    p: torch.Tensor, q: torch.Tensor, eps: float = MIXTURE_EPS, reduction: str = "mean"
) -> torch.Tensor:
    """KL(p || q) = sum_k p_k ln(p_k / q_k), terms with p_k = 0 are 0, q clamped at ``eps`` before the log.

    Shapes: p, q float (B, C). Gradients flow into both; detach the one that is a fixed target.
    """
    _check_distribution(p, "p")
    _check_distribution(q, "q")
    if p.shape != q.shape:
        raise DataError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    return reduce_loss(_plogp_ratio(p, q.clamp_min(eps).log()), reduction)


def gjs_scale(pi1: float) -> float:
    """GJS normaliser 1/Z with Z = -(1 - pi1) ln(1 - pi1), i.e. the factor -1 / ((1 - pi1) ln(1 - pi1)).

    Englesson & Azizpour 2021 divide JS_pi and GJS_pi by Z so that the loss tends to CE as pi1 -> 0 (and to
    MAE-like behaviour as pi1 -> 1); their learning rates, which NRD reuses, assume it. pi1 in (0, 1).
    Examples: pi1 = 0.5 -> 2 / ln 2 = 2.885; pi1 = 0.2 -> 5.601.
    """
    if not 0.0 < pi1 < 1.0:
        raise ConfigError(f"the GJS scale needs 0 < pi1 < 1, got pi1 = {pi1}")
    return -1.0 / ((1.0 - pi1) * math.log(1.0 - pi1))


def _check_weights(weights: Sequence[float], n: int) -> list[float]:
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ConfigError(f"need one weight per distribution: {n} distributions, {len(weights)} weights")
    if any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > _WEIGHT_TOL:
        raise ConfigError(f"weights must be non-negative and sum to 1, got {weights} (sum {sum(weights)})")
    return weights


def generalized_jensen_shannon(
    dists: Sequence[torch.Tensor],
    weights: Sequence[float],
    scale: bool = True,
    eps: float = MIXTURE_EPS,
    reduction: str = "mean",
) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence GJS_pi(p_1..p_M) = sum_i pi_i KL(p_i || m), m = sum_i pi_i p_i.

    With ``scale=True`` (default) the result is multiplied by :func:`gjs_scale` (pi_1) = -1/((1-pi_1) ln(1-pi_1)),
    the normalisation of Englesson & Azizpour 2021, so pi_1 is the weight of the first distribution, by
    convention the (one-hot) label. m is clamped at ``eps`` before the log; terms where p_i = 0 are skipped.

    Shapes: each of ``dists`` float (B, C) probabilities; ``weights`` M non-negative floats summing to 1.
    No stop-gradient: gradients flow into every distribution that requires grad (NRD detaches its teacher).
    Values: GJS paper / NRD Table 5 -- GJS pi = (pi1, (1-pi1)/2, (1-pi1)/2) for two augmented views,
    NRD pi = (pi1, pi2, pi1), e.g. (0.2, 0.6, 0.2) for CIFAR-10 with 20-40% symmetric noise.
    """
    dists = list(dists)
    if len(dists) < 2:
        raise DataError(f"GJS needs at least 2 distributions, got {len(dists)}")
    for i, d in enumerate(dists):
        _check_distribution(d, f"dists[{i}]")
        if d.shape != dists[0].shape:
            raise DataError(f"dists[{i}] has shape {tuple(d.shape)}, dists[0] has {tuple(dists[0].shape)}")
    weights = _check_weights(weights, len(dists))
    factor = gjs_scale(weights[0]) if scale else 1.0

    mixture = sum(w * d for w, d in zip(weights, dists))
    log_m = mixture.clamp_min(eps).log()
    per_sample = sum(w * _plogp_ratio(d, log_m) for w, d in zip(weights, dists) if w > 0)
    return reduce_loss(factor * per_sample, reduction)


def jensen_shannon(
    p: torch.Tensor, q: torch.Tensor, pi1: float = 0.5, scale: bool = False, reduction: str = "mean"
) -> torch.Tensor:
    """Jensen-Shannon divergence JS_pi(p, q) = pi1 KL(p || m) + (1 - pi1) KL(q || m), m = pi1 p + (1 - pi1) q.

    pi1 = 0.5 (default) gives the symmetric JS, bounded by ln 2. ``scale=True`` applies the GJS normaliser
    :func:`gjs_scale` (pi1). Shapes: p, q float (B, C). Gradients flow into both.
    """
    return generalized_jensen_shannon([p, q], [pi1, 1.0 - pi1], scale=scale, reduction=reduction)


def target_distribution(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The target as a (B, C) distribution in the dtype of ``logits``: one-hot for integer labels (B,),
    unchanged for soft targets float (B, C)."""
    check_logits(logits)
    if isinstance(labels, torch.Tensor) and labels.is_floating_point():
        _check_distribution(labels, "soft targets")
        if labels.shape != logits.shape:
            raise DataError(f"soft targets shape {tuple(labels.shape)} != logits shape {tuple(logits.shape)}")
        return labels.to(logits.dtype)
    labels = check_labels(logits, labels)
    return F.one_hot(labels, logits.shape[1]).to(logits.dtype)


def js_loss(
    logits: torch.Tensor, labels: torch.Tensor, pi1: float, scale: bool = True, reduction: str = "mean"
) -> torch.Tensor:
    """JS loss of Englesson & Azizpour 2021: JS_pi(onehot(y), p) / Z, weights (pi1, 1 - pi1), scaled by GJS's
    normaliser 1/Z (``scale=True``, default; their code "JSWCS" scales JS too; Z: ``gjs_scale``).

    Tends to CE as pi1 -> 0 and to (1/2)||onehot(y) - p||_1 (MAE) as pi1 -> 1. Shapes: logits (B, C), labels
    int (B,) or soft targets float (B, C). Values: NRD Table 5 "JS (pi1)" per setting, 0.1-0.9.
    """
    target = target_distribution(labels, logits)
    return jensen_shannon(target, F.softmax(logits, dim=1), pi1=pi1, scale=scale, reduction=reduction)


def _view_weights(pis: float | Sequence[float], num_views: int) -> list[float]:
    """A single float is pi1; the rest, 1 - pi1, is split evenly over the views (GJS's convention)."""
    if isinstance(pis, (int, float)):
        return [float(pis)] + [(1.0 - float(pis)) / num_views] * num_views
    return [float(w) for w in pis]


def gjs_loss(
    logits_views: Sequence[torch.Tensor],
    labels: torch.Tensor,
    pis: float | Sequence[float],
    scale: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """GJS loss: GJS_pi(onehot(y), softmax(l_1), ..., softmax(l_M)) / Z (Englesson & Azizpour 2021).

    ``logits_views``: M >= 1 float (B, C) logits, one per augmented view (GJS uses M = 2). ``pis``: the M + 1
    weights (label first), or a single float pi1 with the remaining 1 - pi1 split evenly over the views.
    Shapes: labels int (B,) or soft targets float (B, C). No stop-gradient: detach a view's logits yourself
    if it is a teacher (NRD: onehot, student view, detached EMA teacher on an AugMix view, pi = (pi1, pi2, pi1)).
    Values: NRD Table 5 "GJS (pi1)" with two views, and the NRD column for (pi1, pi2, pi3).
    """
    if isinstance(logits_views, torch.Tensor):
        raise DataError("gjs_loss takes a list of (B, C) logits, one per view; for a single view use js_loss")
    views = list(logits_views)
    if not views:
        raise DataError("gjs_loss needs at least one view")
    for i, v in enumerate(views):
        check_logits(v, f"logits_views[{i}]")
    target = target_distribution(labels, views[0])
    dists = [target] + [F.softmax(v, dim=1) for v in views]
    return generalized_jensen_shannon(dists, _view_weights(pis, len(views)), scale=scale, reduction=reduction)
