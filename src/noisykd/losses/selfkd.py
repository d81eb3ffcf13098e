"""Self label correction and confident-knowledge selection: the equations of CMD (``cmd-...md``), as pure functions.

Notation (``shared/docs/methods.md``): p = softmax(logits), q = onehot(y), C classes, H(p) natural-log entropy,
H(u) = ln C, h(lambda, b) = 1 / (1 + exp(-lambda * b)). B is the batch size.

* Refined labels (Table 2): q~ = (1 - eps) q + eps p (Boot-soft, ProSelfLC, Mconf), (1 - eps) q + eps u (LS),
  (1 - eps) q - eps p (CP), q (CE).
* Self trust: ProSelfLC eps = h(t/Gamma - 0.5, b1) * (1 - H(p)/H(u)) (Eq. 5); Mconf eps = h(r - rho, b1) *
  (1 - H(p)/H(u)) with r = 1 - mean_i H(p_i)/H(u) (Eq. 6).
* Selection threshold chi = H(u)/eta * 2 h(t/Gamma - 0.5, b2) (Eq. 12); B's knowledge of x is distilled into A
  when H(p_B) < chi (Eq. 8).
* Distillation term: sum over the selected samples of H(q~_B, p_A), divided by the full batch (appendix C).

Stop-gradients are the caller's choice and named where they apply: ``refined_target`` uses the ``probs`` it is
given (detach them for a fixed target), ``distillation_loss`` always detaches the peer's target.

The log (``log_eps``): by default every ln p is exact (from log-softmax). The authors' code takes ln(p + 1e-6)
instead: ProSelfLC's official cross-entropy (``XinshaoAmosWang/ProSelfLC-AT``,
``src/proselflc/slices/losses/crossentropy.py``: ``-torch.log(pred_probs + 1e-6)``) and CMD's appendix C snippet
(``-torch.log(pA + 1e-6)`` in the distillation term and ``-pA * torch.log(pA + 1e-6)`` in the selection entropy).
``log_eps=eps`` (a float > 0) reproduces that in :func:`target_cross_entropy`, :func:`distillation_loss`,
:func:`entropy` and :func:`confident_mask`. It is not a rounding detail: d/dz of -ln(p_y + eps) is
p_y / (p_y + eps) times the exact gradient (-(1 - p_y) for the logit of y), so at p_y = eps the official
gradient is half the exact one and at p_y = eps/100 about a hundredth -- exactly on the samples whose given
label the model finds implausible, i.e. mostly the noisy ones. ``log_eps=None`` (default) or 0: the exact log.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = [
    "check_log_eps",
    "log_of_probs",
    "logistic",
    "entropy",
    "normalized_entropy",
    "proselflc_global_trust",
    "mconf_global_trust",
    "mean_certainty",
    "self_trust",
    "refined_target",
    "label_smoothing_target",
    "confidence_penalty_target",
    "selection_threshold",
    "confident_mask",
    "target_cross_entropy",
    "distillation_loss",
]


def logistic(x: float, b: float) -> float:
    """h(x, b) = 1 / (1 + exp(-x * b)), the logistic function of CMD Eqs. 5, 6 and 12 (b = 0 gives 0.5)."""
    z = -x * b
    if z > 700:  # exp overflows a float; h is 0 to double precision there
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


def check_log_eps(log_eps: float | None, name: str = "log_eps") -> float | None:
    """``log_eps`` as None or a finite float >= 0; ConfigError naming ``name`` otherwise (a bool is refused)."""
    if log_eps is None:
        return None
    if isinstance(log_eps, bool) or not isinstance(log_eps, (int, float)) or not math.isfinite(log_eps) \
            or log_eps < 0:
        raise ConfigError(f"{name} must be None (the exact log) or a finite number >= 0 (ln(p + {name}), "
                          f"e.g. 1e-6 as the authors' code), got {log_eps!r}")
    return float(log_eps)


def log_of_probs(log_probs: torch.Tensor, log_eps: float | None = None) -> torch.Tensor:
    """The ln p the cross-entropies use: ``log_probs`` itself (exact; ``log_eps`` None or 0), or
    ln(p + log_eps) with p = exp(log_probs), as the authors' code (see the module docstring). (B, C) -> (B, C),
    differentiable."""
    if not check_log_eps(log_eps):
        return log_probs
    return torch.log(log_probs.exp() + log_eps)


def entropy(log_probs: torch.Tensor, log_eps: float | None = None) -> torch.Tensor:
    """H(p) = -sum_k p_k ln p_k per row, from log-probabilities (B, C) -> (B,). Exact at p_k = 0 (0 * -inf
    terms are taken as 0) by default; ``log_eps``: -sum_k p_k ln(p_k + log_eps), the appendix's selection
    entropy with 1e-6."""
    p = log_probs.exp()
    if check_log_eps(log_eps):
        return -(p * torch.log(p + log_eps)).sum(dim=1)
    return -(p * log_probs).nan_to_num(nan=0.0).sum(dim=1)


def normalized_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """H(p) / H(u) in [0, 1] per row: 0 for a one-hot prediction, 1 for the uniform one. (B, C) -> (B,)."""
    return entropy(log_probs) / math.log(log_probs.shape[1])


def proselflc_global_trust(t: float, total: float, b1: float, transit: float = 0.5) -> float:
    """ProSelfLC's global model confidence g(t) = h(t/Gamma - transit, b1) (Eq. 5), rising with training time.

    t: the current iteration (or epoch), 0-based; total: Gamma, their number in the run; transit: the point
    t/Gamma where g = 0.5 (the paper's 0.5).

    The official code counts from 1 (``trainer_cnn_vision.py``: ``cur_time = epoch`` with ``epoch`` in
    1..E, or ``(epoch - 1) * len(dataloader) + batch_index + 1``), so its t/Gamma is ours plus 1/Gamma: one
    step in ~39,000 in iteration mode (negligible), but one epoch in E in epoch mode (at E = 100 its g in
    epoch e is ours in epoch e + 1, and its last epoch reaches t/Gamma = 1 where ours reaches (E - 1)/E).
    """
    return logistic(t / total - transit, b1)


def mean_certainty(mean_normalized_entropy: float) -> float:
    """Mconf's r = 1 - sum_i H(p_i) / (n H(u)) (Eq. 6): one minus the mean normalised entropy over n samples."""
    return 1.0 - mean_normalized_entropy


def mconf_global_trust(r: float, rho: float, b1: float) -> float:
    """Mconf's global model confidence g(r) = h(r - rho, b1) (Eq. 6): more trust once the model's overall
    certainty r exceeds rho."""
    return logistic(r - rho, b1)


def self_trust(global_trust: float, log_probs: torch.Tensor) -> torch.Tensor:
    """eps = g * l(p) with l(p) = 1 - H(p)/H(u) (Eq. 5): the trust in each prediction. (B, C) -> (B,), in [0, 1].

    Computed without a gradient: eps weighs the target, it is not trained (ProSelfLC's code computes it under
    no_grad as well).
    """
    with torch.no_grad():
        return global_trust * (1.0 - normalized_entropy(log_probs))


def _one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    return F.one_hot(labels, num_classes).to(dtype)


def _column(epsilon: torch.Tensor | float) -> torch.Tensor | float:
    """eps as a (B, 1) column when it is per sample, so that it broadcasts over the classes."""
    return epsilon[:, None] if isinstance(epsilon, torch.Tensor) and epsilon.ndim == 1 else epsilon


def refined_target(labels: torch.Tensor, probs: torch.Tensor, epsilon: torch.Tensor | float) -> torch.Tensor:
    """q~ = (1 - eps) q + eps p: Boot-soft (fixed eps), ProSelfLC and Mconf (per-sample eps); eps = 0 is CE.

    labels (B,), probs (B, C), epsilon a float or (B,) -> (B, C). The gradient flows through ``probs`` unless
    the caller detaches them (the project's default for self-KD targets).
    """
    eps = _column(epsilon)
    return (1 - eps) * _one_hot(labels, probs.shape[1], probs.dtype) + eps * probs


def label_smoothing_target(labels: torch.Tensor, num_classes: int, epsilon: float,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """LS: q~ = (1 - eps) q + eps u, u uniform over all C classes. labels (B,) -> (B, C)."""
    return (1 - epsilon) * _one_hot(labels, num_classes, dtype) + epsilon / num_classes


def confidence_penalty_target(labels: torch.Tensor, probs: torch.Tensor, epsilon: float) -> torch.Tensor:
    """CP as a refined label (Table 2): q~ = (1 - eps) q - eps p, so that H(q~, p) = (1 - eps) CE - eps H(p).

    Not a distribution (it has negative entries). The gradient must flow through ``probs``: with p detached,
    sum_k p_k ln p_k has zero gradient with respect to the logits and the penalty would vanish.
    """
    return (1 - epsilon) * _one_hot(labels, probs.shape[1], probs.dtype) - epsilon * probs


def selection_threshold(epoch: int, total_epochs: int, num_classes: int, eta: float, b2: float) -> float:
    """chi = H(u)/eta * 2 h(t/Gamma - 0.5, b2) (Eq. 12), t the 0-based epoch, Gamma the number of epochs.

    b2 = 0: CMD-S, chi = H(u)/eta, constant (eta <= 1 gives chi >= H(u): every sample is selected, SyncMKD);
    b2 < 0: CMD-P, chi falls from about 2 H(u)/eta * h(-0.5, b2) towards 0; b2 > 0: chi rises.
    eta <= 0 gives chi <= 0: nothing is selected (zero knowledge).
    """
    if eta == 0:
        raise ValueError("eta must be non-zero (chi = H(u)/eta)")
    return math.log(num_classes) / eta * 2.0 * logistic(epoch / total_epochs - 0.5, b2)


def confident_mask(peer_log_probs: torch.Tensor, chi: float, log_eps: float | None = None) -> torch.Tensor:
    """1[H(p_peer) < chi] (Eqs. 8-9): the samples whose peer prediction is confident enough. (B, C) -> bool (B,).
    Computed without a gradient (a selection, not a loss). ``log_eps``: H with ln(p + log_eps) (appendix C)."""
    with torch.no_grad():
        return entropy(peer_log_probs, log_eps) < chi


def target_cross_entropy(target: torch.Tensor, log_probs: torch.Tensor,
                         log_eps: float | None = None) -> torch.Tensor:
    """H(q~, p) = -sum_k q~_k ln p_k per sample. target (B, C), log_probs (B, C) -> (B,). No stop-gradient here.

    ``log_eps`` (None: exact): -sum_k q~_k ln(p_k + log_eps), the official ProSelfLC / CMD code with 1e-6.
    """
    return -(target * log_of_probs(log_probs, log_eps)).sum(dim=1)


def distillation_loss(peer_target: torch.Tensor, log_probs: torch.Tensor, selected: torch.Tensor,
                      log_eps: float | None = None) -> torch.Tensor:
    """The peer term of Eq. 10: sum over the selected samples of H(q~_peer, p), divided by the full batch size B
    (the appendix's ``sum(lossB2A) / len(hpA)``), with q~_peer detached (the peer is a teacher here).

    peer_target (B, C), log_probs (B, C), selected bool (B,) -> scalar; 0 (with a gradient graph) when nothing
    is selected. ``log_eps`` as :func:`target_cross_entropy` (the appendix: ``-torch.log(pA + 1e-6)``).
    """
    per_sample = target_cross_entropy(peer_target.detach(), log_probs, log_eps)
    return (per_sample * selected.to(per_sample.dtype)).sum() / len(per_sample)
