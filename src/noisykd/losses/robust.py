"""Classification losses on logits: cross-entropy and the noise-robust baselines of the NRD and CMD papers.

Every function is pure: ``logits`` float (B, C), ``labels`` int (B,) class indices (or ``target_probs``
float (B, C) where named), returns a scalar tensor for ``reduction='mean'`` (default) or ``'sum'``, or the
per-sample losses (B,) for ``'none'``. Notation: p = softmax(logits), y the given (possibly noisy) label,
C the number of classes, H(p) = -sum_k p_k ln p_k (natural log), u the uniform distribution over all C classes.

Stop-gradients are explicit: the only one in this module is ``bootstrapping_soft(detach_prediction=True)``.
Hyperparameters the papers use are listed per function; named presets live in :mod:`noisykd.losses.presets`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .selfkd import entropy  # H(p) from log-probabilities, exact where p = 0

REDUCTIONS = ("mean", "sum", "none")

__all__ = [
    "REDUCTIONS",
    "reduce_loss",
    "cross_entropy",
    "soft_cross_entropy",
    "label_smoothing",
    "confidence_penalty",
    "bootstrapping_soft",
    "bootstrapping_hard",
    "generalized_cross_entropy",
    "reverse_cross_entropy",
    "symmetric_cross_entropy",
    "normalized_cross_entropy",
    "nce_rce",
]


# --- shared checks -------------------------------------------------------------------------------------------


def reduce_loss(values: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Reduce per-sample losses (B,): 'mean' -> scalar mean, 'sum' -> scalar sum, 'none' -> (B,) unchanged."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    """Raise DataError (a ValueError) unless ``logits`` is a floating (B, C) tensor with C >= 2."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 2:
        got = f"{logits.dtype} {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise DataError(f"{name} must be a float tensor of shape (B, C), got {got}")
    if logits.shape[1] < 2:
        raise DataError(f"{name} must have at least 2 classes, got shape {tuple(logits.shape)}")


def check_labels(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Check ``labels`` are integer class indices (B,) matching ``logits`` (B, C); return them as int64.

    Only shapes and dtypes are checked (no device sync); torch itself rejects indices outside [0, C).
    """
    check_logits(logits)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.is_complex():
        got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise DataError(
            f"labels must be an integer tensor of class indices (B,), got {got}; "
            "for soft targets (B, C) use soft_cross_entropy"
        )
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise DataError(f"labels must have shape ({logits.shape[0]},) to match logits, got {tuple(labels.shape)}")
    return labels.long()


def _log_probs_and_label(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return log p (B, C) and ln p_y (B,)."""
    labels = check_labels(logits, labels)
    log_p = F.log_softmax(logits, dim=1)
    return log_p, log_p.gather(1, labels[:, None]).squeeze(1)


def _check_range(name: str, value: float, low: float, high: float, *, low_open=False, high_open=False) -> None:
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(f"{name} must be in {lo}{low}, {high}{hi}, got {value}")


# --- cross-entropy ---------------------------------------------------------------------------------------------


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy with hard labels: CE = -ln p_y.

    Shapes: logits float (B, C), labels int (B,). The reference loss of every paper here (CE rows of NRD
    Table 2, CMD Table 3, BKD stage 1). No hyperparameters.
    """
    labels = check_labels(logits, labels)
    return reduce_loss(F.cross_entropy(logits, labels, reduction="none"), reduction)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy with a soft target: H(q, p) = -sum_k q_k ln p_k.

    Shapes: logits float (B, C), target_probs float (B, C), rows summing to 1 (not checked: costs a sync).
    No stop-gradient: if ``target_probs`` requires grad, the gradient flows into it; detach it yourself for
    a fixed target (CMD's self-KD targets q~ are detached by the caller). No hyperparameters.
    """
    check_logits(logits)
    check_logits(target_probs, "target_probs")
    if target_probs.shape != logits.shape:
        raise DataError(f"target_probs shape {tuple(target_probs.shape)} != logits shape {tuple(logits.shape)}")
    log_p = F.log_softmax(logits, dim=1)
    return reduce_loss(-(target_probs * log_p).sum(dim=1), reduction)


# --- self-KD style targets (CMD Table 2) -------------------------------------------------------------------------


def label_smoothing(
    logits: torch.Tensor, labels: torch.Tensor, epsilon: float, reduction: str = "mean"
) -> torch.Tensor:
    """Label smoothing: H(q~, p) with q~ = (1 - eps) * onehot(y) + eps * u, u uniform over all C classes.

    Equals (1 - eps) * CE + eps * mean_k(-ln p_k); eps = 0 is CE. Shapes: logits (B, C), labels (B,).
    Source: Szegedy et al. 2016 (eps = 0.1); CMD Table 2 "LS" (fixed eps); NRD Table 2 baseline "LS"
    (Lukasik et al. 2020) with eps per setting in NRD Table 5 (0.1-0.9). The GJS/NRD code minimises
    KL(q~ || p) instead, which differs by the constant H(q~): same gradients.
    """
    _check_range("epsilon", epsilon, 0.0, 1.0)
    log_p, log_p_y = _log_probs_and_label(logits, labels)
    # the uniform part needs no one-hot: sum_k (1/C) * -ln p_k is a row mean
    per_sample = -(1.0 - epsilon) * log_p_y - epsilon * log_p.mean(dim=1)
    return reduce_loss(per_sample, reduction)


def confidence_penalty(
    logits: torch.Tensor,
    labels: torch.Tensor,
    beta: float,
    proselflc_form: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Confidence penalty: CE - beta * H(p) (Pereyra et al. 2017), penalising low-entropy predictions.

    ``proselflc_form=True``: (1 - beta) * CE - beta * H(p), i.e. H(q~, p) with q~ = (1 - beta) q - beta p as
    written in CMD Table 2 and coded in ProSelfLC (the CMD authors' code base); it is the Pereyra loss with
    beta' = beta / (1 - beta), scaled by (1 - beta). No stop-gradient: H(p) is a regulariser on p.
    Shapes: logits (B, C), labels (B,). beta = 0 is CE. Values: Pereyra et al. tune beta per task; CMD does
    not report its value; the ProSelfLC/CMD code sweeps eps in {0.125, 0.25, 0.375, 0.5}.
    """
    _check_range("beta", beta, 0.0, math.inf)
    if proselflc_form:
        _check_range("beta", beta, 0.0, 1.0)
    log_p, log_p_y = _log_probs_and_label(logits, labels)
    ce_weight = 1.0 - beta if proselflc_form else 1.0
    per_sample = -ce_weight * log_p_y - beta * entropy(log_p)
    return reduce_loss(per_sample, reduction)


def bootstrapping_soft(
    logits: torch.Tensor,
    labels: torch.Tensor,
    beta: float,
    detach_prediction: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft bootstrapping (Reed et al. 2015): H(t, p) with t = beta * onehot(y) + (1 - beta) * p.

    beta weighs the given label (beta = 1 is CE). Stop-gradient: with ``detach_prediction=True`` (default,
    the project's rule for self-KD targets, CMD's "Boot-soft") p inside t is detached, so the gradient
    w.r.t. the logits is p - t. With ``False`` the gradient also flows through t; the loss is then
    beta * CE + (1 - beta) * H(p), the minimum-entropy regularisation of Reed et al.'s own derivation and what
    the SCE authors' Keras baseline and the GJS/NRD baseline code compute. Shapes: logits (B, C), labels (B,).
    Values: Reed et al. beta = 0.95; NRD Table 5 (copied from GJS) gives the weight of the *prediction*,
    1 - beta here (see presets).
    """
    _check_range("beta", beta, 0.0, 1.0)
    log_p, log_p_y = _log_probs_and_label(logits, labels)
    p = log_p.exp()
    p_target = p.detach() if detach_prediction else p
    per_sample = -beta * log_p_y - (1.0 - beta) * (p_target * log_p).sum(dim=1)
    return reduce_loss(per_sample, reduction)


def bootstrapping_hard(
    logits: torch.Tensor, labels: torch.Tensor, beta: float, reduction: str = "mean"
) -> torch.Tensor:
    """Hard bootstrapping (Reed et al. 2015): H(t, p) with t = beta * onehot(y) + (1 - beta) * onehot(argmax p).

    The argmax carries no gradient. Shapes: logits (B, C), labels (B,). Value: Reed et al. beta = 0.8.
    """
    _check_range("beta", beta, 0.0, 1.0)
    log_p, log_p_y = _log_probs_and_label(logits, labels)
    log_p_pred = log_p.gather(1, log_p.argmax(dim=1, keepdim=True)).squeeze(1)
    return reduce_loss(-beta * log_p_y - (1.0 - beta) * log_p_pred, reduction)


# --- robust losses (NRD Table 2 baselines) ---------------------------------------------------------------------


def generalized_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, q: float = 0.7, reduction: str = "mean"
) -> torch.Tensor:
    """Generalized cross-entropy L_q = (1 - p_y^q) / q (Zhang & Sabuncu 2018).

    q -> 0 gives CE, q = 1 gives 1 - p_y (MAE / 2). Shapes: logits (B, C), labels (B,). Values: q = 0.7 in
    the original paper; NRD Table 5 per setting (0.1-0.9). p_y^q is computed as exp(q ln p_y), which stays
    finite for p_y rounding to 0 (the reference code clamps p at 1e-7 instead).
    """
    _check_range("q", q, 0.0, 1.0, low_open=True)
    _, log_p_y = _log_probs_and_label(logits, labels)
    return reduce_loss((1.0 - torch.exp(q * log_p_y)) / q, reduction)


def reverse_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, log_clamp: float = -4.0, reduction: str = "mean"
) -> torch.Tensor:
    """Reverse cross-entropy RCE = -sum_k p_k ln q_k, q = onehot(y), with ln 0 replaced by A = ``log_clamp``.

    With a one-hot q this is -A * (1 - p_y). Wang et al. 2019 write A = -4 (the default here); their Keras code,
    the Active-Passive-Losses code and the GJS/NRD baseline code clip q at 1e-4, i.e. A = ln(1e-4) = -9.21,
    which scales RCE by 2.3: pass ``log_clamp=math.log(1e-4)`` to reproduce those numbers.
    Shapes: logits (B, C), labels (B,).
    """
    if not log_clamp < 0:
        raise ConfigError(f"log_clamp (A, the value used for ln 0) must be negative, got {log_clamp}")
    _, log_p_y = _log_probs_and_label(logits, labels)
    return reduce_loss(-log_clamp * (1.0 - log_p_y.exp()), reduction)


def symmetric_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    log_clamp: float = -4.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Symmetric cross-entropy SCE = alpha * CE + beta * RCE (Wang et al. 2019); RCE as in
    :func:`reverse_cross_entropy` with ln 0 = A = ``log_clamp``.

    Shapes: logits (B, C), labels (B,). Values: Wang et al. CIFAR-10 alpha = 0.1, beta = 1.0; CIFAR-100
    alpha = 6.0, beta = 0.1 (A = -4 in the paper, ln 1e-4 in their code); NRD Table 5 per setting.
    """
    ce = cross_entropy(logits, labels, reduction="none")
    rce = reverse_cross_entropy(logits, labels, log_clamp=log_clamp, reduction="none")
    return reduce_loss(alpha * ce + beta * rce, reduction)


def normalized_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Normalized cross-entropy NCE = -ln p_y / sum_k (-ln p_k) (Ma et al. 2020), in [0, 1].

    Shapes: logits (B, C), labels (B,). No hyperparameters (its weight is alpha in :func:`nce_rce`).
    """
    log_p, log_p_y = _log_probs_and_label(logits, labels)
    return reduce_loss(log_p_y / log_p.sum(dim=1), reduction)


def nce_rce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    log_clamp: float = -4.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Active-passive loss NCE+RCE = alpha * NCE + beta * RCE (Ma et al. 2020).

    RCE as in :func:`reverse_cross_entropy` (A = ``log_clamp``; the authors' code uses ln 1e-4).
    Shapes: logits (B, C), labels (B,). Values: Ma et al. CIFAR-10 alpha = 1, beta = 1; CIFAR-100
    alpha = 10, beta = 0.1; NRD Table 5 per setting.
    """
    nce = normalized_cross_entropy(logits, labels, reduction="none")
    rce = reverse_cross_entropy(logits, labels, log_clamp=log_clamp, reduction="none")
    return reduce_loss(alpha * nce + beta * rce, reduction)
