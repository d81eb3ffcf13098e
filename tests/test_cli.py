"""The command line as a user runs it: outputs, and one clear line (exit code 2) for bad input."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from noisykd.cli import app

runner = CliRunner()


def invoke(*args: str, columns: int | None = None):
    env = {"COLUMNS": str(columns)} if columns else None
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


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
# detect on one's own photos in a narrow terminal, and running it again

CLASSES = ("Ankle boot", "Pullover", "T-shirt")


@pytest.fixture(scope="module")
def photos_run(tmp_path_factory):
    """A tiny folder data set at the end of a long path, a one-epoch run on it and detect's first output at 80
    columns: (photo root, run folder, output)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("narrow") / "some" / "deeply" / "nested" / "folder" / "photos"
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = np.clip(rng.normal(60 + 70 * k, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"img_{i:04d}.png")
    run = root.parent / "run"
    result = invoke("detect", run, "--data", f"folder:{root}", "--epochs", "1", "--threads", "1", "--top", "5",
                    columns=80)
    assert result.exit_code == 0, result.output
    return root, run, result.output


def results_of(run):
    """The detector's two files in the run folder (one detector has run there)."""
    (csv_file,) = run.glob("label_issues-*.csv")
    return csv_file, run / csv_file.name.replace("label_issues-", "detection-").replace(".csv", ".json")


def test_detect_fits_80_columns_keeping_file_names_and_headers(photos_run):
    root, run, output = photos_run
    lines = output.splitlines()
    table = [line for line in lines if line.startswith(("┃", "│"))]
    assert all(len(line) <= 80 for line in table), "\n".join(table)
    header = next(line for line in table if "rank" in line)
    assert [c.strip() for c in header.strip("┃").split("┃")] == ["rank", "sample", "given", "suggested",
                                                                  "noise score", "flagged"]
    csv_file, _ = results_of(run)
    full = [row.split(",")[2] for row in csv_file.read_text().splitlines()[2:7]]  # the CSV keeps full paths
    assert all(Path(p).is_file() and Path(p).is_relative_to(root) for p in full)
    shown = [line.split("│")[2].strip() for line in table if line.startswith("│")]
    assert len(shown) == 5
    for cell, path in zip(shown, full):
        assert cell != path and "…" in cell and cell.endswith("/" + Path(path).name)  # the middle left out
    # the estimated noise matrix names every class whole
    for k, name in enumerate(CLASSES):
        assert any(line.startswith(f"{k} {name} ") for line in lines), output


def test_detect_again_replaces_its_own_results_but_not_an_edited_file(photos_run, tmp_path):
    root, run, _ = photos_run
    csv_file, json_file = results_of(run)
    rows = csv_file.read_text().splitlines()[2:8]
    verified = tmp_path / "verified.csv"
    verified.write_text("path,label\n" + "".join(f"{r.split(',')[2]},{r.split(',')[4]}\n" for r in rows))
    again = invoke("detect", run, "--verified", verified)  # no --overwrite needed: the files are detect's own
    assert again.exit_code == 0, again.output
    assert "replacing the earlier results of detector" in again.output
    summary = json.loads(json_file.read_text())
    assert summary["truth"].startswith("6 verified labels") and summary["metrics"]["n"] == 6
    # a file someone edited since is theirs: refused, and left as it is
    edited = csv_file.read_text() + "# my notes\n"
    csv_file.write_text(edited)
    refused = invoke("detect", run)
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert csv_file.read_text() == edited
    forced = invoke("detect", run, "--overwrite")
    assert forced.exit_code == 0, forced.output
    assert "# my notes" not in csv_file.read_text()
    # a summary of another detector under this name is not ours either
    json_file.write_text(json.dumps({"detector": "something else", "n": 1, "n_flagged": 0, "metrics": None}))
    assert invoke("detect", run).exit_code == 2
    assert json.loads(json_file.read_text())["detector"] == "something else"
    # training flags on a finished run change nothing, and detect says so rather than ignoring them silently
    told = invoke("detect", run, "--overwrite", "--epochs", "3", "--threads", "1")
    assert told.exit_code == 0 and "--epochs, --threads change nothing" in told.output, told.output


def test_demo_refuses_a_set_contradicting_its_flags(tmp_path):
    result = invoke("demo", "--out", tmp_path / "demo", "--epochs", "10", "--set", "optim.epochs=20")
    assert result.exit_code == 2 and "contradicts --epochs 10" in result.output, result.output
    assert not (tmp_path / "demo").exists()  # refused before anything was written


def test_foreign_results_rules(tmp_path):
    from noisykd.cli import SUMMARY_DIGEST, _summary_digest, foreign_results
    from noisykd.detect.from_run import CSV_HEADER

    csv_file, json_file = tmp_path / "label_issues-gmm.csv", tmp_path / "detection-gmm.json"
    assert foreign_results(csv_file, json_file, "gmm") == []  # nothing there: nothing to protect
    csv_file.write_text("# detector gmm: rule\n" + ",".join(CSV_HEADER) + "\n1,0,,1,a,2,b,0.9,,1\n")
    assert foreign_results(csv_file, json_file, "gmm") == [csv_file]  # no summary beside it: nothing says ours
    legacy = {"detector": "gmm", "n": 1, "n_flagged": 1, "metrics": None}  # written before digests were kept
    json_file.write_text(json.dumps(legacy))
    assert foreign_results(csv_file, json_file, "gmm") == []  # its fields, the CSV's head and row count say ours
    assert foreign_results(csv_file, json_file, "otsu_s") == [csv_file, json_file]
    json_file.write_text(json.dumps({**legacy, "n": 2}))
    assert foreign_results(csv_file, json_file, "gmm") == [csv_file]  # a row more or less: edited

    summary = {**legacy, "label_issues_csv": {"file": csv_file.name, "sha256": "0" * 64}}
    json_file.write_text(json.dumps({**summary, SUMMARY_DIGEST: _summary_digest(summary)}))
    assert foreign_results(csv_file, json_file, "gmm") == [csv_file]  # the CSV changed since detect wrote it
    json_file.write_text(json.dumps({**summary, "n_flagged": 0, SUMMARY_DIGEST: _summary_digest(summary)}))
    assert foreign_results(csv_file, json_file, "gmm") == [csv_file, json_file]  # the summary edited since
    json_file.write_text("not json")
    assert foreign_results(csv_file, json_file, "gmm") == [csv_file, json_file]
    csv_file.write_text("path,label\nx.png,cat\n")  # a user's file under our name
    assert foreign_results(csv_file, json_file, "gmm") == [csv_file, json_file]


@pytest.mark.parametrize("command", ["compare", "reproduce"])
def test_markdown_tables_print_unwrapped(monkeypatch, tmp_path, command):
    """The Markdown table pastes whole: one line per row however narrow the terminal."""
    import noisykd.reproduce as reproduce

    row = "| " + " | ".join(f"column {i} with a long value" for i in range(8)) + " |"
    monkeypatch.setattr(reproduce, "run_seeds", lambda setting, seeds, out, on_seed=None: [])
    monkeypatch.setattr(reproduce.Report, "add", lambda self, setting, runs: {})
    monkeypatch.setattr(reproduce.Report, "write", lambda self, out, with_paper: f"# title\n\n{row}\n{row}")
    args = ["--methods", "ce"] if command == "compare" else ["digits/sym40"]
    result = invoke(command, *args, "--seeds", "1", "--out", tmp_path, columns=40)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines().count(row) == 2


def test_markdown_report_file_is_unwrapped(tmp_path):
    from noisykd.reproduce import Report

    report = Report("noisykd compare", "noisykd compare --methods " + ",".join(["ce"] * 40))
    text = report.write(tmp_path / "compare", with_paper=False)
    assert (tmp_path / "compare.md").read_text() == text
    assert any(len(line) > 200 for line in text.splitlines())  # the long command stays on one line


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
