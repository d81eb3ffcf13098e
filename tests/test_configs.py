"""The shipped run configs (configs/): each loads and validates, says what it is, and gives every value a source."""

from __future__ import annotations

import re

import pytest

from noisykd.config import CONFIGS_DIR, find_config, load_config, shipped_configs
from noisykd.errors import CheckpointError, ConfigError

LEAF = re.compile(r"^\s*[A-Za-z_]+:\s*\S")  # "key: value" (not a section header "key:")


def test_the_shipped_configs_are_found_through_the_package():
    assert {"digits/sym40", "cifar10n/small-cnn-subset", "bkd/cifar10n-worst"} <= set(shipped_configs())
    assert (CONFIGS_DIR / "digits" / "sym40.yaml").is_file()


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_validates_and_sources_every_value(name, monkeypatch, tmp_path):
    # a config names its teacher run; validating it checks that the teacher exists, loading it is the run's job
    (tmp_path / "teacher.pt").write_bytes(b"")
    monkeypatch.setenv("NOISYKD_MODUL_TEACHER", str(tmp_path / "teacher.pt"))
    monkeypatch.setenv("NOISYKD_CIFAR10", "/data/cifar10")
    monkeypatch.setenv("NOISYKD_CIFAR_N", "/data/cifar-n")
    monkeypatch.setenv("NOISYKD_CIFAR100", "/data/cifar100")
    monkeypatch.setenv("NOISYKD_TINYIMAGENET", "/data/tinyimagenet.tar.gz")
    monkeypatch.setenv("NOISYKD_FASHION_MNIST", "/data/fashion-mnist")
    cfg = load_config(name)  # validates everything, method_args and the model's options included
    assert "${" not in cfg.data.spec and "${" not in (cfg.data.labels or "")
    lines = find_config(name).read_text().splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 20, "a one-line title first (noisykd configs shows it)"
    # every value says where it comes from; the expected block's paper and *_source values are sources themselves
    unsourced = [line for line in lines if LEAF.match(line) and "#" not in line
                 and not re.match(r"^\s*(paper|\w+_source):", line)]
    assert unsourced == [], f"values without a source comment: {unsourced}"


def test_environment_variables_in_configs(monkeypatch):
    monkeypatch.delenv("NOISYKD_CIFAR10", raising=False)
    with pytest.raises(ConfigError, match=r"data.spec: 'cifar10:\$\{NOISYKD_CIFAR10\}' uses \$\{NOISYKD_CIFAR10\}, "
                                          r"but the environment variable NOISYKD_CIFAR10 is not set"):
        load_config("bkd/cifar10n-worst")
    # a value set on the command line needs no variable
    cfg = load_config("bkd/cifar10n-worst", overrides=["data.spec=cifar10:/x", "data.labels=cifar10n:/y.pt:worst"])
    assert cfg.data.spec == "cifar10:/x" and cfg.optim.milestones == [150]


def test_unknown_config_names_the_shipped_ones():
    with pytest.raises(ConfigError, match="no-such: config file not found .*digits/sym40"):
        load_config("no-such")


def test_modul_paper_setting_is_shipped_with_its_teacher(monkeypatch, tmp_path):
    """MODUL's main setting (Table I, CIFAR-10 + ImageNet, rho1 = rho2 = 0.5) and the teacher run it distils."""
    monkeypatch.setenv("NOISYKD_CIFAR10", "/data/cifar10")
    monkeypatch.setenv("NOISYKD_TINYIMAGENET", "/data/tinyimagenet.tar.gz")
    monkeypatch.delenv("NOISYKD_MODUL_TEACHER", raising=False)
    with pytest.raises(ConfigError, match=r"NOISYKD_MODUL_TEACHER.* is not set"):
        load_config("modul/cifar10-openset50")
    monkeypatch.setenv("NOISYKD_MODUL_TEACHER", str(tmp_path / "no-teacher"))
    with pytest.raises(CheckpointError, match="no such run folder"):
        load_config("modul/cifar10-openset50")
    (tmp_path / "teacher.pt").write_bytes(b"")
    monkeypatch.setenv("NOISYKD_MODUL_TEACHER", str(tmp_path / "teacher.pt"))
    cfg = load_config("modul/cifar10-openset50")
    assert cfg.method == "modul" and cfg.model.name == "resnet18" and cfg.data.noise == "openset:0.5:0.5"
    assert cfg.expected.test_acc == 95.81 and "Table I" in cfg.expected.test_acc_source
    assert (cfg.optim.epochs, cfg.optim.milestones, cfg.optim.batch_size, cfg.optim.lr) == (200, [80, 160], 64, 0.1)
    assert cfg.method_args["alpha"] == cfg.method_args["beta"] == 0.1 and cfg.method_args["gamma"] == 0.01
    teacher = load_config("modul/cifar10-teacher")
    assert teacher.model.name == "resnet34" and teacher.data.noise == "none" and teacher.optim.epochs == 200
    assert "modul/cifar10-teacher" in find_config("modul/cifar10-openset50").read_text()
