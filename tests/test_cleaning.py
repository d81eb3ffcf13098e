"""Cleaning decisions (which suspects, relabel or drop) and the noise-rate estimate: pure functions against hand
values; the cross-validation file's checks; the gallery's tile titles against the ranking CSV."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from noisykd.clean import CleaningRule, clean_run, plan_cleaning, suspect_titles, suspects_figure
from noisykd.config import load_config
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


# ------------------------------------------------------------------------------------------------------------
# The gallery (suspects.png): each tile's rank, file (or index) and score are the ranking CSV's

TITLE = re.compile(r"^#(\d+) (.+)\n.+ → .+\nscore (\d\.\d+)$")


def _train(overrides: list[str], out: Path) -> Path:
    from noisykd.engine import Trainer

    Trainer(load_config("digits/sym40", overrides=overrides + [f"out_dir={out}", "threads=1"]), progress=False).run()
    return out


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _check_titles_match_csv(titles: list[str], rows: list[dict], by_file: bool) -> None:
    """Every title's rank, sample and score equal the CSV row of that rank (the score rounded to the decimals the
    tile shows, which are 3 unless more are needed to tell tiles apart)."""
    assert titles
    for title, row in zip(titles, rows):
        rank, sample, score = TITLE.match(title).groups()
        assert rank == row["rank"]
        assert sample == (Path(row["path"]).name if by_file else f"index {row['index']}")
        decimals = len(score.split(".")[1])
        assert 3 <= decimals <= 6 and score == f"{float(row['noise_score']):.{decimals}f}"


def test_gallery_tiles_show_the_csv_rank_index_and_score(tmp_path):
    """digits (no image files): the tiles read from the figure itself name the sample index."""
    from noisykd.data import load_dataset
    from noisykd.detect.from_run import detect_from_run

    run = _train(["optim.epochs=3", "data.train_subset=300", "data.test_subset=100"], tmp_path / "run")
    found = detect_from_run(run)
    found.write_csv(tmp_path / "ranking.csv")
    fig = suspects_figure(found, load_dataset("digits"), top=24)
    shown = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert shown == suspect_titles(found, 24) and len(shown) == 24
    _check_titles_match_csv(shown, _csv_rows(tmp_path / "ranking.csv"), by_file=False)


def test_gallery_tiles_of_a_folder_source_name_the_files(tmp_path):
    """A folder source: ``noisykd clean`` writes the ranking next to the gallery, and the tiles name its files."""
    from PIL import Image

    from noisykd.detect.from_run import detect_from_run

    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "mid", "light")):
        for i in range(12):
            folder = ("dark", "mid", "light")[(c + 1) % 3] if i < 2 else name  # two wrongly filed per class
            pixels = np.clip(40 + 80 * c + rng.normal(0, 20, (8, 8)), 0, 255).astype(np.uint8)
            (tmp_path / "photos" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / "photos" / folder / f"{name}_{i:02d}.png")
    run = _train([f"data.spec=folder:{tmp_path / 'photos'}", "data.noise=none", "optim.epochs=3",
                  "optim.batch_size=8"], tmp_path / "run")
    result = clean_run(run, tmp_path / "cleaned", action="review", top=10)
    assert result.ranking == tmp_path / "cleaned" / "label_issues-gmm.csv" and result.gallery.is_file()
    titles = suspect_titles(detect_from_run(run), 10)
    _check_titles_match_csv(titles, _csv_rows(result.ranking), by_file=True)
    assert all(TITLE.match(t).group(2).endswith(".png") for t in titles)


def _detection(scores, paths=None):
    from noisykd.detect.from_run import RunDetection

    n = len(scores)
    return RunDetection("gmm", "", "", ("a", "b"), np.arange(n), paths, np.zeros(n, dtype=np.int64),
                        np.ones(n, dtype=np.int64), np.asarray(scores, dtype=np.float64), np.full(n, -1),
                        np.ones(n, dtype=np.int64), "unknown", None, None)


def test_tiles_show_more_decimals_only_where_three_would_tie():
    # three decimals tell these apart
    assert [t.split("\n")[2] for t in suspect_titles(_detection([0.91, 0.52, 0.1234]), 3)] == [
        "score 0.910", "score 0.520", "score 0.123"]
    # neighbours may share a rounded score (the rank orders them) ...
    assert [t.split("\n")[2] for t in suspect_titles(_detection([0.9101, 0.9099, 0.5]), 3)] == [
        "score 0.910", "score 0.910", "score 0.500"]
    # ... but not most tiles: a memorised run would say 1.000 (and 1.0000) on all but one of these; 5 decimals
    # tell most of them apart
    titles = suspect_titles(_detection([0.999991, 0.999993, 0.999994, 0.999961, 0.999972, 0.2]), 6)
    assert [t.split("\n")[2] for t in titles] == ["score 0.99999", "score 0.99999", "score 0.99999",
                                                 "score 0.99997", "score 0.99996", "score 0.20000"]
    # scores the CSV itself cannot tell apart stay equal; the rank (the CSV's) orders them
    titles = suspect_titles(_detection([1 - 1e-9, 1 - 2e-9]), 2)
    assert [t.split("\n")[0] for t in titles] == ["#1 index 0", "#2 index 1"]
    assert {t.split("\n")[2] for t in titles} == {"score 1.000"}
    # long file names keep their start and end
    long = suspect_titles(_detection([0.5], np.array(["/x/a_very_long_file_name_of_an_image_0042.png"])), 1)[0]
    assert long.startswith("#1 a_very_lo") and long.split("\n")[0].endswith("_0042.png") and "…" in long
