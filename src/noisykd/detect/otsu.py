"""BKD's adaptive noise estimation (Sec. 4.2): Otsu's threshold on P_A(ȳ|x), and the four α groups (Sec. 4.3).

Given per-sample values v ∈ [0, 1] (the agreement probability of the given label at the fitting epoch),
:func:`otsu_threshold` splits them into X1 = {v <= s} (likely noisy) and X2 = {v > s} (likely clean) with the
s that maximises Eq. 6,

    Q(s) = [n1 (μ1 − μ)² + n2 (μ2 − μ)²] / [n1 σ1² + n2 σ2²],

over the grid s ∈ {0, Δs, 2Δs, ..., 1} (Δs = 0.001). :func:`assign_groups` then gives every sample one of the
four groups and its α (0.30 / 0.45 / 0.55 / 0.70).

The search is vectorised: the values are sorted once (``np.unique``), the class sizes, sums and sums of
squares of every split come from cumulative sums, and ``np.searchsorted`` maps all grid points to their split
at once: O(N log N + G), a few milliseconds for 50,000 values.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> v = np.clip(np.concatenate([rng.normal(0.1, 0.02, 300), rng.normal(0.8, 0.05, 700)]), 0, 1)
>>> res = otsu_threshold(v)
>>> bool(0.15 < res.s < 0.65), round(res.mu1, 2), round(res.mu2, 2), (res.n1, res.n2)
(True, 0.1, 0.8, (300, 700))
>>> groups, alpha = assign_groups(v, res)
>>> groups.shape, sorted(set(alpha.tolist()))
((1000,), [0.3, 0.45, 0.55, 0.7])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ._checks import _as_unit_1d

VARIANCES = ("sigma2", "sigma")
SEARCHES = ("grid", "histogram")
#: How ``search="histogram"`` represents a bin in μ1, μ2 and Q: its centre (default) or its left edge i/bins
#: (the authors' code).
MEANS = ("centre", "left_edge")
#: α¹ < α² < α³ < α⁴ of the paper (Sec. 5.1), for groups 0 (most likely clean) ... 3 (most likely noisy).
DEFAULT_ALPHAS = (0.30, 0.45, 0.55, 0.70)
#: Group index → the condition on the value v, as in the paper's Sec. 4.3.
GROUP_RULES = ("v >= mu2", "s <= v < mu2", "mu1 <= v < s", "v < mu1")


@dataclass(frozen=True)
class OtsuResult:
    """The Otsu split of the values.

    threshold: s, the grid point maximising Q (X1 = {v <= s}, X2 = {v > s}); also available as ``.s``.
    mu1, mu2:  means of X1 (the lower, likely-noisy class) and X2 (the upper, likely-clean class);
               μ1 <= s < μ2 always (μ1 <= s <= μ2 with ``means="left_edge"``).
    q:         Q(s), the maximised objective (+inf when both classes have zero within-class variance).
    n1, n2:    sizes of X1 and X2 (n1 + n2 = N).
    sigma1, sigma2: within-class standard deviations of X1 and X2 (before any ``min_variance`` floor).
    mu:        mean of all values.
    variance, search, step, bins, min_variance, means: the options used.
    """

    threshold: float
    mu1: float
    mu2: float
    q: float
    n1: int
    n2: int
    sigma1: float
    sigma2: float
    mu: float
    variance: str
    search: str
    step: float
    bins: int
    min_variance: float
    means: str = "centre"

    @property
    def s(self) -> float:
        """The threshold s (alias of ``threshold``)."""
        return self.threshold

    def as_dict(self) -> dict[str, Any]:
        """All fields as a plain, JSON-able dict (``q`` may be ``inf``)."""
        return dataclasses.asdict(self)


def threshold_grid(step: float = 0.001) -> np.ndarray:
    """The candidate thresholds {0, step, 2·step, ...} up to 1, as float64.

    When 1/step is an integer n (0.001 → 1000) the points are computed as i / n, so that 0.003 is the same
    double as the literal ``0.003`` and a value exactly on a grid point lands in X1 (v <= s) as expected.
    """
    if isinstance(step, bool) or not isinstance(step, (int, float, np.floating, np.integer)):
        raise ConfigError(f"step must be a number in (0, 1], got {step!r}")
    step = float(step)
    if not (np.isfinite(step) and 0.0 < step <= 1.0):
        raise ConfigError(f"step must be in (0, 1], got {step}")
    n = int(np.floor(1.0 / step + 1e-9))
    if abs(n * step - 1.0) < 1e-9:
        return np.arange(n + 1, dtype=np.float64) / n
    return np.arange(n + 1, dtype=np.float64) * step


def _check_options(variance: str, search: str, bins: int, min_variance: float, means: str = "centre") -> None:
    if variance not in VARIANCES:
        raise ConfigError(f"variance must be one of {VARIANCES} ('sigma2': Eq. 6 of the paper; 'sigma': the "
                          f"authors' code), got {variance!r}")
    if search not in SEARCHES:
        raise ConfigError(f"search must be one of {SEARCHES} ('grid': the exact values; 'histogram': a "
                          f"{bins}-bin histogram, the authors' code), got {search!r}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ConfigError(f"bins must be an integer >= 2, got {bins!r}")
    if not (isinstance(min_variance, (int, float, np.floating, np.integer)) and np.isfinite(min_variance)
            and min_variance >= 0):
        raise ConfigError(f"min_variance must be a finite number >= 0, got {min_variance!r}")
    if means not in MEANS:
        raise ConfigError(f"means must be one of {MEANS} ('centre': a histogram bin counts at its centre; "
                          f"'left_edge': at its left edge, the authors' code), got {means!r}")
    if means == "left_edge" and search != "histogram":
        raise ConfigError("means='left_edge' applies to search='histogram' only (the grid search uses the exact "
                          f"values), got search={search!r}")


def otsu_threshold(values, step: float = 0.001, variance: str = "sigma2", search: str = "grid", *,
                   bins: int = 1000, min_variance: float = 0.0, means: str = "centre") -> OtsuResult:
    """Otsu's threshold of BKD (Eq. 6) on values in [0, 1].

    Parameters
    ----------
    values : float N, N >= 2
        Per-sample values in [0, 1] (BKD: P_A of the given label at the fitting epoch). Higher = more likely
        clean. Torch tensors are accepted. Values within 1e-6 outside [0, 1] are clipped; more is an error.
    step : float
        Grid spacing Δs; the thresholds tried are ``threshold_grid(step)`` = {0, Δs, ..., 1}. Thresholds
        that leave X1 or X2 empty are skipped. Ties (equal Q, e.g. all grid points between the same two
        neighbouring values) go to the smallest s. Q is computed in float64. The authors' code takes
        ``torch.argmax`` (also the first maximum) of Q computed per s in float32, with sums whose rounding
        depends on s: Q values equal in exact arithmetic (a run of empty bins: the same partition) may then
        differ by an ulp and another s of the run win, which changes the reported s but no group; and two
        different partitions whose Q agree to float32 precision (~1e-7 relative) may be ordered the other
        way, which changes the split. No option reproduces that rounding.
    variance : {"sigma2", "sigma"}
        "sigma2" (default, the paper's Eq. 6): denominator n1σ1² + n2σ2². "sigma": n1σ1 + n2σ2, which is
        what the authors' code computes; an option for reproducing their numbers.
    search : {"grid", "histogram"}
        "grid" (default): the classes are formed from the exact values. "histogram": the values are first
        binned into ``bins`` equal bins on [0, 1] (``torch.histc(p, 1000, 0, 1)`` in the authors' code) and
        every sample is represented by its bin centre (or left edge, ``means``); an option for reproducing
        the authors' code. With Δs = 1/bins the split at s = j/bins is exactly the authors' ``hist[:j]`` /
        ``hist[j:]``, whatever ``means``; their code tries only s ∈ [0.002, 0.997] (we try every grid
        point). μ is the exact mean of the values in both modes (as in the authors' code).
    bins : int
        Number of histogram bins for ``search="histogram"`` (ignored otherwise).
    min_variance : float
        Floor applied to each within-class variance σ² inside Q (default 0: none). The authors' code clamps
        σ² at 1e-5; ``otsu_threshold(v, variance="sigma", search="histogram", min_variance=1e-5,
        means="left_edge")`` is the closest setting to their code.
    means : {"centre", "left_edge"}
        With ``search="histogram"``: the value a bin's samples count with in μ1, μ2 and hence in Q's
        between-class term. "centre" (default): (i + 0.5)/bins. "left_edge": i/bins, as the authors' code
        (``torch.arange(0, s) / 1000``): μ1, μ2 half a bin (0.0005) lower, and since μ stays the exact mean
        the between-class term, Q and possibly s change too (σ1, σ2 do not: a shift). The split points and
        the bins' membership are the same. ConfigError with ``search="grid"``.

    Returns
    -------
    OtsuResult with the threshold ``s`` (= ``threshold``), μ1, μ2, Q(s), n1, n2, σ1, σ2, μ and the options.

    Degenerate input
    ----------------
    * All values equal (or, with ``search="histogram"``, all in one bin), or no grid point falling between
      the smallest and the largest value: no threshold separates two non-empty classes → DataError.
    * A split where *both* classes have zero within-class variance (the values take exactly two distinct
      values; or two bins) has denominator 0 and a positive numerator: Q = +inf, a perfect separation, so it
      wins; among several such grid points the smallest s is chosen. Zero variance is detected exactly (a
      class holding a single distinct value), not from rounding noise of the cumulative sums. If only one
      class has zero variance the denominator stays positive and Q is finite. ``min_variance > 0`` keeps Q
      finite everywhere.

    Examples
    --------
    >>> res = otsu_threshold([0.1, 0.2, 0.3, 0.8, 0.9])
    >>> res.s, round(res.mu1, 6), round(res.mu2, 6), (res.n1, res.n2)
    (0.3, 0.2, 0.85, (3, 2))
    """
    _check_options(variance, search, bins, min_variance, means)
    grid = threshold_grid(step)
    v = _as_unit_1d(values, "values", min_len=2)
    n = len(v)
    mu = float(v.mean())

    # The support: sorted distinct values (or occupied bins) with their counts. ``pos`` places each on the
    # line for the split (X1 = support <= s), ``x`` is the value it counts with in the sums.
    if search == "grid":
        x, w = np.unique(v, return_counts=True)
        pos = x
        if len(x) < 2:
            raise DataError(f"all {n} values equal {x[0]:.6g}: no threshold separates them into two classes")
    else:
        counts, _ = np.histogram(v, bins=bins, range=(0.0, 1.0))  # the last bin includes 1.0, as histc
        occupied = np.flatnonzero(counts)
        pos, w = (occupied + 0.5) / bins, counts[occupied]  # bin i lies in X1 iff (i + 0.5)/bins <= s
        x = pos if means == "centre" else occupied / bins
        if len(x) < 2:
            raise DataError(f"all {n} values fall into one of the {bins} histogram bins "
                            f"([{occupied[0] / bins:.6g}, {(occupied[0] + 1) / bins:.6g})): no threshold "
                            "separates them; use search='grid' or more bins")
    w = w.astype(np.float64)
    u = len(x)

    # Every split "first j distinct values in X1", j = 1 .. u-1. Sums are of y = x − μ, which keeps the
    # cumulative sums of squares free of the cancellation that raw v² sums would suffer.
    y = x - mu
    n1 = np.cumsum(w)[:-1]
    s1 = np.cumsum(w * y)[:-1]
    s2 = np.cumsum(w * y * y)[:-1]
    n2 = n - n1
    t1, t2 = float(np.sum(w * y)), float(np.sum(w * y * y))
    d1 = s1 / n1                      # μ1 − μ
    d2 = (t1 - s1) / n2               # μ2 − μ
    between = n1 * d1 ** 2 + n2 * d2 ** 2
    var1 = np.maximum(s2 / n1 - d1 ** 2, 0.0)
    var2 = np.maximum((t2 - s2) / n2 - d2 ** 2, 0.0)
    j = np.arange(1, u)
    var1[j == 1] = 0.0                # X1 holds one distinct value: exactly zero variance
    var2[j == u - 1] = 0.0            # X2 holds one distinct value
    fv1, fv2 = np.maximum(var1, min_variance), np.maximum(var2, min_variance)
    if variance == "sigma2":
        within = n1 * fv1 + n2 * fv2
    else:
        within = n1 * np.sqrt(fv1) + n2 * np.sqrt(fv2)
    with np.errstate(divide="ignore", invalid="ignore"):
        q_split = np.where(within > 0, between / np.where(within > 0, within, 1.0), np.inf)

    # Map every grid point to its split: j = number of distinct values <= s.
    jg = np.searchsorted(pos, grid, side="right")
    valid = (jg >= 1) & (jg <= u - 1)
    if not valid.any():
        raise DataError(f"no threshold on the grid of step {step} separates the values (they span "
                        f"[{v.min():.6g}, {v.max():.6g}], within one grid cell); use a smaller step")
    q_grid = np.full(len(grid), -np.inf)
    q_grid[valid] = q_split[jg[valid] - 1]
    g = int(np.argmax(q_grid))        # first maximum → smallest s among ties
    k = int(jg[g]) - 1
    return OtsuResult(
        threshold=float(grid[g]), mu1=mu + float(d1[k]), mu2=mu + float(d2[k]), q=float(q_split[k]),
        n1=int(n1[k]), n2=int(n2[k]), sigma1=float(np.sqrt(var1[k])), sigma2=float(np.sqrt(var2[k])), mu=mu,
        variance=variance, search=search, step=float(step), bins=int(bins), min_variance=float(min_variance),
        means=means,
    )


def _thresholds_of(otsu_result) -> tuple[float, float, float]:
    if isinstance(otsu_result, OtsuResult):
        return otsu_result.threshold, otsu_result.mu1, otsu_result.mu2
    if isinstance(otsu_result, Mapping):
        s = otsu_result.get("threshold", otsu_result.get("s"))
        mu1, mu2 = otsu_result.get("mu1"), otsu_result.get("mu2")
        if s is None or mu1 is None or mu2 is None:
            raise ConfigError("otsu_result must be an OtsuResult or a mapping with 'threshold' (or 's'), 'mu1' "
                              f"and 'mu2', got keys {sorted(otsu_result)}")
        s, mu1, mu2 = float(s), float(mu1), float(mu2)
        if not (np.isfinite([s, mu1, mu2]).all() and mu1 <= s <= mu2):
            raise ConfigError(f"otsu_result must satisfy mu1 <= s <= mu2, got mu1={mu1}, s={s}, mu2={mu2}")
        return s, mu1, mu2
    raise ConfigError(f"otsu_result must be an OtsuResult or a mapping, got {type(otsu_result).__name__}")


def assign_groups(values, otsu_result, alphas=DEFAULT_ALPHAS) -> tuple[np.ndarray, np.ndarray]:
    """The four BKD groups of Sec. 4.3 and each sample's α.

    Parameters
    ----------
    values : float N in [0, 1]
        The values the split is applied to (BKD: P_A(ȳ|x) at the fitting epoch).
    otsu_result : OtsuResult, or a mapping with ``threshold`` (or ``s``), ``mu1``, ``mu2``
        The thresholds, μ1 <= s <= μ2.
    alphas : 4 floats in [0, 1]
        α¹ .. α⁴ for groups 0 .. 3 (paper: 0.30, 0.45, 0.55, 0.70; increasing, not enforced).

    Returns
    -------
    groups : int64 N in {0, 1, 2, 3}
        0: v >= μ2 (α¹); 1: s <= v < μ2 (α²); 2: μ1 <= v < s (α³); 3: v < μ1 (α⁴).
    alpha : float64 N
        ``alphas[groups]``.

    Boundaries follow the paper's group definitions literally (and the authors' code, which agrees):
    a value exactly equal to s goes to group 1, i.e. the clean side, although Eq. 6 counted it in the
    lower class X1 = {v <= s}; a value equal to μ2 goes to group 0 and one equal to μ1 to group 2.

    Examples
    --------
    >>> g, a = assign_groups([0.05, 0.1, 0.3, 0.5, 0.9], {"s": 0.5, "mu1": 0.1, "mu2": 0.9})
    >>> g.tolist(), a.tolist()
    ([3, 2, 2, 1, 0], [0.7, 0.55, 0.55, 0.45, 0.3])
    """
    s, mu1, mu2 = _thresholds_of(otsu_result)
    a = np.asarray(alphas, dtype=np.float64) if not isinstance(alphas, str) else np.array([])
    if a.shape != (4,) or not np.isfinite(a).all() or (a < 0).any() or (a > 1).any():
        raise ConfigError(f"alphas must be 4 numbers in [0, 1] (α¹..α⁴ for groups 0..3), got {alphas!r}")
    v = _as_unit_1d(values, "values")
    groups = np.select([v >= mu2, v >= s, v >= mu1], [0, 1, 2], default=3).astype(np.int64)
    return groups, a[groups]
