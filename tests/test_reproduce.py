"""noisykd reproduce (paper settings over seeds) and noisykd compare (methods on one's own data)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from noisykd.cli import app
from noisykd.config import shipped_configs
from noisykd.data.fixtures import write_cifar10_with_cifar10n, write_cifar100
from noisykd.errors import ConfigError
from noisykd.reproduce import (SUITES, expand_suite, fmt, mean_std, needs_teacher, paper_settings_markdown,
                               parse_method_spec, run_suite, scale_epochs, set_epochs, split_method_specs)

runner = CliRunner()

BKD_TABLE1 = {"aggre": "93.68", "rand1": "92.50", "rand2": "92.63", "rand3": "92.54", "worst": "86.64"}
BKD_TABLE2_F1 = {"aggre": "71.20", "rand1": "82.50", "rand2": "83.10", "rand3": "82.70", "worst": "77.80"}
CE_TABLE1 = {"aggre": "87.77", "rand1": "85.02", "rand2": "86.14", "rand3": "85.16", "worst": "77.69"}


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    """CIFAR-10 (500 + 100 images) and CIFAR-10N in the official formats (CI has no real data)."""
    return write_cifar10_with_cifar10n(tmp_path_factory.mktemp("data"), per_batch=100)


def test_list_shows_every_bkd_setting_of_tables_1_and_2_with_its_numbers():
    result = invoke("reproduce", "--list")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for label_set in BKD_TABLE1:
        assert f"bkd/cifar10n-{label_set}" in shipped_configs() and f"ce/cifar10n-{label_set}" in shipped_configs()
        assert f"bkd/cifar10n-{label_set}" in text and BKD_TABLE1[label_set] in text
        assert BKD_TABLE2_F1[label_set] in text and CE_TABLE1[label_set] in text


def test_reproduce_smoke_runs_resumes_and_refuses_a_mixed_folder(tmp_path, fake_cifar):
    out = tmp_path / "repro"
    args = ("reproduce", "bkd/cifar10n-worst", "--smoke", "--seeds", "2", "--data-root", str(fake_cifar),
            "--device", "cpu", "--out", str(out))
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    text = (out / "reproduce.md").read_text()
    assert "| bkd/cifar10n-worst (shortened) | 86.64 |" in text
    assert "Shortened settings are not the paper's" in text and "smoke" in text
    report = json.loads((out / "reproduce.json").read_text())
    (row,) = report["rows"]
    assert row["ours"]["seeds"] == [0, 1] and row["expected"]["detection_f1"] == 77.8
    assert row["ours"]["test_last"]["n"] == 2 and row["ours"]["f1"]["mean"] is not None
    for seed in (0, 1):
        assert (out / "bkd-cifar10n-worst" / f"seed-{seed}" / "summary.json").is_file()
    # again with one more seed: the two finished seeds are reused, only seed 2 trains
    again = invoke(*args[:4], "3", *args[5:])
    assert again.exit_code == 0, again.output
    assert again.output.count("reusing the finished run") == 2 and "training seed 2" in again.output
    # the full setting must not reuse the smoke runs
    full = invoke("reproduce", "bkd/cifar10n-worst", "--seeds", "1", "--data-root", str(fake_cifar),
                  "--out", str(out))
    assert full.exit_code == 2 and "holds a run of another config" in " ".join(full.output.split())


CMD_TABLE3_SYM40 = {"ce/cifar100-sym40": "47.20", "cmd/cifar100-sym40-proselflc": "64.07",
                    "cmd/cifar100-sym40-mconf": "65.04", "cmd/cifar100-sym40-cmdp-proselflc": "68.29",
                    "cmd/cifar100-sym40-cmdp-mconf": "69.09"}


def test_cmd_table3_settings_are_listed_and_run_as_smoke(tmp_path):
    """CMD's Table 3 (CIFAR-100, 40% symmetric) rows are shipped settings; CMD-P+Mconf runs end to end on a fake
    CIFAR-100 in the official format."""
    listing = invoke("reproduce", "--list")
    text = " ".join(listing.output.split())
    for name, acc in CMD_TABLE3_SYM40.items():
        assert name in shipped_configs() and f"{name} " in text and acc in text
    write_cifar100(tmp_path / "data")
    out = tmp_path / "repro"
    result = invoke("reproduce", "cmd/cifar100-sym40-cmdp-mconf", "--smoke", "--seeds", "1", "--data-root",
                    str(tmp_path / "data"), "--device", "cpu", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "| cmd/cifar100-sym40-cmdp-mconf (shortened) | 69.09 |" in (out / "reproduce.md").read_text()
    summary = json.loads((out / "cmd-cifar100-sym40-cmdp-mconf" / "seed-0" / "summary.json").read_text())
    assert summary["method"] == "cmd" and summary["detection"]["detector"] == "cmd"


def test_reproduce_needs_a_name_and_known_configs(tmp_path):
    assert invoke("reproduce").exit_code == 2
    unknown = invoke("reproduce", "bkd/cifar10n-best", "--out", str(tmp_path))
    assert unknown.exit_code == 2 and "config file not found" in unknown.output


def test_compare_methods_on_the_digits(tmp_path):
    out = tmp_path / "cmp"
    result = invoke("compare", "--methods", "ce,bkd_ref=bkd:reference_gradients=true,min_epochs=1",
                    "--seeds", "2", "--epochs", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert set(rows) == {"ce", "bkd_ref"}
    assert rows["bkd_ref"]["method"] == "bkd" and rows["ce"]["ours"]["seeds"] == [0, 1]
    text = (out / "compare.md").read_text()
    assert "| ce |" in text and "| bkd_ref |" in text and "paper" not in text
    config = (out / "bkd_ref" / "seed-1" / "config.yaml").read_text()
    assert "reference_gradients: true" in config and "seed: 1" in config


def test_method_specs():
    assert parse_method_spec("gce:q=0.5") == ("gce:q=0.5", "gce", {"q": 0.5})
    assert parse_method_spec("ref=bkd:reference_gradients=true") == ("ref", "bkd", {"reference_gradients": True})
    assert split_method_specs("ce,bkd:k=3,min_epochs=2,ref=bkd:robust_stage=false,gce") == [
        "ce", "bkd:k=3,min_epochs=2", "ref=bkd:robust_stage=false", "gce"]
    with pytest.raises(ConfigError, match="expected NAME"):
        parse_method_spec("bkd:k")


def test_epochs_scale_shortens_the_schedule():
    data = {"optim": {"epochs": 300, "milestones": [150], "warmup_epochs": 10}}
    scale_epochs(data, 0.1)
    assert data["optim"] == {"epochs": 30, "milestones": [15], "warmup_epochs": 1}
    with pytest.raises(ConfigError, match="epochs-scale"):
        scale_epochs({"optim": {}}, 1.5)


def test_epochs_reshape_a_paper_schedule_and_are_listed(monkeypatch, tmp_path):
    """--epochs on a config with milestones (BKD's: 300 epochs, lr drop at 150) rescales them, as a suite's
    epochs do, instead of failing validation; the change is listed, the thread count is not."""
    from noisykd.reproduce import Setting, adjust_config

    for variable in ("NOISYKD_CIFAR10", "NOISYKD_CIFAR_N"):
        monkeypatch.setenv(variable, str(tmp_path))
    setting = Setting.from_config("bkd/cifar10n-worst", epochs=30, threads=1)
    assert setting.config["optim"]["epochs"] == 30 and setting.config["optim"]["milestones"] == [15]
    assert setting.config["threads"] == 1 and setting.changes == ("30 epochs",)
    data = {"optim": {"epochs": 60, "milestones": [30], "warmup_epochs": 5}}
    assert adjust_config(data, smoke=True, epochs=1) == ["smoke: 300 training and 500 test images, small_cnn",
                                                          "1 epoch"]  # one epoch count, not two
    assert data["optim"]["epochs"] == 1 and data["optim"]["warmup_epochs"] == 0
    with pytest.raises(ConfigError, match="both set the schedule"):
        adjust_config({"optim": {"epochs": 10}}, epochs=5, epochs_scale=0.5)


def test_mean_std_and_format():
    assert fmt(mean_std([90.0, 92.0])) == "91.00 ± 1.41"
    assert fmt(mean_std([90.0, None])) == "90.00" and fmt(mean_std([])) == "-"


# ------------------------------------------------------------------------------------------------------------
# the digits suite and the settings list

def test_the_digits_suite_runs_every_registered_method_or_says_why_not():
    """A method registered later fails this until the suite runs it or excludes it with a reason."""
    from noisykd.methods import METHODS

    suite = SUITES["digits"]
    excluded = dict(suite.excluded)
    assert len(set(suite.methods)) == len(suite.methods) and not set(suite.methods) & set(excluded)
    # the methods noisykd ships (other tests register toy methods of their own, e.g. the contract's)
    shipped = {name for name in METHODS.names() if METHODS[name].__module__.startswith("noisykd.")}
    assert set(suite.methods) | set(excluded) == shipped, \
        f"not in the digits suite: {sorted(shipped - set(suite.methods) - set(excluded))}"
    assert all(reason.strip() for reason in excluded.values())
    assert {m for m in suite.methods if needs_teacher(m)} == {"vkd", "dfnd", "modul"} and suite.teacher
    assert suite.base == "digits/sym40" and suite.seeds == 3


def test_the_suite_needs_its_teacher_and_keeps_the_schedule_in_proportion():
    with pytest.raises(ConfigError, match="vkd, dfnd, modul distil a teacher run"):
        expand_suite("digits")
    with pytest.raises(ConfigError, match="unknown suite 'cifar'; the suites are: digits"):
        expand_suite("cifar")
    data = {"optim": {"epochs": 200, "milestones": [80, 160], "warmup_epochs": 10}}
    set_epochs(data, 20)
    assert data["optim"] == {"epochs": 20, "milestones": [8, 16], "warmup_epochs": 1}


def test_digits_suite_smoke_run_makes_a_row_per_method(tmp_path):
    """1 seed, 1 epoch, 300 images: the teacher first, then every method, one table row each."""
    out = tmp_path / "suites"
    report = run_suite("digits", out, seeds=1, epochs=1, smoke=True, threads=1)
    methods = SUITES["digits"].methods
    assert [row["name"] for row in report.rows] == list(methods)
    assert [row["method"] for row in report.rows] == list(methods)
    for row in report.rows:
        ours = row["ours"]
        assert ours["seeds"] == [0] and ours["test_last"]["n"] == 1 and ours["test_best_noisy_val"]["n"] == 1
        assert ours["f1"]["n"] == 1 and ours["fit_wrong"]["n"] == 1 and ours["detector"]
    text = (out / "digits.md").read_text()
    for method in methods:
        assert f"| {method} (shortened) | " in text
    assert "| setting | last | best noisy-val | oracle | wrong labels fit | detection F1 | detector |" in text
    assert "The teacher (modul/digits-teacher" in text and "distil one teacher" in text
    assert "- every setting: smoke: 300 training" in text and "threads" not in text  # threads change no result
    teacher = out / "digits" / "modul-digits-teacher" / "seed-0"
    assert (teacher / "finished.json").is_file()
    assert f"teacher: {teacher}" in (out / "digits" / "modul" / "seed-0" / "config.yaml").read_text()
    assert json.loads((out / "digits.json").read_text())["rows"][0]["ours"]["detector"] == "gmm"


def test_the_settings_list_has_modul_and_the_suites():
    text = paper_settings_markdown()
    assert "| modul/cifar10-openset50 | modul | resnet18 | 200 | 95.81 |" in text
    assert "Table I" in text and "modul/cifar10-openset50 distils a teacher run" in text
    assert "| digits | every registered method" in text and "noisykd reproduce NAME" in text
    for name, acc in BKD_TABLE1.items():
        assert f"| bkd/cifar10n-{name} | bkd |" in text and acc in text
