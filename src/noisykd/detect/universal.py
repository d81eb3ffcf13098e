"""MODUL's split of a noisy set into clean, closed-set noisy and open-set noisy samples (Alg. 1, stage 1).

A trained teacher scores every sample with the SL loss of its given label (``noisykd.losses.contrastive.sl_loss``);
the scores are min-max normalised to [0, 1] (the authors' code: the thresholds refer to that scale) and a 1-D
Gaussian mixture of 20 components is fitted (EM with the code's max_iter 10, tol 1e-2, reg_covar 5e-4, a fixed
seed). Components are grouped by their mean: <= tau_min (0.3) clean, >= tau_max (0.9) closed-set noisy (the
teacher confidently disagrees with the label), in between open-set noisy (the teacher is unsure: an image of no
known class). A sample's group probability is the sum of its responsibilities over the group's components, and
it joins the most probable group (Eq. 5).

Decisions the paper leaves open (methods.md: "make sure no group is empty"):
* a group that no component's mean falls into takes the component nearest to its range (from a group that keeps
  at least one), so every group has a component;
* a group that no sample joins takes the sample most probable for it (from a group that keeps at least one);
* ties go to clean, then closed-set noisy (the first of the largest probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from ._checks import _as_float_1d
from .mixture import _check_gmm_options, fit_gmm_1d

CLEAN, CLOSED, OPEN = 0, 1, 2
#: Group names by group id, as they appear in reports and ``samples.csv``'s ``group`` column.
GROUP_NAMES = ("clean", "closed", "open")


@dataclass(frozen=True, eq=False)
class UniversalSplit:
    """The split of N samples.

    group:         int64 (N,) 0 clean, 1 closed-set noisy, 2 open-set noisy.
    probabilities: float64 (N, 3) the group probabilities (summed responsibilities; rows sum to 1).
    normalized:    float64 (N,) the min-max normalised scores the mixture was fitted to.
    means, variances, weights: float64 (K,) the components on the normalised scale, sorted by mean.
    component_group: int64 (K,) the group of each (sorted) component.
    loss_min, loss_max: the raw scores' range; converged, n_iter: from sklearn (with max_iter 10 the fit often
    stops unconverged, by design).
    """

    group: np.ndarray
    probabilities: np.ndarray
    normalized: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray
    component_group: np.ndarray
    loss_min: float
    loss_max: float
    converged: bool
    n_iter: int

    def sizes(self) -> dict[str, int]:
        """{group name: number of samples}."""
        counts = np.bincount(self.group, minlength=3)
        return {name: int(c) for name, c in zip(GROUP_NAMES, counts)}

    def summary(self) -> dict:
        """JSON-able description of the fit and the group sizes (no per-sample arrays)."""
        return {"sizes": self.sizes(), "means": self.means.tolist(), "variances": self.variances.tolist(),
                "weights": self.weights.tolist(), "component_group": self.component_group.tolist(),
                "loss_min": self.loss_min, "loss_max": self.loss_max, "converged": self.converged,
                "n_iter": self.n_iter}


def group_components(means: np.ndarray, tau_min: float = 0.3, tau_max: float = 0.9) -> np.ndarray:
    """The group of each component by its mean (<= tau_min clean, >= tau_max closed, else open), each group given
    at least one component when there are >= 3: an empty group takes the component nearest to its range from a
    group that keeps one. means (K,) -> int64 (K,)."""
    means = np.asarray(means, dtype=np.float64)
    groups = np.where(means <= tau_min, CLEAN, np.where(means >= tau_max, CLOSED, OPEN)).astype(np.int64)
    if len(means) < 3:
        return groups
    middle = (tau_min + tau_max) / 2
    distance_to = {CLEAN: np.maximum(means - tau_min, 0), CLOSED: np.maximum(tau_max - means, 0),
                   OPEN: np.abs(means - middle)}
    for g in (CLEAN, CLOSED, OPEN):
        if (groups == g).any():
            continue
        counts = np.bincount(groups, minlength=3)
        movable = counts[groups] > 1
        candidates = np.flatnonzero(movable)
        groups[candidates[np.argmin(distance_to[g][candidates])]] = g
    return groups


def split_universal_noise(scores, components: int = 20, tau_min: float = 0.3, tau_max: float = 0.9, seed: int = 0,
                          max_iter: int = 10, tol: float = 1e-2, reg_covar: float = 5e-4) -> UniversalSplit:
    """Split samples by their teacher scores (higher = less likely the given label is right) into clean,
    closed-set noisy and open-set noisy, as the module docstring says. scores: float (N,), N >= components;
    0 <= tau_min < tau_max <= 1. Deterministic for a seed."""
    if isinstance(components, bool) or not isinstance(components, (int, np.integer)) or components < 3:
        raise ConfigError(f"components must be an integer >= 3 (one per group at least), got {components!r}")
    if not 0 <= tau_min < tau_max <= 1:
        raise ConfigError(f"need 0 <= tau_min < tau_max <= 1 (thresholds on the normalised loss), got "
                          f"tau_min={tau_min}, tau_max={tau_max}")
    _check_gmm_options(seed, max_iter, tol, reg_covar)
    loss = _as_float_1d(scores, "scores", min_len=1)
    if len(loss) < components:
        raise DataError(f"the universal-noise split fits {components} components and needs at least as many "
                        f"samples, got {len(loss)}")
    lo, hi = float(loss.min()), float(loss.max())
    if hi - lo <= 0:
        raise DataError(f"all {len(loss)} teacher scores equal {lo:.6g}: nothing to split")
    norm = (loss - lo) / (hi - lo)
    gmm = fit_gmm_1d(norm.reshape(-1, 1), components, seed, max_iter, tol, reg_covar)
    responsibilities = gmm.predict_proba(norm.reshape(-1, 1))
    order = np.argsort(gmm.means_.reshape(-1), kind="stable")
    means = gmm.means_.reshape(-1)[order].astype(np.float64)
    responsibilities = responsibilities[:, order]
    component_group = group_components(means, tau_min, tau_max)
    probabilities = np.stack([responsibilities[:, component_group == g].sum(1) for g in (CLEAN, CLOSED, OPEN)], 1)
    group = np.argmax(probabilities, axis=1).astype(np.int64)  # ties: the first (clean, then closed)
    group = _no_empty_group(group, probabilities)
    return UniversalSplit(group=group, probabilities=probabilities.astype(np.float64), normalized=norm,
                          means=means, variances=gmm.covariances_.reshape(-1)[order].astype(np.float64),
                          weights=gmm.weights_[order].astype(np.float64), component_group=component_group,
                          loss_min=lo, loss_max=hi, converged=bool(gmm.converged_), n_iter=int(gmm.n_iter_))


def _no_empty_group(group: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Give each empty group the sample most probable for it, taken from a group that keeps a sample (N >= 3)."""
    group = group.copy()
    if len(group) < 3:
        return group
    for g in (CLEAN, CLOSED, OPEN):
        if (group == g).any():
            continue
        counts = np.bincount(group, minlength=3)
        candidates = np.flatnonzero(counts[group] > 1)
        group[candidates[np.argmax(probabilities[candidates, g])]] = g
    return group


def split_confusion(group: np.ndarray, is_noisy: np.ndarray, is_open_set: np.ndarray) -> np.ndarray:
    """The split against the truth: a 3 x 3 count table, rows the true type (clean, closed-set noisy = a wrong
    in-distribution label, open-set noisy = an out-of-distribution image), columns the assigned group.
    All arrays (N,); is_open_set implies is_noisy."""
    truth = np.where(is_open_set, OPEN, np.where(is_noisy, CLOSED, CLEAN))
    table = np.zeros((3, 3), dtype=np.int64)
    np.add.at(table, (truth, np.asarray(group, dtype=np.int64)), 1)
    return table
