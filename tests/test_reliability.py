"""Reliability, as a hostile and as a careless user would try it.

* A matrix of bad inputs at the command line: each is one ``error:`` line with exit code 2, no traceback, no
  hang, and nothing left behind in the output folder.
* Forged pickles that would make numpy read raw bytes as object pointers are refused (in a subprocess, so that
  a regression would show as a crash, not take the test runner down).
* Run folders never lose work: resume with another config, a moved run, two runs into one folder, a kill during
  the first checkpoint, bit-flipped and truncated checkpoints, half-written outputs, a full disk.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from noisykd.cli import app
from noisykd.config import load_config
from noisykd.data.fixtures import write_cifar10, write_cifar10_with_cifar10n
from noisykd.engine import Trainer
from noisykd.engine.checkpoint import load_checkpoint
from noisykd.engine.runfolder import FINISHED, RunFolder
from noisykd.errors import CheckpointError, OutputError

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, message: str) -> None:
    """Exit code 2, an ``error:`` line holding ``message`` (whitespace folded), no traceback."""
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert ("error:" in text or "Error" in text) and message in text, result.output


TRAIN = ("train", "--config", "digits/sym40", "--set", "optim.epochs=1", "--set", "model.name=mlp")


# ------------------------------------------------------------------------------------------------------------
# fixtures of bad files, each written by the test

def garbage_npz(d: Path) -> str:
    (d / "x.npz").write_bytes(b"\x00\x01garbage, not an archive")
    return f"npz:{d / 'x.npz'}"


def sparse_label_npz(d: Path) -> str:
    np.savez(d / "x.npz", x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.array([0, 1, 10_000_000]))
    return f"npz:{d / 'x.npz'}"


def object_npz(d: Path) -> str:
    np.savez(d / "x.npz", x_train=np.array([object(), 1], dtype=object), y_train=np.array([0, 1]))
    return f"npz:{d / 'x.npz'}"


def empty_class_folder(d: Path) -> str:
    from PIL import Image

    (d / "cat").mkdir()
    (d / "dog").mkdir()
    Image.new("RGB", (4, 4)).save(d / "cat" / "0.png")
    return f"folder:{d}"


def single_class_folder(d: Path) -> str:
    from PIL import Image

    (d / "cat").mkdir()
    for i in range(3):
        Image.new("RGB", (4, 4)).save(d / "cat" / f"{i}.png")
    return f"folder:{d}"


def cifar_with_11_names(d: Path) -> str:
    folder = write_cifar10(d, per_batch=4)
    meta = pickle.load(open(folder / "batches.meta", "rb"))
    meta[b"label_names"].append(b"dragon")
    pickle.dump(meta, open(folder / "batches.meta", "wb"), protocol=2)
    return f"cifar10:{d}"


BAD_DATA = {"garbage_npz": (garbage_npz, "not a readable .npz archive"),
            "sparse_labels": (sparse_label_npz, "labels go up to 10000000 but only 3 distinct values"),
            "object_npz": (object_npz, "cannot be read without pickle"),
            "empty_class": (empty_class_folder, "class folder 'dog' holds no images"),
            "single_class": (single_class_folder, "1 class (cat); a classifier needs at least 2"),
            "cifar_11_names": (cifar_with_11_names, "'label_names' lists 11 class names; the official file has 10")}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_files_are_one_line(tmp_path, case):
    make, message = BAD_DATA[case]
    (tmp_path / "data").mkdir()
    spec = make(tmp_path / "data")
    for command in (("data", "info", spec), (*TRAIN, "--data", spec, "--out", tmp_path / "run")):
        start = time.perf_counter()
        one_line_error(invoke(*command), message)
        assert time.perf_counter() - start < 30  # no 10-million-class loader
    assert not (tmp_path / "run").exists()
    if case == "garbage_npz":
        assert "allow_pickle" not in invoke("data", "info", spec).output


BAD_SETTINGS = [
    (("--set", "optim.lr=.nan"), "optim.lr: expected a finite number, got nan"),
    (("--set", "optim.lr=.inf"), "optim.lr: expected a finite number, got inf"),
    (("--set", "optim.weight_decay=.nan"), "optim.weight_decay: expected a finite number"),
    (("--set", "optim.gamma=-0.1"), "optim.gamma must be > 0"),
    (("--set", "optim.warmup_epochs=-1"), "optim.warmup_epochs must lie in [0, 1)"),
    (("--set", "seed=-1"), "seed must be an integer in [0, 2**32 - 1], got -1"),
    (("--set", "seed=4294967296"), "seed must be an integer in [0, 2**32 - 1], got 4294967296"),
    (("--set", "data.noise_seed=-5"), "data.noise_seed must be an integer in [0"),
    (("--noise", "asym:0.2"), "asymmetric maps are defined for CIFAR-10 and CIFAR-100"),
    (("--noise", "sym:abc"), "the rate 'abc' is not a number"),
    (("--noise", "sym:1.5"), "rate must lie in [0, 1]"),
    (("--set", "method=bkd", "--set", "method_args.k=2.5"), "method_args.k: expected an integer, got 2.5"),
    (("--set", "method=bkd", "--set", "method_args.split_source=magic"), "method_args.split_source must be one of"),
    (("--set", "method=gce", "--set", "method_args.q=5"), "invalid hyperparameters for 'gce'"),
    (("--set", "method=gce", "--set", "method_args.reduction=none"), "always averages its loss over the batch"),
    (("--set", "model.name=small_cnn", "--set", "model.kwargs.channels=[]"), "model 'small_cnn' (channels=[])"),
    (("--set", "model.kwargs.depth=3"), "model 'mlp' has no option depth"),
    (("--method", "nope"), "unknown method 'nope'; choose one of:"),
    (("--set", "model.name=resnet99"), "unknown model 'resnet99'; choose one of:"),
    (("--set", "augment.policy=two_weak"), "view 'train' takes one image per sample, but 'two_weak' makes 2"),
    (("--set", "augment.policy=weak(flip=2)"), "policy 'weak' has no option(s) flip"),
    (("--set", "augment.cutout=4"), "augment.cutout is set but no view's policy has a cutout"),
    (("--set", "optim.epochs=0"), "optim.epochs must be >= 1"),
    (("--set", "optim.batch_size=1"), "optim.batch_size must be >= 2"),
    (("--set", "optim.milestones=[5]"), "optim.milestones must be epochs in [1, 1]"),
    (("--set", "data.val_fraction=0.95"), "data.val_fraction must lie in [0.0, 0.9]"),
    (("--set", "amp=fp8"), "amp must be one of none, bf16, fp16"),
    (("--set", "device=tpu"), "device must be auto, cpu, cuda, cuda:N or mps"),
    (("--set", "optim.bogus=1"), "optim: unknown key(s) ['bogus']"),
    (("--set", "optim.lr=[1"), "value is not valid YAML"),
    (("--set", "noequals"), "--set expects key=value"),
    (("--data", "nosuch:/x"), "unknown data source 'nosuch'"),
    (("--data", "cifar10:/definitely/missing"), "/definitely/missing"),
    (("--noise", "none", "--labels", "cifar10n:/definitely/missing.pt:worst"), "/definitely/missing.pt"),
    (("--labels", "cifar10n:/definitely/missing.pt:worst"), "data.labels and data.noise are both set"),
    (("--config", "/definitely/missing.yaml"), "config file not found"),
]


@pytest.mark.parametrize("setting, message", BAD_SETTINGS, ids=[" ".join(s) for s, _ in BAD_SETTINGS])
def test_bad_training_settings_are_one_line_and_leave_nothing(tmp_path, setting, message):
    out = tmp_path / "run"
    one_line_error(invoke(*TRAIN, "--out", out, *setting), message)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------------
# output folders

def test_out_that_is_a_file_or_under_a_file(tmp_path):
    (tmp_path / "file").write_text("mine")
    one_line_error(invoke(*TRAIN, "--out", tmp_path / "file"), "the output folder is a file")
    one_line_error(invoke(*TRAIN, "--out", tmp_path / "file" / "run"), "is a file")
    assert (tmp_path / "file").read_text() == "mine"


def test_read_only_out_is_refused_before_any_data_loads(tmp_path, monkeypatch):
    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real_access(p, mode))
    one_line_error(invoke(*TRAIN, "--out", tmp_path / "ro" / "run"), "is read-only for this user")
    if os.geteuid() != 0:  # root writes anywhere: the real thing only for an ordinary user
        monkeypatch.undo()
        (tmp_path / "ro").chmod(0o555)
        try:
            one_line_error(invoke(*TRAIN, "--out", tmp_path / "ro" / "run"), "is read-only")
        finally:
            (tmp_path / "ro").chmod(0o755)


def test_a_folder_with_a_users_files_is_never_written(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text('{"mine": true}')
    (out / "metrics.csv").write_text("my,own\n")
    one_line_error(invoke(*TRAIN, "--out", out), "is not empty (it holds metrics.csv, summary.json)")
    assert (out / "summary.json").read_text() == '{"mine": true}' and (out / "metrics.csv").read_text() == "my,own\n"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "summary.json"]  # not even a lock left


def test_full_disk_is_named(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    result = invoke(*TRAIN, "--out", tmp_path / "run")
    one_line_error(result, "no space left on the device of")
    assert not list((tmp_path / "run").rglob("*.tmp"))


# ------------------------------------------------------------------------------------------------------------
# the restricted unpickler against forged files

FORGE = textwrap.dedent("""
    import pickle, sys
    import numpy as np

    class Dtype:   # pickles as numpy.dtype(spec) + BUILD(state)
        def __init__(self, spec, state=None):
            self.spec, self.state = spec, state
        def __reduce__(self):
            return (np.dtype, (self.spec, False, True)) + ((self.state,) if self.state is not None else ())

    class Array:   # pickles as _reconstruct(ndarray, (0,), b"b") + BUILD(state)
        def __init__(self, state):
            self.state = state
        def __reduce__(self):
            from numpy._core.multiarray import _reconstruct
            return (_reconstruct, (np.ndarray, (0,), b"b"), self.state)

    kind = sys.argv[2]
    pointer = b"\\x10" * 8   # harmless: never dereferenced if the file is refused
    if kind == "structured":     # an object field hidden in a void dtype whose flags are cleared
        dtype = Dtype("V8", (3, "|", None, ("f0",), {"f0": (Dtype("O8"), 0)}, 8, 1, 0))
        array = Array((1, (1,), dtype, False, pointer))
    elif kind == "object":       # an object dtype filled from raw bytes
        array = Array((1, (1,), Dtype("O8"), False, pointer))
    elif kind == "flags":        # a plain dtype whose flags claim otherwise
        array = Array((1, (1,), Dtype("i8", (3, "<", None, None, None, -1, -1, 63)), False, pointer))
    elif kind == "short":        # raw bytes shorter than the array: numpy would read past them
        array = Array((1, (1000,), Dtype("i8"), False, pointer))
    payload = {b"label_names": [b"a", b"b"], b"num_vis": 3072, b"x": array}
    if sys.argv[1].endswith(".pt"):
        import torch
        torch.save({"clean_label": array, "worse_label": np.zeros(2, np.int64)}, sys.argv[1])
    else:
        open(sys.argv[1], "wb").write(pickle.dumps(payload, protocol=2))
""")


@pytest.mark.parametrize("kind", ["structured", "object", "flags", "short"])
def test_forged_pickles_are_refused_not_crashed_on(tmp_path, kind):
    folder = write_cifar10(tmp_path / "c10", per_batch=2)
    (tmp_path / "forge.py").write_text(FORGE)
    subprocess.run([sys.executable, str(tmp_path / "forge.py"), str(folder / "batches.meta"), kind], check=True)
    subprocess.run([sys.executable, str(tmp_path / "forge.py"), str(tmp_path / "CIFAR-10_human.pt"), kind],
                   check=True)
    for command in (["data", "info", f"cifar10:{tmp_path / 'c10'}"],
                    ["data", "labels", f"cifar10n:{tmp_path / 'CIFAR-10_human.pt'}:worst"]):
        proc = subprocess.run([sys.executable, "-m", "noisykd.cli", *command], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])  # a crash would be -11
        assert "refused to load" in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------------------
# run folders never lose work

def tiny(out: Path, **updates) -> dict:
    return load_config("digits/sym40", updates={"out_dir": str(out), "model": {"name": "mlp"},
                                                "optim": {"epochs": 2}, **updates}).to_dict()


def train(cfg: dict, **run_args):
    return Trainer(load_config(base=cfg), progress=False).run(**run_args)


KILL_AT_EPOCH_1 = textwrap.dedent("""
    import os, signal, sys, yaml
    from noisykd.config import load_config
    from noisykd.engine import Trainer
    def on_step(trainer, epoch, step):
        if epoch == 1 and step == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    Trainer(load_config(base=yaml.safe_load(open(sys.argv[1]))), progress=False, on_step=on_step).run()
""")


def killed_run(tmp_path: Path, cfg: dict) -> Path:
    """A run SIGKILLed in its second epoch (one checkpoint written)."""
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "kill.py").write_text(KILL_AT_EPOCH_1)
    proc = subprocess.run([sys.executable, str(tmp_path / "kill.py"), str(tmp_path / "cfg.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    return Path(cfg["out_dir"])


def test_resume_refuses_another_config_naming_the_keys(tmp_path):
    cfg = tiny(tmp_path / "run")
    run = killed_run(tmp_path, cfg)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    other = tiny(run, data={"noise": "sym:0.2"}, optim={"epochs": 2, "lr": 0.1})
    with pytest.raises(CheckpointError, match=r"data.noise: 'sym:0.4' in the checkpoint, 'sym:0.2' now; "
                                              r"optim.lr: 0.05 in the checkpoint, 0.1 now"):
        train(other, resume=True)
    # noisykd detect on the interrupted run, with another --noise: refused, and nothing rewritten
    result = invoke("detect", run, "--noise", "none")
    one_line_error(result, "data.noise: 'sym:0.4' in the checkpoint, 'none' now")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before
    # without options it continues the run with its own config, then ranks the labels
    done = invoke("detect", run, "--top", "2")
    assert done.exit_code == 0, done.output
    assert (run / FINISHED).is_file() and (run / "label_issues-gmm.csv").is_file()


def test_resume_writes_to_the_folder_given_even_after_a_move(tmp_path, monkeypatch):
    cfg = tiny(tmp_path / "first")
    killed_run(tmp_path, cfg)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    (tmp_path / "first").rename(moved)
    monkeypatch.chdir(tmp_path / "elsewhere")  # the saved out_dir would now resolve to nowhere
    result = invoke("train", "--resume", moved)
    assert result.exit_code == 0, result.output
    assert (moved / FINISHED).is_file() and not (tmp_path / "first").exists()
    assert load_checkpoint(moved / "checkpoints" / "last.pt")["epoch"] == 2


def test_extending_a_run_is_asked_for_explicitly(tmp_path):
    cfg = tiny(tmp_path / "run")
    train(cfg)
    one_line_error(invoke("train", "--resume", tmp_path / "run", "--epochs", "3"), "add --extend")
    one_line_error(invoke("train", "--resume", tmp_path / "run", "--set", "optim.lr=1"), "drop --set")
    extended = invoke("train", "--resume", tmp_path / "run", "--epochs", "3", "--extend")
    assert extended.exit_code == 0, extended.output
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 3


HOLD = textwrap.dedent("""
    import sys, time, yaml
    from noisykd.config import load_config
    from noisykd.engine import Trainer
    def on_step(trainer, epoch, step):
        if epoch == 0 and step == 0:
            open(sys.argv[2], "w").write("started")
            time.sleep(30)
    Trainer(load_config(base=yaml.safe_load(open(sys.argv[1]))), progress=False, on_step=on_step).run()
""")


def test_two_runs_into_one_folder_the_second_is_refused(tmp_path):
    cfg = tiny(tmp_path / "run")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "hold.py").write_text(HOLD)
    first = subprocess.Popen([sys.executable, str(tmp_path / "hold.py"), str(tmp_path / "cfg.yaml"),
                              str(tmp_path / "started")])
    try:
        for _ in range(600):
            if (tmp_path / "started").exists():
                break
            time.sleep(0.1)
        with pytest.raises(OutputError, match=r"is in use by another noisykd run \(pid \d+\)"):
            train(cfg)
        with pytest.raises(OutputError, match="is in use by another noisykd run"):
            train(cfg, resume=True)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the lock dies with its process: the folder can be used again (nothing checkpointed: a fresh start)
    assert train(cfg).summary["epochs"] == 2


CUT_FIRST_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys, yaml, torch
    from noisykd.config import load_config
    from noisykd.engine import Trainer
    def cut(obj, f, *args, **kwargs):   # the first checkpoint write dies half-way
        f.write(b"PK\\x03\\x04 half a zip")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = cut
    Trainer(load_config(base=yaml.safe_load(open(sys.argv[1]))), progress=False).run()
""")


def test_a_kill_during_the_first_checkpoint_is_no_dead_end(tmp_path):
    cfg = tiny(tmp_path / "run")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "cut.py").write_text(CUT_FIRST_CHECKPOINT)
    proc = subprocess.run([sys.executable, str(tmp_path / "cut.py"), str(tmp_path / "cfg.yaml")], timeout=300)
    assert proc.returncode == -9
    run = tmp_path / "run"
    assert list((run / "checkpoints").glob("*.tmp")) and RunFolder(run).state() == "restartable"
    one_line_error(invoke("train", "--resume", run), "stopped before its first epoch ended")
    assert train(cfg).summary["epochs"] == 2  # the same command starts it again
    assert not list(run.rglob("*.tmp"))


def test_damaged_checkpoints_are_refused_and_the_previous_one_named(tmp_path):
    cfg = tiny(tmp_path / "run")
    train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    data = bytearray(last.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])  # 64 flipped bytes
    last.write_bytes(bytes(data))
    for command in (("eval", tmp_path / "run"), ("train", "--resume", tmp_path / "run")):
        one_line_error(invoke(*command), "fails its checksum (CRC-32); the previous checkpoint")
    assert invoke("eval", tmp_path / "run" / "checkpoints" / "previous.pt").exit_code == 0  # the intact one works
    last.write_bytes(b"")
    one_line_error(invoke("eval", tmp_path / "run"), "the file is empty")


def test_checkpoint_problems_are_one_line(tmp_path):
    cfg = tiny(tmp_path / "run", data={"val_fraction": 0.1})
    train(cfg)
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    one_line_error(invoke("train", "--resume", best), "holds the weights only")
    state = load_checkpoint(best)
    torch.save({k: v for k, v in state.items() if k != "config"}, tmp_path / "noconfig.pt")
    one_line_error(invoke("eval", tmp_path / "noconfig.pt"), "not a noisykd checkpoint (no 'format' or 'config'")
    wrong = dict(state, config={**state["config"], "model": {"name": "small_cnn", "kwargs": {}}})
    torch.save(wrong, tmp_path / "wrong.pt")
    one_line_error(invoke("eval", tmp_path / "wrong.pt"), "do not fit the network its config builds")
    np.savez(tmp_path / "big.npz", x_train=np.zeros((4, 16, 16), np.uint8), y_train=np.array([0, 1, 2, 3]),
             x_test=np.zeros((2, 16, 16), np.uint8), y_test=np.array([0, 1]))
    one_line_error(invoke("eval", tmp_path / "run", "--data", f"npz:{tmp_path / 'big.npz'}"),
                   "16x16x1 images of 4 classes, but the network was trained on 8x8x1 images of 10 classes")


def test_detect_on_damaged_or_unfinished_run_folders(tmp_path):
    cfg = tiny(tmp_path / "run")
    train(cfg)
    run = tmp_path / "run"
    samples = (run / "samples.npz").read_bytes()
    (run / "samples.npz").write_bytes(samples[: len(samples) // 2])
    one_line_error(invoke("detect", run), "samples.npz: damaged or truncated")
    np.savez(run / "samples.npz", index=np.arange(3), given_label=np.array([object()] * 3, dtype=object),
             noise_score=np.zeros(3), flagged=np.zeros(3, np.int64))
    one_line_error(invoke("detect", run), "holds object arrays, which noisykd never unpickles")
    (run / "samples.npz").write_bytes(samples)
    (run / "summary.json").write_text("{not json")
    one_line_error(invoke("detect", run), "summary.json: not a readable summary")
    (run / FINISHED).unlink()  # as if the run was killed while writing its outputs
    from noisykd.detect.from_run import detect_from_run
    from noisykd.errors import DataError

    with pytest.raises(DataError, match="not a finished noisykd run"):
        detect_from_run(run)


def test_a_finished_run_is_marked_last_and_unmarked_while_resumed(tmp_path):
    cfg = tiny(tmp_path / "run")
    result = train(cfg)
    run = result.out_dir
    marker = run / FINISHED
    assert marker.is_file()
    outputs = [run / name for name in ("samples.npz", "samples.csv", "summary.json", "curves.png")]
    assert all(p.stat().st_mtime <= marker.stat().st_mtime for p in outputs)
    assert RunFolder(run).state() == "finished"
    with pytest.raises(OutputError, match="already holds a run"):
        train(cfg)
