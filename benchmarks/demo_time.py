"""Wall time of ``noisykd demo``, idle and under a background load, for a few thread / epoch variants.

Usage (run it alone on the machine: any other work changes the numbers):
    python benchmarks/demo_time.py [--repeats 3] [--variants default,threads1,threads2]
                                   [--loads 0,2] [--epochs N] [--settle 20] [--out benchmarks/results/demo-time]
    python benchmarks/demo_time.py --quick            # 1 repetition, 2 epochs, writes under /tmp: plumbing only

Each timed run is ``python -m noisykd demo --out FRESH_FOLDER ...`` in a subprocess, its stdout and stderr going
to a file (so the demo takes its non-terminal path, as under nohup or CI), timed from start to exit (Python and
torch start-up included: what a user waits). Variants (``--variants``, comma-separated):

* ``default``:          no option: the demo's own choice (``noisykd.demo.demo_threads``);
* ``threads1``, ``threads2``: ``--threads 1`` / ``--threads 2``;
* ``threads1-epochs30``, ``threads2-epochs30``: the same with ``--epochs 30`` (a shorter demo).

Loads (``--loads``): ``0`` is the machine as it is (it should be idle: the 1-minute load average before each run
is recorded, and the report warns when it exceeds 0.5); ``N`` starts N busy-loop processes (pure Python
``while True: pass``), waits ``--settle`` seconds, runs the variants, and kills them. Repetitions are
interleaved (v1, v2, v3, v1, v2, v3, ...) so that a drift in the background hits every variant alike.

Outputs: ``--out`` + ``.json`` (every run: variant, load, repetition, seconds, load average before it, the demo's
own per-method seconds from demo.json; per variant and load the median, min and max; the command line, the
CPU from /proc/cpuinfo, core count, torch version, git commit) and ``.md`` (the table and the same context).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from noisykd.engine.report import cpu_model

ROOT = Path(__file__).resolve().parents[1]

#: variant name -> the options it adds to ``noisykd demo``
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "threads1": ["--threads", "1"],
    "threads2": ["--threads", "2"],
    "threads1-epochs30": ["--threads", "1", "--epochs", "30"],
    "threads2-epochs30": ["--threads", "2", "--epochs", "30"],
}
#: the 1-minute load average above which an "idle" run is flagged as not idle
IDLE_LOAD = 0.5


def git_commit() -> str:
    """``HEAD``'s commit of the repository, with ``+dirty`` when tracked files differ from it; ``unknown`` outside
    git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def demo_command(out: Path, options: list[str], epochs: int | None) -> list[str]:
    """The ``noisykd demo`` command of one run: this interpreter's noisykd, a fresh ``out``, the variant's
    ``options``, and ``--epochs epochs`` unless the variant sets its own (or ``epochs`` is None)."""
    command = [sys.executable, "-m", "noisykd", "demo", "--out", str(out), *options]
    if epochs is not None and "--epochs" not in options:
        command += ["--epochs", str(epochs)]
    return command


def check_options(variants: list[str]) -> None:
    """Exit with a one-line message when ``noisykd demo`` lacks an option the chosen variants use."""
    needed = {o for v in variants for o in VARIANTS[v] if o.startswith("--")} | {"--out", "--epochs"}
    shown = subprocess.run([sys.executable, "-m", "noisykd", "demo", "--help"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "200"})
    missing = sorted(o for o in needed if o not in shown.stdout)
    if shown.returncode != 0 or missing:
        sys.exit(f"error: `noisykd demo` lacks {', '.join(missing) or 'a working --help'}; the variants "
                 f"{', '.join(variants)} need it")


def time_demo(command: list[str], log: Path) -> dict:
    """Run ``command`` with its output in ``log`` (not a terminal); its wall seconds, exit code and the load
    average just before it. Exits with the log's tail when the demo fails (a time of a failed run means
    nothing)."""
    load_before = os.getloadavg()
    with log.open("w") as sink:
        start = time.perf_counter()
        code = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        seconds = time.perf_counter() - start
    if code != 0:
        sys.exit(f"error: {shlex.join(command)} exited {code}; its output ({log}) ends:\n"
                 + "\n".join(log.read_text().splitlines()[-15:]))
    return {"seconds": seconds, "returncode": code, "loadavg_before": list(load_before)}


def demo_seconds(out: Path) -> dict[str, float]:
    """The demo's own seconds per method (its demo.json), or {} when it wrote none."""
    try:
        return {m: r["seconds"] for m, r in json.loads((out / "demo.json").read_text()).items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return {}


def start_load(n: int) -> list[subprocess.Popen]:
    """``n`` busy-loop processes (one core each, pure Python: no threads of their own)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_load(processes: list[subprocess.Popen]) -> None:
    """End the busy loops this script started (by their own handles, never by name)."""
    for p in processes:
        p.kill()
    for p in processes:
        p.wait()


def summarise(runs: list[dict]) -> dict:
    """load -> variant -> {median, min, max, n} of the runs' seconds."""
    out: dict = {}
    for run in runs:
        out.setdefault(str(run["load"]), {}).setdefault(run["variant"], []).append(run["seconds"])
    return {load: {v: {"median": statistics.median(s), "min": min(s), "max": max(s), "n": len(s)}
                   for v, s in by_variant.items()} for load, by_variant in out.items()}


def markdown(result: dict) -> str:
    """The report: context, then a table of median / min / max seconds per variant and load."""
    lines = ["# `noisykd demo` wall time" + (" (QUICK: plumbing check, not a measurement)" if result["quick"] else ""),
             "", f"- command: `{result['command']}`", f"- CPU: {result['cpu']} ({result['cores']} cores)",
             f"- git commit: {result['git_commit']}; torch {result['torch']}; {result['date']}",
             f"- repetitions: {result['repeats']}; epochs: {result['epochs'] or 'the demo default'}; "
             f"settle before a loaded phase: {result['settle_s']} s",
             "- load N: N busy-loop processes running beside the demo; load avg: the 1-minute load average "
             "before each run (min-max)", ""]
    variants = result["variants"]
    lines += ["| load | variant | options | median s | min s | max s | runs | load avg before |",
              "|---|---|---|---|---|---|---|---|"]
    for load, by_variant in result["summary"].items():
        for v, s in by_variant.items():
            avgs = [r["loadavg_before"][0] for r in result["runs"] if str(r["load"]) == load and r["variant"] == v]
            lines.append(f"| {load} | {v} | `{' '.join(variants[v]) or '(none)'}` | {s['median']:.1f} | "
                         f"{s['min']:.1f} | {s['max']:.1f} | {s['n']} | {min(avgs):.2f}-{max(avgs):.2f} |")
    busy = [r for r in result["runs"] if r["load"] == 0 and r["loadavg_before"][0] > IDLE_LOAD]
    if busy:
        lines += ["", f"WARNING: {len(busy)} of the load-0 runs started with a 1-minute load average above "
                      f"{IDLE_LOAD} (the machine was not idle)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="runs per variant and load (default 3; --quick 1)")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated, of {', '.join(VARIANTS)} (default default,threads1,threads2)")
    parser.add_argument("--loads", default="0,2", help="comma-separated numbers of busy-loop processes (default 0,2)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per method for variants that set none (default: the demo's; --quick 2)")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds between starting a load and the first run under it (default 20; --quick 0)")
    parser.add_argument("--quick", action="store_true", help="1 repetition, 2 epochs: check the plumbing only")
    parser.add_argument("--out", default=None, help="output prefix (.json, .md); default "
                        "benchmarks/results/demo-time, with --quick /tmp/noisykd-demo-time-quick")
    parser.add_argument("--keep", action="store_true", help="keep the demo folders and logs (printed at the end)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else None)
    settle = args.settle if args.settle is not None else (0.0 if args.quick else 20.0)
    variants = (args.variants or "default,threads1,threads2").split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    try:
        loads = [int(x) for x in args.loads.split(",")]
    except ValueError:
        parser.error(f"--loads expects comma-separated integers, got {args.loads!r}")
    if repeats < 1 or any(n < 0 for n in loads):
        parser.error("--repeats must be >= 1 and every load >= 0")
    out = Path(args.out or ("/tmp/noisykd-demo-time-quick" if args.quick else ROOT / "benchmarks/results/demo-time"))
    check_options(variants)

    work = Path(tempfile.mkdtemp(prefix="noisykd-demo-time-"))
    runs = []
    for load in loads:
        busy = start_load(load)
        try:
            if busy:
                time.sleep(settle)
            for rep in range(repeats):
                for v in variants:
                    folder = work / f"load{load}-{v}-{rep}"
                    command = demo_command(folder / "demo", VARIANTS[v], epochs)
                    folder.mkdir()
                    run = {"variant": v, "load": load, "rep": rep, "command": shlex.join(command),
                           **time_demo(command, folder / "output.log"), "demo_seconds": demo_seconds(folder / "demo")}
                    runs.append(run)
                    print(f"load {load}  {v:<18} rep {rep}: {run['seconds']:.1f} s  (load avg before "
                          f"{run['loadavg_before'][0]:.2f})", flush=True)
        finally:
            stop_load(busy)

    import torch

    result = {"command": shlex.join([sys.executable, *sys.argv] if argv is None else ["demo_time.py", *argv]),
              "quick": args.quick, "cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
              "git_commit": git_commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "repeats": repeats, "epochs": epochs, "settle_s": settle, "loads": loads,
              "variants": {v: VARIANTS[v] for v in variants}, "runs": runs, "summary": summarise(runs)}
    json_path, md_path = Path(f"{out}.json"), Path(f"{out}.md")  # a dot in the prefix stays
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {md_path} and {json_path}")
    if args.keep:
        print(f"demo folders and logs kept in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
