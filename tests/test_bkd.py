"""BKD: each equation against values computed by hand, the stop-gradients, and a whole run on the digits."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from noisykd.config import load_config
from noisykd.engine import Trainer
from noisykd.engine.checkpoint import load_checkpoint
from noisykd.methods.bkd import (agreement_probability, blind_student_loss, log_agreement, mean_max_probability,
                                 robust_target, robust_teacher_loss)

D = torch.float64


def test_eq3_blind_student_loss_by_hand():
    teacher = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=D)
    student = torch.tensor([[0.0, 2.0, 1.0], [1.0, 1.0, 1.0]], dtype=D)
    labels = torch.tensor([0, 2])
    # sample 1, classes 1 and 2: (2-2)^2 + (3-1)^2 = 4 ; sample 2, classes 0 and 1: 1 + 1 = 2 ; sum 6
    assert blind_student_loss(teacher, student, labels).item() == pytest.approx(6 / (2 * 2))  # B*(C-1)
    assert blind_student_loss(teacher, student, labels, reference_gradients=True).item() == pytest.approx(6 / 5)


def test_eq3_never_sees_the_given_label_logit():
    teacher = torch.zeros(1, 3, dtype=D)
    student = torch.tensor([[100.0, 0.0, 0.0]], dtype=D)  # wildly off on the given class only
    assert blind_student_loss(teacher, student, torch.tensor([0])).item() == 0.0


def test_eq3_stop_gradient_on_teacher_by_default():
    teacher = torch.tensor([[1.0, 2.0, 3.0]], dtype=D, requires_grad=True)
    student = torch.tensor([[0.0, 0.0, 0.0]], dtype=D, requires_grad=True)
    blind_student_loss(teacher, student, torch.tensor([0])).backward()
    assert teacher.grad is None
    # d/dl_c^S of 1/(C-1) sum (l^T - l^S)^2 = -2 (l^T_c - l^S_c) / 2 for c != y, 0 for y
    assert student.grad.tolist() == [[0.0, -2.0, -3.0]]
    teacher.grad = student.grad = None
    blind_student_loss(teacher, student, torch.tensor([0]), reference_gradients=True).backward()
    assert teacher.grad.tolist() == [[0.0, 2.0, 3.0]]  # 2 (l^T - l^S) / (B*C - 1 = 2)


def test_eq5_agreement_by_hand():
    p_t = torch.tensor([[0.5, 0.3, 0.2]], dtype=D)
    p_s = torch.tensor([[0.2, 0.3, 0.5]], dtype=D)
    expected = [0.10 / 0.29, 0.09 / 0.29, 0.10 / 0.29]
    assert agreement_probability(p_t, p_s)[0].tolist() == pytest.approx(expected)
    lt, ls = torch.log(p_t) + 1.7, torch.log(p_s) - 0.4  # logits up to a constant
    assert log_agreement(lt, ls).exp()[0].tolist() == pytest.approx(expected)


def test_eq4_max_probability():
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4]], dtype=D)
    assert mean_max_probability(probs).mean().item() == pytest.approx(0.7)


def test_eq7_eq8_target_by_hand():
    p_s = torch.tensor([[0.2, 0.3, 0.5]], dtype=D)
    target = robust_target(torch.tensor([0]), p_s, torch.tensor([0.3], dtype=D))[0].tolist()
    beta = [0.7 + 0.3 * 0.2, 0.3 * 0.3, 0.3 * 0.5]  # (1-a) onehot + a P_S = [0.76, 0.09, 0.15]
    sharpened = [b ** 1.3 for b in beta]
    assert target == pytest.approx([v / sum(sharpened) for v in sharpened])
    # alpha = 0: plain one-hot, and Eq. 7 is then cross-entropy
    assert robust_target(torch.tensor([1]), p_s, torch.tensor([0.0], dtype=D))[0].tolist() == [0.0, 1.0, 0.0]
    logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=D)
    ce = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
    assert robust_teacher_loss(logits, torch.tensor([[1.0, 0.0, 0.0]], dtype=D)).item() == pytest.approx(ce)


# ------------------------------------------------------------------------------------------------------------
# whole runs

def bkd_config(out_dir, **method_args) -> dict:
    """configs/digits/sym40 for BKD, 12 epochs, no held-out split, as a plain dict."""
    return load_config("digits/sym40", updates={
        "method": "bkd", "method_args": {"min_epochs": 4, **method_args}, "out_dir": str(out_dir),
        "data": {"val_fraction": 0.0}, "optim": {"epochs": 12}}).to_dict()


@pytest.fixture(scope="module")
def bkd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bkd") / "run"
    cfg = load_config(base=bkd_config(out))
    return Trainer(cfg, progress=False).run()


def test_bkd_run_splits_and_detects(bkd_run):
    out = bkd_run.out_dir
    split = bkd_run.summary["method_summary"]["split"]
    assert split is not None, bkd_run.summary["method_summary"]
    assert 0 <= split["mu1"] < split["s"] < split["mu2"] <= 1
    assert sum(split["group_sizes"]) == bkd_run.summary["train_samples"]
    assert split["detected_after_epoch"] >= split["fitting_epoch"]
    stages = [r["stage"] for r in bkd_run.history]
    assert stages[0] == 1 and stages[-1] == 2 and stages == sorted(stages)
    for name in ("bkd_agreement_histogram.png", "bkd_tipping_point.png", "bkd_accuracies.png"):
        assert (out / name).is_file(), name
    assert {"test_acc_teacher", "test_acc_student", "test_acc"} <= set(bkd_run.history[-1])
    detection = bkd_run.summary["detection"]
    assert detection["detector"] == "bkd"
    # on 40% symmetric noise the agreement of the given label separates wrong labels well
    assert detection["f1"] > 0.6 and detection["auroc"] > 0.8
    samples = np.load(out / "samples.npz")
    assert set(np.unique(samples["group"][samples["group"] >= 0])) <= {0, 1, 2, 3}
    assert set(np.unique(samples["alpha"])) <= {0.0, 0.3, 0.45, 0.55, 0.7} | {np.float32(a) for a in
                                                                              (0.3, 0.45, 0.55, 0.7)}


def test_bkd_histories_are_kept_per_epoch(bkd_run):
    samples = np.load(bkd_run.out_dir / "samples.npz")
    history = samples["p_agree_history"]
    assert history.dtype == np.float32 and samples["p_teacher_history"].dtype == np.float32  # as the authors' code
    train_rows = ~np.isnan(history[:, 0])
    assert history.shape[1] == 12 and train_rows.sum() == bkd_run.summary["train_samples"]
    assert not np.isnan(history[train_rows]).any()
    assert ((history[train_rows] >= 0) & (history[train_rows] <= 1)).all()


def test_bkd_split_quality_report_agrees_with_the_split(bkd_run):
    """Fig. 3c: the Otsu split of every epoch, scored; its row at the fitting epoch is the real split."""
    out = bkd_run.out_dir
    with open(out / "bkd_split_quality.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    split = bkd_run.summary["method_summary"]["split"]
    at_split = rows[split["fitting_epoch"] - 1]
    for key in ("s", "mu1", "mu2"):
        assert float(at_split[key]) == pytest.approx(split[key])
    detection = bkd_run.summary["detection"]
    assert float(at_split["f1"]) == pytest.approx(detection["f1"])
    assert float(at_split["precision"]) == pytest.approx(detection["precision"])
    assert (out / "bkd_split_quality.png").is_file()


def _teacher_vs_ce(tmp_path, **method_args):
    runs = {}
    for name, cfg in (("bkd", bkd_config(tmp_path / "bkd", **method_args)),
                      ("ce", {**bkd_config(tmp_path / "ce"), "method": "ce", "method_args": {}})):
        cfg["optim"]["epochs"] = 8
        runs[name] = Trainer(load_config(base=cfg), progress=False).run()
    return runs["bkd"], [r["test_acc_teacher"] for r in runs["bkd"].history], [r["test_acc"] for r in runs["ce"].history]


def test_bkd_teacher_is_a_plain_ce_run_until_the_split(tmp_path):
    """With the paper's stop-gradients the student never touches the teacher, so in stage 1 the teacher follows
    exactly the trajectory of a CE run of the same seed; the robust stage then changes it."""
    bkd, teacher, ce = _teacher_vs_ce(tmp_path)
    switched = bkd.summary["method_summary"]["split"]["detected_after_epoch"]   # last epoch of stage 1
    assert switched < 8
    assert teacher[:switched] == ce[:switched]
    assert teacher[switched:] != ce[switched:]


def test_bkd_without_robust_stage_keeps_the_teacher_on_ce(tmp_path):
    """robust_stage=false (the paper's Fig. 3-4 analysis): the split is still made, the teacher stays CE."""
    bkd, teacher, ce = _teacher_vs_ce(tmp_path, robust_stage=False)
    assert bkd.summary["method_summary"]["split"] is not None
    assert bkd.summary["method_summary"]["robust_stage"] is False
    assert teacher == ce


KILLER = """
import os, signal, sys, yaml
from noisykd.config import load_config
from noisykd.engine import Trainer
cfg = load_config(base=yaml.safe_load(open(sys.argv[1])))
def on_step(trainer, epoch, step):
    if epoch == int(sys.argv[2]) and step == 3:
        os.kill(os.getpid(), signal.SIGKILL)
Trainer(cfg, progress=False, on_step=on_step).run()
"""


def test_bkd_resumes_exactly_after_sigkill_in_stage_2(bkd_run, tmp_path):
    split_epoch = bkd_run.summary["method_summary"]["split"]["detected_after_epoch"]  # 1-based
    cfg = bkd_config(tmp_path / "killed")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "killer.py").write_text(KILLER)
    kill_epoch = min(split_epoch + 1, 11)  # 0-based: an epoch of stage 2
    proc = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "cfg.yaml"),
                           str(kill_epoch)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    resumed = Trainer(load_config(base=cfg), progress=False).run(resume=True)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("img_per_s", "epoch_time_s")} for r in h]
    assert strip(resumed.history) == strip(bkd_run.history)
    assert resumed.summary["method_summary"]["split"] == bkd_run.summary["method_summary"]["split"]
    a = load_checkpoint(bkd_run.out_dir / "checkpoints" / "last.pt")["networks"]
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["networks"]
    assert all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])


@pytest.mark.parametrize("bad, message", [
    ({"split_source": "magic"}, r"method_args.split_source must be one of train_pass, eval_pass; got 'magic'"),
    ({"alphas": [0.7, 0.3, 0.4, 0.5]}, r"method_args.alphas must be 4 increasing values"),
    ({"alphas": [0.3, "x", 0.5, 0.7]}, r"method_args.alphas\[1\]: expected a number"),
    ({"k": 0}, r"method_args.k must be >= 1"),
    ({"k": 2.5}, r"method_args.k: expected an integer, got 2.5"),          # trained a full epoch before v2
    ({"tipping_fallback_epoch": 40}, r"tipping_fallback_epoch must lie in \[0, 6\)"),
    ({"unknown": 1}, r"method_args: unknown key\(s\) \['unknown'\]"),
])
def test_bkd_argument_errors_before_any_data_loads(tmp_path, monkeypatch, bad, message):
    """Bad method_args are refused when the config is loaded: no data is loaded, nothing trains."""
    from noisykd.engine import setup
    from noisykd.errors import ConfigError

    monkeypatch.setattr(setup, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    with pytest.raises(ConfigError, match=message):
        load_config(base=bkd_config(tmp_path / "x", **bad))


def test_bkd_with_a_lone_last_sample_splits(tmp_path):
    """Regression: 1,153 training samples at batch 64 leave a last batch of one sample. v1 dropped a random
    sample each epoch, BKD inferred its training rows from the non-NaN history and crashed at the split
    (DataError: values must be finite). Now the lone sample joins the previous batch and BKD is told the
    training indices."""
    cfg = bkd_config(tmp_path / "lone", min_epochs=3)
    cfg["data"]["train_subset"] = 1153
    cfg["optim"]["epochs"] = 7
    result = Trainer(load_config(base=cfg), progress=False).run()
    split = result.summary["method_summary"]["split"]
    assert split is not None and sum(split["group_sizes"]) == 1153
    history = np.load(result.out_dir / "samples.npz")["p_agree_history"]
    assert (~np.isnan(history[:, :7].astype(np.float64))).sum(axis=0).tolist() == [1153] * 7  # all seen, each epoch


def test_detect_cli_on_a_bkd_run(bkd_run):
    from typer.testing import CliRunner

    from noisykd.cli import app

    result = CliRunner().invoke(app, ["detect", str(bkd_run.out_dir), "--top", "3"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = (bkd_run.out_dir / "label_issues-bkd.csv").read_text().splitlines()
    assert lines[0].startswith("# detector bkd: P_A(y|x) < mu1")
    assert lines[1] == "rank,index,path,given_label,given_class,suggested_label,suggested_class,noise_score,group,flagged"
    rows = [line.split(",") for line in lines[2:]]
    assert len(rows) == bkd_run.summary["train_samples"]
    scores = [float(r[7]) for r in rows]
    assert scores == sorted(scores, reverse=True)  # most likely wrong first
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(r[3] != r[5] for r in rows)  # the suggestion is another class than the given one
    saved = json.loads((bkd_run.out_dir / "detection-bkd.json").read_text())
    assert saved["metrics"]["f1"] == pytest.approx(bkd_run.summary["detection"]["f1"])  # "auto": the run's rule
    again = CliRunner().invoke(app, ["detect", str(bkd_run.out_dir)])  # its own unchanged files: replaced, and said
    assert again.exit_code == 0 and "replacing the earlier results of detector bkd" in " ".join(again.output.split())
    # re-deciding with Otsu's s flags more samples than mu1 (s > mu1), into its own files
    CliRunner().invoke(app, ["detect", str(bkd_run.out_dir), "--detector", "otsu_s"], catch_exceptions=False)
    assert json.loads((bkd_run.out_dir / "detection-otsu_s.json").read_text())["n_flagged"] > saved["n_flagged"]
    argmax = CliRunner().invoke(app, ["detect", str(bkd_run.out_dir), "--detector", "argmax"], catch_exceptions=False)
    assert argmax.exit_code == 0 and (bkd_run.out_dir / "label_issues-argmax.csv").is_file()


def test_detect_cli_trains_first_when_needed(tmp_path):
    from typer.testing import CliRunner

    from noisykd.cli import app

    run = tmp_path / "ce"
    result = CliRunner().invoke(app, ["detect", str(run), "--method", "ce", "--noise", "sym:0.3", "--set",
                                      "optim.epochs=3", "--set", "model.name=small_cnn"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "detector: gmm (" in " ".join(result.output.split()) and (run / "label_issues-gmm.csv").is_file()
    bad = CliRunner().invoke(app, ["detect", str(run), "--detector", "magic"])
    assert bad.exit_code == 2 and "unknown detector" in bad.output


def test_a_bkd_run_too_short_to_split_says_so(tmp_path):
    """No tipping point within 2 epochs (deadline 5): the GMM fallback is said in the summary, the log and the
    label-issues file, not left for the user to guess."""
    from typer.testing import CliRunner

    from noisykd.cli import app

    cfg = bkd_config(tmp_path / "short")
    cfg["optim"]["epochs"] = 2
    result = Trainer(load_config(base=cfg), progress=False).run()
    detection = result.summary["detection"]
    assert detection["detector"] == "gmm" and "bkd made no split" in detection["note"]
    assert "bkd made no split" in (result.out_dir / "train.log").read_text()
    out = CliRunner().invoke(app, ["detect", str(result.out_dir)], catch_exceptions=False)
    assert out.exit_code == 0 and "bkd made no split" in " ".join(out.output.split())
    header = (result.out_dir / "label_issues-gmm.csv").read_text().splitlines()[0]
    assert header.startswith("# detector gmm: 2-component GMM") and "bkd made no split" in header
