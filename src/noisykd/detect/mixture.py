"""Loss-based detection: DivideMix's two-component Gaussian mixture, and the small-loss criterion.

:func:`gmm_clean_probability` follows DivideMix (Li et al. 2020): the per-sample losses are min-max
normalised to [0, 1], a 1-D ``sklearn.mixture.GaussianMixture(n_components=2, max_iter=10, tol=1e-2,
reg_covar=5e-4)`` is fitted, and each sample's clean probability is its posterior under the component with
the smaller mean. :func:`fit_loss_gmm` returns the fitted mixture as well, for diagnostics and plots.

:func:`small_loss_mask` is the small-loss criterion (Co-teaching and friends): flag the ``noise_rate``
fraction of samples with the largest losses; it needs an estimate of the noise rate.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> losses = np.concatenate([rng.gamma(2.0, 0.05, 800), rng.normal(3.0, 0.4, 200)])
>>> p_clean = gmm_clean_probability(losses)
>>> float((p_clean[:800] > 0.5).mean()) > 0.99, float((p_clean[800:] < 0.5).mean()) > 0.99
(True, True)
>>> int(small_loss_mask(losses, 0.2)[800:].sum())
200
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from ._checks import _as_float_1d


@dataclass(frozen=True, eq=False)
class LossGMM:
    """A two-component Gaussian mixture fitted to min-max normalised losses.

    clean_probability: float64 N, posterior of the clean (smaller-mean) component for each sample.
    means, variances, weights: float64 (2,), the components' parameters on the normalised [0, 1] scale.
    clean_component:   index (0 or 1) of the component with the smaller mean.
    loss_min, loss_max: the raw losses' range used for normalising (loss_norm = (loss − min) / (max − min)).
    converged, n_iter: from sklearn; with DivideMix's max_iter=10 the fit often stops unconverged, on
                 purpose (sklearn's ConvergenceWarning is silenced; ``converged`` records it).
    """

    clean_probability: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray
    clean_component: int
    loss_min: float
    loss_max: float
    converged: bool
    n_iter: int

    def summary(self) -> dict:
        """JSON-able description of the fit (without the per-sample probabilities)."""
        return {
            "means": self.means.tolist(), "variances": self.variances.tolist(), "weights": self.weights.tolist(),
            "clean_component": self.clean_component, "loss_min": self.loss_min, "loss_max": self.loss_max,
            "converged": self.converged, "n_iter": self.n_iter,
        }


def _check_gmm_options(seed, max_iter, tol, reg_covar) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ConfigError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    for name, value in (("tol", tol), ("reg_covar", reg_covar)):
        if not (isinstance(value, (int, float, np.floating, np.integer)) and np.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value!r}")


def fit_gmm_1d(values: np.ndarray, components: int, seed: int, max_iter: int, tol: float, reg_covar: float):
    """A fitted ``sklearn.mixture.GaussianMixture`` of ``components`` on values (N, 1), with the options as given
    (checked by the caller) and sklearn's ConvergenceWarning silenced: the short EM runs here (DivideMix's and
    MODUL's max_iter 10) often stop unconverged on purpose; ``converged_`` records it."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=int(components), max_iter=int(max_iter), tol=float(tol),
                          reg_covar=float(reg_covar), random_state=int(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(values)
    return gmm


def fit_loss_gmm(losses, seed: int = 0, max_iter: int = 10, tol: float = 1e-2, reg_covar: float = 5e-4) -> LossGMM:
    """Fit DivideMix's two-component GMM to per-sample losses.

    Parameters
    ----------
    losses : float N, N >= 2
        Per-sample losses (e.g. cross-entropy of the given label); lower = more likely clean. Not all equal.
    seed : int
        ``random_state`` of the mixture's k-means initialisation (fits are deterministic for a seed).
    max_iter, tol, reg_covar
        Passed to ``sklearn.mixture.GaussianMixture``; the defaults are DivideMix's.

    Returns
    -------
    LossGMM (see its docstring); ``clean_probability`` is float64 N in [0, 1].
    """
    _check_gmm_options(seed, max_iter, tol, reg_covar)
    loss = _as_float_1d(losses, "losses", min_len=2)
    lo, hi = float(loss.min()), float(loss.max())
    if hi - lo <= 0:
        raise DataError(f"all {len(loss)} losses equal {lo:.6g}: a two-component mixture cannot separate them")
    norm = ((loss - lo) / (hi - lo)).reshape(-1, 1)
    gmm = fit_gmm_1d(norm, 2, seed, max_iter, tol, reg_covar)
    means = gmm.means_.reshape(-1).astype(np.float64)
    clean = int(np.argmin(means))
    prob = gmm.predict_proba(norm)[:, clean].astype(np.float64)
    return LossGMM(
        clean_probability=prob, means=means, variances=gmm.covariances_.reshape(-1).astype(np.float64),
        weights=gmm.weights_.astype(np.float64), clean_component=clean, loss_min=lo, loss_max=hi,
        converged=bool(gmm.converged_), n_iter=int(gmm.n_iter_),
    )


def gmm_clean_probability(losses, seed: int = 0, max_iter: int = 10, tol: float = 1e-2,
                          reg_covar: float = 5e-4) -> np.ndarray:
    """Per-sample probability of being clean, DivideMix style.

    Parameters
    ----------
    losses : float N, N >= 2
        Per-sample losses; lower = more likely clean.
    seed, max_iter, tol, reg_covar
        As for :func:`fit_loss_gmm`.

    Returns
    -------
    float64 N in [0, 1]: the posterior of the smaller-mean component of a two-component GMM fitted to the
    min-max normalised losses. DivideMix treats samples with probability > 0.5 (its ``p_threshold``) as
    labelled/clean.
    """
    return fit_loss_gmm(losses, seed=seed, max_iter=max_iter, tol=tol, reg_covar=reg_covar).clean_probability


def small_loss_mask(losses, noise_rate: float) -> np.ndarray:
    """Flag the ``noise_rate`` fraction of samples with the largest losses (the small-loss criterion).

    Parameters
    ----------
    losses : float N
        Per-sample losses; higher = more likely noisy.
    noise_rate : float in [0, 1]
        Estimated fraction of noisy labels; round(noise_rate · N) samples are flagged (half rounds up).

    Returns
    -------
    bool N, True for the flagged (presumed noisy) samples. Equal losses are ordered by index (lower index
    flagged first), so the result is deterministic.

    Examples
    --------
    >>> small_loss_mask([0.1, 2.0, 0.3, 5.0], 0.5).tolist()
    [False, True, False, True]
    """
    loss = _as_float_1d(losses, "losses")
    if isinstance(noise_rate, bool) or not isinstance(noise_rate, (int, float, np.floating, np.integer)) \
            or not (0.0 <= float(noise_rate) <= 1.0):
        raise ConfigError(f"noise_rate must be a number in [0, 1] (the estimated fraction of noisy labels), "
                          f"got {noise_rate!r}")
    n_flag = int(np.floor(float(noise_rate) * len(loss) + 0.5))
    order = np.argsort(-loss, kind="stable")
    mask = np.zeros(len(loss), dtype=bool)
    mask[order[:n_flag]] = True
    return mask
