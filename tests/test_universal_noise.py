"""Universal (closed- plus open-set) noise from the command line and the config: ``--noise openset:RHO1:RHO2
--ood SPEC`` (MODUL's setting), its exact counts, the saved file that rebuilds the same images, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from noisykd.cli import app
from noisykd.config import DataConfig, load_config
from noisykd.engine.setup import prepare_data
from noisykd.errors import ConfigError, DataError
from noisykd.noise import NoisyLabels
from noisykd.noise.openset import open_set_counts, parse_openset_spec


@pytest.fixture
def pool(tmp_path):
    """An npz OOD pool of 400 grey 12x12 images in 4 named classes, each image a constant grey level 200-255
    (digits' images, 8x8 values 0-16 scaled, never get that bright everywhere), so swapped rows are visible."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 100)
    images = np.broadcast_to(rng.integers(200, 256, (400, 1, 1), dtype=np.uint8), (400, 12, 12)).copy()
    path = tmp_path / "pool.npz"
    np.savez(path, x_train=images, y_train=labels, classes=np.array(["shoe", "bag", "coat", "shirt"]))
    return f"npz:{path}"


def test_spec_parses_and_counts_round_half_up():
    assert parse_openset_spec("openset:0.5:0.25") == (0.5, 0.25)
    assert parse_openset_spec(" OpenSet:1:0 ") == (1.0, 0.0)
    assert open_set_counts(1797, 0.5, 0.5) == (899, 450)  # 898.5 -> 899 noisy; 449.5 -> 450 open-set
    assert open_set_counts(10, 0.25, 0.5) == (3, 2)  # 2.5 -> 3; 1.5 -> 2


@pytest.mark.parametrize("spec, message", [
    ("openset:0.5", "expected openset:RHO1:RHO2"),
    ("openset:0.5:0.5:0.1", "expected openset:RHO1:RHO2"),
    ("openset:1.5:0.5", "RHO1 must lie in [0, 1], got 1.5"),
    ("openset:0.5:-0.1", "RHO2 must lie in [0, 1], got -0.1"),
    ("openset:half:0.5", "RHO1 'half' is not a number"),
])
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_openset_spec(spec)


@pytest.mark.parametrize("data, message", [
    ({"noise": "openset:0.5:0.5"}, "name the pool with --ood SPEC"),
    ({"noise": "openset:2:0.5", "ood": "digits"}, "data.noise: noise spec 'openset:2:0.5': RHO1 must lie in"),
    ({"noise": "sym:0.4", "ood": "digits"}, "data.ood is only used by universal noise"),
    ({"noise": "none", "ood_exclude": ["shoe"]}, "data.ood_exclude is only used by universal noise"),
    ({"noise": "openset:0.5:0.5", "ood": "digits", "ood_exclude": [1.5]}, "a list of class names or ids"),
])
def test_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**data).validate()


def test_closed_set_only_needs_no_pool():
    DataConfig(noise="openset:0.4:0").validate()
    data = prepare_data(DataConfig(noise="openset:0.4:0"))
    assert data.noisy.kind == "open_set" and not data.noisy.is_open_set.any()
    assert int(data.noisy.is_noisy.sum()) == open_set_counts(1257, 0.4, 0)[0] == 503  # digits: 1,257 training images


def test_prepare_data_swaps_exactly_the_open_set_rows(pool):
    # no validation split: the stratified holdout follows the given labels, which differ between the two
    plain = prepare_data(DataConfig(spec="digits", val_fraction=0))
    cfg = DataConfig(spec="digits", noise="openset:0.5:0.5", ood=pool, noise_seed=3, val_fraction=0)
    cfg.validate()
    data = prepare_data(cfg)
    noisy = data.noisy
    n_noisy, n_open = open_set_counts(1257, 0.5, 0.5)
    assert int(noisy.is_noisy.sum()) == n_noisy and int(noisy.is_open_set.sum()) == n_open
    swapped = np.any(data.train.images != plain.train.images, axis=(1, 2, 3))
    assert np.array_equal(swapped, noisy.is_open_set)
    # pool images fitted to digits' 8x8x1: constant images stay constant, at their own grey level
    open_images = data.train.images[noisy.is_open_set]
    assert open_images.shape[1:] == (8, 8, 1) and (open_images.min(axis=(1, 2, 3)) >= 200).all()
    # open-set samples keep their in-distribution label; closed-set ones get another class
    assert np.array_equal(noisy.labels[noisy.is_open_set], noisy.clean[noisy.is_open_set])
    closed = noisy.is_noisy & ~noisy.is_open_set
    assert (noisy.labels[closed] != noisy.clean[closed]).all()


def test_excluded_classes_by_name_and_id_are_never_drawn(pool, tmp_path):
    cfg = DataConfig(spec="digits", noise="openset:0.1:1", ood=pool, ood_exclude=["Shoe", 2])
    noisy = prepare_data(cfg).noisy
    rows = np.asarray(noisy.params["ood_rows"])
    assert noisy.params["exclude_ood_classes"] == [0, 2] and not np.isin(rows // 100, [0, 2]).any()
    with pytest.raises(ConfigError, match="the pool .* has no class named 'boot' \\(its classes: shoe, bag"):
        prepare_data(DataConfig(spec="digits", noise="openset:0.1:1", ood=pool, ood_exclude=["boot"]))
    with pytest.raises(ConfigError, match="class id 7 is outside the pool's 0..3"):
        prepare_data(DataConfig(spec="digits", noise="openset:0.1:1", ood=pool, ood_exclude=[7]))


def test_a_pool_too_small_is_an_error_unless_reuse_is_allowed(pool):
    cfg = DataConfig(spec="digits", noise="openset:0.6:1", ood=pool, ood_exclude=[0, 1, 2])  # 100 images left
    with pytest.raises(ConfigError, match="the out-of-distribution pool has 100 images after the exclusions but "
                                          "754 open-set samples need one each"):
        prepare_data(cfg)
    cfg.ood_reuse = True
    with pytest.warns(UserWarning, match="used more than once"):
        assert prepare_data(cfg).noisy.params["ood_reused"]


def test_a_saved_open_set_file_rebuilds_the_same_images(pool, tmp_path):
    first = prepare_data(DataConfig(spec="digits", noise="openset:0.5:0.5", ood=pool, noise_seed=1))
    first.noisy.save(tmp_path / "noisy_labels.npz")
    again = prepare_data(DataConfig(spec="digits", noise_file=str(tmp_path / "noisy_labels.npz"), ood=pool))
    assert np.array_equal(again.train.images, first.train.images)
    assert np.array_equal(again.noisy.is_open_set, first.noisy.is_open_set)
    with pytest.raises(ConfigError, match="holds 315 open-set samples: give data.ood"):
        prepare_data(DataConfig(spec="digits", noise_file=str(tmp_path / "noisy_labels.npz")))


def test_cli_run_records_exact_counts_and_logs_them(pool, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", "digits", "--noise", "openset:0.5:0.5", "--ood", pool,
                                      "--epochs", "1", "--set", "data.val_fraction=0", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    noisy = NoisyLabels.load(out / "noisy_labels.npz", num_samples=1257, num_classes=10)
    assert int(noisy.is_noisy.sum()) == 629 and int(noisy.is_open_set.sum()) == 315  # 628.5 and 314.5 round up
    log = (out / "train.log").read_text()
    assert "open_set noise: 629 of 1,257 samples noisy (50.04%): 314 closed-set (wrong label), 315 open-set" in log
    assert load_config(out / "config.yaml").data.ood == pool  # the resolved config names the pool


@pytest.mark.parametrize("args, message", [
    (["--noise", "openset:0.5:0.5"], "name the pool with --ood SPEC"),
    (["--noise", "openset:0.5:1.2", "--ood", "digits"], "RHO2 must lie in [0, 1], got 1.2"),
    (["--noise", "openset:0.5:0.5", "--ood", "npz:/nonexistent/pool.npz"], "data.ood='npz:/nonexistent/pool.npz' "
                                                                          "does not load"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", "digits", *args, "--epochs", "1", "--out", str(out)],
                                catch_exceptions=False)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "error:" in lines[0] and message in lines[0], result.output
    assert not out.exists()
