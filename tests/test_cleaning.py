"""Cleaning decisions (which suspects, relabel or drop) and the noise-rate estimate: pure functions against hand
values; the cross-validation file's checks."""

from __future__ import annotations

import numpy as np
import pytest

from noisykd.clean import CleaningRule, plan_cleaning
from noisykd.crossval import CrossValidated
from noisykd.detect import confident_joint, estimate_noise_rate
from noisykd.errors import ConfigError, DataError

#: Four samples: (noise score, flagged, given, suggested, class probabilities)
SCORE = np.array([0.9, 0.8, 0.1, 0.6])
FLAGGED = np.array([True, True, False, False])
GIVEN = np.array([0, 1, 2, 0])
SUGGESTED = np.array([1, 2, 0, 2])
PROBS = np.array([[0.05, 0.95, 0.00],   # confident in its suggestion, given label improbable: relabel
                  [0.00, 0.50, 0.50],   # suggestion 0.5 only: not confident enough
                  [0.10, 0.00, 0.90],
                  [0.05, 0.00, 0.95]])


def test_drop_takes_the_flagged_and_relabel_only_the_confident():
    drop = plan_cleaning(SCORE, FLAGGED, GIVEN, SUGGESTED, PROBS, CleaningRule(action="drop"))
    assert drop.drop.tolist() == [True, True, False, False] and not drop.relabel.any()
    relabel = plan_cleaning(SCORE, FLAGGED, GIVEN, SUGGESTED, PROBS, CleaningRule(action="relabel"))
    assert relabel.relabel.tolist() == [True, False, False, False]
    assert relabel.drop.tolist() == [False, True, False, False]  # rest="drop": the unsure suspect goes
    assert relabel.label.tolist() == [1, 1, 2, 0]
    keep = plan_cleaning(SCORE, FLAGGED, GIVEN, SUGGESTED, PROBS, CleaningRule(action="relabel", rest="keep"))
    assert not keep.drop.any() and keep.label.tolist() == [1, 1, 2, 0]


def test_relabel_thresholds_decide():
    loose = CleaningRule(action="relabel", relabel_min=0.5, given_max=0.5)
    assert plan_cleaning(SCORE, FLAGGED, GIVEN, SUGGESTED, PROBS, loose).relabel.tolist() == [True, True, False, False]
    strict = CleaningRule(action="relabel", relabel_min=0.99)
    assert not plan_cleaning(SCORE, FLAGGED, GIVEN, SUGGESTED, PROBS, strict).relabel.any()


def test_top_and_fraction_pick_the_most_likely_wrong_flagged_or_not():
    top = plan_cleaning(SCORE, FLAGGED, GIVEN, SUGGESTED, PROBS, CleaningRule(action="drop", top=3))
    assert top.suspect.tolist() == [True, True, False, True]
    share = plan_cleaning(SCORE, FLAGGED, GIVEN, SUGGESTED, PROBS, CleaningRule(action="drop", fraction=0.25))
    assert share.suspect.tolist() == [True, False, False, False]
    review = plan_cleaning(SCORE, FLAGGED, GIVEN, SUGGESTED, PROBS, CleaningRule(action="review", top=2))
    assert review.suspect.sum() == 2 and not review.drop.any() and review.label.tolist() == GIVEN.tolist()


@pytest.mark.parametrize("rule, message", [
    (CleaningRule(top=2, fraction=0.1), "not both"), (CleaningRule(top=-1), "--top must be >= 0"),
    (CleaningRule(fraction=1.5), "--fraction must lie in"), (CleaningRule(action="fix"), "unknown action"),
    (CleaningRule(rest="maybe"), "--rest must be one of"), (CleaningRule(relabel_min=2.0), "--relabel-min")])
def test_bad_rules_are_refused(rule, message):
    with pytest.raises(ConfigError, match=message):
        rule.validate()


def test_confident_joint_and_noise_rate_by_hand():
    # class thresholds: mean P(0 | given 0) = 0.8, mean P(1 | given 1) = (0.9 + 0.2) / 2 = 0.55
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.1, 0.9], [0.8, 0.2]])
    joint = confident_joint(labels, probs)
    # sample 1 (0.7 < 0.8, 0.3 < 0.55) has no confident guess; row 0 is scaled to its 2 labels
    assert joint.tolist() == [[2.0, 0.0], [1.0, 1.0]]
    assert estimate_noise_rate(labels, probs) == pytest.approx(0.25)
    assert estimate_noise_rate([0, 1], [[1.0, 0.0], [0.0, 1.0]]) == 0.0


def test_cross_validated_file_round_trips_and_refuses_damage(tmp_path):
    cv = CrossValidated(np.array([0, 2]), np.array([1, 0]), np.array([[0.2, 0.8], [0.6, 0.4]], np.float32),
                        np.array([0, -1]), folds=2, checkpoint="best")
    back = CrossValidated.load(cv.save(tmp_path / "cv.npz"))
    assert back.folds == 2 and back.checkpoint == "best" and back.pred_probs.tolist() == cv.pred_probs.tolist()
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match="damaged"):
        CrossValidated.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", index=np.arange(3), given_label=np.zeros(2, int), pred_probs=np.ones((3, 2)),
             fold=np.zeros(3, int), folds=np.int64(2), checkpoint=np.str_("best"))
    with pytest.raises(DataError, match="do not fit together"):
        CrossValidated.load(tmp_path / "short.npz")
    with pytest.raises(DataError, match="noisykd detect RUN --cv K"):
        CrossValidated.load(tmp_path / "missing.npz")
