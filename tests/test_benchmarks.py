"""The BKD benchmark scripts still run end to end (tiny settings; their numbers are judged in benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bkd_tipping_benchmark_on_digits(tmp_path):
    out = tmp_path / "tipping"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bkd_tipping.py"), "--preset", "digits",
                           "--epochs", "8", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.with_suffix(".json").read_text())
    (run,) = results["runs"]["sym:0.4"]
    assert 1 <= run["tipping_epoch"] <= 8
    assert run["split_f1_at_tipping"] <= run["best_split_f1"]          # the best epoch is the best
    assert len(run["series"]["split_f1"]) == len(run["series"]["mean_max_p_student"]) == 8
    assert results["lr"] == 0.05 and results["augment"] == "none"      # the digits preset, lr kept constant
    assert (tmp_path / results["figures"]["sym:0.4"]).is_file()
    assert "| 0 |" in out.with_suffix(".md").read_text()


def test_bkd_vs_ce_benchmark_options(tmp_path):
    out = tmp_path / "vs"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bkd_vs_ce.py"), "--preset", "digits",
                           "--epochs", "2", "--seeds", "0", "--methods", "ce", "--model", "mlp",
                           "--set", "optim.batch_size=32", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.with_suffix(".json").read_text())
    assert results["model"] == "mlp" and results["epochs"] == 2
    assert len(results["runs"]["sym:0.4"]["ce"]) == 1


def test_gpu_check_smoke_runs_every_step(tmp_path):
    """benchmarks/gpu_check.sh --smoke: the GPU check's plumbing on fake CIFAR files, on the CPU (as in CI)."""
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu-check-cpu-smoke.json").read_text())
    assert result["smoke"] and result["train_images"] == 300
    assert {(r["method"], r["amp"]) for r in result["speed"]} == {("ce", "none"), ("ce", "bf16"), ("bkd", "none"),
                                                                   ("bkd", "bf16")}
    assert all(r["s_per_epoch"] > 0 for r in result["speed"]) and result["classic"]["s_per_epoch"] > 0
    assert "aten::" in result["profile"]["table"] and result["detection"]["gmm_s"] > 0
    assert set(result["shortened"]) == {"ce", "bkd", "bkd_ref"}
    text = (tmp_path / "gpu-check-cpu-smoke.md").read_text()
    assert "SMOKE" in text and "not the paper's setting" in text


def test_speed_benchmark_runs(tmp_path):
    out = tmp_path / "speed"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--n", "256", "--repeats", "1",
                           "--workers", "0", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["ratios"]["train_ours_over_classic"] > 0


def test_augment_speed_benchmark_runs(tmp_path):
    # A smoke run (8 images, one repeat): every policy and its per-image PIL loop runs; no timing is checked.
    out = tmp_path / "aug"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "augment_speed.py"), "--batch", "8",
                           "--repeats", "1", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for line in ("batched randaugment(n=1, m=3, cutout_size=16)", "batched augmix(severity=3, width=3)",
                 "per-image PIL RandAugment(1, 3)", "per-image PIL AugMix(3, 3)"):
        assert line in proc.stdout
    result = json.loads(out.with_suffix(".json").read_text())
    assert set(result["speedup"]) == {"batched weak over the PIL loop", "batched weak over the numpy loop",
                                      "batched randaugment over its PIL loop", "batched augmix over its PIL loop"}
    assert len(result["load_average_before"]) == 3 and result["command"].endswith(f"--out {out}")
    assert "load average" in out.with_suffix(".md").read_text()


def test_bkd_vs_ce_takes_any_method_spec(tmp_path):
    out = tmp_path / "spec"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bkd_vs_ce.py"), "--preset", "digits",
                           "--epochs", "1", "--seeds", "0", "--methods", "gce:q=0.5", "bkd_ref",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]["sym:0.4"]
    assert set(runs) == {"gce:q=0.5", "bkd_ref"}


def test_comparison_expands_the_cmd_grid(tmp_path):
    """--methods cmd-grid: CMD's Table 1 rows, each a labelled spec; two-model rows report their mean."""
    out = tmp_path / "grid"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bkd_vs_ce.py"), "--preset", "digits",
                           "--epochs", "1", "--seeds", "0", "--methods", "cmd-grid", "--set", "data.train_subset=300",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]["sym:0.4"]
    assert list(runs) == ["ce", "proselflc", "mconf", "zero", "syncmkd", "cmd_s", "cmd_p", "cmd_p_mconf"]
    assert runs["cmd_p"][0]["detection"]["detector"] == "cmd"
    text = out.with_suffix(".md").read_text()
    assert "# ce vs proselflc vs mconf vs zero" in text and "- cmd_p: cmd: " in text


def test_comparison_merges_parts_run_side_by_side(tmp_path):
    """--merge: parts of a grid run side by side (a method's seeds split across parts) become one table; a seed
    of a method in two parts is refused."""
    script = str(ROOT / "benchmarks" / "bkd_vs_ce.py")
    common = ["--preset", "digits", "--epochs", "1", "--set", "data.train_subset=300"]
    for part, seed, methods in (("a", "0", ["ce"]), ("b", "1", ["ce", "gce:q=0.5"])):
        proc = subprocess.run([sys.executable, script, *common, "--seeds", seed, "--methods", *methods,
                               "--out", str(tmp_path / part)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    merged = subprocess.run([sys.executable, script, "--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                             "--out", str(tmp_path / "ab")], capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr[-2000:]
    results = json.loads((tmp_path / "ab.json").read_text())
    runs = results["runs"]["sym:0.4"]
    assert list(runs) == ["ce", "gce:q=0.5"] and len(results["parts"]) == 2
    assert [r["seed"] for r in runs["ce"]] == [0, 1] and [r["seed"] for r in runs["gce:q=0.5"]] == [1]
    assert all(0 <= r["test_ece_last"] <= 1 for r in runs["ce"])  # calibration of every seed's last epoch
    text = (tmp_path / "ab.md").read_text()
    assert "seeds [0, 1]" in text and "| ce |" in text and "| gce:q=0.5 (seeds [1]) |" in text
    assert "| ECE last | wrong labels fit last |" in text
    curve = runs["ce"][0]["curve"]  # per epoch: test accuracy and the share of wrong labels fit (memorisation)
    assert curve["epoch"] == [1] and 0 <= curve["fit_wrong"][0] <= 1 and 0 <= curve["test_acc"][0] <= 1
    assert "![Test accuracy and wrong labels fit per epoch](ab-curves.png)" in text
    assert (tmp_path / "ab-curves.png").stat().st_size > 10_000
    assert "--methods ce gce:q=0.5" in text  # each part's command under the table
    clash = subprocess.run([sys.executable, script, "--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                            str(tmp_path / "a.json"), "--out", str(tmp_path / "aba")],
                           capture_output=True, text=True, timeout=120)
    assert clash.returncode != 0 and "seeds [0] of method 'ce' (sym:0.4) appear in more than one file" in clash.stderr
    assert not (tmp_path / "aba.json").exists()
    # FILE.json:LABELS takes only those methods from a part (here: b's gce, leaving b's ce out)
    picked = subprocess.run([sys.executable, script, "--merge", str(tmp_path / "a.json"),
                             f"{tmp_path / 'b.json'}:gce:q=0.5", "--out", str(tmp_path / "ag")],
                            capture_output=True, text=True, timeout=120)
    assert picked.returncode == 0, picked.stderr[-2000:]
    runs = json.loads((tmp_path / "ag.json").read_text())["runs"]["sym:0.4"]
    assert [r["seed"] for r in runs["ce"]] == [0] and [r["seed"] for r in runs["gce:q=0.5"]] == [1]
    assert "(from it: gce:q=0.5)" in (tmp_path / "ag.md").read_text()


def test_cmd_gpu_preset_on_fake_cifar10(tmp_path):
    """The cifar10-sym40 preset of the CMD GPU run (benchmarks/cmd_gpu.sh), on fake CIFAR-10 and the CPU."""
    from noisykd.data.fixtures import write_cifar10

    write_cifar10(tmp_path / "c10", per_batch=60)
    out = tmp_path / "cmd-gpu"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bkd_vs_ce.py"), "--preset", "cifar10-sym40",
                           "--cifar-root", str(tmp_path / "c10"), "--train-subset", "0", "--epochs", "2",
                           "--seeds", "0", "--model", "small_cnn", "--methods", "ce", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.with_suffix(".json").read_text())
    (run,) = results["runs"]["sym:0.4"]["ce"]
    assert 0.3 < run["noise_rate"] < 0.5 and results["epochs"] == 2
    assert "CMD's CIFAR-100 setting" in out.with_suffix(".md").read_text()


def test_nrd_cpu_preset_on_fake_cifar10(tmp_path):
    """The cifar10-noisy preset (NRD Table 2 at CPU scale), one noise level per part as the grid ran, merged into
    one file: every method on the preset's RandAugment views, the config's evaluation interval, one table per
    noise level and one reliability figure of every method and level."""
    from noisykd.data.fixtures import write_cifar10

    write_cifar10(tmp_path / "c10", per_batch=60)
    script = str(ROOT / "benchmarks" / "bkd_vs_ce.py")
    for part, noise in (("a", "sym-all:0.4"), ("b", "sym-all:0.8")):
        proc = subprocess.run([sys.executable, script, "--preset", "cifar10-noisy", "--label-sets", noise,
                               "--cifar-root", str(tmp_path / "c10"), "--train-subset", "0", "--epochs", "1",
                               "--seeds", "0", "--methods", "ce", "nrd=nrd:preset=cifar10-sym40",
                               "--set", "optim.weight_decay=0.0005", "--out", str(tmp_path / part)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "ab"
    merged = subprocess.run([sys.executable, script, "--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr[-2000:]
    results = json.loads(out.with_suffix(".json").read_text())
    assert list(results["runs"]) == ["sym-all:0.4", "sym-all:0.8"]
    rates = {ls: by_method["ce"][0]["noise_rate"] for ls, by_method in results["runs"].items()}
    # sym-all: the flipped share is R * (C - 1) / C (a flip may land on the true class)
    assert 0.25 < rates["sym-all:0.4"] < 0.47 and 0.62 < rates["sym-all:0.8"] < 0.82
    assert results["augment"].startswith("randaugment_gjs(n=1, m=3, cutout_size=16")
    assert results["eval_every"] == 5 and results["epochs"] == 1
    record = results["runs"]["sym-all:0.8"]["nrd"][0]
    assert record["calibration"]["ece"] == pytest.approx(record["test_ece_last"])
    assert sum(record["calibration"]["count"]) == 60  # every test image of the fake CIFAR-10 (per_batch=60)
    text = out.with_suffix(".md").read_text()
    assert "## sym-all:0.4" in text and "## sym-all:0.8" in text and "every 5 epochs and at the last" in text
    assert "![Reliability diagrams" in text and "(seed 0)" in text
    assert "then for every method: `optim.weight_decay=0.0005`" in text  # the command's overrides, said in words
    assert all(r["curve"]["epoch"] == [1] for by_method in results["runs"].values() for rs in by_method.values()
               for r in rs)
    assert Path(f"{out}-reliability.png").stat().st_size > 10_000


def test_preset_label_sets_and_panel_seeds():
    """cifar10-noisy's default noise levels; the reliability figure shows one seed that every method recorded."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bkd_vs_ce
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import argparse

    parser = argparse.ArgumentParser()
    bkd_vs_ce.add_preset_arguments(parser, seeds=[0], label_sets=["worst"])
    assert bkd_vs_ce.preset_label_sets(parser.parse_args(["--preset", "cifar10-noisy"])) == ["sym-all:0.4",
                                                                                             "sym-all:0.8"]
    assert bkd_vs_ce.preset_label_sets(parser.parse_args(["--preset", "cifar10n"])) == ["worst"]
    assert bkd_vs_ce.preset_label_sets(parser.parse_args(["--preset", "digits", "--label-sets", "x"])) == ["sym:0.4"]
    bins = {"ece": 0.1}
    results = {"runs": {"sym-all:0.4": {"ce": [{"seed": 0, "calibration": bins}, {"seed": 1, "calibration": bins}],
                                        "nrd": [{"seed": 0}, {"seed": 1, "calibration": bins}]}}}
    panels = bkd_vs_ce._panel_runs(results)["sym-all:0.4"]
    assert panels["ce"]["seed"] == 1 and panels["nrd"]["seed"] == 1  # seed 1: the one both recorded
    results["runs"]["sym-all:0.4"]["nrd"][1].pop("calibration")
    assert bkd_vs_ce._panel_runs(results) == {"sym-all:0.4": {"ce": results["runs"]["sym-all:0.4"]["ce"][0]}}
    # the seed mean of the learning curves: None at an epoch where any seed lacks the value
    a = {"epoch": [1, 2, 3], "test_acc": [None, 0.5, 0.4], "fit_wrong": [0.1, 0.2, 0.6]}
    b = {"epoch": [1, 2], "test_acc": [None, 0.3], "fit_wrong": [0.3, None]}
    assert bkd_vs_ce.mean_curve([a, b]) == {"epoch": [1, 2], "test_acc": [None, pytest.approx(0.4)],
                                            "fit_wrong": [pytest.approx(0.2), None]}
    assert bkd_vs_ce.fit_wrong_cell([{"curve": a}, {"curve": b}, {}]) == "60.00 (n=1)"


FASHION = ROOT.parent / "shared" / "data" / "fashion-mnist"


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"Fashion-MNIST not found at {FASHION}")
def test_digits_openset_preset_trains_its_teacher_and_reports_the_split(tmp_path):
    """MODUL's CPU proxy: the teacher config trained once, given to the distillation methods only; the Markdown
    has the teacher's accuracy and size and MODUL's split against the truth."""
    out = tmp_path / "modul"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bkd_vs_ce.py"), "--preset", "digits-openset",
                           "--label-sets", "openset:0.5:0.5", "--ood", str(FASHION), "--epochs", "1", "--seeds", "0",
                           "--methods", "ce", "modul", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("training the teacher (modul/digits-teacher)") == 1
    results = json.loads(out.with_suffix(".json").read_text())
    ce, modul = results["runs"]["openset:0.5:0.5"]["ce"][0], results["runs"]["openset:0.5:0.5"]["modul"][0]
    assert "test_teacher_last" not in ce and modul["test_teacher_last"] > 0.9  # 60 epochs on the clean digits
    assert modul["teacher_parameters"] > 3 * modul["student_parameters"]  # twice as wide: ~4x the parameters
    assert sum(g["samples"] for g in modul["split"].values()) == 1257 and 0.4 < ce["noise_rate"] < 0.6
    text = out.with_suffix(".md").read_text()
    assert "- teacher: test accuracy" in text and "openset:0.5:0.5, modul split: clean" in text


def test_speed_distributed_compares_one_process_with_torchrun(tmp_path):
    """The data-parallel benchmark's plumbing: a plain run and torchrun with 1 process, and their table (launches
    of 2 processes are tested in test_distributed.py). Both compute the same: the same final test accuracy."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import speed_distributed

    result = speed_distributed.main(["--devices", "1", "--epochs", "2", "--repeats", "1", "--set",
                                     "data.train_subset=200", "--out", str(tmp_path / "speed")])
    summary = result["summary"]
    assert set(summary) == {"single", "torchrun1"} and summary["single"]["median_img_per_s"] > 0
    assert summary["single"]["test_acc_last"] == summary["torchrun1"]["test_acc_last"]
    assert "| torchrun, 1 process (distributed path) | 1 x" in (tmp_path / "speed.md").read_text()
