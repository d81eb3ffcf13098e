"""The command line as a user runs it: outputs, and one clear line (exit code 2) for bad input."""

from __future__ import annotations

import json
import pickle
import re

import pytest
from typer.testing import CliRunner

from noisykd.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_data_info_digits_with_noise():
    result = invoke("data", "info", "digits", "--noise", "sym:0.4", "--noise-seed", "1")
    assert result.exit_code == 0, result.output
    assert "10 classes, images 8x8x1" in result.output
    assert "1,257" in result.output and "540" in result.output  # train / test totals
    rate = float(re.search(r"noise rate: ([\d.]+)%", result.output).group(1))
    assert 35 < rate < 45
    assert "noise transition matrix" in result.output


def test_data_info_without_noise_reports_zero():
    result = invoke("data", "info", "digits")
    assert result.exit_code == 0
    assert "noise rate: 0.00%" in result.output


@pytest.mark.parametrize("args, message", [
    (("data", "info", "nosuch:/x"), "unknown data source"),
    (("data", "info", "cifar10:/definitely/missing"), "/definitely/missing"),
    (("data", "info", "digits", "--noise", "sym:1.5"), "rate"),
    (("train", "--set", "optim.lr=-1"), "optim.lr must be > 0"),
    (("train", "--set", "optim.bogus=1"), "unknown key"),
    (("eval", "/definitely/missing/run"), "no such run folder or checkpoint file"),
])
def test_bad_input_is_one_clear_line(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("setting, message", [
    (["--set", "model.kwargs.channels=[]"], "model 'small_cnn' (channels=[]): small_cnn needs at least one stage"),
    (["--set", "method=bkd", "--set", "method_args.k=2.5"], "method_args.k: expected an integer, got 2.5"),
    (["--set", "method=gce", "--set", "method_args.q=5"], "invalid hyperparameters for 'gce'"),
    (["--set", "augment.policy=two_weak"], "view 'train' takes one image per sample, but 'two_weak' makes 2"),
    (["--set", "augment.views.teacher=nosuchpolicy"], "unknown augmentation policy 'nosuchpolicy'"),
    (["--set", "augment.views.teacher=augmix"], "augment.views names ['teacher'], but method 'ce' has the views"),
])
def test_bad_training_settings_are_one_line_and_leave_nothing(tmp_path, setting, message):
    """Each of these ended in a traceback, or after a full epoch, before the contract v2."""
    out = tmp_path / "run"
    result = invoke("train", "--config", "digits/sym40", "--set", "optim.epochs=1", "--out", str(out), *setting)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (out / "checkpoints").exists()


def test_malicious_cifar_batch_is_refused_by_the_cli(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"):
        (folder / name).write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    result = invoke("data", "info", f"cifar10:{tmp_path}")
    assert result.exit_code == 2
    assert "refused" in result.output
    assert not marker.exists()


def test_train_then_eval(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--method", "gce", "--noise", "sym:0.2", "--epochs", "2", "--out", str(out),
                    "--set", "data.val_fraction=0.1", "--set", "optim.batch_size=64")
    assert result.exit_code == 0, result.output
    assert "last-epoch test accuracy" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "gce" and summary["epochs"] == 2
    evaluated = invoke("eval", str(out))
    assert evaluated.exit_code == 0, evaluated.output
    shown = float(re.search(r"main\s*│\s*([\d.]+)%", evaluated.output).group(1))
    assert shown == pytest.approx(100 * summary["last"]["test_acc"], abs=0.01)
    ece = float(re.search(r"calibration error of the main head \(15 bins\): ([\d.]+)%", evaluated.output).group(1))
    assert ece == pytest.approx(100 * summary["last"]["test_ece"], abs=0.01)
    best = invoke("eval", str(out), "--best")
    assert best.exit_code == 0
    # the run is there: a second train into the same folder is refused, --resume continues it
    again = invoke("train", "--epochs", "2", "--out", str(out))
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = invoke("train", "--resume", str(out))
    assert resumed.exit_code == 0


def test_listings():
    assert "preact_resnet18" in invoke("models").output
    methods = invoke("methods").output
    assert "ce" in methods and "gce" in methods
    assert "cifar10n" in invoke("data", "kinds").output


def test_methods_shows_arguments_and_defaults():
    from noisykd.methods import describe_method

    bkd = describe_method("bkd")
    assert bkd.options["k"] == 2 and bkd.options["robust_stage"] is True
    assert "ctx" not in bkd.options and "args" not in bkd.options
    gce = describe_method("gce")
    assert gce.options == {"q": 0.7} and "generalized cross-entropy" in gce.summary.lower()
    detail = invoke("methods", "bkd")
    assert detail.exit_code == 0
    assert "split_source = 'train_pass'" in detail.output and "min_epochs = 6" in detail.output
    assert "q = 0.7" in invoke("methods", "gce").output                 # GCE's paper value
    unknown = invoke("methods", "nope")
    assert unknown.exit_code == 2 and "unknown method 'nope'; choose one of:" in unknown.output


def test_models_lists_networks_and_shows_options():
    listing = invoke("models")
    assert listing.exit_code == 0 and "preact_resnet18" in listing.output and "small_cnn" in listing.output
    detail = invoke("models", "small_cnn")
    assert detail.exit_code == 0 and "width = 1.0" in detail.output and "num_classes" not in detail.output
    assert invoke("models", "resnet99").exit_code == 2


# ------------------------------------------------------------------------------------------------------------
# the acceptance numbers of the Foundation issue, on the real data when present

@pytest.mark.shared_data
@pytest.mark.parametrize("name, rate", [("worst", "40.21"), ("aggre", "9.01"), ("rand1", "17.23")])
def test_data_info_cifar10n(cifar10_root, cifar10n_file, name, rate):
    result = invoke("data", "info", f"cifar10:{cifar10_root}", "--labels", f"cifar10n:{cifar10n_file}:{name}")
    assert result.exit_code == 0, result.output
    assert "50,000" in result.output and "10,000" in result.output
    assert "5,000" in result.output and "1,000" in result.output
    assert f"noise rate: {rate}%" in result.output


@pytest.mark.shared_data
def test_data_info_fashion_mnist(fashion_mnist_root):
    result = invoke("data", "info", f"fashion-mnist:{fashion_mnist_root}")
    assert result.exit_code == 0, result.output
    assert "60,000" in result.output and "10,000" in result.output and "28x28x1" in result.output


@pytest.mark.shared_data
def test_data_labels_cifar100n(cifar100n_file):
    result = invoke("data", "labels", f"cifar100n:{cifar100n_file}:noisy")
    assert result.exit_code == 0, result.output
    assert "50,000 labels, 100 classes" in result.output
    assert "noise rate: 40.20%" in result.output
