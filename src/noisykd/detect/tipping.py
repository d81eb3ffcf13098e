"""BKD's tipping point ("fitting epoch", Sec. 4.1): where the student's mean max probability peaks.

The series is the per-epoch mean of max_c P_S(c|x) (Eq. 4), one value per finished epoch, epoch 0 first.
Epoch e is the fitting epoch e* when series[e] is a *strict* maximum of the 2k+1 values centred on it,
series[e-k : e+k+1]. That is known only k epochs later, once the series has e+k+1 entries; and the authors'
code only starts looking once 6 epochs are recorded (``min_epochs``).

Call :func:`find_tipping_epoch` (or :func:`tipping_epoch_with_fallback`) after every epoch with the series so
far; the answer never changes once given, because later entries only complete later windows.

Example
-------
>>> series = [0.30, 0.50, 0.60, 0.70, 0.65, 0.66, 0.64, 0.62]
>>> find_tipping_epoch(series)          # 0.70 at epoch 3 beats epochs 1..5; known at epoch 5
3
>>> tipping_epoch_with_fallback(series).as_dict()
{'epoch': 3, 'detected_at': 5, 'fallback': False}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._checks import _as_float_1d

#: Window half-width and minimum number of recorded epochs of the authors' code.
DEFAULT_K = 2
DEFAULT_MIN_EPOCHS = 6


@dataclass(frozen=True)
class TippingResult:
    """The fitting epoch and when it became known.

    epoch:       0-based index of the fitting epoch e* in the series.
    detected_at: 0-based index of the epoch after which the decision was made (the series then had
                 ``detected_at + 1`` entries): max(e* + k, min_epochs − 1) for a detection,
                 ``deadline − 1`` for a fallback.
    fallback:    True when no strict maximum was found by the deadline and e* is the arg-max instead.
    """

    epoch: int
    detected_at: int
    fallback: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _strict_maxima(x: np.ndarray, k: int) -> np.ndarray:
    """Indices e (ascending) with k <= e <= len−k−1 where x[e] > every other value of x[e−k : e+k+1]."""
    if len(x) < 2 * k + 1:
        return np.empty(0, dtype=np.int64)
    win = np.lib.stride_tricks.sliding_window_view(x, 2 * k + 1)    # row r is centred on e = r + k
    others = np.maximum(win[:, :k].max(axis=1), win[:, k + 1:].max(axis=1))
    return np.flatnonzero(win[:, k] > others) + k


def find_tipping_epoch(series, k: int = DEFAULT_K, min_epochs: int = DEFAULT_MIN_EPOCHS) -> int | None:
    """The fitting epoch of BKD (Sec. 4.1), or None if it is not known yet.

    Parameters
    ----------
    series : float E
        Per-epoch mean max student probability (Eq. 4), epoch 0 first, as recorded so far.
    k : int >= 1
        Half-width of the window (the authors use 2): the window is 2k+1 epochs.
    min_epochs : int >= 0
        No decision before this many epochs are recorded (the authors' code: 6).

    Returns
    -------
    The first epoch e (0-based) such that series[e] > series[i] for every other i in [e−k, e+k], with the
    window fully inside the series (e >= k, e + k < E). It becomes known when the series has
    max(e+k+1, min_epochs) entries; since that moment grows with e, the first detected epoch is also the
    smallest such e. None when there is none yet (fewer than ``min_epochs`` entries, a series still rising,
    or plateaus: equal values are not a strict maximum).

    Examples
    --------
    >>> find_tipping_epoch([0.1, 0.2, 0.5, 0.4, 0.3, 0.2])
    2
    >>> find_tipping_epoch([0.1, 0.2, 0.5, 0.5, 0.3, 0.2]) is None    # a plateau is no strict maximum
    True
    """
    k = _check_int("k", k, 1)
    min_epochs = _check_int("min_epochs", min_epochs, 0)
    x = _as_float_1d(series, "series", min_len=0)
    if len(x) < min_epochs:
        return None
    found = _strict_maxima(x, k)
    return int(found[0]) if len(found) else None


def tipping_epoch_with_fallback(series, k: int = DEFAULT_K, min_epochs: int = DEFAULT_MIN_EPOCHS,
                                deadline: int | None = None, fallback_epoch: int | None = None,
                                ) -> TippingResult | None:
    """The fitting epoch, falling back to the arg-max when none is found by ``deadline`` entries.

    Parameters
    ----------
    series, k, min_epochs
        As for :func:`find_tipping_epoch`.
    deadline : int >= 1, optional
        Number of recorded epochs by which a decision must be made. If no strict maximum is known once the
        series has ``deadline`` entries (a detection that becomes known exactly then still counts), the
        fitting epoch is the first arg-max of ``series[k:deadline]`` (the epochs the detector itself can
        choose: the first k cannot be the centre of a full window, and a network's very first epochs often
        show a short-lived high that is not the tipping point), reported with ``fallback=True``; the caller
        should log it. None (default): no fallback, as in the paper and in the authors' current code
        (TimoK93/blind_knowledge_distillation at 56ae05a, ``detect_overfitting_epoch``), which then never
        finds a fitting epoch and trains on CE to the end.
    fallback_epoch : int, optional
        Use this fixed epoch as the fallback instead of the arg-max. (One intermediate commit of the authors'
        code, 1c3c351, forced epoch 8 once 10 epochs were recorded; the next commit, 8cec543, removed it
        again: their current code forces no epoch.)

    Returns
    -------
    TippingResult(epoch, detected_at, fallback), or None while undecided (no detection yet and the
    deadline not reached). Entries past ``deadline`` are ignored once the deadline applies: the decision is
    the one that would have been taken when the series had ``deadline`` entries.

    Examples
    --------
    >>> rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    >>> tipping_epoch_with_fallback(rising, deadline=10) is None          # still undecided
    True
    >>> tipping_epoch_with_fallback(rising + [0.8, 0.9, 0.85], deadline=10).as_dict()
    {'epoch': 8, 'detected_at': 9, 'fallback': True}
    """
    k = _check_int("k", k, 1)
    min_epochs = _check_int("min_epochs", min_epochs, 0)
    if deadline is not None:
        deadline = _check_int("deadline", deadline, 1)
    x = _as_float_1d(series, "series", min_len=0)
    seen = x if deadline is None else x[:deadline]
    if len(seen) >= min_epochs:
        found = _strict_maxima(seen, k)
        if len(found):
            e = int(found[0])
            return TippingResult(epoch=e, detected_at=max(e + k, min_epochs - 1), fallback=False)
    if deadline is None or len(x) < deadline:
        return None
    if fallback_epoch is not None:
        e = _check_int("fallback_epoch", fallback_epoch, 0)
        if e >= deadline:
            raise ConfigError(f"fallback_epoch must be < deadline ({deadline}), got {e}")
    else:
        start = min(k, len(seen) - 1)
        e = start + int(np.argmax(seen[start:]))
    return TippingResult(epoch=e, detected_at=deadline - 1, fallback=True)
