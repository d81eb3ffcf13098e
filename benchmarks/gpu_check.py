"""The GPU check: what a machine with a GPU measures in one call (``benchmarks/gpu_check.sh`` runs this).

In one process, within ``--budget`` seconds, it writes ``benchmarks/results/gpu-check-<gpu>.json`` and ``.md``:

1. **Speed**: PreAct-ResNet-18 on the 50,000 CIFAR-10 training images, batch 128, through the engine: seconds
   per epoch of CE and BKD, fp32 and bf16, with and without channels_last and ``torch.compile`` (each timed on
   its second epoch, the first being the warm-up; the training loop only).
2. **Classic pipeline**, in the same process for the ratio: the per-image PIL DataLoader of the papers' code
   (``benchmarks/speed.py``'s ``Classic``), same network, fp32.
3. **Where the time goes**: ``torch.profiler`` over 30 CE bf16 steps, the top operators.
4. **Detection** on 50,000 samples: Otsu (BKD's rule) and the 2-component GMM, median of 3.
5. With what is left of the budget: a **shortened CIFAR-10N worst** run of CE, BKD and BKD with the authors'
   gradients (``reference_gradients``), the paper's schedule scaled to the epochs that fit, next to the paper.

``--smoke`` runs every step on a few hundred fake CIFAR images (the official formats) on the CPU, with small_cnn
and without compile: CI checks the plumbing, not the numbers.

    python benchmarks/gpu_check.py --data .data --budget 450           # on the GPU machine
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu-check         # anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import Classic, cpu_model  # noqa: E402  (the classic per-image pipeline)

from noisykd.config import load_config, read_config_file  # noqa: E402
from noisykd.data.fixtures import write_cifar10_with_cifar10n  # noqa: E402
from noisykd.detect import find_label_issues  # noqa: E402
from noisykd.engine import Trainer, prepare_data  # noqa: E402
from noisykd.methods import Batch, Progress, Views  # noqa: E402
from noisykd.reproduce import Setting, run_seeds, summarize  # noqa: E402

PAPER_CONFIG = "bkd/cifar10n-worst"  # PreAct-ResNet-18, SGD 0.02, batch 128, weak augmentation: BKD Sec. 5.1
# (method, amp, channels_last, compile), in the order they run: the fast ones first, compile last
SPEED_GRID = [("ce", "none", False, False), ("ce", "bf16", False, False), ("ce", "bf16", True, False),
              ("bkd", "none", False, False), ("bkd", "bf16", True, False),
              ("ce", "bf16", True, True), ("bkd", "bf16", True, True)]
TARGET_CE_S_PER_EPOCH, TARGET_BKD_OVER_CE = 1.5, 2.2  # the issue's targets on an H100/H200


class Clock:
    """Seconds since the start; ``left()`` of the budget."""

    def __init__(self, budget: float):
        self.start, self.budget = time.perf_counter(), budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


def say(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------------
# data

def find_data(args, work: Path) -> Path:
    """A folder with ``cifar-10-batches-py/`` and ``CIFAR-10_human.pt``: fake ones for ``--smoke``; else built
    from ``--data`` (which holds ``cifar10/build_cifar10.py`` and its tarball, or the batches, and the CIFAR-N file
    directly or under ``cifar-n/``)."""
    if args.smoke:
        return write_cifar10_with_cifar10n(work / "fake-cifar", per_batch=60)
    data = Path(args.data)
    root = work / "cifar"
    root.mkdir(parents=True, exist_ok=True)
    if (data / "cifar-10-batches-py").is_dir():
        (root / "cifar-10-batches-py").symlink_to((data / "cifar-10-batches-py").resolve())
    else:
        script = data / "cifar10" / "build_cifar10.py"
        if not script.is_file():
            raise SystemExit(f"error: {data} has neither cifar-10-batches-py/ nor cifar10/build_cifar10.py")
        start = time.perf_counter()
        subprocess.run([sys.executable, str(script), str(root)], check=True, stdout=subprocess.DEVNULL)
        say(f"built CIFAR-10 batches in {time.perf_counter() - start:.0f} s")
    human = next((p for p in (data / "CIFAR-10_human.pt", data / "cifar-n" / "CIFAR-10_human.pt") if p.is_file()), None)
    if human is None:
        raise SystemExit(f"error: no CIFAR-10_human.pt in {data} or {data / 'cifar-n'}")
    (root / "CIFAR-10_human.pt").symlink_to(human.resolve())
    return root


def base_config(args, root: Path, work: Path, **changes) -> dict:
    """The paper's BKD setting on this data, as plain data; ``changes`` are dotted keys."""
    data = read_config_file(PAPER_CONFIG)
    data["data"].update(spec=f"cifar10:{root}", labels=f"cifar10n:{root}/CIFAR-10_human.pt:worst")
    data.update(device=args.device, out_dir=str(work / "run"))
    if args.smoke:
        data["model"] = {"name": "small_cnn"}
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    if data["method"] != "bkd":  # the config's method_args are BKD's
        data["method_args"] = {}
    if data["optim"]["epochs"] < 150:  # shorter than the paper's: no lr step inside these few epochs
        data["optim"]["milestones"] = [m for m in data["optim"].get("milestones", []) if m <= data["optim"]["epochs"]]
    return data


# ------------------------------------------------------------------------------------------------------------
# 1. speed through the engine

def time_engine(args, root: Path, work: Path, prepared, method: str, amp: str, channels_last: bool,
                compile_: bool, warmup_steps: int = 20) -> dict:
    """Seconds of one whole training epoch through the engine, after ``warmup_steps`` untimed steps (cuDNN's
    choices, the allocator, compilation)."""
    folder = work / f"speed-{method}-{amp}-{int(channels_last)}-{int(compile_)}"
    cfg = load_config(base=base_config(args, root, work, method=method, amp=amp, channels_last=channels_last,
                                       compile=compile_, out_dir=str(folder), eval_every=1000,
                                       **{"optim.epochs": 2, "data.val_fraction": 0.0}))
    trainer = Trainer(cfg, data=prepared, progress=False)
    trainer.build()
    folder.mkdir(parents=True, exist_ok=True)
    sync(trainer.device)
    start = time.perf_counter()
    for _ in run_steps(trainer, warmup_steps):
        pass
    sync(trainer.device)
    warmup = time.perf_counter() - start
    trainer.train_epoch(0)
    row = trainer.history[-1]
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"method": method, "amp": amp, "channels_last": channels_last, "compile": compile_,
            "s_per_epoch": row["epoch_time_s"], "img_per_s": row["img_per_s"], "warmup_steps": warmup_steps,
            "warmup_s": warmup}


def run_steps(trainer: Trainer, steps: int):
    """``steps`` training steps outside the engine's epoch loop (warm-up, profiling); yields each step's
    augmentation time in seconds."""
    order = torch.randperm(len(trainer.feed), generator=torch.Generator().manual_seed(0))
    batches = trainer.feed.batches(order, trainer.config.optim.batch_size, fold_lone_last=True)
    for i, (images, labels, indices) in zip(range(steps), batches):
        start = time.perf_counter()
        views = Views({name: pipe(images, trainer.gen_augment) for name, pipe in trainer.view_pipelines.items()})
        sync(trainer.device)
        augment_s = time.perf_counter() - start
        trainer.step_fn(trainer.method, Batch(indices, labels, views, Progress(0, i, i, trainer.steps_per_epoch, 1)))
        yield augment_s


def time_classic(args, prepared, device: torch.device) -> dict:
    """The classic pipeline (per-image PIL in DataLoader workers), same network, fp32: second epoch."""
    from noisykd.models import create_model

    model = create_model("small_cnn" if args.smoke else "preact_resnet18", num_classes=10).to(device)
    norm = prepared.normalization
    workers = 0 if args.smoke else min(16, os.cpu_count() or 1)
    classic = Classic(prepared.dataset.__class__(prepared.dataset.name, prepared.dataset.classes, prepared.train),
                      norm.mean, norm.std, model, device, 128, workers)
    times = []
    for _ in range(2):
        sync(device)
        start = time.perf_counter()
        seen = classic.train_epoch()
        sync(device)
        times.append(time.perf_counter() - start)
    return {"workers": workers, "s_per_epoch": times[-1], "img_per_s": seen / times[-1], "warmup_epoch_s": times[0]}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------------------
# 3. where the time goes

def profile_steps(args, root: Path, work: Path, prepared, steps: int = 30) -> dict:
    """torch.profiler over ``steps`` CE bf16 channels_last steps (after 10 unprofiled ones): top operators by
    device time (CPU time on a CPU), and the share of the step spent augmenting."""
    from torch.profiler import ProfilerActivity, profile

    cfg = load_config(base=base_config(args, root, work, method="ce", amp="bf16", channels_last=True,
                                       out_dir=str(work / "profile"), **{"optim.epochs": 1}))
    trainer = Trainer(cfg, data=prepared, progress=False)
    trainer.build()
    warmup = min(10, trainer.steps_per_epoch - 1)
    profiled = min(steps, trainer.steps_per_epoch - warmup)
    steps_iter = run_steps(trainer, warmup + profiled)
    for _ in range(warmup):
        next(steps_iter)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    sync(trainer.device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        augment = sum(steps_iter)
        sync(trainer.device)
    total = time.perf_counter() - start
    key = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=12)
    return {"steps": profiled, "seconds": total, "augment_share": augment / total, "sort_key": key, "table": table}


# ------------------------------------------------------------------------------------------------------------
# 4. detection

def time_detection(n: int = 50_000) -> dict:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    scores = np.clip(np.where(rng.random(n) < 0.4, rng.beta(1, 6, n), rng.beta(6, 1, n)), 0, 1)
    out = {"n": n}
    for method in ("otsu_mu1", "gmm"):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            find_label_issues(labels, scores=scores, method=method)
            times.append(time.perf_counter() - start)
        out[f"{method}_s"] = statistics.median(times)
    return out


# ------------------------------------------------------------------------------------------------------------
# 5. the shortened CIFAR-10N worst run

def shortened_run(args, root: Path, work: Path, epochs: int, device_options: dict) -> dict:
    """CE, BKD and BKD with the authors' gradients on CIFAR-10N worst, the paper's setting scaled to ``epochs``
    (same network, optimiser and augmentation for the three; CE is the teacher's loss of BKD's stage 1)."""
    results = {}
    for label, method, method_args in (("ce", "ce", {}), ("bkd", "bkd", {}),
                                       ("bkd_ref", "bkd", {"reference_gradients": True})):
        data = base_config(args, root, work, method=method, **device_options, **{"optim.epochs": epochs})
        data["method_args"] = {**data["method_args"], **method_args}
        data["optim"]["milestones"] = [max(1, epochs // 2)]  # the paper's step at half the run
        config = load_config(base=data)
        setting = Setting(f"cifar10n-worst-{label}", config.to_dict(), changes=(f"{epochs} of 300 epochs",))
        (run,) = run_seeds(setting, [0], work / "short", on_seed=lambda s, seed, state: say(f"{s.name} ({state})"))
        s = run.summary
        split = (s.get("method_summary") or {}).get("split") or {}
        results[label] = {**{k: v for k, v in summarize([run]).items() if k != "seeds"},
                          "fitting_epoch": split.get("fitting_epoch"), "seconds": run.seconds}
    return results


# ------------------------------------------------------------------------------------------------------------

def environment(device: torch.device) -> dict:
    env = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": "python " + " ".join(sys.argv),
           "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model(),
           "cpu_count": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def markdown(result: dict) -> str:
    env = result["environment"]
    where = env.get("gpu") or f"CPU ({env['cpu']})"
    lines = [f"# GPU check: {where}{' (SMOKE: fake data, small_cnn, plumbing only)' if result['smoke'] else ''}", "",
             f"Command: `{env['command']}`", "",
             f"{env['date']}; torch {env['torch']}; {env['cpu_count']} CPU cores; total {result['seconds']:.0f} s "
             f"of a {result['budget']:.0f} s budget.", ""]
    speed = result.get("speed") or []
    if speed:
        network = "small_cnn" if result["smoke"] else "PreAct-ResNet-18"
        lines += [f"## Training speed: {network}, {result['train_images']:,} images, batch 128, one epoch after "
                  f"{speed[0]['warmup_steps']} warm-up steps", "",
                  "| method | precision | channels_last | compile | s/epoch | img/s | warm-up s |",
                  "|---|---|---|---|---|---|---|"]
        for r in speed:
            lines.append(f"| {r['method']} | {r['amp']} | {'yes' if r['channels_last'] else 'no'} | "
                         f"{'yes' if r['compile'] else 'no'} | {r['s_per_epoch']:.2f} | {r['img_per_s']:,.0f} | "
                         f"{r['warmup_s']:.1f} |")
        if result.get("classic"):
            c = result["classic"]
            ours = next((r for r in speed if (r["method"], r["amp"], r["channels_last"], r["compile"])
                         == ("ce", "none", False, False)), None)
            lines += ["", f"Classic per-image DataLoader ({c['workers']} workers), CE fp32: {c['s_per_epoch']:.2f} "
                          f"s/epoch ({c['img_per_s']:,.0f} img/s)" +
                      (f"; ours, CE fp32, is {c['s_per_epoch'] / ours['s_per_epoch']:.2f}x faster." if ours else ".")]
        for verdict in result.get("targets", []):
            lines.append(f"- {verdict}")
        lines.append("")
    if result.get("profile"):
        p = result["profile"]
        lines += ["## Where a CE bf16 step spends its time", "",
                  f"{p['steps']} steps profiled in {p['seconds']:.2f} s; augmentation took {100 * p['augment_share']:.1f}% "
                  f"of the wall time. Top operators by {p['sort_key']}:", "", "```", p["table"].rstrip(), "```", ""]
    if result.get("detection"):
        d = result["detection"]
        lines += [f"## Detection on {d['n']:,} samples", "",
                  f"Otsu (mu1): {d['otsu_mu1_s']:.3f} s; 2-component GMM: {d['gmm_s']:.3f} s (median of 3).", ""]
    if result.get("shortened"):
        sr = result["shortened"]
        lines += [f"## CIFAR-10N worst, {result['shortened_epochs']} epochs (the paper's 300 scaled down: not "
                  "the paper's setting)", "",
                  "| method | last | best (oracle) | detection F1 | Pr | Re | fitting epoch | s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in sr.items():
            lines.append(f"| {name} | {_pct(r['test_last'])} | {_pct(r['test_oracle'])} | {_pct(r['f1'])} | "
                         f"{_pct(r['precision'])} | {_pct(r['recall'])} | {r['fitting_epoch'] or '-'} | "
                         f"{r['seconds']:.0f} |")
        lines += ["", "Paper (300 epochs, >= 5 seeds): BKD 86.64%, CE 77.69% (Table 1); BKD detection F1 77.8 / "
                      "Pr 95.8 / Re 65.5 (Table 2, P_A with mu1). CIFAR-10 here is decoded from a JPEG copy "
                      "(0.5-2 points below the originals).", ""]
    for note in result.get("skipped", []):
        lines.append(f"- skipped: {note}")
    for error in result.get("errors", []):
        lines.append(f"- FAILED: {error}")
    return "\n".join(lines) + "\n"


def _pct(stat) -> str:
    return "-" if not stat or stat.get("mean") is None else f"{stat['mean']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=".data", help="folder with cifar10/ (build script + tarball) and cifar-n/")
    parser.add_argument("--smoke", action="store_true", help="fake data, small_cnn, CPU: the plumbing only")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all the measurements")
    parser.add_argument("--device", default=None, help="default: cuda when available (cpu with --smoke)")
    parser.add_argument("--out", default=None, help="results folder (default: benchmarks/results; a temporary "
                                                    "folder with --smoke)")
    args = parser.parse_args()
    args.device = args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    device = torch.device(args.device)
    clock = Clock(args.budget)
    result: dict = {"environment": environment(device), "smoke": args.smoke, "budget": args.budget, "skipped": [],
                    "errors": [], "seconds": 0.0}
    name = "gpu-check-" + _slug(result["environment"].get("gpu") or "cpu") + ("-smoke" if args.smoke else "")
    with tempfile.TemporaryDirectory(prefix="noisykd-gpu-check-") as tmp:
        work = Path(tmp)
        out = Path(args.out or (work / "results" if args.smoke else "benchmarks/results"))

        def save() -> None:
            """Write the results so far: a GPU lease is short, and a step that fails or runs out of time must
            not take the others' numbers with it."""
            result["seconds"] = clock.elapsed()
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
            (out / f"{name}.md").write_text(markdown(result))

        def step(label: str, fn, *fn_args):
            say(label)
            try:
                value = fn(*fn_args)
            except Exception as exc:  # record and go on with the next measurement
                result["errors"].append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                say(f"    failed: {result['errors'][-1]}")
                value = None
            save()
            return value

        root = find_data(args, work)
        prepared = prepare_data(load_config(base=base_config(args, root, work)).data)
        result["train_images"] = len(prepared.train)
        grid = [g for g in SPEED_GRID if not (args.smoke and g[3])]  # compile on a CPU only slows CI down
        if args.smoke:
            result["skipped"].append("torch.compile variants (--smoke)")
        result["speed"] = []
        for method, amp, channels_last, compile_ in grid:
            if clock.left() < 0.45 * args.budget and compile_:
                result["skipped"].append(f"{method} {amp} channels_last compile: budget")
                continue
            timing = step(f"speed: {method} {amp} channels_last={channels_last} compile={compile_}", time_engine,
                          args, root, work, prepared, method, amp, channels_last, compile_)
            if timing is not None:
                result["speed"].append(timing)
                say(f"    {timing['s_per_epoch']:.2f} s/epoch")
        result["classic"] = step("classic DataLoader pipeline", time_classic, args, prepared, device)
        result["targets"] = target_verdicts(result["speed"]) if device.type == "cuda" else [
            "targets (CE < 1.5 s/epoch, BKD < 2.2x CE) apply to an H100/H200, not judged here"]
        result["profile"] = step("profiler", profile_steps, args, root, work, prepared)
        result["detection"] = step("detection", time_detection, 2_000 if args.smoke else 50_000)
        epochs = shortened_epochs(result["speed"], clock.left(), args.smoke)
        if epochs >= 2:
            fast = {"amp": "bf16", "channels_last": True} if device.type == "cuda" else {}
            result["shortened_epochs"] = epochs
            result["shortened"] = step(f"CIFAR-10N worst: CE, BKD, BKD (authors' gradients), {epochs} epochs each",
                                       shortened_run, args, root, work, epochs, fast)
        else:
            result["skipped"].append(f"the CIFAR-10N worst run: {clock.left():.0f} s left")
        save()
        print(markdown(result))
        say(f"wrote {out / name}.md and .json ({result['seconds']:.0f} s)")
        if result["errors"]:
            raise SystemExit(f"{len(result['errors'])} step(s) failed: " + "; ".join(result["errors"]))


def target_verdicts(speed: list[dict]) -> list[str]:
    """The issue's targets: CE under 1.5 s/epoch at batch 128 on an H100/H200, BKD under 2.2x CE."""
    def best(method):
        rows = [r for r in speed if r["method"] == method]
        return min(rows, key=lambda r: r["s_per_epoch"]) if rows else None

    ce, bkd = best("ce"), best("bkd")
    out = []
    if ce:
        out.append(f"CE, fastest variant ({ce['amp']}, channels_last {ce['channels_last']}, compile {ce['compile']}): "
                   f"{ce['s_per_epoch']:.2f} s/epoch; target < {TARGET_CE_S_PER_EPOCH} s: "
                   f"{'met' if ce['s_per_epoch'] < TARGET_CE_S_PER_EPOCH else 'not met'}")
    if ce and bkd:
        ratio = bkd["s_per_epoch"] / ce["s_per_epoch"]
        out.append(f"BKD / CE (fastest of each): {ratio:.2f}x; target < {TARGET_BKD_OVER_CE}x: "
                   f"{'met' if ratio < TARGET_BKD_OVER_CE else 'not met'}")
    return out


def shortened_epochs(speed: list[dict], seconds_left: float, smoke: bool) -> int:
    """How many epochs of CE + BKD + BKD-ref fit in what is left (a tenth kept for evaluation and writing)."""
    if smoke:
        return 2
    fastest = {m: min((r["s_per_epoch"] for r in speed if r["method"] == m and not r["compile"]), default=None)
               for m in ("ce", "bkd")}
    if None in fastest.values():
        return 0
    per_epoch = fastest["ce"] + 2 * fastest["bkd"] + 3 * 1.0  # + about a second of evaluation per run and epoch
    return int(min(100, 0.8 * seconds_left / per_epoch))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


if __name__ == "__main__":
    main()
