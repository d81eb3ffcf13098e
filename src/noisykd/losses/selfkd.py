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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
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


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """H(p) = -sum_k p_k ln p_k per row, from log-probabilities (B, C) -> (B,). Exact at p_k = 0 (0 * -inf
    terms are taken as 0), unlike the appendix's ln(p + 1e-6)."""
    p = log_probs.exp()
    return -(p * log_probs).nan_to_num(nan=0.0).sum(dim=1)


def normalized_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """H(p) / H(u) in [0, 1] per row: 0 for a one-hot prediction, 1 for the uniform one. (B, C) -> (B,)."""
    return entropy(log_probs) / math.log(log_probs.shape[1])


def proselflc_global_trust(t: float, total: float, b1: float, transit: float = 0.5) -> float:
    """ProSelfLC's global model confidence g(t) = h(t/Gamma - transit, b1) (Eq. 5), rising with training time.

    t: the current iteration (or epoch), 0-based; total: Gamma, their number in the run; transit: the point
    t/Gamma where g = 0.5 (the paper's 0.5).
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


def confident_mask(peer_log_probs: torch.Tensor, chi: float) -> torch.Tensor:
    """1[H(p_peer) < chi] (Eqs. 8-9): the samples whose peer prediction is confident enough. (B, C) -> bool (B,).
    Computed without a gradient (a selection, not a loss)."""
    with torch.no_grad():
        return entropy(peer_log_probs) < chi


def target_cross_entropy(target: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """H(q~, p) = -sum_k q~_k ln p_k per sample. target (B, C), log_probs (B, C) -> (B,). No stop-gradient here."""
    return -(target * log_probs).sum(dim=1)


def distillation_loss(peer_target: torch.Tensor, log_probs: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """The peer term of Eq. 10: sum over the selected samples of H(q~_peer, p), divided by the full batch size B
    (the appendix's ``sum(lossB2A) / len(hpA)``), with q~_peer detached (the peer is a teacher here).

    peer_target (B, C), log_probs (B, C), selected bool (B,) -> scalar; 0 (with a gradient graph) when nothing
    is selected.
    """
    per_sample = target_cross_entropy(peer_target.detach(), log_probs)
    return (per_sample * selected.to(per_sample.dtype)).sum() / len(per_sample)
