"""Find the samples whose given label is probably wrong: a ``find_label_issues`` in the spirit of cleanlab.

Numpy in and out (torch tensors accepted). Each sample gets a *score* in [0, 1], higher = more likely
clean: the predicted probability of its given label, ``pred_probs[i, labels[i]]`` (for BKD the agreement
probability P_A(ȳ|x) at the fitting epoch), or scores you computed yourself. A method then decides which
samples to flag; the ranking (most likely wrong first) is the same for every method.

Example
-------
>>> import numpy as np
>>> from noisykd.detect import find_label_issues
>>> pred_probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.85, 0.15], [0.2, 0.8], [0.1, 0.9], [0.95, 0.05]])
>>> labels = np.array([0, 0, 0, 1, 1, 1])        # the last label disagrees with the model
>>> issues = find_label_issues(labels, pred_probs, method="argmax")
>>> issues.is_label_issue.tolist(), issues.ranking[:1].tolist(), issues.suggested_label[5].item()
([False, False, False, False, False, True], [5], 0)
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ._checks import _as_labels, _as_probs_2d, _as_unit_1d, _check_same_length
from .mixture import fit_loss_gmm, small_loss_mask
from .otsu import assign_groups, otsu_threshold

#: The detection rules :func:`find_label_issues` knows, with the options each accepts as keyword arguments.
METHODS: dict[str, tuple[str, ...]] = {
    "otsu_mu1": ("step", "variance", "search", "bins", "min_variance", "means"),
    "otsu_s": ("step", "variance", "search", "bins", "min_variance", "means"),
    "otsu_mu2": ("step", "variance", "search", "bins", "min_variance", "means"),
    "gmm": ("max_iter", "tol", "reg_covar", "threshold"),
    "small_loss": ("noise_rate",),
    "argmax": (),
    "confident_learning": ("filter_by",),
}
#: cleanlab's rankings for ``return_indices_ranked_by``, as scores in [0, 1] (higher = cleaner).
RANKINGS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
#: Added to the score before the log in the "gmm" method's loss −log(score + eps).
LOG_EPS = 1e-12
CSV_COLUMNS = ("index", "given_label", "suggested_label", "noise_score", "group", "flagged")


@dataclass(frozen=True, eq=False)
class LabelIssues:
    """What :func:`find_label_issues` found.

    is_label_issue:  bool N, True for the samples flagged as having a wrong given label.
    noise_score:     float64 N in [0, 1], 1 − score: higher = more likely wrong (the same for every method).
    ranking:         int64 array of all N indices, most likely wrong first (ascending score, ties by index);
                     None when ``return_ranking=False``.
    suggested_label: int64 N, argmax of pred_probs (first maximum), or the given label without pred_probs.
    given_label:     int64 N, the labels passed in.
    thresholds:      dict describing the decision: for the Otsu methods the :class:`OtsuResult` fields
                     (``threshold`` = s, ``mu1``, ``mu2``, ``q``, ...) and ``rule``; for "gmm" the mixture's
                     means/variances/weights; for "small_loss" ``noise_rate`` and ``n_flagged``.
    method:          the method used.
    group:           int64 N Otsu group (0: score >= μ2 ... 3: score < μ1, see ``assign_groups``) for the
                     Otsu methods, else None.
    """

    is_label_issue: np.ndarray
    noise_score: np.ndarray
    ranking: np.ndarray | None
    suggested_label: np.ndarray
    given_label: np.ndarray
    thresholds: dict[str, Any] = field(default_factory=dict)
    method: str = "otsu_mu1"
    group: np.ndarray | None = None

    @property
    def num_issues(self) -> int:
        """Number of flagged samples."""
        return int(self.is_label_issue.sum())

    def to_frame_rows(self, ranked: bool = False) -> list[dict[str, Any]]:
        """One dict per sample with the keys of ``CSV_COLUMNS`` (``group`` None without Otsu groups);
        in index order, or most-likely-wrong first with ``ranked=True``. ``pandas.DataFrame(rows)`` works."""
        order = self._order(ranked)
        return [{
            "index": int(i),
            "given_label": int(self.given_label[i]),
            "suggested_label": int(self.suggested_label[i]),
            "noise_score": float(self.noise_score[i]),
            "group": None if self.group is None else int(self.group[i]),
            "flagged": bool(self.is_label_issue[i]),
        } for i in order]

    def to_csv(self, path: str | os.PathLike, ranked: bool = False) -> None:
        """Write ``CSV_COLUMNS`` (index, given_label, suggested_label, noise_score, group, flagged), one row
        per sample, in index order or (``ranked=True``) most likely wrong first. ``group`` is empty without
        Otsu groups; ``flagged`` is 0/1; noise_score is written with full precision."""
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for row in self.to_frame_rows(ranked=ranked):
                writer.writerow([row["index"], row["given_label"], row["suggested_label"], repr(row["noise_score"]),
                                 "" if row["group"] is None else row["group"], int(row["flagged"])])

    def _order(self, ranked: bool) -> np.ndarray:
        if not ranked:
            return np.arange(len(self.is_label_issue))
        if self.ranking is not None:
            return self.ranking
        return np.argsort(-self.noise_score, kind="stable")


def _cleanlab_issues(labels: np.ndarray, probs: np.ndarray, filter_by: str) -> np.ndarray:
    try:
        from cleanlab.filter import find_label_issues as cleanlab_find
    except ImportError:
        raise ConfigError("method 'confident_learning' needs cleanlab: python -m pip install 'cleanlab>=2.6'") from None
    return np.asarray(cleanlab_find(labels, probs, filter_by=filter_by), dtype=bool)


def _ranking_score(name: str, labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's label-quality scores, in [0, 1], higher = cleaner (as in cleanlab.rank)."""
    n = np.arange(len(labels))
    p_given = probs[n, labels]
    if name == "normalized_margin":
        others = probs.copy()
        others[n, labels] = -np.inf
        return (p_given - others.max(axis=1) + 1) / 2
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(axis=1) / np.log(probs.shape[1])
    return p_given * (1 - entropy)  # confidence_weighted_entropy, up to cleanlab's normalisation


def most_likely_other(labels, pred_probs) -> np.ndarray:
    """The most probable class other than the given label, per sample: int64 N (what to relabel a flagged sample
    to; the arg-max itself may be the given label)."""
    probs = np.array(_as_probs_2d(pred_probs, "pred_probs"), dtype=np.float64)
    y = _as_labels(labels, "labels", num_classes=probs.shape[1])
    probs[np.arange(len(y)), y] = -np.inf
    return probs.argmax(axis=1).astype(np.int64)


def confident_joint(labels, pred_probs) -> np.ndarray:
    """Confident learning's calibrated confident joint (Northcutt et al. 2021), C x C counts, [i, j] = how many
    samples are estimated to carry given label i and true class j: a sample counts towards (i, j) when its
    probability of j reaches class j's average self-confidence (the largest such j); each row is then scaled to
    the number of samples given label i. Entries sum to the number of samples with a confident guess' rows.

    Example: every label right and confident -> a diagonal matrix of the label counts.
    """
    probs = _as_probs_2d(pred_probs, "pred_probs")
    y = _as_labels(labels, "labels", num_classes=probs.shape[1])
    c = probs.shape[1]
    thresholds = np.array([probs[y == j, j].mean() if np.any(y == j) else 1.0 for j in range(c)])
    above = probs >= thresholds[None, :]
    confident = np.where(above, probs, -np.inf)
    true_guess = confident.argmax(axis=1)
    has_guess = above.any(axis=1)
    joint = np.zeros((c, c))
    np.add.at(joint, (y[has_guess], true_guess[has_guess]), 1)
    totals = np.bincount(y, minlength=c).astype(np.float64)
    row_sums = joint.sum(axis=1, keepdims=True)
    return np.divide(joint * totals[:, None], row_sums, out=np.zeros_like(joint), where=row_sums > 0)


def estimate_noise_rate(labels, pred_probs) -> float:
    """The estimated share of wrong labels: the off-diagonal mass of :func:`confident_joint` over its total
    (0.0 for an empty joint). Use out-of-sample probabilities: a model that memorised its labels finds none."""
    joint = confident_joint(labels, pred_probs)
    total = joint.sum()
    return float((total - np.trace(joint)) / total) if total > 0 else 0.0


def estimate_noise_matrix(labels, pred_probs) -> np.ndarray:
    """The noise transition matrix T, C x C, T[j, i] = P(given label = i | true class = j) (rows: true class,
    columns: given label, as ``NoisyLabels.transition_matrix``), from :func:`confident_joint` normalised per true
    class. Rows sum to 1 (a class with no confident sample gets the identity row).

    Example: labels all correct and confident -> the identity matrix.
    """
    joint = confident_joint(labels, pred_probs)
    c = joint.shape[0]
    column_sums = joint.sum(axis=0, keepdims=True)
    given_of_true = np.where(column_sums > 0, joint / np.where(column_sums > 0, column_sums, 1), np.eye(c))
    return given_of_true.T


def get_label_quality_scores(labels, pred_probs) -> np.ndarray:
    """The probability each sample's model gives its own label, ``pred_probs[i, labels[i]]``.

    Parameters
    ----------
    labels : int N in [0, C)
    pred_probs : float N x C, rows summing to 1

    Returns
    -------
    float64 N in [0, 1], higher = label more likely correct (cleanlab's "self_confidence" score).
    """
    probs = _as_probs_2d(pred_probs, "pred_probs")
    y = _as_labels(labels, "labels", num_classes=probs.shape[1])
    _check_same_length(labels=y, pred_probs=probs)
    return probs[np.arange(len(y)), y]


def find_label_issues(labels, pred_probs=None, *, scores=None, method: str = "otsu_mu1",
                      return_ranking: bool = True, seed: int = 0, return_indices_ranked_by: str | None = None,
                      **kwargs) -> LabelIssues | np.ndarray:
    """Flag samples whose given label is probably wrong.

    Parameters
    ----------
    labels : int N
        The given (possibly noisy) labels, >= 0 (and < C when ``pred_probs`` is given).
    pred_probs : float N x C, optional
        Predicted class probabilities (rows sum to 1 ± 1e-3; softmax output, not logits), ideally
        out-of-sample or, for BKD, the agreement P_A at the fitting epoch. Gives the score
        ``pred_probs[i, labels[i]]`` and the suggested labels.
    scores : float N in [0, 1], optional (keyword only)
        Per-sample scores, higher = more likely clean, used instead of ``pred_probs[i, labels[i]]``. At
        least one of ``pred_probs`` and ``scores`` is required; with both, ``scores`` decides and
        ``pred_probs`` only provides the suggested labels (and the "argmax" rule).
    method : str
        "otsu_mu1" (default, BKD's detection rule, best F1 in its Table 2): flag score < μ1;
        "otsu_s": flag score <= s (the lower Otsu class X1); "otsu_mu2": flag score < μ2 (the most
        liberal); all three run :func:`otsu_threshold` on the scores (options ``step``, ``variance``,
        ``search``, ``bins``, ``min_variance``, ``means`` as keyword arguments; BKD's authors' code:
        ``variance="sigma", search="histogram", bins=1000, min_variance=1e-5, means="left_edge"``).
        "gmm": DivideMix's two-component mixture on the loss −log(score + 1e-12), flag clean
        probability < 0.5 (options ``max_iter``, ``tol``, ``reg_covar``, and ``threshold`` = 0.5).
        "small_loss": flag the ``noise_rate`` fraction (required keyword) with the smallest scores.
        "argmax": flag where argmax pred_probs != label (needs ``pred_probs``; cleanlab's simplest rule).
        "confident_learning": cleanlab's ``find_label_issues`` (Northcutt et al. 2021; needs ``pred_probs``
        and the optional cleanlab package; option ``filter_by``).
    return_ranking : bool
        Compute ``ranking`` (an O(N log N) sort); ``ranking`` is None otherwise.
    seed : int
        Seed of the "gmm" fit (ignored by the other methods).
    return_indices_ranked_by : str, optional
        As cleanlab's argument of that name: return only the indices of the flagged samples, most likely
        wrong first, ranked by "self_confidence" (the score), "normalized_margin" or
        "confidence_weighted_entropy" (the last two need ``pred_probs``), instead of a LabelIssues.
        Without it the flags are ``issues.is_label_issue``, a boolean mask that indexes ``pred_probs``.

    Returns
    -------
    LabelIssues with ``is_label_issue`` (bool N), ``noise_score`` = 1 − score (float N), ``ranking``
    (indices, most likely wrong first: ascending score, ties by index), ``suggested_label``, ``thresholds``,
    ``method`` and, for the Otsu methods, ``group``; ``to_csv(path)`` writes a per-sample table.

    Examples
    --------
    Twenty confident samples and three whose given label the model disbelieves:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, 23)
    >>> p_given = np.r_[rng.uniform(0.85, 0.95, 20), [0.05, 0.10, 0.08]]
    >>> pred_probs = np.empty((23, 3))
    >>> pred_probs[:] = ((1 - p_given) / 2)[:, None]
    >>> pred_probs[np.arange(23), labels] = p_given
    >>> issues = find_label_issues(labels, pred_probs)               # Otsu on P(given label), flag < μ1
    >>> issues.ranking[:3].tolist(), round(issues.thresholds["mu1"], 3), issues.thresholds["s"]
    ([20, 22, 21], 0.077, 0.1)
    >>> np.flatnonzero(issues.is_label_issue).tolist()               # μ1 is the strict rule (precision)
    [20]
    >>> np.flatnonzero(find_label_issues(labels, pred_probs, method="otsu_s").is_label_issue).tolist()
    [20, 21, 22]

    With scores computed elsewhere (e.g. BKD's P_A of the given label), and a different rule:

    >>> find_label_issues(labels, scores=p_given, method="small_loss", noise_rate=0.1).num_issues
    2
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    unknown = sorted(set(kwargs) - set(METHODS[method]))
    if unknown:
        allowed = ", ".join(METHODS[method]) or "none"
        raise ConfigError(f"unknown option(s) {unknown} for method {method!r}; it accepts: {allowed}")
    if not isinstance(return_ranking, (bool, np.bool_)):
        raise ConfigError(f"return_ranking must be True or False, got {return_ranking!r}")
    if pred_probs is None and scores is None:
        raise DataError("find_label_issues needs pred_probs (N x C) or scores (N, in [0, 1])")
    if method in ("argmax", "confident_learning") and pred_probs is None:
        raise DataError(f"method {method!r} needs pred_probs (N x C)")
    if return_indices_ranked_by is not None and return_indices_ranked_by not in RANKINGS:
        raise ConfigError(f"return_indices_ranked_by must be one of {', '.join(RANKINGS)} or None, got "
                          f"{return_indices_ranked_by!r}")
    if return_indices_ranked_by in RANKINGS[1:] and pred_probs is None:
        raise DataError(f"return_indices_ranked_by={return_indices_ranked_by!r} needs pred_probs (N x C)")

    probs = None if pred_probs is None else _as_probs_2d(pred_probs, "pred_probs")
    y = _as_labels(labels, "labels", num_classes=None if probs is None else probs.shape[1])
    score = None if scores is None else _as_unit_1d(scores, "scores")
    _check_same_length(labels=y, pred_probs=probs, scores=score)
    if score is None:
        score = probs[np.arange(len(y)), y]
    suggested = y.copy() if probs is None else probs.argmax(axis=1).astype(np.int64)

    group = None
    if method.startswith("otsu_"):
        try:
            res = otsu_threshold(score, **kwargs)
        except DataError as exc:  # say which values: the per-sample scores, not some array of the caller's
            raise DataError(f"method {method!r} cannot split the scores (P of the given label): {exc}") from exc
        group, _ = assign_groups(score, res)
        rule = {"otsu_mu1": "score < mu1", "otsu_s": "score <= s", "otsu_mu2": "score < mu2"}[method]
        flagged = {"otsu_mu1": score < res.mu1, "otsu_s": score <= res.threshold,
                   "otsu_mu2": score < res.mu2}[method]
        thresholds = {**res.as_dict(), "s": res.threshold, "rule": rule}
    elif method == "gmm":
        threshold = kwargs.pop("threshold", 0.5)
        if not (isinstance(threshold, (int, float, np.floating)) and 0.0 < float(threshold) < 1.0):
            raise ConfigError(f"threshold must be a number in (0, 1), got {threshold!r}")
        fit = fit_loss_gmm(-np.log(score + LOG_EPS), seed=seed, **kwargs)
        flagged = fit.clean_probability < float(threshold)
        thresholds = {**fit.summary(), "loss": "-log(score + 1e-12)", "threshold": float(threshold),
                      "rule": f"clean probability < {float(threshold)}"}
    elif method == "small_loss":
        if "noise_rate" not in kwargs:
            raise ConfigError("method 'small_loss' needs noise_rate=... (the estimated fraction of noisy labels)")
        flagged = small_loss_mask(1.0 - score, kwargs["noise_rate"])
        thresholds = {"noise_rate": float(kwargs["noise_rate"]), "n_flagged": int(flagged.sum()),
                      "rule": "the noise_rate fraction with the smallest scores"}
    elif method == "confident_learning":
        flagged = _cleanlab_issues(y, probs, kwargs.get("filter_by", "prune_by_noise_rate"))
        thresholds = {"rule": f"cleanlab.filter.find_label_issues (filter_by={kwargs.get('filter_by', 'prune_by_noise_rate')})"}
    else:  # argmax
        flagged = suggested != y
        thresholds = {"rule": "argmax(pred_probs) != label"}

    if return_indices_ranked_by is not None:
        rank_score = score if return_indices_ranked_by == "self_confidence" else _ranking_score(
            return_indices_ranked_by, y, probs)
        flagged_idx = np.flatnonzero(flagged)
        return flagged_idx[np.argsort(rank_score[flagged_idx], kind="stable")]
    ranking = np.argsort(score, kind="stable") if return_ranking else None
    return LabelIssues(
        is_label_issue=np.asarray(flagged, dtype=bool), noise_score=1.0 - score, ranking=ranking,
        suggested_label=suggested, given_label=y, thresholds=thresholds, method=method, group=group,
    )
