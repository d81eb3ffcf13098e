"""Detection and calibration metrics, numpy in and out (torch tensors are converted).

:func:`detection_metrics` scores a noisy-label detector the way BKD (Eq. 10-12) and cleanlab users do:
precision, recall and F1 of the flagged set, plus the ranking quality of a continuous noise score (AUROC,
AUPRC, precision at k = number of truly noisy samples). :func:`expected_calibration_error` is the usual
equal-width-bin ECE.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ._checks import _as_float_1d, _as_bool_1d, _as_labels, _as_probs_2d, _check_same_length

# ---- metrics --------------------------------------------------------------------------------------------

def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


def detection_metrics(is_noisy_true, flagged, noise_score=None) -> dict[str, Any]:
    """Quality of a noisy-label detector (BKD Eq. 10-12), plus ranking metrics of a continuous score.

    Parameters
    ----------
    is_noisy_true : bool N (or 0/1)
        Ground truth: True where the given label is wrong (``X_Noise``).
    flagged : bool N (or 0/1)
        The detector's decision: True where it calls the label wrong (``X'_Noise``).
    noise_score : float N, optional
        Continuous score, higher = more likely wrong (e.g. ``LabelIssues.noise_score``). Enables AUROC,
        AUPRC and precision@k.

    Returns
    -------
    dict with
        ``n``, ``n_noisy``, ``n_flagged``, ``tp``, ``fp``, ``fn``, ``tn`` (ints);
        ``precision`` = tp / n_flagged (Eq. 10), ``recall`` = tp / n_noisy (Eq. 11),
        ``f1`` = 2·Pr·Re / (Pr + Re) (Eq. 12), ``accuracy`` = (tp + tn) / n (floats);
        ``auroc``, ``auprc`` (sklearn ``roc_auc_score`` / ``average_precision_score`` of ``noise_score``
        against ``is_noisy_true``), ``precision_at_k`` with ``k`` = n_noisy: the fraction of truly noisy
        samples among the k highest scores (ties broken by lower index first, a stable sort).

    Conventions: a zero denominator gives 0.0 (nothing flagged → precision 0.0; no noisy sample → recall 0.0;
    precision = recall = 0 → F1 0.0), as ``sklearn.metrics`` with ``zero_division=0``. ``auroc`` and
    ``auprc`` are None when ``noise_score`` is not given or only one class is present; ``precision_at_k``
    is None without ``noise_score`` or when k = 0.

    Examples
    --------
    >>> m = detection_metrics([True, True, False, False], [True, False, True, False], [0.9, 0.4, 0.6, 0.1])
    >>> m["precision"], m["recall"], m["f1"], m["auroc"]
    (0.5, 0.5, 0.5, 0.75)
    """
    truth = _as_bool_1d(is_noisy_true, "is_noisy_true")
    flag = _as_bool_1d(flagged, "flagged")
    score = None if noise_score is None else _as_float_1d(noise_score, "noise_score")
    _check_same_length(is_noisy_true=truth, flagged=flag, noise_score=score)
    n = len(truth)
    if n == 0:
        raise DataError("is_noisy_true is empty: no samples to evaluate")
    tp = int(np.sum(truth & flag))
    fp = int(np.sum(~truth & flag))
    fn = int(np.sum(truth & ~flag))
    tn = n - tp - fp - fn
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    out: dict[str, Any] = {
        "n": n, "n_noisy": tp + fn, "n_flagged": tp + fp, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": precision, "recall": recall, "f1": f1, "accuracy": (tp + tn) / n,
        "auroc": None, "auprc": None, "precision_at_k": None, "k": tp + fn,
    }
    if score is not None:
        from sklearn.metrics import average_precision_score, roc_auc_score

        if 0 < tp + fn < n:
            out["auroc"] = float(roc_auc_score(truth, score))
            out["auprc"] = float(average_precision_score(truth, score))
        k = tp + fn
        if k > 0:
            top = np.argsort(-score, kind="stable")[:k]
            out["precision_at_k"] = float(truth[top].mean())
    return out


def expected_calibration_error(probs, labels, bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence, with equal-width bins.

    Parameters
    ----------
    probs : float N x C
        Predicted class probabilities (rows sum to 1).
    labels : int N
        True labels in [0, C).
    bins : int
        Number of equal-width confidence bins on [0, 1]; bin b holds confidences in (b/bins, (b+1)/bins]
        (a confidence of exactly 0 joins the first bin).

    Returns
    -------
    float: ECE = Σ_b (|B_b| / N) · |accuracy(B_b) − mean confidence(B_b)|, in [0, 1]; the prediction is
    argmax of ``probs`` (first maximum on ties) and the confidence its probability.

    Examples
    --------
    >>> expected_calibration_error([[0.9, 0.1], [0.9, 0.1]], [0, 1], bins=10)  # 90 % sure, 50 % right
    0.4
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ConfigError(f"bins must be an integer >= 1, got {bins!r}")
    p = _as_probs_2d(probs, "probs")
    y = _as_labels(labels, "labels", num_classes=p.shape[1])
    _check_same_length(probs=p, labels=y)
    pred = p.argmax(axis=1)
    conf = p[np.arange(len(p)), pred]
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    which = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, bins - 1)
    acc_sum = np.bincount(which, weights=correct, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    return float(np.abs(acc_sum - conf_sum).sum() / len(p))
