"""Training throughput of data-parallel runs: 1 process, the distributed path with 1 process, and N processes.

Usage:
    python benchmarks/speed_distributed.py [--devices 2] [--device cpu|cuda] [--config digits/sym40]
                                           [--set KEY=VALUE ...] [--epochs 4] [--repeats 3]
                                           [--out benchmarks/results/speed-distributed-cpu]

Each configuration is a real ``noisykd train`` run in its own process(es), started as a user starts it:

* ``1 process``:              ``python -m noisykd train ...`` (no process group);
* ``torchrun, 1 process``:    ``python -m torch.distributed.run --standalone --nproc_per_node=1 -m noisykd train``
                              (the distributed code path: gradient all-reduce, store exchange, metric reduction,
                              on one process: its overhead);
* ``torchrun, N processes``:  the same with ``--nproc_per_node=N`` (``--devices``).

The same global batch in all three. On the CPU the cores are shared fairly: a run of N processes gives each
``threads = cores / N`` (what torchrun's OMP_NUM_THREADS=1 does on 2 cores), the one-process runs use every
core. The figure is the run's own ``img_per_s`` (the training loop of an epoch over the whole training set,
evaluation and checkpoints excluded), median over the epochs after the first (warm-up) of every repeat; the
repeats are interleaved (1, torchrun-1, torchrun-N, 1, ...). Also reported: wall time of the whole command
(start-up, data loading, evaluation and writing included). Outputs: Markdown table on stdout, ``--out`` + ``.md``
and ``.json`` (every run's per-epoch numbers, the load average before and after each run, the commands).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def run_once(kind: str, nproc: int, args, threads: int, out_dir: Path) -> dict:
    train = ["train", "--config", args.config, "--epochs", str(args.epochs), "--device", args.device,
             "--threads", str(threads), "--out", str(out_dir), *[a for s in args.set for a in ("--set", s)]]
    if kind == "single":
        cmd = [sys.executable, "-m", "noisykd", *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "noisykd", *train]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {shlex.join(cmd)}\n{done.stderr[-3000:]}")
    with open(out_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    rates = [float(r["img_per_s"]) for r in rows]
    return {"kind": kind, "processes": nproc, "threads_per_process": threads, "img_per_s_by_epoch": rates,
            "img_per_s": statistics.median(rates[1:] or rates), "wall_s": wall, "loadavg_1min_before": load_before,
            "loadavg_1min_after": os.getloadavg()[0], "command": shlex.join(cmd),
            "test_acc_last": float(rows[-1].get("test_acc") or "nan")}


def markdown(result: dict) -> str:
    cfg, env = result["config"], result["environment"]
    where = env["gpu"] or f"{env['cpu_model']}, {env['cpu_count']} cores"
    lines = [f"# Data-parallel throughput: {cfg['config']} {' '.join(cfg['set'])}, {cfg['device']}", "",
             f"Command: `{result['command']}`", "",
             f"{result['date']}; {where}; torch {env['torch']}. {cfg['epochs']} epochs per run, {cfg['repeats']} "
             "interleaved repeats; img/s = the run's own training-loop throughput (median over epochs 2..E of "
             "each repeat, then the median over repeats); wall = the whole command, start-up included.", "",
             "| configuration | processes x threads | train img/s (median) | min - max | vs 1 process | wall s (median) | last test acc |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    base = result["summary"]["single"]["median_img_per_s"]
    for kind, s in result["summary"].items():
        lines.append(f"| {s['label']} | {s['processes']} x {s['threads_per_process']} | {s['median_img_per_s']:,.0f} | "
                     f"{s['min_img_per_s']:,.0f} - {s['max_img_per_s']:,.0f} | {s['median_img_per_s'] / base:.2f}x | "
                     f"{s['median_wall_s']:.1f} | {s['test_acc_last']:.4f} |")
    loads = [r[k] for r in result["raw"] for k in ("loadavg_1min_before", "loadavg_1min_after")]
    lines += ["", f"1-min load average around the runs: {min(loads):.2f} - {max(loads):.2f} (this benchmark's own "
              "load included; nothing else ran).", "", "Raw numbers: the `.json` file next to this one.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2, help="processes of the data-parallel run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", default="digits/sym40")
    parser.add_argument("--set", action="append", default=[], help="config override, as noisykd train --set")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of a one-process run (default: cores)")
    parser.add_argument("--out", default="benchmarks/results/speed-distributed-cpu")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.repeats < 1 or args.devices < 1:
        parser.error("need --epochs >= 2, --repeats >= 1, --devices >= 1")
    cores = os.cpu_count() or 1
    full = args.threads or cores
    plan = {"single": ("1 process (no process group)", 1, full),
            "torchrun1": ("torchrun, 1 process (distributed path)", 1, full),
            "torchrunN": (f"torchrun, {args.devices} processes", args.devices, max(1, full // args.devices))}
    if args.devices == 1:  # one GPU: the overhead of the distributed path is the question
        del plan["torchrunN"]
    raw = []
    with tempfile.TemporaryDirectory(prefix="noisykd-ddp-speed-") as tmp:
        for r in range(args.repeats):
            for kind, (label, nproc, threads) in plan.items():
                out = Path(tmp) / f"{kind}-{r}"
                rec = run_once("single" if kind == "single" else "torchrun", nproc, args, threads, out)
                rec["kind"] = kind
                raw.append(rec)
                print(f"  repeat {r + 1}/{args.repeats} {label}: {rec['img_per_s']:,.0f} img/s, wall "
                      f"{rec['wall_s']:.1f} s", file=sys.stderr)
    summary = {}
    for kind, (label, nproc, threads) in plan.items():
        runs = [x for x in raw if x["kind"] == kind]
        rates = [x["img_per_s"] for x in runs]
        summary[kind] = {"label": label, "processes": nproc, "threads_per_process": threads,
                         "median_img_per_s": statistics.median(rates), "min_img_per_s": min(rates),
                         "max_img_per_s": max(rates), "median_wall_s": statistics.median(x["wall_s"] for x in runs),
                         "test_acc_last": statistics.median(x["test_acc_last"] for x in runs)}
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") and torch.cuda.is_available() else ""
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    result = {"date": dt.datetime.now().isoformat(timespec="seconds"),
              "command": shlex.join(["python", "benchmarks/speed_distributed.py", *(argv or sys.argv[1:])]),
              "config": {"config": args.config, "set": args.set, "device": args.device, "epochs": args.epochs,
                         "repeats": args.repeats, "devices": args.devices},
              "environment": {"torch": torch.__version__, "cpu_count": cores, "cpu_model": cpu_model, "gpu": gpu,
                              "python": platform.python_version()},
              "summary": summary, "raw": raw}
    text = markdown(result)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
