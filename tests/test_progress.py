"""Progress where there is no terminal: the epoch line's elapsed time and ETA, and the demo's plain lines, its
threads, device and overrides (issue 26). Two epochs on digits throughout."""

from __future__ import annotations

import io
import json
import math
import re

import pytest
import yaml
from rich.console import Console

from noisykd.config import load_config
from noisykd.demo import DEMO_METHODS, demo_config, run_demo
from noisykd.engine import Trainer
from noisykd.engine.progress import EpochClock, epoch_line, eta_seconds, format_duration, lines_every
from noisykd.engine.runfolder import RunFolder
from noisykd.errors import ConfigError, OutputError

TIMING = re.compile(r"elapsed \d+:\d\d eta \d+:\d\d")
#: the demo's settings in these tests: 2 epochs, one thread (torch's default here is every core), a batch size
#: other than the config's 64 (so that the override shows in every saved config)
EPOCHS, THREADS, OVERRIDES = 2, 1, ["optim.batch_size=128"]


# --- pure helpers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (12, "0:12"), (59.4, "0:59"), (59.6, "1:00"),
                                           (754.4, "12:34"), (3599.4, "59:59"), (3600, "1:00:00"),
                                           (3725, "1:02:05"), (36_000 + 61, "10:01:01")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf])
def test_format_duration_refuses_what_is_no_duration(bad):
    with pytest.raises(ValueError, match="duration"):
        format_duration(bad)


@pytest.mark.parametrize("elapsed, done, total, eta", [(12, 1, 5, 48), (30, 3, 10, 70), (10, 4, 4, 0),
                                                       (7.5, 3, 4, 2.5)])
def test_eta_is_the_mean_time_of_the_done_units_times_those_left(elapsed, done, total, eta):
    assert eta_seconds(elapsed, done, total) == pytest.approx(eta)


def test_eta_before_any_unit_is_none_and_bad_counts_are_refused():
    assert eta_seconds(5.0, 0, 4) is None
    for done, total in ((5, 4), (-1, 4)):
        with pytest.raises(ValueError, match="done"):
            eta_seconds(1.0, done, total)
    with pytest.raises(ValueError, match="elapsed"):
        eta_seconds(-1.0, 1, 4)


@pytest.mark.parametrize("total, at_most, every", [(60, 10, 6), (61, 10, 7), (10, 10, 1), (2, 10, 1), (1, 1, 1)])
def test_lines_every_keeps_at_most_the_lines_asked(total, at_most, every):
    assert lines_every(total, at_most) == every
    assert total // every <= at_most


def test_epoch_clock_counts_only_this_sessions_epochs():
    """A run resumed after 3 of 10 epochs: 2 epochs in 20 s now mean 10 s each, so 5 left take 50 s."""
    now = iter([100.0, 120.0, 130.0, 200.0])
    clock = EpochClock(first_epoch=3, total=10, clock=lambda: next(now))
    assert clock.timing(5) == (20.0, 50.0)
    assert clock.timing(6) == (30.0, 40.0)          # 3 epochs in 30 s, 4 left
    assert clock.timing(12) == (100.0, 0.0)         # past the total: clipped, never an error in a log line


def test_epoch_line_ends_with_elapsed_and_eta():
    row = {"epoch": 1, "train_loss": 0.5, "train_acc_noisy": 0.6, "img_per_s": 1000.0}
    assert epoch_line(row, 5).endswith("1000 img/s")
    assert epoch_line(row, 5, (12.0, 48.0)).endswith("1000 img/s  elapsed 0:12 eta 0:48")
    assert epoch_line(row, 5, (3.0, None)).endswith("elapsed 0:03 eta ?")


# --- the trainer's epoch line -----------------------------------------------------------------------------
def test_trainer_epoch_lines_have_elapsed_and_eta(tmp_path):
    cfg = load_config("digits/sym40", updates={"method": "ce", "model": {"name": "mlp"}, "out_dir": str(tmp_path / "r"),
                                               "optim": {"epochs": 2}})
    result = Trainer(cfg, progress=False).run()
    lines = [line for line in (result.out_dir / "train.log").read_text().splitlines() if "epoch " in line
             and "/2" in line]
    assert len(lines) == 2 and all(TIMING.search(line) for line in lines), lines
    assert lines[-1].endswith("eta 0:00")  # nothing left after the last epoch


# --- the demo -------------------------------------------------------------------------------------------------
class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A demo (2 epochs, 1 thread, batch 128) whose ce run was stopped after its first epoch beforehand, so that
    the demo resumes it; the demo's output as a file sees it. Returns (folder, results, printed text)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    cfg = demo_config("ce", {}, out / "ce", EPOCHS, 0, THREADS, None, OVERRIDES)

    def stop(trainer, epoch, step):
        if epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        Trainer(cfg, progress=False, on_step=stop).run()
    assert RunFolder(out / "ce").state() == "resumable"
    text = io.StringIO()
    results = run_demo(out, epochs=EPOCHS, threads=THREADS, overrides=OVERRIDES,
                       console=Console(file=text, force_terminal=False, width=100))
    return out, results, text.getvalue()


def test_demo_without_a_terminal_prints_a_line_per_method_start_end_and_epoch(demo):
    out, results, text = demo
    lines = text.splitlines()
    n = len(DEMO_METHODS)
    for i, name in enumerate(DEMO_METHODS, 1):
        mine = [line for line in lines if line.startswith(f"[{i}/{n}] {name}: ")]
        assert mine[0].endswith(f"({EPOCHS} epochs)"), mine  # its start...
        assert ("resuming the run in" if name == "ce" else "training into") in mine[0]
        assert re.search(r"done in \d+\.\d s .*test accuracy last \d+\.\d\d%", mine[-1]), mine  # ...and its end
        epochs = [line for line in mine if " epoch " in line]
        # the resumed ce trains its second epoch only; every epoch line carries the whole demo's time
        assert [line.split(" epoch ")[1].split()[0] for line in epochs] == (["2/2"] if name == "ce" else ["1/2", "2/2"])
        assert all(TIMING.search(line) for line in epochs), epochs
    assert "eta 0:00" in [line for line in lines if line.startswith(f"[{n}/{n}]") and " epoch " in line][-1]
    assert {p.name for p in out.iterdir()} >= {"demo.json", "demo.md", "demo.png", *DEMO_METHODS}
    assert set(json.loads((out / "demo.json").read_text())) == set(DEMO_METHODS)
    assert all(len(r["history"]) == EPOCHS for r in results.values())


def test_demo_runs_with_its_threads_and_overrides(demo):
    out = demo[0]
    for name, (method, args) in DEMO_METHODS.items():
        saved = yaml.safe_load((out / name / "config.yaml").read_text())
        assert (saved["method"], saved["method_args"]) == (method, args)
        assert saved["threads"] == THREADS and saved["optim"]["batch_size"] == 128
        assert saved["optim"]["epochs"] == EPOCHS
        # torch's thread count inside the run (recorded at its start), the resumed session's included
        sessions = json.loads((out / name / "run_info.json").read_text())["sessions"]
        assert [s["torch_threads"] for s in sessions] == [THREADS] * (2 if name == "ce" else 1)


def test_a_second_demo_on_a_terminal_reuses_the_finished_runs(demo):
    out, first, _ = demo
    text = io.StringIO()
    again = run_demo(out, epochs=EPOCHS, threads=2, overrides=OVERRIDES,  # threads may change: not the result
                     console=Console(file=text, force_terminal=True, width=100))
    assert not re.search(r"^\[\d/\d\]", text.getvalue(), re.M)  # live bars, not the log lines
    for name in DEMO_METHODS:
        assert again[name]["summary"]["last"]["test_acc"] == first[name]["summary"]["last"]["test_acc"]
        assert [r["epoch"] for r in again[name]["history"]] == [1, 2]  # nothing trained again


@pytest.mark.parametrize("change, named", [({"epochs": 3}, "--epochs 2"),
                                           ({"overrides": ["optim.lr=0.1"]}, "--set optim.lr=0.05"),
                                           ({"seed": 1}, "--seed 0")])
def test_a_demo_with_other_settings_says_which_before_training(demo, change, named):
    out = demo[0]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    settings = {"epochs": EPOCHS, "threads": THREADS, "overrides": OVERRIDES + change.pop("overrides", []), **change}
    text = io.StringIO()
    with pytest.raises(OutputError, match=re.escape(named)) as error:
        run_demo(out, console=Console(file=text, force_terminal=False), **settings)
    assert str(out / "ce") in str(error.value) and "another --out" in str(error.value)
    assert text.getvalue() == "" and {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.parametrize("overrides, match", [(["optim.batch_sise=64"], "batch_sise"),
                                              (["optim.lr"], "key=value"),
                                              (["optim.epochs=0"], "epochs"),
                                              (["method=gce"], "the demo sets method"),
                                              (["method_args.q=0.5"], "the demo sets method"),
                                              ("optim.lr=0.1", "list of key=value")])
def test_a_bad_override_fails_before_any_folder_is_made(tmp_path, overrides, match):
    out = tmp_path / "demo"
    text = io.StringIO()
    with pytest.raises(ConfigError, match=match):
        run_demo(out, epochs=EPOCHS, overrides=overrides, console=Console(file=text, force_terminal=False))
    assert not out.exists() and text.getvalue() == ""


def test_a_folder_of_other_files_is_refused_before_training(tmp_path):
    (tmp_path / "demo" / "bkd").mkdir(parents=True)
    (tmp_path / "demo" / "bkd" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        run_demo(tmp_path / "demo", epochs=EPOCHS, console=Console(file=io.StringIO(), force_terminal=False))
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["bkd"]  # ce was not trained first


def test_free_cores_reads_the_machine(monkeypatch):
    import os
    import subprocess
    import sys

    from noisykd.demo import free_cores

    idle = free_cores(0.3)
    if idle is None:
        pytest.skip("no /proc/stat here")
    assert 0 <= idle <= (os.cpu_count() or 1)
    # a process spinning on every core leaves (about) none free
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        busy = free_cores(0.5)
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    assert busy is not None and (busy == 0 or busy < idle)  # none free, or fewer than before the spinners


@pytest.mark.parametrize("cores, free, threads", [(2, 2, None), (2, 1, 1), (2, 0, 1), (8, 5, 5), (8, 9, None)])
def test_demo_threads_follow_the_free_cores(monkeypatch, cores, free, threads):
    from noisykd import demo

    monkeypatch.setattr(demo.os, "cpu_count", lambda: cores)
    assert demo.demo_threads(free) == threads  # None: torch's default, every core


def test_a_busy_machine_gets_one_thread_per_run_and_the_demo_says_why(monkeypatch, tmp_path):
    from noisykd import demo

    monkeypatch.setattr(demo, "free_cores", lambda sample_s=0.25: 0)
    text = io.StringIO()
    run_demo(tmp_path / "demo", epochs=1, console=Console(file=text, force_terminal=False, width=200))
    assert "torch threads 1 (other work holds cores)" in text.getvalue()
    for name in DEMO_METHODS:
        assert yaml.safe_load((tmp_path / "demo" / name / "config.yaml").read_text())["threads"] == 1
