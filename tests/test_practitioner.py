"""The practitioner's pipeline end to end on small data: validation and best.pt on every source, the collapse
guard and early stopping, cross-validation folds as run folders (reused, resumed), train-clean, and a config
moved to one's own data without its synthetic noise."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from noisykd.cli import app
from noisykd.clean import CleaningRule
from noisykd.config import load_config
from noisykd.crossval import CrossValidated, cross_validate, cv_path
from noisykd.errors import ConfigError
from noisykd.engine import Trainer
from noisykd.methods import METHODS, Method, Prediction, StepOutput
from noisykd.pipeline import train_clean
from noisykd.reproduce import compare_settings

runner = CliRunner()


class Captured(logging.Handler):
    """The messages of the ``noisykd`` logger (which does not propagate to the root logger once the command line
    has set it up), at WARNING and above."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("noisykd").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("noisykd").removeHandler(self)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def digits(out: Path, *sets: str):
    """CE on the digits with 40% symmetric noise, 3 quick epochs (the shipped digits config otherwise)."""
    return load_config("digits/sym40", overrides=[f"out_dir={out}", "method=ce", "optim.epochs=3", "threads=1",
                                                  *sets])


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory) -> Path:
    """One's own data as an npz: 300 digits (8x8) with their labels, and 100 test images."""
    from noisykd.data import load_dataset

    data = load_dataset("digits")
    path = tmp_path_factory.mktemp("own") / "own.npz"
    np.savez(path, x_train=data.train.images[:300, ..., 0], y_train=data.train.labels[:300],
             x_test=data.test.images[:100, ..., 0], y_test=data.test.labels[:100])
    return path


# --------------------------------------------------------------------------------------------------------
# validation and best.pt on every source

def test_own_data_gets_a_stratified_validation_split_and_best_pt(npz_data, tmp_path):
    out = tmp_path / "own"
    result = invoke("train", "--data", f"npz:{npz_data}", "--epochs", "2", "--threads", "1", "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_samples"] == 30 and summary["train_samples"] == 270
    assert summary["selection"]["best_epoch"] in (1, 2) and summary["best_checkpoint"] == "the best noisy-validation epoch"
    assert "best noisy-validation epoch" in result.output and "trails it by" in result.output
    samples = np.load(out / "samples.npz")
    in_val = samples["in_val"] == 1
    assert in_val.sum() == 30 and not (in_val & (samples["in_train"] == 1)).any()
    assert np.isfinite(samples["pred_probs"][in_val]).all()  # the validation samples' out-of-sample probabilities
    # stratified: every class keeps its share within one sample
    given = samples["given_label"]
    assert np.all(np.abs(np.bincount(given[in_val], minlength=10) - 0.1 * np.bincount(given, minlength=10)) <= 1)
    for command in (("eval", out, "--best"), ("predict", out, "--best", "--data", f"npz:{npz_data}",
                                              "--out", tmp_path / "p.csv")):
        done = invoke(*command)
        assert done.exit_code == 0, done.output


def test_a_run_without_validation_still_writes_best_pt(tmp_path):
    result = Trainer(digits(tmp_path / "r", "data.val_fraction=0", "optim.epochs=1"), progress=False).run()
    assert result.summary["selection"] is None and "last epoch" in result.summary["best_checkpoint"]
    best = torch.load(tmp_path / "r" / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == 1
    done = invoke("eval", tmp_path / "r", "--best")
    assert done.exit_code == 0 and "(epoch 1)" in done.output


def test_eval_best_on_a_run_without_best_pt_says_why(tmp_path):
    Trainer(digits(tmp_path / "r", "optim.epochs=1"), progress=False).run()
    (tmp_path / "r" / "checkpoints" / "best.pt").unlink()  # what a run of an earlier noisykd without validation has
    done = invoke("eval", tmp_path / "r", "--best")
    assert done.exit_code == 2 and "no checkpoints/best.pt" in done.output and "drop --best" in done.output


# --------------------------------------------------------------------------------------------------------
# the collapse guard and early stopping

class Collapsing(Method):
    """CE for two epochs (phase "learn"), then a phase that trains every sample towards class 0."""

    name = "collapse_toy"

    def __init__(self, ctx, args=None):
        super().__init__(ctx, args)
        self.net = self.add_network("net", ctx.build_model())
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def phase(self, epoch: int) -> str:
        return "learn" if epoch < 2 else "sabotage: every label is 0"

    def training_step(self, batch):
        logits = self.net(batch.views["train"])
        target = batch.labels if self.epoch < 2 else torch.zeros_like(batch.labels)
        return StepOutput(loss=F.cross_entropy(logits, target), logits=logits)

    @torch.no_grad()
    def predict(self, images):
        return Prediction(logits=self.net(images))


@pytest.fixture(scope="module")
def collapsing():
    if "collapse_toy" not in METHODS:
        METHODS.register("collapse_toy", Collapsing)
    yield
    METHODS.unregister("collapse_toy")


def test_a_collapse_after_a_phase_change_is_said_in_the_log_and_summary(collapsing, tmp_path):
    cfg = load_config("digits/sym40", overrides=[f"out_dir={tmp_path / 'c'}", "method=collapse_toy", "optim.epochs=4",
                                                  "data.noise=none", "threads=1", "optim.schedule=constant"])
    with Captured() as log:
        summary = Trainer(cfg, progress=False).run().summary
    phase = [e for e in summary["collapse"] if e["kind"] == "phase_change"]
    assert len(phase) == 1 and phase[0]["phase_epoch"] == 3 and phase[0]["reference_epoch"] == 2
    assert phase[0]["points"] > 30 and phase[0]["best_epoch"] == 2
    assert any("after collapse_toy's phase change at epoch 3" in m and "best.pt" in m for m in log.messages)
    history = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in history] == ["learn", "learn"] + ["sabotage: every label is 0"] * 2
    best = torch.load(tmp_path / "c" / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == 2


def test_early_stopping_ends_the_run_and_resume_agrees(collapsing, tmp_path):
    sets = [f"out_dir={tmp_path / 'e'}", "method=collapse_toy", "optim.epochs=6", "data.noise=none", "threads=1",
            "optim.schedule=constant", "optim.early_stop_patience=1"]
    result = Trainer(load_config("digits/sym40", overrides=sets), progress=False).run()
    assert result.summary["epochs_trained"] == 3 and result.summary["early_stop"] == {"after_epoch": 3, "patience": 1}
    assert json.loads((tmp_path / "e" / "finished.json").read_text())["epochs"] == 3


# --------------------------------------------------------------------------------------------------------
# cross-validation folds

def test_cv_folds_cover_every_labelled_sample_once_and_are_reused_and_resumed(tmp_path):
    Trainer(digits(tmp_path / "run", "data.train_subset=400"), progress=False).run()
    states = []
    cv = cross_validate(tmp_path / "run", folds=2, on_fold=lambda f, n, s: states.append(s))
    assert states == ["start", "start"]
    samples = np.load(tmp_path / "run" / "samples.npz")
    labelled = np.flatnonzero((samples["in_train"] == 1) | (samples["in_val"] == 1))
    assert cv.index.tolist() == labelled.tolist() and len(labelled) == 400
    assert (cv.fold == -1).sum() == 40 and np.bincount(cv.fold[cv.fold >= 0]).tolist() == [180, 180]
    assert np.allclose(cv.pred_probs.sum(1), 1, atol=1e-4)
    for k in (0, 1):  # each fold run never trained on the samples it predicts
        fold = np.load(tmp_path / "run" / "cv" / f"fold-{k}" / "samples.npz")
        assert not (fold["in_train"][cv.index[cv.fold == k]] == 1).any()
    # again: reused; an interrupted fold (no finished marker) resumes and gives the same probabilities
    (tmp_path / "run" / "cv" / "fold-1" / "finished.json").unlink()
    states.clear()
    again = cross_validate(tmp_path / "run", folds=2, on_fold=lambda f, n, s: states.append(s))
    assert states == ["reuse", "resume"]
    assert np.array_equal(again.pred_probs, cv.pred_probs)
    assert CrossValidated.load(cv_path(tmp_path / "run")).folds == 2


def test_detect_on_own_data_ranks_with_cross_validated_probabilities(npz_data, tmp_path):
    run = tmp_path / "det"
    done = invoke("detect", run, "--data", f"npz:{npz_data}", "--epochs", "2", "--threads", "1", "--cv", "2")
    assert done.exit_code == 0, done.output
    assert "2-fold cross-validation" in done.output and "fold 2/2: training" in done.output
    lines = (run / "label_issues-cv-confident_learning.csv").read_text().splitlines()
    assert lines[0].startswith("# detector cv:confident_learning") and len(lines) == 2 + 300  # every labelled sample
    again = invoke("detect", run, "--cv", "2", "--detector", "otsu_mu1")
    assert again.exit_code == 0 and "fold 1/2: reusing" in again.output
    assert (run / "label_issues-cv-otsu_mu1.csv").is_file()


# --------------------------------------------------------------------------------------------------------
# train-clean

def test_train_clean_reports_before_and_after_and_reuses_its_stages(tmp_path):
    cfg = digits(tmp_path / "ignored", "optim.epochs=4")
    stages = []
    result = train_clean(cfg, tmp_path / "tc", folds=2, on_stage=lambda stage, what: stages.append(stage))
    assert stages[0] == "noisy" and stages[-1] == "clean-run"
    for name in ("noisy/finished.json", "noisy/cv/fold-1/finished.json", "cleaned/clean.json", "clean/finished.json",
                 "train_clean.md", "train_clean.json"):
        assert (tmp_path / "tc" / name).is_file(), name
    assert result.true_wrong_before == pytest.approx(0.389, abs=0.01)  # digits sym:0.4 with its noise seed
    assert result.true_wrong_after < result.true_wrong_before
    assert result.estimated_wrong_after < result.estimated_wrong_before
    assert result.judged == 1257 and result.dropped + result.relabelled > 0
    clean_cfg = load_config(tmp_path / "tc" / "clean" / "config.yaml")
    kept_train = json.loads((tmp_path / "tc" / "cleaned" / "clean.json").read_text())["kept_train"]
    assert clean_cfg.optim.epochs == round(4 * 1131 / kept_train)  # as many optimiser steps as the noisy run
    assert clean_cfg.data.noise == "none" and clean_cfg.data.spec.startswith("npz:")
    text = result.markdown()
    assert "| test accuracy | before (noisy) | after (clean) |" in text and "wrong labels, true" in text
    stages.clear()
    again = train_clean(cfg, tmp_path / "tc", folds=2, on_stage=lambda stage, what: stages.append(what))
    assert again.after == result.after and any("reuse" in s for s in stages)
    with pytest.raises(ConfigError, match="another rule"):
        train_clean(cfg, tmp_path / "tc", folds=2, rule=CleaningRule(action="drop", top=5))


def test_train_clean_default_needs_no_folds_and_relabelling_asks_for_them(npz_data, tmp_path):
    result = train_clean(digits(tmp_path / "ignored", "optim.epochs=3"), tmp_path / "tc0")
    assert not (tmp_path / "tc0" / "noisy" / "cv").exists()  # the measured default: the noisy run's own loss GMM
    assert result.detector.startswith("gmm") and result.relabelled == 0 and result.dropped > 0
    assert result.true_wrong_after < result.true_wrong_before
    assert "in-sample, an underestimate" in result.markdown()
    done = invoke("train-clean", "--data", f"npz:{npz_data}", "--out", tmp_path / "tc1", "--action", "relabel")
    assert done.exit_code == 2 and "--action relabel needs --folds" in done.output
    assert not (tmp_path / "tc1").exists()  # refused before any work


# --------------------------------------------------------------------------------------------------------
# one's own data never gets a config's synthetic noise by accident

def test_a_config_moved_to_own_data_leaves_its_noise_behind(npz_data):
    done = invoke("train", "--config", "digits/sym40", "--data", f"npz:{npz_data}", "--print-config")
    assert done.exit_code == 0
    assert "noise: none" in done.output and "not applied to it: data.noise=sym:0.4" in done.output
    kept = invoke("train", "--config", "digits/sym40", "--data", f"npz:{npz_data}", "--noise", "sym:0.4",
                  "--print-config")
    assert "noise: sym:0.4" in kept.output and "not applied" not in kept.output


def test_compare_on_own_data_defaults_to_no_noise(npz_data):
    with Captured() as log:
        settings = compare_settings(["ce", "gce"], base="digits/sym40", overrides=[f"data.spec=npz:{npz_data}"])
    assert all(s.config["data"]["noise"] == "none" for s in settings)
    assert sum("not applied to it: data.noise=sym:0.4" in m for m in log.messages) == 1
