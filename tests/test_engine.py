"""The training engine end to end on the 8x8 digits: outputs, resumption after SIGKILL, damaged checkpoints."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from noisykd.config import load_config
from noisykd.engine import SampleStore, Trainer
from noisykd.engine.checkpoint import load_checkpoint
from noisykd.engine.schedule import LearningRateSchedule
from noisykd.errors import CheckpointError, ConfigError, OutputError


def tiny_config(out_dir: Path, **over) -> dict:
    """configs/digits/sym40 cut to 4 epochs with a lr step at epoch 3 and weak augmentation, as a plain dict;
    ``over``: dotted keys (``**{"optim.epochs": 2}``)."""
    base = load_config("digits/sym40", updates={
        "seed": 3, "out_dir": str(out_dir), "data": {"noise_seed": 1},
        "optim": {"epochs": 4, "schedule": "multistep", "milestones": [3]}, "augment": {"policy": "weak"}}).to_dict()
    for key, value in over.items():
        node = base
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return base


def run(out_dir: Path, **over):
    cfg = load_config(base=tiny_config(out_dir, **over))
    return Trainer(cfg, progress=False).run()


# --------------------------------------------------------------------------------------------------------

def test_run_writes_every_output(tmp_path):
    result = run(tmp_path / "r")
    out = result.out_dir
    for name in ("config.yaml", "metrics.csv", "metrics.jsonl", "summary.json", "samples.csv", "samples.npz",
                 "curves.png", "reliability.png", "noisy_labels.npz", "checkpoints/last.pt", "checkpoints/previous.pt",
                 "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["last"]["epoch"] == 4
    # calibration: the last row's ECE is the one of the summary's reliability bins, which count every test image
    calibration = summary["calibration"]
    assert calibration["bins"] == 15 and sum(calibration["count"]) == summary["test_samples"]
    assert summary["last"]["test_ece"] == pytest.approx(calibration["ece"])
    assert summary["best_noisy_val"]["epoch"] in range(1, 5)
    assert "oracle" in summary["best_test_oracle"]["note"]
    assert 0.35 <= summary["noise"]["noise_rate"] <= 0.45
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert all(0 <= r["test_ece"] <= 1 for r in rows) and rows[-1]["test_ece"] == calibration["ece"]
    assert rows[-1]["lr"] == pytest.approx(0.005)  # x0.1 from epoch index 3
    # learns something despite 40% noise: far above chance (10%) on the clean test set
    assert summary["best_test_oracle"]["test_acc"] > 0.5
    # per-sample CSV: one row per training sample (held-out ones excluded), with the truth columns
    lines = (out / "samples.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:5] == ["index", "given_label", "clean_label", "is_noisy", "predicted_label"]
    assert len(lines) - 1 == summary["train_samples"]


def test_resolved_config_reproduces_the_run(tmp_path):
    first = run(tmp_path / "a")
    cfg = load_config(first.out_dir / "config.yaml", [f"out_dir={tmp_path / 'b'}"])
    second = Trainer(cfg, progress=False).run()
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]
    a = np.load(first.out_dir / "noisy_labels.npz")["labels"]
    b = np.load(second.out_dir / "noisy_labels.npz")["labels"]
    assert np.array_equal(a, b)


def test_noise_file_gives_identical_labels(tmp_path):
    first = run(tmp_path / "a", **{"optim.epochs": 1, "optim.milestones": []})
    second = run(tmp_path / "b", **{"optim.epochs": 1, "optim.milestones": [], "data.noise": "none",
                                    "data.noise_file": str(first.out_dir / "noisy_labels.npz")})
    assert second.summary["noise"]["noise_rate"] == first.summary["noise"]["noise_rate"]


def test_refuses_to_overwrite_a_run(tmp_path):
    run(tmp_path / "r", **{"optim.epochs": 1, "optim.milestones": []})
    with pytest.raises(OutputError, match="already holds a run"):
        run(tmp_path / "r", **{"optim.epochs": 1, "optim.milestones": []})


def test_config_errors_are_specific(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(base={"optim": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError, match="optim.epochs: expected an integer"):
        load_config(overrides=["optim.epochs=ten"])
    with pytest.raises(ConfigError, match="amp must be one of"):
        load_config(overrides=["amp=fp8"])
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config(overrides=["data.val_fraction=1.5"])
    with pytest.raises(ConfigError, match="unknown method 'nope'; choose one of: .*bkd.*ce"):
        run(tmp_path / "x", method="nope")


# --------------------------------------------------------------------------------------------------------
# resumption

KILLER = textwrap.dedent("""
    import os, signal, sys
    from noisykd.config import load_config
    from noisykd.engine import Trainer
    import yaml
    cfg = load_config(base=yaml.safe_load(open(sys.argv[1])))
    kill_epoch, kill_step = int(sys.argv[2]), int(sys.argv[3])
    def on_step(trainer, epoch, step):
        if epoch == kill_epoch and step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)   # no clean-up, no atexit: as a crash or an OOM killer
    Trainer(cfg, progress=False, on_step=on_step).run()
""")


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    import yaml

    reference = run(tmp_path / "ref")
    cfg = tiny_config(tmp_path / "killed")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "killer.py").write_text(KILLER)
    proc = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "cfg.yaml"), "2", "5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # it really died by SIGKILL, mid-epoch 3
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["epoch"] == 2
    resumed = Trainer(load_config(base=cfg), progress=False).run(resume=True)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("img_per_s", "epoch_time_s")} for r in h]
    assert strip(resumed.history) == strip(reference.history)
    w_ref = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")["networks"]["net"]
    w_res = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["networks"]["net"]
    for key in w_ref:
        assert torch.equal(w_ref[key], w_res[key]), key
    a = np.load(tmp_path / "ref" / "samples.npz")
    b = np.load(tmp_path / "killed" / "samples.npz")
    assert np.array_equal(a["loss"], b["loss"], equal_nan=True)


def test_truncated_checkpoint_gives_clear_error_and_previous_still_works(tmp_path):
    first = run(tmp_path / "r", **{"optim.epochs": 2, "optim.milestones": []})
    last = first.out_dir / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last.pt: not an intact checkpoint archive.*previous.pt is intact"):
        load_checkpoint(last)
    previous = load_checkpoint(first.out_dir / "checkpoints" / "previous.pt")
    assert previous["epoch"] == 1
    # continue from the previous checkpoint, to 3 epochs
    cfg = load_config(base=tiny_config(tmp_path / "r", **{"optim.epochs": 3, "optim.milestones": []}))
    result = Trainer(cfg, progress=False).run(resume=first.out_dir / "checkpoints" / "previous.pt",
                                                                extend=True)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]


def test_garbage_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.pt: not an intact checkpoint archive"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_with_arbitrary_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------
# pieces

def test_sample_store_write_history_and_export(tmp_path):
    store = SampleStore(5)
    store.add("score")
    store.add("history", shape=(3,))
    store.add("group", dtype=torch.int64)
    store.write("score", torch.tensor([4, 1]), torch.tensor([0.5, 0.25]))
    store.write("history", torch.tensor([0, 2]), torch.tensor([1.0, 2.0]), column=1)
    store.write("group", torch.tensor([3]), torch.tensor([2]))
    assert torch.isnan(store["score"][0]) and store["score"][4] == 0.5
    assert store["history"][2, 1] == 2.0 and torch.isnan(store["history"][2, 0])
    assert store["group"].tolist() == [-1, -1, -1, 2, -1]
    restored = SampleStore(5)
    restored.load_state_dict(store.state_dict())
    assert torch.equal(restored["group"], store["group"])
    store.export(tmp_path / "s.npz", tmp_path / "s.csv", columns={"given": np.arange(5)}, rows=np.array([1, 4]))
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines == ["index,given,score,group", "1,1,0.25,-1", "4,4,0.5,-1"]
    assert np.load(tmp_path / "s.npz")["history"].shape == (5, 3)


def test_learning_rate_schedules():
    make = lambda **o: LearningRateSchedule(load_config(base={"optim": {"lr": 0.1, "epochs": 10, **o}}).optim)
    t = make(schedule="multistep", milestones=[5, 8])
    assert [round(t.lr_at(e), 6) for e in (0, 4.9, 5, 8)] == [0.1, 0.1, 0.01, 0.001]
    t = make(schedule="cosine", warmup_epochs=2)
    assert t.lr_at(1) == pytest.approx(0.05) and t.lr_at(2) == pytest.approx(0.1) and t.lr_at(10) == pytest.approx(0)
    assert make(schedule="constant").lr_at(9.5) == 0.1


def test_user_module_through_python_api(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    cfg = load_config(base=tiny_config(tmp_path / "m", **{"optim.epochs": 2, "optim.milestones": [], "data.noise": "none"}))
    result = Trainer(cfg, model=net, progress=False).run()
    assert result.summary["last"]["test_acc"] > 0.5


def test_streaming_from_host_memory_matches_data_on_device(tmp_path):
    on_device = run(tmp_path / "a", **{"optim.epochs": 2, "optim.milestones": [], "data_on_device": "yes"})
    streamed = run(tmp_path / "b", **{"optim.epochs": 2, "optim.milestones": [], "data_on_device": "no"})
    assert [r["train_loss"] for r in on_device.history] == [r["train_loss"] for r in streamed.history]
    assert [r["test_acc"] for r in on_device.history] == [r["test_acc"] for r in streamed.history]


def test_eval_every_evaluates_some_epochs_and_the_last(tmp_path):
    result = run(tmp_path / "e", **{"optim.epochs": 5, "optim.milestones": [], "eval_every": 2})
    assert [r.get("test_acc") is not None for r in result.history] == [False, True, False, True, True]
    assert result.summary["best_test_oracle"]["epoch"] in (2, 4, 5)
    assert [r.get("test_ece") is not None for r in result.history] == [False, True, False, True, True]
    assert (result.out_dir / "curves.png").is_file() and (result.out_dir / "reliability.png").is_file()


@pytest.mark.parametrize("option", [{"amp": "bf16"}, {"channels_last": True}])
def test_speed_options_train_on_cpu(tmp_path, option):
    result = run(tmp_path / "o", **{"optim.epochs": 2, "optim.milestones": [], **option})
    assert result.summary["best_test_oracle"]["test_acc"] > 0.3  # learns, 10 classes
    assert all(math.isfinite(r["train_loss"]) for r in result.history)
