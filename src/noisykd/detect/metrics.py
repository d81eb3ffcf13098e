"""Detection and calibration metrics, numpy in and out (torch tensors are converted).

:func:`detection_metrics` scores a noisy-label detector the way BKD (Eq. 10-12) and cleanlab users do:
precision, recall and F1 of the flagged set, plus the ranking quality of a continuous noise score (AUROC,
AUPRC, precision at k = number of truly noisy samples). :func:`expected_calibration_error` is the usual
equal-width-bin ECE.

This module also holds the small input checks shared by ``noisykd.detect`` (``_as_float_1d`` and friends):
every public function of the package goes through them, so that a wrong shape, a NaN, a length mismatch or
a label out of range fails with a message that names the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

# Probabilities computed in float32 may exceed [0, 1] or miss a row sum of 1 by rounding; this much is let
# through (and clipped), anything more is an error.
PROB_TOL = 1e-6
ROW_SUM_TOL = 1e-3


# ---- shared input checks (private to noisykd.detect) ----------------------------------------------------

def _to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array; torch tensors are detached and moved to the CPU (bfloat16 → float32)."""
    if x is None:
        raise DataError(f"{name} is required, got None")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch here
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{name} could not be converted to an array: {exc}") from exc


def _as_float_1d(x: Any, name: str, *, min_len: int = 1) -> np.ndarray:
    """float64 1-D copy of ``x``; DataError if it is not 1-D, not numeric, too short or not finite."""
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D array (one value per sample), got shape {a.shape}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if len(a) < min_len:
        raise DataError(f"{name} must have at least {min_len} value(s), got {len(a)}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} must be finite: {int(bad.sum())} NaN/inf value(s), the first at index {first} "
                        f"({a[first]})")
    return a


def _as_unit_1d(x: Any, name: str, *, min_len: int = 1) -> np.ndarray:
    """Like :func:`_as_float_1d`, and every value in [0, 1] (±PROB_TOL, then clipped)."""
    a = _as_float_1d(x, name, min_len=min_len)
    lo, hi = float(a.min()), float(a.max())
    if lo < -PROB_TOL or hi > 1 + PROB_TOL:
        raise DataError(f"{name} must lie in [0, 1] (probabilities), got values in [{lo:.6g}, {hi:.6g}]")
    return np.clip(a, 0.0, 1.0)


def _as_bool_1d(x: Any, name: str) -> np.ndarray:
    """bool 1-D array; integer input must hold only 0 and 1."""
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D boolean array (one flag per sample), got shape {a.shape}")
    if a.dtype == bool:
        return a.copy()
    if np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating):
        if not np.isin(a, (0, 1)).all():
            raise DataError(f"{name} must be boolean (or 0/1), got values other than 0 and 1")
        return a.astype(bool)
    raise DataError(f"{name} must be boolean, got dtype {a.dtype}")


def _as_labels(x: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    """int64 1-D labels, >= 0 and, when ``num_classes`` is given, < num_classes."""
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D integer array (one label per sample), got shape {a.shape}")
    if len(a) == 0:
        raise DataError(f"{name} is empty")
    if np.issubdtype(a.dtype, np.floating):
        if not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise DataError(f"{name} must be integer class indices, got non-integer floats")
    elif a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{name} must be integer class indices, got dtype {a.dtype}")
    a = a.astype(np.int64)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0:
        raise DataError(f"{name} must be >= 0, got {lo} at index {int(np.argmin(a))}")
    if num_classes is not None and hi >= num_classes:
        raise DataError(f"{name} must be < the number of classes C={num_classes} (columns of pred_probs), "
                        f"got {hi} at index {int(np.argmax(a))}")
    return a


def _as_probs_2d(x: Any, name: str) -> np.ndarray:
    """float64 N x C probabilities: finite, in [0, 1] and rows summing to 1 (±ROW_SUM_TOL)."""
    a = _to_numpy(x, name)
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D array N x C (one row of class probabilities per sample), "
                        f"got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] < 2:
        raise DataError(f"{name} must have at least 1 row and 2 columns (classes), got shape {a.shape}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        row = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise DataError(f"{name} must be finite: NaN/inf in row {row}")
    lo, hi = float(a.min()), float(a.max())
    if lo < -PROB_TOL or hi > 1 + PROB_TOL:
        raise DataError(f"{name} must hold probabilities in [0, 1], got values in [{lo:.6g}, {hi:.6g}] "
                        "(logits? apply softmax first)")
    sums = a.sum(axis=1)
    off = np.abs(sums - 1.0) > ROW_SUM_TOL
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise DataError(f"{name} rows must sum to 1 (±{ROW_SUM_TOL}): {int(off.sum())} row(s) do not, the first "
                        f"is row {row} with sum {sums[row]:.6g} (apply softmax to logits)")
    return np.clip(a, 0.0, 1.0)


def _check_same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items() if a is not None}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise DataError(f"arrays must have one entry per sample and the same length, got {desc}")


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
