"""Reliability, round 3 (issue 24): run folders own only their files, a kill at any of the first writes is no
dead end, a diverging run stops at its first non-finite epoch, user strings print as they are, configs read
numbers as people write them and refuse aliases and binary files. (The forged pickles: test_safe_pickle.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from noisykd.cli import app
from noisykd.config import load_config
from noisykd.engine import Trainer
from noisykd.engine.runfolder import LOCK, OWNER, RunFolder
from noisykd.errors import CheckpointError, DivergedError

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, message: str) -> None:
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error:" in text and message in text, result.output


def tiny(out: Path, **updates) -> dict:
    return load_config("digits/sym40", updates={"out_dir": str(out), "model": {"name": "mlp"},
                                                "optim": {"epochs": 2}, **updates}).to_dict()


def train(cfg: dict, **run_args):
    return Trainer(load_config(base=cfg), progress=False).run(**run_args)


def photo_folder(root: Path, classes=("a", "b"), train: int = 40, test: int = 6) -> Path:
    """``root/{train,test}/CLASS/K.png``: random 8x8 images, ``train`` and ``test`` per class."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / cls / f"{k}.png")
    return root


def folder_run(photos: Path, run: Path) -> Path:
    """A finished one-epoch run on ``photos``."""
    train(load_config(overrides=[f"data.spec=folder:{photos}", "model.name=mlp", "optim.epochs=1",
                                 f"out_dir={run}"]).to_dict())
    return run


# ------------------------------------------------------------------------------------------------------------
# run folders own only their own files

def users_folder(root: Path) -> dict[Path, bytes]:
    """A folder of the user's own files named as a run's are, with a tensorboard tree -> {path: content}."""
    files = {root / "config.yaml": (Path(__file__).parents[1] / "src/noisykd/configs/digits/sym40.yaml").read_bytes()
             + b"\n# my own notes\n",
             root / "train.log": b"my log\n", root / "run_info.json": b"{}\n",
             root / "tensorboard" / "exp1" / "events.out": b"my events"}
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


@pytest.mark.parametrize("extra", [[], ["--data", "npz:/missing.npz"], ["--resume", "{dir}"]])
def test_a_folder_of_the_users_files_is_refused_and_left_exactly_as_it_was(tmp_path, extra):
    folder = tmp_path / "mine"
    files = users_folder(folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    result = invoke("train", "--config", folder / "config.yaml", "--out", folder, "--set", "model.name=mlp",
                    *[e.format(dir=folder) for e in extra])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # no .lock, no marker, nothing gone
    assert all(path.read_bytes() == content for path, content in files.items())


def test_a_new_run_claims_its_folder_and_a_rerun_after_an_early_failure_starts_clean(tmp_path):
    run = tmp_path / "run"
    run.mkdir()  # the user's empty folder
    result = invoke("train", "--config", "digits/sym40", "--out", run, "--set", "model.name=mlp", "--set",
                    "optim.epochs=1", "--data", "npz:/missing.npz")
    assert result.exit_code == 2
    assert run.is_dir() and not list(run.iterdir())  # a failure before any epoch leaves the folder as it was
    cfg = tiny(run)
    train(cfg)
    assert (run / OWNER).is_file() and RunFolder(run).state() == "finished"


KILL_AT_WRITE = textwrap.dedent("""
    import builtins, io, os, signal, sys, yaml
    from noisykd.config import load_config
    from noisykd.engine import Trainer
    target, run = int(sys.argv[2]), os.path.realpath(sys.argv[3])
    events = []
    def event(what):
        events.append(what)
        if len(events) == target:
            os.kill(os.getpid(), signal.SIGKILL)   # before this write: no clean-up, as a crash
    real_open, real_replace = builtins.open, os.replace
    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wxa") \\
                and os.path.realpath(file).startswith(run):
            event(f"open {os.path.relpath(file, run)}")
        return real_open(file, mode, *args, **kwargs)
    def replace(src, dst, *args, **kwargs):
        if os.path.realpath(dst).startswith(run):
            event(f"replace {os.path.relpath(dst, run)}")
        return real_replace(src, dst, *args, **kwargs)
    builtins.open = io.open = open_
    os.replace = replace
    Trainer(load_config(base=yaml.safe_load(real_open(sys.argv[1]))), progress=False).run()
    print("\\n".join(events))
""")


def test_a_kill_at_any_of_the_first_writes_is_no_dead_end(tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILL_AT_WRITE)

    def killed_at(k: int, run: Path):
        cfg = tiny(run)
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        proc = subprocess.run([sys.executable, str(script), str(tmp_path / "cfg.yaml"), str(k), str(run)],
                              capture_output=True, text=True, timeout=300)
        return cfg, proc

    _, dry = killed_at(0, tmp_path / "dry")  # counts the writes, kills nothing
    assert dry.returncode == 0, dry.stderr[-2000:]
    events = dry.stdout.split("\n")
    first_checkpoint = next(k for k, e in enumerate(events, 1) if e == "replace checkpoints/last.pt")
    assert first_checkpoint >= 5, events  # the claim, config, noisy labels, run info, log, checkpoint...
    for k in range(1, first_checkpoint + 2):  # every write up to the first checkpoint, and the one after it
        run = tmp_path / f"run-{k}"
        cfg, proc = killed_at(k, run)
        assert proc.returncode == -9, (k, events[k - 1], proc.stderr[-2000:])
        state = RunFolder(run).state()
        assert state in ("new", "restartable", "resumable"), (k, events[k - 1], state, os.listdir(run))
        # the same command (or --resume, where a checkpoint was kept) completes the run
        result = train(cfg, resume=state == "resumable")
        assert result.summary["epochs"] == 2, (k, events[k - 1])
        assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")], (k, events[k - 1])


# ------------------------------------------------------------------------------------------------------------
# a diverging run stops at its first non-finite epoch

@pytest.mark.parametrize("args,cause", [
    (("--set", "optim.lr=1e10"), "optim.lr=1e+10"),
    (("--method", "gce", "--set", "method_args.q=1e-300"), "gce: q=1e-300"),
])
def test_a_diverging_run_stops_at_its_first_epoch_naming_the_likely_cause(tmp_path, args, cause):
    result = invoke("train", "--config", "digits/sym40", "--set", "model.name=mlp", "--set", "optim.epochs=5",
                    *args, "--out", tmp_path / "run")
    one_line_error(result, "training diverged in epoch 1: the mean training loss is nan")
    assert cause in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()  # nothing kept: the same command, corrected, runs at once


def test_a_run_diverging_later_keeps_its_last_good_epoch(tmp_path):
    cfg = tiny(tmp_path / "run", optim={"epochs": 3})

    def explode(trainer, epoch, step):
        if epoch == 1 and step == 0:
            with torch.no_grad():
                for network in trainer.method.networks():
                    for p in network.module.parameters():
                        p.fill_(float("nan"))

    with pytest.raises(DivergedError, match=r"in epoch 2: .*checkpoints/last.pt holds epoch 1"):
        Trainer(load_config(base=cfg), progress=False, on_step=explode).run()
    assert RunFolder(tmp_path / "run").state() == "resumable"


def test_a_teacher_with_non_finite_weights_is_refused(tmp_path):
    from noisykd.teacher import load_teacher

    train(tiny(tmp_path / "run", optim={"epochs": 1}))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    first = next(iter(state["networks"]["net"]))
    state["networks"]["net"][first] = torch.full_like(state["networks"]["net"][first], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    shape = state["data_shape"]
    with pytest.raises(CheckpointError, match="not finite numbers .* its run diverged"):
        from noisykd.data.normalization import Normalization

        load_teacher(tmp_path / "nan.pt", classes=tuple(shape["classes"]), image_shape=tuple(shape["image_shape"]),
                     normalization=Normalization((0.5,), (0.5,), "test"))


# ------------------------------------------------------------------------------------------------------------
# user strings print as they are

@pytest.mark.parametrize("name", ["[/x]", "[red]x[/red]", "[bold]"])
def test_paths_with_markup_print_as_they_are(tmp_path, name):
    missing = tmp_path / name / "missing.pt"
    result = invoke("eval", missing)
    one_line_error(result, str(missing))


def test_class_names_with_markup_print_as_they_are(tmp_path):
    photo_folder(tmp_path / "photos", classes=("[bold]cat", "dog"), train=3, test=3)
    result = invoke("data", "info", f"folder:{tmp_path / 'photos'}")
    assert result.exit_code == 0, result.output
    assert "[bold]cat" in result.output


# ------------------------------------------------------------------------------------------------------------
# configs

def test_numbers_in_scientific_notation_are_numbers():
    cfg = load_config("digits/sym40", overrides=["optim.lr=1e-3", "optim.weight_decay=5E-4"])
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 5e-4


def test_a_config_with_aliases_is_refused_before_expanding_them(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    (tmp_path / "bomb.yaml").write_text(bomb)
    one_line_error(invoke("train", "--config", tmp_path / "bomb.yaml"), "configs take no aliases")
    (tmp_path / "loop.yaml").write_text("method: &m ce\nmethod_args: *m\n")
    one_line_error(invoke("train", "--config", tmp_path / "loop.yaml"), "configs take no aliases")


def test_a_binary_config_is_one_line(tmp_path):
    (tmp_path / "x.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    one_line_error(invoke("train", "--config", tmp_path / "x.yaml"), "not a text (UTF-8) file")


# ------------------------------------------------------------------------------------------------------------
# outputs of predict and clean: never replace, never inside a run folder or a data tree

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(run, optim={"epochs": 1}))
    return run


def test_predict_never_replaces_a_file_nor_writes_into_a_run_folder(finished_run, tmp_path):
    (tmp_path / "fresh.npz").write_bytes(b"mine")
    one_line_error(invoke("predict", finished_run, "--data", "digits", "--out", tmp_path / "fresh.csv"),
                   f"{tmp_path / 'fresh.npz'} exists")
    assert (tmp_path / "fresh.npz").read_bytes() == b"mine" and not (tmp_path / "fresh.csv").exists()
    before = sorted(p.name for p in finished_run.iterdir())
    one_line_error(invoke("predict", finished_run, "--data", "digits", "--out", finished_run / "samples.txt"),
                   "would land inside the run folder")
    assert sorted(p.name for p in finished_run.iterdir()) == before
    result = invoke("predict", finished_run, "--data", "digits", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.npz", "p.csv", "p.npz"]  # no temporary file left


def test_clean_never_writes_into_the_run_folder_or_the_data_tree(tmp_path):
    photos = photo_folder(tmp_path / "photos")
    run = folder_run(photos, tmp_path / "run")
    for out, message in ((run / "cleaned", "would land inside the run folder"),
                         (photos / "cleaned", "would land inside the data folder"),
                         (photos / "train" / "cleaned", "would land inside the data folder")):
        one_line_error(invoke("clean", run, "--out", out), message)
        assert not out.exists()
    assert invoke("clean", run, "--out", tmp_path / "cleaned").exit_code == 0


def test_predictions_csv_quotes_cells_a_spreadsheet_would_run():
    from noisykd.predict import spreadsheet_safe

    assert [spreadsheet_safe(v) for v in ("=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "cat", "")] == \
        ["'=cmd|' /C calc'!A0", "'+1", "'-2", "'@SUM(A1)", "cat", ""]


# ------------------------------------------------------------------------------------------------------------
# detect, clean and resume check their inputs against what the run recorded

def test_edited_noisy_labels_and_config_are_named_by_detect_clean_and_resume(tmp_path):
    run = tmp_path / "run"
    train(tiny(run, optim={"epochs": 1}))
    labels = run / "noisy_labels.npz"
    original = labels.read_bytes()
    with np.load(labels) as f:
        arrays = dict(f)
    arrays["labels"] = (arrays["labels"] + 1) % 10
    np.savez(labels, **arrays)
    for command in (("detect", run), ("clean", run, "--out", tmp_path / "cleaned"), ("train", "--resume", run)):
        one_line_error(invoke(*command), f"{labels} was changed after the run wrote it")
    labels.write_bytes(original)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("noise_seed: 0", "noise_seed: 7"))
    one_line_error(invoke("detect", run), f"{config} was changed after the run wrote it")
    one_line_error(invoke("train", "--resume", run, "--epochs", "2", "--extend"), f"{config} was changed")
    assert "noise_seed: 7" in config.read_text()  # the user's edit is said, never overwritten


def test_a_changed_data_folder_is_named_by_clean(tmp_path):
    photos = photo_folder(tmp_path / "photos", classes=("cat", "dog"))
    run = folder_run(photos, tmp_path / "run")
    (photos / "train" / "dog" / "0.png").unlink()  # one image removed and one added: rows would shift
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(photos / "train" / "cat" / "99.png")
    one_line_error(invoke("clean", run, "--out", tmp_path / "cleaned"), "changed since the run was trained")
    assert not (tmp_path / "cleaned").exists()


@pytest.mark.parametrize("setting,message", [
    ("threads=100000", "threads must lie in [1,"),
    ("optim.nesterov=true", None),  # sgd with momentum 0.9: accepted
    ("optim.momentum=0", None),
    ("device=cuda:abc", "device must be auto, cpu, cuda, cuda:N"),
    ("optim.weight_decay=1e308", "optim.weight_decay must lie in [0, 1]"),
    ("distributed.timeout_s=0.001", "distributed.timeout_s must lie in [1, 604800]"),
    ("seed=4294967296", "seed must be an integer in [0, 2**32 - 1]"),
])
def test_settings_that_once_crashed_or_hung_later_are_one_line_up_front(setting, message):
    from noisykd.errors import ConfigError

    if message is None:
        load_config("digits/sym40", overrides=[setting])
        return
    with pytest.raises(ConfigError) as e:
        load_config("digits/sym40", overrides=[setting])
    assert message in str(e.value)


@pytest.mark.parametrize("settings,message", [
    (["optim.nesterov=true", "optim.momentum=0"], "optim.nesterov needs sgd with momentum > 0"),
    (["optim.name=adam", "optim.nesterov=true"], "optim.nesterov needs sgd"),
    (["optim.name=adam", "optim.momentum=0.5"], "optim.momentum is SGD's; adam has its own betas"),
])
def test_optimiser_options_that_would_be_ignored_are_refused(settings, message):
    from noisykd.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config("digits/sym40", overrides=settings)


@pytest.mark.parametrize("args,message", [
    (("--data", "digits:extra"), "digits:extra: digits takes nothing after its name"),
    (("--set", "model.kwargs.hidden_sizes=[-5]"), "each layer's width must be an integer in [1, 65,536]"),
    (("--set", "model.kwargs.hidden_sizes=[100000000]"), "each layer's width must be an integer in [1, 65,536]"),
])
def test_data_and_model_values_that_raised_tracebacks_are_one_line(tmp_path, args, message):
    result = invoke("train", "--config", "digits/sym40", "--set", "model.name=mlp", "--set", "optim.epochs=1",
                    *args, "--out", tmp_path / "run")
    one_line_error(result, message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("pis", ["[0.5, 0.5]", "[0.2, 0.2, 0.2, 0.4]"])
def test_gjs_weights_of_the_wrong_length_are_refused_up_front(pis):
    from noisykd.errors import ConfigError

    with pytest.raises(ConfigError, match="gjs takes pi1 .* or three weights"):
        load_config("digits/sym40", overrides=["method=gjs", f"method_args.pis={pis}"])
    load_config("digits/sym40", overrides=["method=gjs", "method_args.pis=[0.5, 0.25, 0.25]"])


def test_a_sample_verified_twice_is_refused_naming_both_lines(tmp_path):
    from noisykd.detect.from_run import read_verified
    from noisykd.errors import DataError

    (tmp_path / "v.csv").write_text("index,label\n3,cat\n5,dog\n3,dog\n")
    with pytest.raises(DataError, match=r"line 4: index '3' is verified a second time \(first on line 2\)"):
        read_verified(tmp_path / "v.csv", np.arange(10), None, ("cat", "dog"))
    (tmp_path / "ok.csv").write_text("index,label\n3,cat\n5,1\n")
    assert read_verified(tmp_path / "ok.csv", np.arange(10), None, ("cat", "dog")).tolist() == \
        [-1, -1, -1, 0, -1, 1, -1, -1, -1, -1]


@pytest.mark.parametrize("noise", ["sym:٠.٤", "openset:٠.5:0.5", "sym:0,4"])
def test_noise_rates_in_other_digits_are_refused(noise):
    from noisykd.errors import ConfigError

    with pytest.raises(ConfigError, match="not a number"):
        load_config("digits/sym40", overrides=[f"data.noise={noise}"])


def test_a_set_contradicting_a_flag_is_refused_and_agreeing_ones_pass(tmp_path):
    result = invoke("train", "--config", "digits/sym40", "--epochs", "3", "--set", "optim.epochs=5",
                    "--print-config")
    assert result.exit_code == 2 and "--set optim.epochs=5 contradicts --epochs 3" in " ".join(result.output.split())
    result = invoke("train", "--config", "digits/sym40", "--epochs", "3", "--set", "optim.epochs=3", "--print-config")
    assert result.exit_code == 0 and "epochs: 3" in result.output


def test_duplicate_augmentation_options_and_huge_counts_are_refused():
    from noisykd.errors import ConfigError

    with pytest.raises(ConfigError, match="given twice"):
        load_config("digits/sym40", overrides=["augment.policy=randaugment(n=1,n=2)"])
    with pytest.raises(ConfigError, match=r"randaugment option n must be an int in \[0, 64\]"):
        load_config("digits/sym40", overrides=["augment.policy=randaugment(n=100000)"])
    with pytest.raises(ConfigError, match=r"otsu_step must lie in \[1e-05, 0.5\]"):
        load_config("digits/sym40", overrides=["method=bkd", "method_args.otsu_step=1e-12"])


def test_manifests_and_npz_files_with_contradictions_are_one_line(tmp_path):
    from noisykd.data import load_dataset
    from noisykd.errors import DataError

    photos = photo_folder(tmp_path / "photos", classes=("cat", "dog"), train=3, test=1)
    a, b = photos / "train" / "cat" / "0.png", photos / "train" / "dog" / "0.png"
    (photos / "twice.csv").write_text(f"path,label\n{a},cat\n{b},dog\n{a},dog\n")
    with pytest.raises(DataError, match=r"line 4: image .* is listed a second time \(first on line 2\)"):
        load_dataset(f"folder:{photos / 'twice.csv'}")
    (photos / "ids.csv").write_text(f"path,label\n{a},0\n{b},5000000\n")
    with pytest.raises(DataError, match="labels go up to 5000000 but only 2 distinct values occur"):
        load_dataset(f"folder:{photos / 'ids.csv'}")
    (photos / "unseen.csv").write_text(f"path,label,split\n{a},cat,train\n{b},cat,train\n"
                                       f"{photos / 'test' / 'dog' / '0.png'},dog,test\n")
    with pytest.raises(DataError, match="test labels hold 1 class.* no training sample has \\('dog'\\)"):
        load_dataset(f"folder:{photos / 'unseen.csv'}")
    x = np.zeros((4, 8, 8, 3), np.uint8)
    for name, extra, message in (("dup.npz", {"classes": np.array(["cat", "cat"])}, "both named 'cat'"),
                                 ("empty.npz", {"classes": np.array(["cat", " "])}, "class 1 has an empty name"),
                                 ("unseen.npz", {"x_test": x[:2], "y_test": np.array([0, 2])},
                                  "no training sample has \\('2'\\)")):
        np.savez(tmp_path / name, x_train=x, y_train=np.array([0, 1, 0, 1]), **extra)
        with pytest.raises(DataError, match=message):
            load_dataset(f"npz:{tmp_path / name}")


def test_sixteen_bit_greys_are_scaled_not_clipped_to_white(tmp_path):
    from noisykd.data.sources.folder import decode_image

    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    decoded = decode_image(tmp_path / "g16.png", None)
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, np.rint(values.astype(float) * 255 / 65535).astype(np.uint8))


def test_an_ood_pool_that_is_the_training_data_is_refused(tmp_path):
    from noisykd.errors import ConfigError

    with pytest.raises(ConfigError, match="is the training data itself"):
        load_config(overrides=[f"data.spec=folder:{tmp_path}", "data.noise=openset:0.4:0.5",
                               f"data.ood=folder:{tmp_path}/"])


def test_a_permission_error_while_writing_is_one_line(tmp_path, monkeypatch, finished_run):
    import errno

    from noisykd.predict import Predictions

    def denied(self, csv_path, top_k=3):
        raise PermissionError(errno.EACCES, "Permission denied", str(csv_path))

    monkeypatch.setattr(Predictions, "write", denied)
    result = invoke("predict", finished_run, "--data", "digits", "--out", tmp_path / "p.csv")
    one_line_error(result, f"cannot write {tmp_path / 'p.csv'}: Permission denied")


def test_truncated_cifar_batches_are_one_data_error_at_every_sampled_cut(tmp_path):
    from noisykd.data import load_dataset
    from noisykd.data.fixtures import write_cifar10
    from noisykd.errors import DataError

    root = write_cifar10(tmp_path / "c10", per_batch=2)
    batch = next(root.rglob("data_batch_1"))
    whole = batch.read_bytes()
    for cut in list(range(0, 200)) + list(range(200, len(whole), 97)):
        batch.write_bytes(whole[:cut])
        with pytest.raises(DataError, match="data_batch_1"):
            load_dataset(f"cifar10:{tmp_path / 'c10'}")


def test_a_truncated_tinyimagenet_archive_is_one_data_error(tmp_path):
    import tarfile

    from noisykd.data import load_dataset
    from noisykd.errors import DataError

    payload = tmp_path / "words.txt"
    payload.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    with tarfile.open(tmp_path / "tin.tar.gz", "w:gz") as archive:
        archive.add(payload, arcname="tiny-imagenet-200/words.txt")
    whole = (tmp_path / "tin.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(DataError, match="cut.tar.gz: not a readable tar archive .truncated or damaged"):
        load_dataset(f"tinyimagenet:{tmp_path / 'cut.tar.gz'}")


def test_yes_no_on_off_are_strings_not_booleans():
    from noisykd.config import load_yaml
    from noisykd.errors import ConfigError

    assert [load_yaml(v) for v in ("yes", "no", "on", "off", "true", "False")] == ["yes", "no", "on", "off", True,
                                                                                   False]
    with pytest.raises(ConfigError, match="optim.nesterov: expected true or false, got 'yes'"):
        load_config("digits/sym40", overrides=["optim.nesterov=yes"])


@pytest.mark.parametrize("names,message", [
    ([b"cat", b"cat"] + [f"c{k}".encode() for k in range(8)], "classes 0 and 1 are both named 'cat'"),
    ([b""] + [f"c{k}".encode() for k in range(9)], "class 0 has an empty name"),
    ([b"\xff\xfe"] + [f"c{k}".encode() for k in range(9)], "entry 0 is not UTF-8 text"),
    ([3] + [f"c{k}".encode() for k in range(9)], "entry 0 is a int, not a class name"),
])
def test_cifar_class_names_duplicated_empty_or_not_text_are_refused(tmp_path, names, message):
    import pickle

    from noisykd.data import load_dataset
    from noisykd.data.fixtures import write_cifar10
    from noisykd.errors import DataError

    write_cifar10(tmp_path / "c10", per_batch=2)
    meta = next((tmp_path / "c10").rglob("batches.meta"))
    meta.write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    with pytest.raises(DataError, match=message):
        load_dataset(f"cifar10:{tmp_path / 'c10'}")


def test_a_training_subset_larger_than_the_data_is_one_line(tmp_path):
    result = invoke("train", "--config", "digits/sym40", "--set", "model.name=mlp", "--set", "optim.epochs=1",
                    "--set", "data.train_subset=100000", "--out", tmp_path / "run")
    one_line_error(result, "data.train_subset=100,000 but digits has 1,257 training images")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple GPU")
def test_device_mps_without_an_apple_gpu_is_one_line(tmp_path):
    result = invoke("train", "--config", "digits/sym40", "--set", "model.name=mlp", "--device", "mps",
                    "--out", tmp_path / "run")
    one_line_error(result, "has no Apple GPU (MPS)")


def test_a_failed_multi_process_run_names_how_each_rank_ended():
    from types import SimpleNamespace

    from noisykd.cli import _exits

    failures = {1: SimpleNamespace(exitcode=2), 0: SimpleNamespace(exitcode=-11)}
    assert _exits(failures) == "rank 0 killed by SIGSEGV, rank 1 exit code 2"


def test_a_deep_tuple_in_a_cifar_n_archive_is_refused_in_a_subprocess(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from forged_pickles import PROTO, STOP, i, u
    finally:
        sys.path.remove(str(Path(__file__).parent))
    import zipfile

    pickle = PROTO + b"}(" + u("clean_label") + i(1) + i(1) + b"\x85" * 1_000_000 + i(1) + b"u" + STOP
    with zipfile.ZipFile(tmp_path / "CIFAR-10_human.pt", "w") as archive:
        archive.writestr("archive/data.pkl", pickle)
        archive.writestr("archive/version", "3\n")
    proc = subprocess.run([sys.executable, "-m", "noisykd.cli", "data", "labels",
                           f"cifar10n:{tmp_path / 'CIFAR-10_human.pt'}:worst"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])  # a segfault would be -11
    assert "nested more than 64 deep" in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr


def test_a_predict_cut_while_writing_leaves_no_file_and_reruns(finished_run, tmp_path, monkeypatch):
    import noisykd.predict as predict_module

    real = predict_module.np.savez_compressed

    def cut(f, **arrays):
        f.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt  # as a Ctrl-C in the middle of the npz

    monkeypatch.setattr(predict_module.np, "savez_compressed", cut)
    result = runner.invoke(app, ["predict", str(finished_run), "--data", "digits", "--out", str(tmp_path / "p.csv")])
    assert result.exit_code != 0 and not list(tmp_path.iterdir())  # neither file, no temporary file
    monkeypatch.setattr(predict_module.np, "savez_compressed", real)
    assert invoke("predict", finished_run, "--data", "digits", "--out", tmp_path / "p.csv").exit_code == 0
    assert (tmp_path / "p.npz").stat().st_size > 0
