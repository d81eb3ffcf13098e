"""Input checks shared by ``noisykd.detect``: every public function goes through them, so that a wrong
shape, a NaN, a length mismatch or a label out of range fails with a message that names the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError

# Probabilities computed in float32 may exceed [0, 1] or miss a row sum of 1 by rounding; this much is let
# through (and clipped), anything more is an error.
PROB_TOL = 1e-6
ROW_SUM_TOL = 1e-3


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
