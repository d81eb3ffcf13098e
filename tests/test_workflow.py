"""The practitioner's workflow, end to end through the command line: one's own image folder with some images
in the wrong class folder, `noisykd detect` to rank them (with cross-validated probabilities, the default on
`--cv`), `noisykd clean` to fix them, and the probabilities handed to other tools."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from noisykd.cli import app
from noisykd.data import load_dataset
from noisykd.detect import find_label_issues

runner = CliRunner()
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 220)}
PER_CLASS, WRONG_PER_CLASS = 30, 4


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, set[str]]:
    """ROOT/<colour>/*.png: noisy 16x16 images of one colour each; 4 per class filed under the next colour's
    folder (a wrong label the user does not know about). Returns ROOT and the wrongly filed paths."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    wrong = set()
    for c, name in enumerate(names):
        for i in range(PER_CLASS):
            pixels = np.clip(np.array(COLOURS[name]) + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
            folder = names[(c + 1) % len(names)] if i < WRONG_PER_CLASS else name
            path = root / folder / f"{name}_{i:02d}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(pixels).save(path)
            if i < WRONG_PER_CLASS:
                wrong.add(str(path.resolve()))
    return root, wrong


@pytest.fixture(scope="module")
def detected(photos, tmp_path_factory):
    """`noisykd detect --cv 3` on a new run folder: trains CE on the photos first, then its 3 cross-validation
    folds, then ranks every labelled image."""
    root, _ = photos
    run = tmp_path_factory.mktemp("runs") / "photos-ce"
    result = invoke("detect", run, "--data", f"folder:{root}", "--cv", "3", "--epochs", "15", "--threads", "1",
                    "--set", "augment.policy=none", "--set", "optim.batch_size=16")
    assert result.exit_code == 0, result.output
    return run, result.output


def test_truth_is_unknown_for_ones_own_folder(photos, detected):
    root, _ = photos
    info = invoke("data", "info", f"folder:{root}")
    assert "noise rate: unknown" in info.output and "0.00%" not in info.output
    run, output = detected
    assert "the true labels are unknown: no precision or recall" in output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["noise"]["noise_rate"] is None and "f1" not in summary["detection"]
    # one's own folder gets a noisy validation split and best.pt by default
    assert summary["val_samples"] == 9 and (run / "checkpoints" / "best.pt").is_file()
    assert summary["selection"]["best_epoch"] == summary["best_noisy_val"]["epoch"]


def test_label_issues_name_files_classes_and_other_suggestions(photos, detected):
    root, wrong = photos
    run, output = detected
    assert "3-fold cross-validation" in output and (run / "cv" / "fold-2" / "finished.json").is_file()
    lines = (run / "label_issues-cv-confident_learning.csv").read_text().splitlines()
    assert lines[0].startswith("# detector cv:confident_learning")
    rows = list(csv.DictReader(lines[1:]))
    assert len(rows) == 3 * PER_CLASS  # the validation images too: the run never trained on them
    assert all(Path(r["path"]).is_file() and Path(r["path"]).parent.parent == root for r in rows)
    assert all(r["given_class"] in COLOURS and r["suggested_class"] in COLOURS for r in rows)
    assert all(r["suggested_class"] != r["given_class"] for r in rows)
    top = {str(Path(r["path"]).resolve()) for r in rows[:len(wrong)]}
    assert len(top & wrong) >= 0.75 * len(wrong)  # the misfiled images rank first
    for r in rows[:len(wrong)]:  # ... with their true colour suggested
        if str(Path(r["path"]).resolve()) in wrong:
            assert Path(r["path"]).name.startswith(r["suggested_class"])


def test_verified_labels_give_metrics_on_that_subset(photos, detected, tmp_path):
    root, wrong = photos
    run, _ = detected
    checked = sorted(wrong)[:6] + sorted(str(p.resolve()) for p in root.glob("red/red_2*.png"))[:6]
    with open(tmp_path / "verified.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for path in checked:
            writer.writerow([path, Path(path).name.split("_")[0]])
    result = invoke("detect", run, "--cv", "3", "--detector", "gmm", "--verified", tmp_path / "verified.csv")
    assert result.exit_code == 0, result.output
    assert "fold 1/3: reusing the finished run" in result.output  # the folds are not trained again
    saved = json.loads((run / "detection-cv-gmm.json").read_text())
    assert saved["truth"].startswith("12 verified labels") and saved["metrics"]["n"] == 12
    assert saved["metrics"]["n_noisy"] == 6 and saved["metrics"]["recall"] >= 0.5


def test_clean_relabels_into_a_manifest_that_folder_reads(photos, detected, tmp_path):
    root, wrong = photos
    run, _ = detected
    before = sorted((p, p.stat().st_mtime) for p in root.rglob("*.png"))
    out = tmp_path / "cleaned"
    result = invoke("clean", run, "--out", out, "--action", "relabel", "--top", "12", "--rest", "keep",
                    "--relabel-min", "0.5", "--given-max", "0.5")
    assert result.exit_code == 0, result.output
    assert (out / "suspects.png").stat().st_size > 10_000 and (out / "clean.json").is_file()
    assert json.loads((out / "clean.json").read_text())["detector"] == "cv:confident_learning"  # auto: RUN/cv
    cleaned = load_dataset(f"folder:{out / 'manifest.csv'}")
    # the run's validation images stay its validation split
    assert len(cleaned.train) + len(cleaned.val) == 3 * PER_CLASS and set(cleaned.classes) == set(COLOURS)
    labels = {str(Path(p).resolve()): cleaned.classes[y]
              for files, split in ((cleaned.meta["train_files"], cleaned.train), (cleaned.meta["val_files"], cleaned.val))
              for p, y in zip(files, split.labels)}
    fixed = sum(labels[p] == Path(p).name.split("_")[0] for p in wrong)
    assert fixed >= 0.75 * len(wrong)
    assert sorted((p, p.stat().st_mtime) for p in root.rglob("*.png")) == before  # the user's files untouched
    dropped = invoke("clean", run, "--out", tmp_path / "dropped", "--action", "drop", "--gallery", "0")
    assert dropped.exit_code == 0 and not (tmp_path / "dropped" / "suspects.png").exists()
    kept = load_dataset(f"folder:{tmp_path / 'dropped' / 'manifest.csv'}")
    decided = json.loads((tmp_path / "dropped" / "clean.json").read_text())
    assert decided["dropped"] == decided["suspects"] > 0
    assert len(kept.train) + len(kept.val) == 3 * PER_CLASS - decided["dropped"]
    none = invoke("clean", run, "--out", tmp_path / "none", "--action", "drop", "--top", "0", "--gallery", "0")
    assert none.exit_code == 0 and json.loads((tmp_path / "none" / "clean.json").read_text())["dropped"] == 0
    again = invoke("clean", run, "--out", out)
    assert again.exit_code == 2 and "not a new or empty folder" in " ".join(again.output.split())


def test_pred_probs_round_trip_into_find_label_issues_and_cleanlab(detected):
    run, _ = detected
    samples = np.load(run / "samples.npz")
    rows = samples["in_train"] == 1
    probs, given = samples["pred_probs"][rows].astype(np.float64), samples["given_label"][rows]
    assert probs.shape == (rows.sum(), 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    issues = find_label_issues(given, probs, method="argmax")
    ranked = find_label_issues(given, probs, method="argmax", return_indices_ranked_by="self_confidence")
    assert sorted(ranked.tolist()) == np.flatnonzero(issues.is_label_issue).tolist()
    assert probs[issues.is_label_issue].shape[0] == issues.num_issues  # a boolean mask that indexes pred_probs
    cleanlab = pytest.importorskip("cleanlab.filter")
    theirs = cleanlab.find_label_issues(given, probs)
    assert theirs.shape == (rows.sum(),) and theirs.dtype == bool


def test_predict_on_a_folder_of_new_images(photos, detected, tmp_path):
    root, _ = photos
    run, _ = detected
    new = tmp_path / "new"
    new.mkdir()
    for name, colour in COLOURS.items():
        Image.new("RGB", (32, 32), colour).save(new / f"{name}.png")  # another size: resized to 16x16
    result = invoke("predict", run, "--data", new, "--out", tmp_path / "pred.csv", "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert {Path(r["path"]).stem: r["class_1"] for r in rows} == {name: name for name in COLOURS}
    assert np.load(tmp_path / "pred.npz")["pred_probs"].shape == (3, 3)


# ------------------------------------------------------------------------------------------------------------
# runs people can keep track of

def test_runs_get_dated_folders_info_log_and_threads(tmp_path, monkeypatch):
    import re

    import torch

    from noisykd.config import load_config
    from noisykd.engine import Trainer

    monkeypatch.chdir(tmp_path)
    seen_threads = []
    cfg = load_config("digits/sym40", updates={"method": "ce", "threads": 1, "model": {"name": "mlp"},
                                               "optim": {"epochs": 1}})
    assert cfg.out_dir == ""  # chosen when the run starts
    before = torch.get_num_threads()
    result = Trainer(cfg, progress=False, on_step=lambda t, e, s: seen_threads.append(torch.get_num_threads())).run()
    assert re.fullmatch(r"runs/\d{8}-\d{6}-ce-digits", str(result.out_dir))
    assert set(seen_threads) == {1} and torch.get_num_threads() == before  # restored after the run
    info = json.loads((result.out_dir / "run_info.json").read_text())["sessions"][0]
    assert {"noisykd", "torch", "command", "started", "torch_threads", "machine"} <= set(info)
    assert info["torch_threads"] == 1
    assert "epoch   1/1" in (result.out_dir / "train.log").read_text()


def test_print_config_shows_the_resolved_yaml_and_trains_nothing(tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--config", "digits/sym40", "--method", "gce", "--print-config")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["method"] == "gce" and printed["optim"]["lr"] == 0.05 and not (tmp_path / "runs").exists()


def test_tensorboard_scalars_when_the_package_is_there(tmp_path):
    pytest.importorskip("tensorboard")
    result = invoke("train", "--config", "digits/sym40", "--set", "optim.epochs=1", "--set", "model.name=mlp",
                    "--set", "log.tensorboard=true", "--out", tmp_path / "tb")
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
