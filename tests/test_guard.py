"""The collapse guard, early stopping and the validation / fold splits: pure functions against hand values."""

from __future__ import annotations

import numpy as np
import pytest

from noisykd.config import DataConfig, load_config, rebase_on_data
from noisykd.engine.guard import collapse_events, epochs_without_improvement, selection_summary, should_stop_early
from noisykd.engine.setup import stratified_folds, stratified_holdout, validation_fraction
from noisykd.errors import ConfigError


def rows(values, phases=None, test=None):
    """History rows: epoch 1.., val_acc (None: not evaluated), optional phase and test_acc per epoch."""
    out = []
    for k, value in enumerate(values):
        row = {"epoch": k + 1, "val_acc": value}
        if phases is not None:
            row["phase"] = phases[k]
        if test is not None:
            row["test_acc"] = test[k]
        out.append(row)
    return out


def test_a_fall_after_a_phase_change_is_reported_once_against_the_value_before_it():
    history = rows([0.60, 0.686, 0.466, 0.40, 0.50], phases=["s1", "s1", "s2", "s2", "s2"])
    events = collapse_events(history, drop=0.05)
    phase = [e for e in events if e.kind == "phase_change"]
    assert len(phase) == 1
    e = phase[0]
    assert (e.epoch, e.reference_epoch, e.phase_epoch, e.phase, e.best_epoch) == (3, 2, 3, "s2", 2)
    assert e.points == pytest.approx(22.0)
    assert "after bkd's phase change at epoch 3 (s2)" in e.message("bkd", "runs/x")
    assert "noisykd eval runs/x --best" in e.message("bkd", "runs/x")


def test_a_fall_from_the_best_is_reported_once_per_best_epoch():
    events = collapse_events(rows([0.5, 0.7, 0.62, 0.60, 0.80, 0.70]), drop=0.05)
    assert [(e.kind, e.epoch, e.reference_epoch) for e in events] == [("from_best", 3, 2), ("from_best", 6, 5)]


def test_small_wobbles_and_unevaluated_epochs_raise_nothing():
    assert collapse_events(rows([0.5, None, 0.53, 0.49, None, 0.55]), drop=0.05) == []
    assert collapse_events([], drop=0.05) == []
    # a phase change followed by a rise is no collapse
    assert collapse_events(rows([0.5, 0.6, 0.7], phases=["a", "b", "b"]), drop=0.05) == []


def test_early_stopping_counts_evaluated_epochs_since_the_first_best():
    history = rows([0.5, 0.6, None, 0.6, 0.55])
    assert epochs_without_improvement(history) == 2  # 0.6 first reached at epoch 2; epochs 4 and 5 evaluated since
    assert should_stop_early(history, 2) and not should_stop_early(history, 3)
    assert not should_stop_early(history, None)
    assert epochs_without_improvement(rows([None, None])) == 0


def test_selection_says_the_best_epoch_and_how_far_the_last_trails():
    s = selection_summary(rows([0.5, 0.7, 0.65], test=[0.6, 0.8, 0.74]))
    assert s == {"best_epoch": 2, "last_epoch": 3, "last_trails_best_val_points": 5.0,
                 "last_trails_best_test_points": 6.0}
    assert selection_summary(rows([None, None])) is None


def test_stratified_holdout_keeps_class_shares_and_a_training_sample_per_class():
    labels = np.array([0] * 90 + [1] * 10)
    held = stratified_holdout(labels, 0.1, np.random.default_rng(0))
    assert len(held) == 10 and np.bincount(labels[held]).tolist() == [9, 1]
    # a class of one sample is never held out whole
    tiny = np.array([0, 0, 0, 0, 1])
    assert 4 not in stratified_holdout(tiny, 0.4, np.random.default_rng(0))


def test_stratified_folds_deal_each_class_evenly():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3)
    fold = stratified_folds(labels, 3, np.random.default_rng(1))
    for c in range(3):
        counts = np.bincount(fold[labels == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(fold).tolist() == [7, 7, 6]


def test_validation_is_ten_percent_unless_the_data_is_tiny_or_has_its_own():
    assert validation_fraction(DataConfig(), 1000, own_split=False) == 0.1
    assert validation_fraction(DataConfig(), 30, own_split=False) == 0.0
    assert validation_fraction(DataConfig(), 1000, own_split=True) is None
    assert validation_fraction(DataConfig(val_fraction=0.0), 1000, own_split=True) == 0.0
    with pytest.raises(ConfigError, match="has its own validation split"):
        validation_fraction(DataConfig(val_fraction=0.2, spec="folder:x"), 1000, own_split=True)


def test_fold_keys_are_checked_together():
    with pytest.raises(ConfigError, match="go together"):
        load_config(overrides=["data.cv_folds=4"])
    with pytest.raises(ConfigError, match="cv_fold must lie in"):
        load_config(overrides=["data.cv_folds=4", "data.cv_fold=4"])
    assert load_config(overrides=["data.cv_folds=4", "data.cv_fold=3"]).data.cv_fold == 3


def test_another_data_source_does_not_inherit_the_configs_noise():
    data = {"data": {"spec": "digits", "noise": "sym:0.4", "train_subset": 500, "val_fraction": 0.1},
            "method_args": {"k": 3}, "expected": {"test_acc": 90.0}}
    dropped = rebase_on_data(data, "folder:photos")
    assert dropped == ["data.noise=sym:0.4", "data.train_subset=500", "expected (the paper's numbers)"]
    assert data["data"] == {"spec": "digits"} and data["method_args"] == {"k": 3}
    # a paper config without validation (BKD's val_fraction 0) still gets one on one's own data
    paper = {"data": {"spec": "cifar10:/data", "val_fraction": 0.0}}
    assert rebase_on_data(paper, "folder:photos") == [] and "val_fraction" not in paper["data"]
    kept = {"data": {"spec": "cifar10:/data", "val_fraction": 0.0}}
    rebase_on_data(kept, "folder:photos", given={"data.val_fraction"})
    assert kept["data"]["val_fraction"] == 0.0
    # what the user gives again is kept, and the same source drops nothing
    again = {"data": {"spec": "digits", "noise": "sym:0.4"}}
    assert rebase_on_data(again, "folder:photos", given={"data.noise"}) == [] and again["data"]["noise"] == "sym:0.4"
    assert rebase_on_data({"data": {"spec": "digits", "noise": "sym:0.4"}}, "digits") == []
