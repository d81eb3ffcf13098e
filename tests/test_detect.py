"""noisykd.detect: Otsu (BKD Eq. 6) and groups, tipping point, loss GMM, metrics, find_label_issues."""

from __future__ import annotations

import csv
import doctest
import math

import numpy as np
import pytest
import torch

import noisykd.detect as detect
from noisykd.detect import (
    assign_groups,
    detection_metrics,
    expected_calibration_error,
    find_label_issues,
    find_tipping_epoch,
    fit_loss_gmm,
    get_label_quality_scores,
    gmm_clean_probability,
    otsu_threshold,
    small_loss_mask,
    threshold_grid,
    tipping_epoch_with_fallback,
)
from noisykd.errors import ConfigError, DataError


# ---- Otsu -----------------------------------------------------------------------------------------------

def _brute_otsu(v: np.ndarray, step: float = 0.001, variance: str = "sigma2"):
    """O(N·G) transcription of Eq. 6: every grid point, classes by boolean masks, np.mean / np.var."""
    n = round(1 / step)
    mu = v.mean()
    best_q, best = -math.inf, None
    for s in np.arange(n + 1) / n:
        a, b = v[v <= s], v[v > s]
        if len(a) == 0 or len(b) == 0:
            continue
        num = len(a) * (a.mean() - mu) ** 2 + len(b) * (b.mean() - mu) ** 2
        if variance == "sigma2":
            den = len(a) * a.var() + len(b) * b.var()
        else:
            den = len(a) * a.std() + len(b) * b.std()
        q = math.inf if den == 0 else num / den
        if q > best_q:  # strict: the first (smallest) s wins ties
            best_q, best = q, (float(s), a.mean(), b.mean(), len(a), len(b))
    return best_q, best


def _brute_histogram_otsu(v: np.ndarray, bins: int = 1000, variance: str = "sigma", min_variance: float = 1e-5):
    """The authors' histogram algorithm (bins represented by their centres), one split at a time."""
    hist, _ = np.histogram(v, bins=bins, range=(0, 1))
    centres = (np.arange(bins) + 0.5) / bins
    mu = v.mean()
    best_q, best_s = -math.inf, None
    for j in range(1, bins):
        n1, n2 = hist[:j].sum(), hist[j:].sum()
        if n1 == 0 or n2 == 0:
            continue
        m1 = (hist[:j] * centres[:j]).sum() / n1
        m2 = (hist[j:] * centres[j:]).sum() / n2
        v1 = max((hist[:j] * (centres[:j] - m1) ** 2).sum() / n1, min_variance)
        v2 = max((hist[j:] * (centres[j:] - m2) ** 2).sum() / n2, min_variance)
        den = n1 * v1 + n2 * v2 if variance == "sigma2" else n1 * np.sqrt(v1) + n2 * np.sqrt(v2)
        q = (n1 * (m1 - mu) ** 2 + n2 * (m2 - mu) ** 2) / den
        if q > best_q:
            best_q, best_s = q, j / bins
    return best_q, best_s


def _bimodal(seed: int, n_low: int = 300, n_high: int = 700) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.concatenate([rng.normal(0.1, 0.02, n_low), rng.normal(0.8, 0.05, n_high)]), 0, 1)


def test_otsu_bimodal_clusters():
    v = _bimodal(0)
    res = otsu_threshold(v)
    # Q is constant over the gap between the clusters (same partition): the smallest s in it wins
    assert v[:300].max() <= res.s < v[300:].min() and res.s - v[:300].max() < 0.001
    assert res.mu1 == pytest.approx(0.1, abs=0.005)
    assert res.mu2 == pytest.approx(0.8, abs=0.01)
    assert (res.n1, res.n2) == (300, 700)
    assert res.mu1 <= res.s < res.mu2
    assert res.threshold == res.s
    d = res.as_dict()
    assert d["threshold"] == res.s and d["n1"] == 300 and d["variance"] == "sigma2"


@pytest.mark.parametrize("variance", ["sigma2", "sigma"])
@pytest.mark.parametrize("seed", range(4))
def test_otsu_matches_brute_force(variance, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    w = rng.uniform(0.1, 0.6)
    v = np.where(rng.random(n) < w, rng.beta(2, 6, n), rng.beta(6, 1.5, n))
    if seed % 2:  # values exactly on grid points, with duplicates: tests X1 = {v <= s}
        v = np.round(v, 3)
    q_ref, (s_ref, mu1_ref, mu2_ref, n1_ref, n2_ref) = _brute_otsu(v, variance=variance)
    res = otsu_threshold(v, variance=variance)
    assert res.s == s_ref
    assert (res.n1, res.n2) == (n1_ref, n2_ref)
    assert res.mu1 == pytest.approx(mu1_ref, abs=1e-12)
    assert res.mu2 == pytest.approx(mu2_ref, abs=1e-12)
    assert res.q == pytest.approx(q_ref, rel=1e-9)


def test_otsu_matches_brute_force_other_step():
    v = np.random.default_rng(7).beta(0.7, 0.7, 200)
    _, (s_ref, *_rest) = _brute_otsu(v, step=0.01)
    assert otsu_threshold(v, step=0.01).s == s_ref
    assert len(threshold_grid(0.01)) == 101 and threshold_grid(0.001)[3] == 0.003


def test_otsu_hand_computed_q():
    # μ = 0.5. Split {.1,.3}|{.7,.9}: between = 2·0.3² + 2·0.3² = 0.36, within = 4·0.01 = 0.04 → Q = 9.
    # Split {.1}|{.3,.7,.9}: between = 0.4² + 3·(0.4/3)² = 0.2133, within = 0.18667 → Q = 1.143 (and mirror).
    v = [0.1, 0.3, 0.7, 0.9]
    res = otsu_threshold(v)
    assert res.s == 0.3                      # the smallest grid point with X1 = {0.1, 0.3}
    assert res.q == pytest.approx(9.0)
    assert (res.mu1, res.mu2) == (pytest.approx(0.2), pytest.approx(0.8))
    assert (res.sigma1, res.sigma2) == (pytest.approx(0.1), pytest.approx(0.1))
    assert (res.n1, res.n2) == (2, 2) and res.mu == pytest.approx(0.5)
    # σ instead of σ²: within = 2·0.1 + 2·0.1 = 0.4 → Q = 0.9 (the 1|3 split: 0.2133 / (3·0.2494) = 0.285).
    res = otsu_threshold(v, variance="sigma")
    assert res.s == 0.3 and res.q == pytest.approx(0.9)


def test_otsu_zero_variance_is_infinite_and_smallest_s():
    res = otsu_threshold([0.2, 0.2, 0.7, 0.7, 0.7])
    assert res.q == math.inf
    assert res.s == 0.2 and res.mu1 == pytest.approx(0.2) and res.mu2 == pytest.approx(0.7)
    # The floor of the authors' code keeps Q finite: between 0.3 / within 5·1e-5.
    res = otsu_threshold([0.2, 0.2, 0.7, 0.7, 0.7], min_variance=1e-5)
    assert res.q == pytest.approx(0.3 / 5e-5) and res.s == 0.2
    # Only one class constant: finite Q.
    res = otsu_threshold([0.1, 0.1, 0.6, 0.7, 0.9])
    assert math.isfinite(res.q) and (res.n1, res.n2) == (2, 3)


def test_otsu_histogram_close_to_grid_and_to_reference():
    v = np.clip(np.concatenate([np.random.default_rng(1).beta(2, 8, 3000),
                                np.random.default_rng(2).beta(9, 1.5, 5000)]), 0, 1)
    grid, hist = otsu_threshold(v), otsu_threshold(v, search="histogram")
    assert abs(grid.s - hist.s) <= 0.01
    assert hist.mu1 == pytest.approx(grid.mu1, abs=2e-3) and hist.mu2 == pytest.approx(grid.mu2, abs=2e-3)
    assert hist.n1 + hist.n2 == len(v)
    for variance in ("sigma", "sigma2"):
        _, s_ref = _brute_histogram_otsu(v, variance=variance)
        assert otsu_threshold(v, variance=variance, search="histogram", min_variance=1e-5).s == s_ref


def test_otsu_accepts_torch_and_float32_and_clips_rounding():
    v = _bimodal(3)
    ref = otsu_threshold(v)
    assert otsu_threshold(torch.tensor(v)).s == ref.s
    assert otsu_threshold(torch.tensor(v, dtype=torch.bfloat16)).n1 == ref.n1
    res = otsu_threshold(np.r_[v, 1 + 1e-7, -1e-7])
    assert res.n1 + res.n2 == len(v) + 2


def test_otsu_degenerate_and_bad_input():
    with pytest.raises(DataError, match="all 4 values equal"):
        otsu_threshold([0.4, 0.4, 0.4, 0.4])
    with pytest.raises(DataError, match="no threshold on the grid"):
        otsu_threshold([0.5001, 0.5004, 0.5002])
    with pytest.raises(DataError, match="histogram bins"):
        otsu_threshold([0.5001, 0.5004], search="histogram")
    with pytest.raises(DataError, match="finite"):
        otsu_threshold([0.1, np.nan, 0.9])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        otsu_threshold([0.1, 1.2])
    with pytest.raises(DataError, match="1-D"):
        otsu_threshold(np.full((3, 2), 0.5))
    with pytest.raises(DataError, match="at least 2"):
        otsu_threshold([0.5])
    with pytest.raises(ConfigError, match="variance"):
        otsu_threshold([0.1, 0.9], variance="std")
    with pytest.raises(ConfigError, match="search"):
        otsu_threshold([0.1, 0.9], search="exact")
    with pytest.raises(ConfigError, match="step"):
        otsu_threshold([0.1, 0.9], step=0)


def test_assign_groups_boundaries():
    thr = {"s": 0.5, "mu1": 0.2, "mu2": 0.8}
    v = [0.8, 1.0, 0.5, 0.79999, 0.2, 0.49999, 0.19999, 0.0]
    groups, alpha = assign_groups(v, thr)
    assert groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert alpha.tolist() == [0.3, 0.3, 0.45, 0.45, 0.55, 0.55, 0.7, 0.7]
    groups, alpha = assign_groups(v, thr, alphas=(0.0, 0.1, 0.2, 0.3))
    assert alpha.tolist() == [0.0, 0.0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3]


def test_assign_groups_value_at_s_is_in_x1_but_group_1():
    v = np.array([0.1, 0.3, 0.7, 0.9])
    res = otsu_threshold(v)
    assert res.s == 0.3 and res.n1 == 2          # 0.3 <= s: counted in X1 by Eq. 6 ...
    groups, _ = assign_groups(v, res)
    assert groups.tolist() == [3, 1, 1, 0]       # ... but s <= v < μ2 is group 1 (the paper's groups, literally)


def test_assign_groups_on_otsu_result_is_consistent():
    v = _bimodal(4)
    res = otsu_threshold(v)
    groups, alpha = assign_groups(v, res)
    assert np.array_equal(groups == 3, v < res.mu1)
    assert np.array_equal(groups <= 1, v >= res.s)
    assert np.array_equal(groups == 0, v >= res.mu2)
    assert np.array_equal(alpha, np.asarray(detect.DEFAULT_ALPHAS)[groups])


def test_assign_groups_bad_input():
    with pytest.raises(ConfigError, match="4 numbers"):
        assign_groups([0.5], {"s": 0.5, "mu1": 0.2, "mu2": 0.8}, alphas=(0.3, 0.4))
    with pytest.raises(ConfigError, match="mu1 <= s <= mu2"):
        assign_groups([0.5], {"s": 0.9, "mu1": 0.2, "mu2": 0.8})
    with pytest.raises(ConfigError, match="'mu2'"):
        assign_groups([0.5], {"s": 0.5, "mu1": 0.2})
    with pytest.raises(DataError, match="finite"):
        assign_groups([np.nan], {"s": 0.5, "mu1": 0.2, "mu2": 0.8})


# ---- tipping point --------------------------------------------------------------------------------------

def test_tipping_plateau_is_not_a_strict_maximum():
    assert find_tipping_epoch([0.1, 0.2, 0.5, 0.5, 0.3, 0.2, 0.1]) is None
    assert find_tipping_epoch([0.1, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]) is None
    # a plateau first, then a strict peak: the peak
    assert find_tipping_epoch([0.1, 0.3, 0.3, 0.3, 0.2, 0.6, 0.5, 0.4]) == 5


def test_tipping_noisy_series_with_late_maximum():
    rng = np.random.default_rng(0)
    e = np.arange(60)
    series = np.where(e <= 30, 0.3 + 0.02 * e, 0.9 - 0.01 * (e - 30)) + rng.normal(0, 0.002, 60)
    assert find_tipping_epoch(series) == 30
    res = tipping_epoch_with_fallback(series, deadline=50)
    assert res.as_dict() == {"epoch": 30, "detected_at": 32, "fallback": False}
    # online: None until the window around 30 is complete, then 30 for ever
    answers = [find_tipping_epoch(series[:t]) for t in range(1, 61)]
    assert answers[:32] == [None] * 32 and answers[32:] == [30] * 28


def test_tipping_monotone_series_has_none():
    assert find_tipping_epoch(np.linspace(0.1, 0.9, 50)) is None
    assert find_tipping_epoch(np.linspace(0.9, 0.1, 50)) is None
    assert find_tipping_epoch([]) is None


def test_tipping_maximum_in_first_epochs():
    # at epoch 0 or 1 the window (k=2) is not inside the series
    assert find_tipping_epoch([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]) is None
    assert find_tipping_epoch([0.5, 0.9, 0.4, 0.3, 0.2, 0.1, 0.05]) is None
    # epoch 2: its window is complete after 5 epochs, but the authors' code waits for 6 recorded epochs
    early = [0.1, 0.2, 0.9, 0.3, 0.2]
    assert find_tipping_epoch(early) is None
    assert find_tipping_epoch(early + [0.1]) == 2
    assert tipping_epoch_with_fallback(early + [0.1]).detected_at == 5
    assert find_tipping_epoch(early, min_epochs=5) == 2
    # k=1: epoch 1 is a strict maximum of epochs 0..2, known after 3 epochs, decided after min_epochs=6
    assert find_tipping_epoch([0.5, 0.9, 0.4, 0.3, 0.2], k=1) is None
    res = tipping_epoch_with_fallback([0.5, 0.9, 0.4, 0.3, 0.2, 0.1], k=1)
    assert (res.epoch, res.detected_at) == (1, 5)
    assert tipping_epoch_with_fallback([0.5, 0.9, 0.4], k=1, min_epochs=0).detected_at == 2


def test_tipping_exact_k1_k3():
    series = [0.1, 0.5, 0.4, 0.6, 0.3, 0.2, 0.1]
    assert find_tipping_epoch(series, k=1) == 1         # 0.5 > 0.1, 0.4
    assert find_tipping_epoch(series, k=2) == 3         # 0.6 > 0.5, 0.4, 0.3, 0.2
    assert find_tipping_epoch(series, k=3) == 3         # 0.6 > epochs 0..6, window complete at 7 entries
    assert find_tipping_epoch(series[:6], k=3) is None
    assert tipping_epoch_with_fallback(series, k=3).detected_at == 6
    # k=3 strictness: a tie anywhere in the 7-window blocks it
    assert find_tipping_epoch([0.1, 0.2, 0.3, 0.6, 0.6, 0.2, 0.1, 0.0], k=3) is None
    assert find_tipping_epoch([0.1, 0.2, 0.3, 0.6, 0.2, 0.1, 0.6, 0.0], k=3) is None   # 0.6 again at e+3
    assert find_tipping_epoch([0.1, 0.2, 0.3, 0.6, 0.2, 0.1, 0.59, 0.0], k=3) == 3
    # k=1 and a dip-then-peak: the first strict local maximum wins, even if a higher one follows
    assert find_tipping_epoch([0.1, 0.3, 0.2, 0.5, 0.4, 0.3, 0.2], k=1) == 1


def test_tipping_fallback():
    rising = list(np.linspace(0.1, 0.9, 12))
    assert tipping_epoch_with_fallback(rising[:9], deadline=10) is None            # undecided
    res = tipping_epoch_with_fallback(rising[:10], deadline=10)
    assert res.as_dict() == {"epoch": 9, "detected_at": 9, "fallback": True}
    # entries after the deadline do not change the decision
    assert tipping_epoch_with_fallback(rising + [0.5, 0.4], deadline=10) == res
    # first arg-max on ties, among the epochs the detector can choose (index >= k)
    flat = [0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert tipping_epoch_with_fallback(flat, deadline=7).epoch == 2
    # a short-lived high in the first epochs (common at initialisation) is not taken as the tipping point
    early_high = [0.34, 0.19, 0.2, 0.25, 0.3, 0.31, 0.32, 0.33]
    assert tipping_epoch_with_fallback(early_high, deadline=8).as_dict() == {"epoch": 7, "detected_at": 7,
                                                                            "fallback": True}
    # a detection that becomes known exactly at the deadline still counts
    peak = [0.1, 0.2, 0.3, 0.4, 0.9, 0.5, 0.4]
    assert tipping_epoch_with_fallback(peak, deadline=7).as_dict() == {"epoch": 4, "detected_at": 6,
                                                                      "fallback": False}
    assert tipping_epoch_with_fallback(peak, deadline=6).fallback
    # an early commit of the authors' code (1c3c351, removed in 8cec543): no maximum by 10 recorded epochs → epoch 8
    res = tipping_epoch_with_fallback(rising[:10], deadline=10, fallback_epoch=8)
    assert (res.epoch, res.fallback) == (8, True)
    assert tipping_epoch_with_fallback(rising[:5]) is None                         # no deadline: wait


def test_tipping_bad_input():
    with pytest.raises(ConfigError, match="k must be"):
        find_tipping_epoch([0.1, 0.2], k=0)
    with pytest.raises(ConfigError, match="min_epochs"):
        find_tipping_epoch([0.1, 0.2], min_epochs=-1)
    with pytest.raises(DataError, match="finite"):
        find_tipping_epoch([0.1, float("nan"), 0.3])
    with pytest.raises(DataError, match="1-D"):
        find_tipping_epoch([[0.1, 0.2]])
    with pytest.raises(ConfigError, match="deadline"):
        tipping_epoch_with_fallback([0.1], deadline=0)
    with pytest.raises(ConfigError, match="fallback_epoch"):
        tipping_epoch_with_fallback([0.1] * 5, deadline=3, fallback_epoch=3)


# ---- GMM and small loss ---------------------------------------------------------------------------------

def _two_loss_clusters(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.gamma(2.0, 0.05, 800), rng.normal(3.0, 0.4, 200)])


def test_gmm_separates_two_loss_clusters():
    losses = _two_loss_clusters()
    p = gmm_clean_probability(losses)
    assert p.shape == (1000,) and p.dtype == np.float64 and (p >= 0).all() and (p <= 1).all()
    assert (p[:800] > 0.5).mean() > 0.99 and (p[800:] < 0.5).mean() > 0.99
    fit = fit_loss_gmm(losses)
    assert fit.means[fit.clean_component] < fit.means[1 - fit.clean_component]
    assert fit.weights[fit.clean_component] == pytest.approx(0.8, abs=0.02)
    assert fit.loss_min == losses.min() and fit.loss_max == losses.max()
    assert np.array_equal(gmm_clean_probability(torch.tensor(losses), seed=0), p)   # deterministic, torch ok
    # invariant to an affine change of the losses (they are min-max normalised)
    assert np.allclose(gmm_clean_probability(3 * losses + 7), p, atol=1e-6)


def test_gmm_bad_input():
    with pytest.raises(DataError, match="all 3 losses equal"):
        gmm_clean_probability([1.0, 1.0, 1.0])
    with pytest.raises(DataError, match="finite"):
        gmm_clean_probability([1.0, np.inf, 0.2])
    with pytest.raises(ConfigError, match="max_iter"):
        gmm_clean_probability([0.1, 0.2, 3.0], max_iter=0)


def test_small_loss_mask():
    losses = np.array([0.1, 2.0, 0.3, 5.0, 2.0, 0.0])
    assert small_loss_mask(losses, 0.5).tolist() == [False, True, False, True, True, False]
    assert small_loss_mask(losses, 1 / 3).tolist() == [False, True, False, True, False, False]  # tie → lower index
    assert not small_loss_mask(losses, 0.0).any() and small_loss_mask(losses, 1.0).all()
    assert small_loss_mask(_two_loss_clusters(), 0.2)[800:].all()
    with pytest.raises(ConfigError, match="noise_rate"):
        small_loss_mask(losses, 1.5)


# ---- metrics --------------------------------------------------------------------------------------------

def test_detection_metrics_by_hand():
    truth = [True, True, False, False, True]
    flagged = [True, False, True, False, True]
    m = detection_metrics(truth, flagged)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 1)
    assert (m["n"], m["n_noisy"], m["n_flagged"]) == (5, 3, 3)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(3 / 5)
    assert m["auroc"] is None and m["precision_at_k"] is None
    m = detection_metrics([1, 1, 1, 0], [1, 0, 0, 0])          # Pr 1, Re 1/3 → F1 = 2/(1 + 3) = 0.5
    assert (m["precision"], m["recall"], m["f1"]) == (1.0, pytest.approx(1 / 3), pytest.approx(0.5))


def test_detection_metrics_ranking_by_hand():
    # positives score 0.9, 0.4; negatives 0.6, 0.1 → 3 of 4 pairs ordered: AUROC 0.75.
    # ranking: 0.9 (noisy), 0.6, 0.4 (noisy), 0.1 → AP = 0.5·1 + 0.5·2/3 = 5/6; precision@2 = 1/2.
    m = detection_metrics([True, True, False, False], [True, False, True, False], [0.9, 0.4, 0.6, 0.1])
    assert m["auroc"] == pytest.approx(0.75)
    assert m["auprc"] == pytest.approx(5 / 6)
    assert m["k"] == 2 and m["precision_at_k"] == pytest.approx(0.5)
    assert detection_metrics(torch.tensor([True, False]), torch.tensor([True, True]),
                             torch.tensor([0.9, 0.1]))["auroc"] == 1.0


def test_detection_metrics_zero_division_and_errors():
    m = detection_metrics([True, False], [False, False], [0.2, 0.1])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    m = detection_metrics([False, False], [True, False], [0.2, 0.1])      # no noisy sample
    assert (m["recall"], m["f1"], m["auroc"], m["auprc"], m["precision_at_k"]) == (0.0, 0.0, None, None, None)
    m = detection_metrics([True, True], [True, True], [0.2, 0.1])         # all noisy
    assert m["auroc"] is None and m["precision_at_k"] == 1.0 and m["f1"] == 1.0
    with pytest.raises(DataError, match="same length"):
        detection_metrics([True, False], [True])
    with pytest.raises(DataError, match="boolean"):
        detection_metrics([0, 2], [1, 0])
    with pytest.raises(DataError, match="finite"):
        detection_metrics([True, False], [True, False], [np.nan, 0.1])


def test_expected_calibration_error():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])     # correct, wrong, correct, correct
    # bins of 0.1: {0.9: acc 0.5}, {0.7: acc 1}, {0.6: acc 1} → (2·0.4 + 0.3 + 0.4) / 4 = 0.375
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.375)
    # one bin: |0.75 − mean confidence 0.775|
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(0.025)
    assert expected_calibration_error(np.eye(3), [0, 1, 2]) == 0.0
    with pytest.raises(DataError, match="< the number of classes"):
        expected_calibration_error(probs, [0, 1, 2, 0])
    with pytest.raises(DataError, match="sum to 1"):
        expected_calibration_error(probs * 0.5, labels)
    with pytest.raises(ConfigError, match="bins"):
        expected_calibration_error(probs, labels, bins=0)


# ---- find_label_issues ----------------------------------------------------------------------------------

def _synthetic_pred_probs(n=2000, c=10, rate=0.2, seed=0):
    """Clean samples give their label high probability; noisy ones give it low and favour the true class."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, c, n)
    noisy = rng.random(n) < rate
    labels = np.where(noisy, (clean + rng.integers(1, c, n)) % c, clean)
    p_label = np.where(noisy, rng.beta(1, 12, n), rng.beta(12, 1.5, n))
    probs = rng.dirichlet(np.ones(c), n) * 0.05
    probs[np.arange(n), clean] += np.where(noisy, 1.0, 0.0)
    probs[np.arange(n), labels] = 0.0
    probs *= ((1 - p_label) / probs.sum(axis=1))[:, None]
    probs[np.arange(n), labels] = p_label
    return labels, probs, noisy, clean


def test_find_label_issues_synthetic():
    labels, probs, noisy, clean = _synthetic_pred_probs()
    issues = find_label_issues(labels, probs)
    assert issues.method == "otsu_mu1" and issues.thresholds["rule"] == "score < mu1"
    m = detection_metrics(noisy, issues.is_label_issue, issues.noise_score)
    assert m["precision"] > 0.97 and m["auroc"] > 0.99 and m["precision_at_k"] > 0.95
    s = find_label_issues(labels, probs, method="otsu_s")
    assert detection_metrics(noisy, s.is_label_issue)["f1"] > 0.95
    mu2 = find_label_issues(labels, probs, method="otsu_mu2")
    # μ1 ⊂ s ⊂ μ2: the flagged sets are nested
    assert not (issues.is_label_issue & ~s.is_label_issue).any() and not (s.is_label_issue & ~mu2.is_label_issue).any()
    assert detection_metrics(noisy, find_label_issues(labels, probs, method="gmm").is_label_issue)["f1"] > 0.95
    # BKD's authors' Otsu (left bin edges): the means sit half a bin (0.0005) below the bin-centre ones
    hist = dict(search="histogram", bins=1000, variance="sigma", min_variance=1e-5)
    centre = find_label_issues(labels, probs, **hist)
    left = find_label_issues(labels, probs, means="left_edge", **hist)
    assert left.thresholds["s"] == centre.thresholds["s"]  # the same split of these scores
    assert left.thresholds["mu1"] == pytest.approx(centre.thresholds["mu1"] - 0.0005, abs=1e-9)
    sl = find_label_issues(labels, probs, method="small_loss", noise_rate=noisy.mean())
    assert detection_metrics(noisy, sl.is_label_issue)["f1"] > 0.95
    am = find_label_issues(labels, probs, method="argmax")
    assert detection_metrics(noisy, am.is_label_issue)["f1"] > 0.95
    # ranking: most likely wrong first, the noisy samples at the top
    k = int(noisy.sum())
    assert noisy[issues.ranking[:k]].mean() > 0.95
    assert np.all(np.diff(issues.noise_score[issues.ranking]) <= 0)
    # suggested labels recover the true class of the noisy samples, groups follow the Otsu split
    assert (issues.suggested_label[noisy] == clean[noisy]).mean() > 0.99
    score = 1 - issues.noise_score
    assert np.array_equal(issues.group == 3, score < issues.thresholds["mu1"])
    assert np.allclose(score, get_label_quality_scores(labels, probs))


def test_find_label_issues_scores_and_torch_inputs_agree():
    labels, probs, _, _ = _synthetic_pred_probs(n=500, seed=1)
    a = find_label_issues(labels, probs)
    b = find_label_issues(labels, scores=probs[np.arange(500), labels])
    c = find_label_issues(torch.tensor(labels), torch.tensor(probs, dtype=torch.float32))
    assert np.array_equal(a.is_label_issue, b.is_label_issue) and np.array_equal(a.ranking, b.ranking)
    assert np.array_equal(a.is_label_issue, c.is_label_issue)
    assert np.array_equal(b.suggested_label, labels)                 # no pred_probs: keep the given label
    assert find_label_issues(labels, probs, return_ranking=False).ranking is None
    # scores decide, pred_probs only suggests
    d = find_label_issues(labels, probs, scores=np.linspace(0, 1, 500), method="small_loss", noise_rate=0.1)
    assert np.flatnonzero(d.is_label_issue).tolist() == list(range(50))
    assert np.array_equal(d.suggested_label, probs.argmax(axis=1))


def test_find_label_issues_ranking_is_stable():
    issues = find_label_issues([0, 0, 0, 0, 0], scores=[0.5, 0.1, 0.5, 0.1, 0.9], method="otsu_s")
    assert issues.ranking.tolist() == [1, 3, 0, 2, 4]


def test_label_issues_to_csv(tmp_path):
    labels, probs, _, _ = _synthetic_pred_probs(n=50, c=3, seed=2)
    issues = find_label_issues(labels, probs)
    path = tmp_path / "issues.csv"
    issues.to_csv(path)
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0]) == list(detect.CSV_COLUMNS) and len(rows) == 50
    assert [int(r["index"]) for r in rows] == list(range(50))
    assert [int(r["given_label"]) for r in rows] == labels.tolist()
    assert [float(r["noise_score"]) for r in rows] == issues.noise_score.tolist()
    assert [int(r["group"]) for r in rows] == issues.group.tolist()
    assert [r["flagged"] == "1" for r in rows] == issues.is_label_issue.tolist()
    issues.to_csv(path, ranked=True)
    assert [int(r["index"]) for r in csv.DictReader(open(path))] == issues.ranking.tolist()
    gmm = find_label_issues(labels, probs, method="gmm")
    assert gmm.group is None and gmm.to_frame_rows()[0]["group"] is None
    gmm.to_csv(path)
    assert {r["group"] for r in csv.DictReader(open(path))} == {""}


def test_find_label_issues_bad_input():
    labels, probs, _, _ = _synthetic_pred_probs(n=20, c=3, seed=3)
    with pytest.raises(DataError, match="< the number of classes"):
        find_label_issues(np.r_[labels[:-1], 3], probs)
    with pytest.raises(DataError, match=">= 0"):
        find_label_issues(np.r_[labels[:-1], -1], probs)
    with pytest.raises(DataError, match="integer"):
        find_label_issues(labels + 0.5, probs)
    with pytest.raises(DataError, match="sum to 1"):
        find_label_issues(labels, probs * 0.5)
    with pytest.raises(DataError, match="logits"):
        find_label_issues(labels, probs * 3 - 1)
    with pytest.raises(DataError, match="2-D"):
        find_label_issues(labels, probs[:, 0])
    bad = probs.copy()
    bad[4, 1] = np.nan
    with pytest.raises(DataError, match="row 4"):
        find_label_issues(labels, bad)
    with pytest.raises(DataError, match="same length"):
        find_label_issues(labels[:-1], probs)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        find_label_issues(labels, scores=np.linspace(-1, 1, 20))
    with pytest.raises(DataError, match="pred_probs .* or scores"):
        find_label_issues(labels)
    with pytest.raises(DataError, match="argmax"):
        find_label_issues(labels, scores=np.linspace(0, 1, 20), method="argmax")
    with pytest.raises(ConfigError, match="method must be one of"):
        find_label_issues(labels, probs, method="confident")
    with pytest.raises(DataError, match="'confident_learning' needs pred_probs"):
        find_label_issues(labels, scores=np.linspace(0, 1, 20), method="confident_learning")
    with pytest.raises(ConfigError, match="return_indices_ranked_by must be one of"):
        find_label_issues(labels, probs, return_indices_ranked_by="margin")
    with pytest.raises(ConfigError, match="unknown option"):
        find_label_issues(labels, probs, method="otsu_s", noise_rate=0.2)
    with pytest.raises(ConfigError, match="noise_rate"):
        find_label_issues(labels, probs, method="small_loss")


# ---- docstring examples ---------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["otsu", "tipping", "mixture", "metrics", "issues", "by_epoch"])
def test_docstring_examples(module):
    import importlib

    result = doctest.testmod(importlib.import_module(f"noisykd.detect.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


# ---- split quality by epoch (BKD Fig. 3c) --------------------------------------------------------------------

def test_split_quality_by_epoch_by_hand():
    from noisykd.detect import split_quality_by_epoch

    noisy = np.array([True, True, False, False, False, False])
    epoch1 = np.array([0.1, 0.1, 0.9, 0.9, 0.9, 0.9])   # Otsu: s = 0.1 (X1 = v <= s), mu1 = 0.1, mu2 = 0.9
    epoch2 = np.array([0.1, 0.9, 0.1, 0.9, 0.9, 0.9])   # one wrong label hidden among the high values
    values = np.stack([epoch1, epoch2, np.full(6, np.nan), np.full(6, 0.5)], axis=1)  # epochs 3, 4: no split
    rows_mu1 = split_quality_by_epoch(values, noisy)
    assert [r["epoch"] for r in rows_mu1] == [1, 2]
    first = rows_mu1[0]
    assert (first["s"], first["mu1"], first["mu2"]) == pytest.approx((0.1, 0.1, 0.9))
    assert first["n_flagged"] == 0 and first["f1"] == 0.0          # P_A < mu1 flags nothing: all equal mu1
    rows_s = split_quality_by_epoch(values, noisy, threshold="s")
    assert rows_s[0]["f1"] == 1.0 and rows_s[0]["auroc"] == 1.0     # P_A <= s flags exactly the two wrong labels
    # epoch 2 flags samples 0 and 2: one right (sample 0), one wrong -> precision 1/2, recall 1/2
    assert (rows_s[1]["precision"], rows_s[1]["recall"], rows_s[1]["f1"]) == (0.5, 0.5, 0.5)


def test_split_quality_by_epoch_errors():
    from noisykd.detect import split_quality_by_epoch

    with pytest.raises(DataError, match="shape"):
        split_quality_by_epoch(np.zeros((5, 2)), np.zeros(4, bool))
    with pytest.raises(DataError, match="threshold"):
        split_quality_by_epoch(np.zeros((4, 2)), np.zeros(4, bool), threshold="median")


# ------------------------------------------------------------------------------------------------------------
# One name for the run-end detector: "gmm", the rule `noisykd detect --detector gmm` applies

def test_run_end_detector_is_gmm_and_detect_gmm_repeats_it(tmp_path):
    """A CE run (no detector of its own) is decided by the engine's GMM on the final loss, named ``gmm``;
    ``detect_from_run(run, "gmm")`` fits it again on the same scores with the run's seed and flags the same
    samples. A run written before the rename (its summary says ``gmm_on_final_loss``) reads as ``gmm``."""
    import json

    from noisykd.config import load_config
    from noisykd.detect.from_run import detect_from_run
    from noisykd.engine import Trainer

    run = tmp_path / "ce"
    Trainer(load_config("digits/sym40", overrides=["optim.epochs=6", "data.train_subset=400", "seed=3",
                                                   "threads=1", f"out_dir={run}"]), progress=False).run()
    summary = json.loads((run / "summary.json").read_text())
    detection = summary["detection"]
    assert detection["detector"] == "gmm" and "GMM on the final per-sample loss" in detection["rule"]
    own, again = detect_from_run(run, "auto"), detect_from_run(run, "gmm")
    assert own.detector == again.detector == "gmm"
    assert own.flagged.sum() > 0 and np.array_equal(own.flagged, again.flagged)
    assert np.allclose(own.noise_score, again.noise_score, atol=1e-6)
    assert own.metrics["f1"] == again.metrics["f1"]
    # the run's earlier name for it
    summary["detection"]["detector"] = "gmm_on_final_loss"
    (run / "summary.json").write_text(json.dumps(summary))
    old = detect_from_run(run, "auto")
    assert old.detector == "gmm" and np.array_equal(old.flagged, own.flagged)
    assert np.array_equal(detect_from_run(run, "gmm").flagged, again.flagged)
