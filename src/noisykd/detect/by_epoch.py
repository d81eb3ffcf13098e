"""How good BKD's split would have been at every epoch (the paper's Fig. 3c).

BKD splits the training set once, at the fitting epoch e*, by Otsu's threshold on P_A(ȳ|x). Whether e* was a
good epoch to split is a question the truth can answer afterwards: run Otsu on the P_A of *every* recorded
epoch and score each split against the known wrong labels. The paper uses this to argue that the tipping point
is a good split epoch; :func:`split_quality_by_epoch` lets a run (and ``benchmarks/bkd_tipping.py``) check it.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> noisy = np.arange(400) < 100
>>> early = np.where(noisy, rng.uniform(0.0, 0.6, 400), rng.uniform(0.4, 1.0, 400))   # overlapping
>>> later = np.where(noisy, rng.uniform(0.0, 0.2, 400), rng.uniform(0.7, 1.0, 400))   # separated
>>> rows = split_quality_by_epoch(np.stack([early, later], 1), noisy, threshold="s")
>>> [r["epoch"] for r in rows], round(rows[0]["f1"], 2), rows[1]["f1"]
([1, 2], 0.64, 1.0)
>>> later_mu1 = split_quality_by_epoch(later[:, None], noisy)[0]      # mu1 ~ 0.1 flags the lower half only
>>> later_mu1["precision"], round(later_mu1["recall"], 2)
(1.0, 0.49)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError
from ._checks import _as_bool_1d
from .metrics import detection_metrics
from .otsu import otsu_threshold

THRESHOLDS = ("mu1", "s", "mu2")


def split_quality_by_epoch(values_by_epoch, is_noisy, threshold: str = "mu1", **otsu_options) -> list[dict[str, Any]]:
    """Otsu's split of every recorded epoch, scored against the truth.

    Parameters
    ----------
    values_by_epoch : float (N, E)
        Per sample (rows) and epoch (columns): the value Otsu splits, higher = more likely clean (BKD:
        P_A(ȳ|x) of the training pass). Columns containing NaN (epochs not recorded) are skipped, and so are
        columns whose values are all equal (Otsu has no split there).
    is_noisy : bool N
        True where the given label is wrong.
    threshold : {"mu1", "s", "mu2"}
        Which Otsu threshold flags a sample (flagged: value < mu1 or mu2, value <= s), as in BKD.
    **otsu_options
        Passed to :func:`otsu_threshold` (step, variance, search, bins).

    Returns
    -------
    One dict per recorded epoch, in order: ``epoch`` (1-based), ``s``, ``mu1``, ``mu2``, ``n_flagged``,
    ``precision``, ``recall``, ``f1``, ``auroc`` (of 1 - value as the noise score).
    """
    if threshold not in THRESHOLDS:
        raise DataError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
    values = np.asarray(values_by_epoch, dtype=np.float64)
    truth = _as_bool_1d(is_noisy, "is_noisy")
    if values.ndim != 2 or values.shape[0] != len(truth):
        raise DataError(f"values_by_epoch must have shape (N, E) with N = len(is_noisy) = {len(truth)}, "
                        f"got {values.shape}")
    rows = []
    for e in range(values.shape[1]):
        column = values[:, e]
        if np.isnan(column).any():
            continue
        try:
            otsu = otsu_threshold(column, **otsu_options)
        except DataError:  # all values equal (e.g. an untrained network): no split exists at this epoch
            continue
        cut = {"mu1": otsu.mu1, "s": otsu.s, "mu2": otsu.mu2}[threshold]
        flagged = column <= cut if threshold == "s" else column < cut
        m = detection_metrics(truth, flagged, 1.0 - column)
        rows.append({"epoch": e + 1, "s": otsu.s, "mu1": otsu.mu1, "mu2": otsu.mu2, "n_flagged": m["n_flagged"],
                     "precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "auroc": m["auroc"]})
    return rows
