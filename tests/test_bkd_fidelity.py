"""BKD: the options that reproduce the authors' code (TimoK93/blind_knowledge_distillation at 56ae05a), each
against hand-computed values or a behaviour that would not happen without the option.

Most tests drive the real method through a small context: the per-sample store is written as the training
step writes it, the eval pass sees crafted logits (networks = identity), and ``on_epoch_end`` gets the mean
max student probability series; no data set, no training.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from noisykd.detect import assign_groups, find_tipping_epoch, otsu_threshold, tipping_epoch_with_fallback
from noisykd.engine.state import SampleStore
from noisykd.errors import ConfigError
from noisykd.methods.base import EvalBatch, MethodContext
from noisykd.methods.bkd import BlindKnowledgeDistillation

# P_A(y|x) of five samples; with k=1 and this series the fitting epoch is 1 (0-based), known after epoch 2
SERIES = [0.1, 0.5, 0.2]


def _eval_logits(values) -> torch.Tensor:
    """Two-class logits whose agreement P_A(0|x) of identical teacher and student is ``values``:
    P_A = p0^2 / (p0^2 + p1^2) = sigmoid(4a) for logits (a, -a)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    a = 0.25 * torch.log(v / (1 - v))
    return torch.stack([a, -a], dim=1).float()


def make_bkd(n: int, epochs: int = 6, eval_values=None, **method_args) -> BlindKnowledgeDistillation:
    store = SampleStore(n)
    images = _eval_logits(eval_values if eval_values is not None else [0.5] * n)

    def iterate_train():
        yield EvalBatch(torch.arange(n), torch.zeros(n, dtype=torch.int64), images)

    ctx = MethodContext(num_classes=2, num_samples=n, train_indices=torch.arange(n), image_shape=(1, 1, 2),
                        normalization=None, device=torch.device("cpu"), store=store, generator=torch.Generator(),
                        build_model=torch.nn.Identity, iterate_train=iterate_train, total_epochs=epochs,
                        steps_per_epoch=1)
    args = BlindKnowledgeDistillation.parse_args({"k": 1, "min_epochs": 0, **method_args}, epochs)
    return BlindKnowledgeDistillation(ctx, args)


def run_epochs(method: BlindKnowledgeDistillation, train_values, series=SERIES) -> None:
    """Record ``train_values`` as the training pass's P_A of every epoch, then end the epoch."""
    n = method.ctx.num_samples
    for epoch, m in enumerate(series):
        method.ctx.store.write("p_agree_history", torch.arange(n), torch.as_tensor(train_values), column=epoch)
        method.on_epoch_end(epoch, {"mean_max_p_student": m})


def groups(method) -> list[int]:
    return method.ctx.store["group"].tolist()


# ------------------------------------------------------------------------------------------------------------
# gap 1: otsu_bins and otsu_min_variance are BKD arguments

def test_otsu_min_variance_reaches_the_split():
    """Values 2, 3, 6, 10 sixteenths (mu = 0.328125). Q (sigma2) of the three splits:
    {2,3}|{6,10}: between 4 * 0.171875^2 = 0.118164, within 2 * 0.03125^2 + 2 * 0.125^2 = 0.033203 -> 3.5588;
    {2,3,6}|{10}: between 0.117513, within 3 * 0.011285 + 0 = 0.033854 -> 3.4712; {2}|{3,6,10}: 0.571.
    A floor of 0.01 on each variance: 0.118164 / 0.05125 = 2.3056 against 0.117513 / 0.043854 = 2.6796, so the
    split moves to {2,3,6}|{10}."""
    values = [0.125, 0.1875, 0.375, 0.625]
    paper = make_bkd(4)
    run_epochs(paper, values)
    assert paper.split["s"] == 0.188  # the smallest grid point >= 0.1875
    assert (paper.split["mu1"], paper.split["mu2"]) == pytest.approx((0.15625, 0.5))
    assert groups(paper) == [3, 2, 1, 0]  # < mu1, [mu1, s), [s, mu2), >= mu2

    floored = make_bkd(4, otsu_min_variance=0.01)
    run_epochs(floored, values)
    assert floored.split["s"] == 0.375
    assert (floored.split["mu1"], floored.split["mu2"]) == pytest.approx((0.6875 / 3, 0.625))
    assert groups(floored) == [3, 3, 1, 0]  # 0.375 = s goes to the clean side (Sec. 4.3, as the authors)


def test_otsu_bins_reach_the_split():
    """Two bins [0, 0.5), [0.5, 1]: the only split is bin 0 | bin 1, at s = 0.25 (the first grid point at or
    above the centre of bin 0), mu1 and mu2 the bin centres 0.25 and 0.75. With 1000 bins the split is the same, but s
    is 0.301 (the first grid point above the centre 0.3005 of 0.3's bin) and mu1 is 0.2005."""
    values = [0.1, 0.2, 0.3, 0.6, 0.9]
    two = make_bkd(5, otsu_search="histogram", otsu_bins=2)
    run_epochs(two, values)
    assert (two.split["s"], two.split["mu1"], two.split["mu2"]) == pytest.approx((0.25, 0.25, 0.75), abs=1e-12)
    assert groups(two) == [3, 3, 1, 1, 0]
    many = make_bkd(5, otsu_search="histogram")  # 1000 bins: 0.1 .. 0.9 in bins 100, 200, 300, 600, 899
    run_epochs(many, values)
    assert (many.split["s"], many.split["mu1"], many.split["mu2"]) == pytest.approx((0.301, 0.2005, 0.75), abs=1e-12)


@pytest.mark.parametrize("bad, message", [
    ({"otsu_bins": 1}, r"method_args.otsu_bins must be an integer in \[2, 1000000\] .*got 1"),
    ({"otsu_bins": 10**7}, r"method_args.otsu_bins must be an integer in \[2, 1000000\]"),
    ({"otsu_bins": 2.5}, r"method_args.otsu_bins: expected an integer, got 2.5"),
    ({"otsu_min_variance": -1e-5}, r"method_args.otsu_min_variance must be a finite number >= 0 .*got -1e-05"),
    ({"otsu_min_variance": "small"}, r"method_args.otsu_min_variance: expected a number"),
    ({"otsu_means": "left_edge"}, r"otsu_means: left_edge .* needs otsu_search: histogram, got otsu_search: grid"),
    ({"otsu_means": "middle"}, r"method_args.otsu_means must be one of centre, left_edge; got 'middle'"),
    ({"detection_source": "test"}, r"detection_source must be one of split, train_pass, eval_pass; got 'test'"),
    ({"tipping_fallback": "none", "tipping_deadline": 5}, r"tipping_fallback is none .* tipping_deadline"),
    ({"tipping_fallback": "none", "tipping_fallback_epoch": 2}, r"tipping_fallback is none .* tipping_fallback_epoch"),
    ({"tipping_fallback": "never"}, r"method_args.tipping_fallback must be one of argmax, none; got 'never'"),
])
def test_fidelity_argument_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        BlindKnowledgeDistillation.parse_args(bad, 12)


def test_the_authors_otsu_setting_is_accepted():
    args = BlindKnowledgeDistillation.parse_args(
        {"otsu_variance": "sigma", "otsu_search": "histogram", "otsu_bins": 1000, "otsu_min_variance": 1e-5,
         "otsu_means": "left_edge"}, 300)
    assert (args.otsu_bins, args.otsu_min_variance, args.otsu_means) == (1000, 1e-5, "left_edge")


# ------------------------------------------------------------------------------------------------------------
# gap 2: float32 histories

def test_histories_are_float32():
    """P_A 0.5003 survives the store (float16 would hold 0.50049: its spacing near 0.5 is 2^-11)."""
    method = make_bkd(2, eval_values=[0.5003, 0.9], split_source="eval_pass")
    for name in ("p_teacher_history", "p_student_history", "p_agree_history", "p_agree_eval_history"):
        assert method.ctx.store[name].dtype == torch.float32, name
    method.on_epoch_end(0, {"mean_max_p_student": 0.1})
    assert method.ctx.store["p_agree_eval_history"][0, 0].item() == pytest.approx(0.5003, abs=1e-6)
    assert abs(float(np.float16(0.5003)) - 0.5003) > 1e-4


# ------------------------------------------------------------------------------------------------------------
# gap 3: mu1 / mu2 at the bins' left edges

def test_left_edge_means_by_hand():
    """The same two bins as above, counted at their left edges 0 and 0.5: mu1 = 0, mu2 = 0.5, s unchanged,
    and the groups move (0.6 is now >= mu2, 0.1 and 0.2 are no longer below mu1)."""
    method = make_bkd(5, otsu_search="histogram", otsu_bins=2, otsu_means="left_edge")
    run_epochs(method, [0.1, 0.2, 0.3, 0.6, 0.9])
    assert (method.split["s"], method.split["mu1"], method.split["mu2"]) == pytest.approx((0.25, 0.0, 0.5), abs=1e-12)
    assert groups(method) == [2, 2, 1, 0, 0]


def _authors_otsu(p: np.ndarray, bins: int = 1000):
    """The authors' Otsu in float64, written out from its description: a histogram of ``bins`` bins, bin i at
    i/bins, split hist[:j] | hist[j:], Q = between / (n1 sigma1 + n2 sigma2), variances clamped at 1e-5, mu
    the exact mean; the first maximum over j. Returns (j, n1, mu1, mu2)."""
    hist = np.histogram(p, bins=bins, range=(0, 1))[0].astype(np.float64)
    edges = np.arange(bins) / bins
    mu, best = p.mean(), (-np.inf, None)
    for j in range(1, bins):
        n1, n2 = hist[:j].sum(), hist[j:].sum()
        if n1 == 0 or n2 == 0:
            continue
        m1, m2 = (hist[:j] * edges[:j]).sum() / n1, (hist[j:] * edges[j:]).sum() / n2
        s1 = math.sqrt(max((hist[:j] * (edges[:j] - m1) ** 2).sum() / n1, 1e-5))
        s2 = math.sqrt(max((hist[j:] * (edges[j:] - m2) ** 2).sum() / n2, 1e-5))
        q = (n1 * (m1 - mu) ** 2 + n2 * (m2 - mu) ** 2) / (n1 * s1 + n2 * s2)
        if q > best[0]:
            best = (q, (j, int(n1), m1, m2))
    return best[1]


@pytest.mark.parametrize("seed", range(3))
def test_left_edge_otsu_matches_the_authors_arithmetic(seed):
    """The same partition and the same mu1, mu2 as the authors' formula. The threshold: the smallest s of
    the run of grid points that make that partition (ties, gap 4). The loop above, summing the empty bins of
    such a run in another order for each j, breaks those exact ties by rounding: for seed 0 (bins 525-528
    empty) it ends at 0.527 where ours takes 0.525, the same groups."""
    rng = np.random.default_rng(seed)
    p = np.clip(np.concatenate([rng.beta(2, 8, 300), rng.beta(9, 2, 700)]), 0.01, 0.99)
    ours = otsu_threshold(p, variance="sigma", search="histogram", min_variance=1e-5, means="left_edge")
    j, n1, mu1, mu2 = _authors_otsu(p)
    assert ours.n1 == n1
    assert (ours.mu1, ours.mu2) == pytest.approx((mu1, mu2), abs=1e-12)
    occupied = np.flatnonzero(np.histogram(p, bins=1000, range=(0, 1))[0])
    assert ours.s == (occupied[occupied < j].max() + 1) / 1000  # the first s of the tied run
    assert assign_groups(p, ours)[0].tolist() == assign_groups(p, {"s": j / 1000, "mu1": mu1, "mu2": mu2})[0].tolist()
    centre = otsu_threshold(p, variance="sigma", search="histogram", min_variance=1e-5)
    if centre.s == ours.s:  # same split: the centre means are half a bin higher
        assert (centre.mu1 - ours.mu1, centre.mu2 - ours.mu2) == pytest.approx((0.0005, 0.0005), abs=1e-12)


def test_left_edge_needs_the_histogram():
    with pytest.raises(ConfigError, match="left_edge"):
        otsu_threshold([0.1, 0.9], means="left_edge")


# ------------------------------------------------------------------------------------------------------------
# gap 4: ties go to the smallest s (documented difference to the authors' float32 arg-max)

@pytest.mark.parametrize("means, mu1, mu2, expected_groups", [("centre", 0.15, 0.85, [3, 3, 0, 0]),
                                                             ("left_edge", 0.1, 0.8, [2, 2, 0, 0])])
def test_ties_go_to_the_smallest_s(means, mu1, mu2, expected_groups):
    """Values in bins 1 and 8 of 10: every s from 0.2 to 0.8 makes the same split (equal Q); 0.2 is taken.
    (The authors' float32 arg-max may take another s of the run; the groups are the same for all of them.)"""
    values = [0.11, 0.12, 0.85, 0.86]
    res = otsu_threshold(values, step=0.1, search="histogram", bins=10, means=means)
    assert res.s == 0.2 and (res.n1, res.n2) == (2, 2)
    assert (res.mu1, res.mu2) == pytest.approx((mu1, mu2), abs=1e-12)
    assert assign_groups(values, res)[0].tolist() == expected_groups
    for other in (0.3, 0.5, 0.8):  # any s of the tied run: the same groups
        assert assign_groups(values, {"s": other, "mu1": res.mu1, "mu2": res.mu2})[0].tolist() == expected_groups


# ------------------------------------------------------------------------------------------------------------
# gap 5: groups from the training pass, detection from the eval pass with its own Otsu

TRAIN = [0.89, 0.92, 0.93, 0.0505, 0.0595]
EVAL = [0.0505, 0.0595, 0.89, 0.92, 0.93]  # the same two clusters, on other samples


def test_detection_from_the_eval_pass_with_its_own_otsu():
    """Both passes: clusters {0.0505, 0.0595} and {0.89, 0.92, 0.93}; Otsu splits between them (s = 0.06, the
    smallest grid point in the gap), mu1 = 0.055, mu2 = 0.91333. The training groups follow the training pass
    (sample 3 below mu1), the detection the eval pass (sample 0 below its own mu1)."""
    method = make_bkd(5, eval_values=EVAL, split_source="train_pass", detection_source="eval_pass")
    run_epochs(method, TRAIN)
    split = method.split
    assert (split["s"], split["mu1"], split["mu2"]) == pytest.approx((0.06, 0.055, 2.74 / 3), abs=1e-6)
    assert groups(method) == [1, 0, 0, 3, 2]                     # from the training pass
    detection = split["detection"]
    assert detection["source"] == "eval_pass"
    assert (detection["s"], detection["mu1"], detection["mu2"]) == pytest.approx((0.06, 0.055, 2.74 / 3), abs=1e-6)
    out = method.sample_outputs()
    assert out.detection.flagged.tolist() == [True, False, False, False, False]  # from the eval pass
    assert out.detection.clean_score == pytest.approx(EVAL, abs=1e-6)
    assert "(eval_pass, its own Otsu)" in out.detection.rule
    assert out.columns["p_agree_at_split"] == pytest.approx(TRAIN, abs=1e-6)
    assert method.summary()["detection_source"] == "eval_pass"


def test_default_detection_is_the_split():
    """detection_source=split (default): one Otsu, the training pass flags sample 3; no eval pass is made."""
    method = make_bkd(5, eval_values=EVAL)
    run_epochs(method, TRAIN)
    assert "p_agree_eval_history" not in method.ctx.store and "detection" not in method.split
    assert method.sample_outputs().detection.flagged.tolist() == [False, False, False, True, False]


def test_eval_pass_split_and_detection_agree_with_one_otsu():
    """split_source=eval_pass: groups and detection both from the eval pass, one Otsu (as before)."""
    method = make_bkd(5, eval_values=EVAL, split_source="eval_pass", detection_source="eval_pass")
    run_epochs(method, TRAIN)
    assert "detection" not in method.split
    assert groups(method) == [3, 2, 1, 0, 0]
    assert method.sample_outputs().detection.flagged.tolist() == [True, False, False, False, False]


# ------------------------------------------------------------------------------------------------------------
# gap 6: no fallback

RISING = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def test_tipping_fallback_none_trains_stage_1_to_the_end():
    """No strict maximum in 6 epochs: the default falls back at the deadline (half the run, at least 2k + 1:
    3 epochs) to the arg-max over the epochs >= k, the third; "none" never splits, the teacher stays on
    cross-entropy, and the detection is left to the engine's default, with a note."""
    default = make_bkd(5)
    run_epochs(default, TRAIN, series=RISING)
    assert default.stage == 2 and default.split["fallback"] and default.split["fitting_epoch"] == 3

    none = make_bkd(5, tipping_fallback="none")
    assert none.tipping_deadline is None
    run_epochs(none, TRAIN, series=RISING)
    assert none.stage == 1 and none.split == {}
    assert none.phase(5).startswith("stage 1: teacher on cross-entropy")
    out = none.sample_outputs()
    assert out.detection is None
    assert "tipping_fallback is none" in out.note and "cross-entropy throughout" in out.note


def test_tipping_fallback_none_still_splits_at_a_tipping_point():
    method = make_bkd(5, tipping_fallback="none")
    run_epochs(method, TRAIN)
    assert method.stage == 2 and method.split["fitting_epoch"] == 2 and not method.split["fallback"]


# ------------------------------------------------------------------------------------------------------------
# whole runs on the digits

def _config(out_dir, epochs: int, train_subset: int | None = None, **method_args) -> dict:
    from noisykd.config import load_config

    return load_config("digits/sym40", updates={
        "method": "bkd", "method_args": {"min_epochs": 4, **method_args}, "out_dir": str(out_dir),
        "data": {"val_fraction": 0.0, "train_subset": train_subset}, "optim": {"epochs": epochs}}).to_dict()


def test_resuming_a_checkpoint_with_float16_histories_widens_them(tmp_path):
    """Checkpoints written before the float32 histories hold float16 ones: a resume widens them (every value
    kept) and finishes the run; another dtype change (float64 into float32) is still refused, naming both."""
    from noisykd.config import load_config
    from noisykd.engine import Trainer
    from noisykd.engine.checkpoint import load_checkpoint, save_atomic
    from noisykd.errors import CheckpointError

    class Stop(Exception):
        pass

    def stop_in_epoch_1(trainer, epoch, step):
        if epoch == 1:
            raise Stop

    cfg = _config(tmp_path / "old", epochs=3)
    cfg["data"]["train_subset"] = 300
    with pytest.raises(Stop):
        Trainer(load_config(base=cfg), progress=False, on_step=stop_in_epoch_1).run()
    path = tmp_path / "old" / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and state["store"]["p_agree_history"].dtype == torch.float32
    for name in ("p_teacher_history", "p_student_history", "p_agree_history"):
        state["store"][name] = state["store"][name].half()  # as an older noisykd saved them
    old = state["store"]["p_agree_history"].clone()
    wide = dict(state, store={**state["store"], "p_agree_history": old.double()})
    save_atomic(wide, path)
    with pytest.raises(CheckpointError, match=r"'p_agree_history' is \(\d+, 3\) torch.float64 in the checkpoint but "
                                              r"\(\d+, 3\) torch.float32 in this run"):
        Trainer(load_config(base=cfg), progress=False).run(resume=True)
    save_atomic(state, path)
    trainer = Trainer(load_config(base=cfg), progress=False)
    trainer.run(resume=True)
    history = trainer.method.ctx.store["p_agree_history"].cpu()
    assert history.dtype == torch.float32
    # the epoch before the cut: the saved values, widened (NaN: samples outside the training subset)
    torch.testing.assert_close(history[:, 0], old[:, 0].float(), rtol=0, atol=0, equal_nan=True)


def test_a_run_with_every_authors_option(tmp_path):
    """The authors' code as options, in one run: their gradients, their Otsu, the detection from its own eval
    pass, no forced fitting epoch. With their gradients the student's mean max probability has no strict
    maximum of a full window in 12 epochs: no tipping point, so (tipping_fallback none) no split: CE
    throughout, an eval pass after every epoch, and the detection left to the engine's GMM, which says why."""
    from noisykd.config import load_config
    from noisykd.engine import Trainer

    cfg = _config(tmp_path / "authors", epochs=12, reference_gradients=True, otsu_variance="sigma",
                  otsu_search="histogram", otsu_bins=1000, otsu_min_variance=1e-5, otsu_means="left_edge",
                  split_source="train_pass", detection_source="eval_pass", tipping_fallback="none")
    result = Trainer(load_config(base=cfg), progress=False).run()
    summary = result.summary["method_summary"]
    assert summary["split"] is None and summary["stage"] == 1
    series = summary["mean_max_p_student"]
    assert find_tipping_epoch(series, k=2, min_epochs=4) is None  # no strict maximum of a full window ...
    assert tipping_epoch_with_fallback(series, k=2, min_epochs=4, deadline=6).fallback  # ... the default splits
    assert [r["stage"] for r in result.history] == [1.0] * 12
    detection = result.summary["detection"]
    assert detection["detector"] == "gmm" and "tipping_fallback is none" in detection["note"]
    eval_history = np.load(result.out_dir / "samples.npz")["p_agree_eval_history"]
    assert eval_history.dtype == np.float32
    assert (~np.isnan(eval_history)).sum(axis=0).tolist() == [result.summary["train_samples"]] * 12


def test_a_run_with_detection_from_its_own_eval_pass(tmp_path):
    """Paper gradients and fallback (a split within 12 epochs), the authors' Otsu, groups from the training pass and
    the detection from the eval pass with its own Otsu: two splits of two passes, the detection reading the
    eval pass's P_A at the fitting epoch below its own mu1."""
    from noisykd.config import load_config
    from noisykd.engine import Trainer

    # 600 of the 1,257 training digits (a third of the time); the rest of the rows are NaN in samples.npz
    cfg = _config(tmp_path / "eval", epochs=12, train_subset=600, otsu_variance="sigma", otsu_search="histogram",
                  otsu_min_variance=1e-5, otsu_means="left_edge", detection_source="eval_pass")
    result = Trainer(load_config(base=cfg), progress=False).run()
    split = result.summary["method_summary"]["split"]
    assert split is not None, result.summary["method_summary"]  # (at the default's arg-max fallback, epoch 6)
    own = split["detection"]
    assert own["source"] == "eval_pass" and own["mu1"] <= own["s"] <= own["mu2"]
    assert (own["s"], own["mu1"]) != (split["s"], split["mu1"])  # two Otsu splits of two passes
    for cut in (split, own):  # histogram thresholds on the 1/1000 grid, mu1 and mu2 means of left edges
        assert cut["s"] * 1000 == pytest.approx(round(cut["s"] * 1000), abs=1e-9)
    detection = result.summary["detection"]
    assert detection["detector"] == "bkd" and "(eval_pass, its own Otsu)" in detection["rule"]
    samples = np.load(result.out_dir / "samples.npz")
    fitting = split["fitting_epoch"] - 1
    eval_at_split = samples["p_agree_eval_history"][:, fitting].astype(np.float64)
    assert np.array_equal(samples["p_agree_detection"], eval_at_split, equal_nan=True)
    assert int((eval_at_split < own["mu1"]).sum()) == detection["n_flagged"]
    train_at_split = samples["p_agree_history"][:, fitting].astype(np.float64)
    assert np.array_equal(samples["p_agree_at_split"], train_at_split, equal_nan=True)
    assert int((train_at_split < split["mu1"]).sum()) == split["group_sizes"][3]  # groups: the training pass
