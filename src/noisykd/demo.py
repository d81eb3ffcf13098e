"""``noisykd demo``: the main job on built-in data, in about a minute on an idle 2-core CPU.

scikit-learn's 8x8 digits with 40% symmetric label noise (10% of the noisy training set held out as noisy
validation, the CIFAR-N protocol); plain cross-entropy against BKD (with the paper's and with the authors'
code's gradients);
a table of test accuracy at the last epoch, at the best noisy-validation epoch and (oracle) the best test
epoch, the share of wrong labels each model ends up fitting, and the F1 of its wrong-label detection (BKD's
own P_A < mu1 rule; for the others DivideMix's GMM on the final loss), and a plot of the test accuracy per
epoch, which shows CE memorising the wrong labels.

On a terminal it shows a live bar per method; with its output in a file or a pipe (nohup, CI) it prints plain
lines instead: each method's start and end, and up to 10 epoch lines per method with the whole demo's elapsed
time and ETA. ``threads``, ``device`` and config overrides apply to every run, and every setting and run folder
is checked before anything trains.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from .config import RunConfig, from_dict, load_config, load_yaml
from .engine import Trainer
from .engine.progress import eta_seconds, format_duration, lines_every, timing_text
from .engine.resume import config_fingerprint
from .engine.runfolder import RunFolder
from .engine.trainer import resolve_device
from .errors import ConfigError, OutputError
from .logs import silenced

# name shown -> (method, method_args): CE, then the methods it is compared with. BKD runs twice: with the
# paper's stop-gradients (the default) and with the authors' code's gradients, which differ markedly here.
# GCE, the fourth run until issue 26, was left out to keep the demo near a minute on an idle 2-core machine
# (benchmarks/results/demo-time.md); `noisykd reproduce digits` compares every method.
DEMO_METHODS: dict[str, tuple[str, dict]] = {
    "ce": ("ce", {}),
    "bkd": ("bkd", {}),
    "bkd_ref": ("bkd", {"reference_gradients": True}),
}


#: The demo's setting: configs/digits/sym40.yaml (digits, 40% symmetric noise, small_cnn, cosine lr 0.05).
DEMO_CONFIG = "digits/sym40"
#: Epochs of each demo run: long enough for CE to memorise every wrong label (configs/digits/sym40.yaml).
DEMO_EPOCHS = 60
#: At most this many epoch lines per method when the console is not a terminal (a log file, a pipe).
DEMO_EPOCH_LINES = 10
#: Keys the demo sets for each of its runs; an override of them would make the runs alike or mix their folders.
DEMO_OWN_KEYS = ("method", "method_args", "out_dir")


def demo_config(method: str, method_args: dict, out_dir: Path, epochs: int = DEMO_EPOCHS, seed: int = 0,
                threads: int | None = None, device: str | None = None,
                overrides: Sequence[str] = ()) -> RunConfig:
    """The resolved, validated config of one demo run: :data:`DEMO_CONFIG` with this method, folder, epochs,
    seed, threads (None: torch's default) and device (None: the config's), then ``overrides`` (``key=value``
    as ``--set``). Raises ConfigError naming a bad value."""
    updates = {"method": method, "method_args": method_args, "seed": seed, "out_dir": str(out_dir),
               "threads": threads, "optim": {"epochs": epochs}}
    if device is not None:
        updates["device"] = device
    return load_config(DEMO_CONFIG, overrides=list(overrides), updates=updates)


def demo_configs(out: Path, epochs: int = DEMO_EPOCHS, seed: int = 0, threads: int | None = None,
                 device: str | None = None, overrides: Sequence[str] = ()) -> dict[str, RunConfig]:
    """The config of every demo run (name in :data:`DEMO_METHODS` -> config, run folder ``out/<name>``), all
    resolved before anything trains. Raises ConfigError for a bad override or value, for an override of a key
    the demo sets itself (:data:`DEMO_OWN_KEYS`) and for a device this machine lacks."""
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"overrides must be a list of key=value strings (as --set), got {overrides!r}")
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.split(".")[0] in DEMO_OWN_KEYS:
            raise ConfigError(f"--set {item}: the demo sets {', '.join(DEMO_OWN_KEYS)} itself for each of its runs; "
                              "override other keys (e.g. optim.batch_size=128)")
    configs = {name: demo_config(method, args, Path(out) / name, epochs, seed, threads, device, overrides)
               for name, (method, args) in DEMO_METHODS.items()}
    for config in configs.values():
        resolve_device(config.device)  # a GPU this machine lacks: said now, not when the first run starts
    return configs


def free_cores(sample_s: float = 0.25) -> int | None:
    """How many of the machine's cores were idle over the last ``sample_s`` seconds: the idle share of all CPU
    time in Linux's ``/proc/stat`` (idle + iowait) times the core count, rounded. None where it cannot be read
    (another system)."""

    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return values[3] + values[4], sum(values)

    try:
        idle0, total0 = snapshot()
        time.sleep(sample_s)
        idle1, total1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return round((os.cpu_count() or 1) * (idle1 - idle0) / (total1 - total0))


def demo_threads(free: int | None = None) -> int | None:
    """The demo's torch threads when none are given: torch's default (None: every core) when the cores are free,
    else the free ones, at least one (``free``: :func:`free_cores` measured now unless given). Under load, one
    thread per run is far faster than torch's default: measured (benchmarks/results/demo-time-fixed-threads.md,
    2-core AMD EPYC, medians of 3), idle, 2 threads 60.7 s and 1 thread 74.1 s; beside two busy processes,
    389.4 s and 151.5 s (torch's threads wait for each other on a shared core)."""
    free = free_cores() if free is None else free
    cores = os.cpu_count() or 1
    if free is None or free >= cores:
        return None
    return max(1, free)


def reusable_state(config: RunConfig) -> str:
    """What the demo does with the run folder of ``config``: ``new`` or ``restartable`` (train from the start),
    ``resumable`` (continue) or ``finished`` (reuse: its outputs are recomputed, nothing trains).

    Raises OutputError, before anything trains, when the folder holds a demo run made with other settings (naming
    each that differs and the option that would reuse it) or files that are not a run's.
    """
    folder = RunFolder(Path(config.out_dir))
    state = folder.state()
    if state == "foreign":
        raise OutputError(f"{folder.path} is not empty and holds no demo run (it holds "
                          f"{', '.join(folder.foreign_entries()[:5])}); choose another --out")
    if state not in ("resumable", "finished"):
        return state
    try:
        saved = from_dict(load_yaml((folder.path / "config.yaml").read_text()))
    except (OSError, ConfigError, yaml.YAMLError, UnicodeDecodeError):
        return state  # no readable config.yaml: the trainer's own checks of the checkpoint speak
    old, new = config_fingerprint(saved.to_dict()), config_fingerprint(config)
    differ = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if differ:
        shown = "; ".join(f"{k} {old.get(k)!r} there, {new.get(k)!r} now" for k in differ[:6])
        more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
        again = " ".join(_option_for(k, old.get(k)) for k in differ[:6])
        raise OutputError(f"{folder.path} holds a demo run made with other settings: {shown}{more}; to reuse or "
                          f"continue it run the demo with {again}, or choose another --out")
    return state


def _option_for(key: str, value) -> str:
    """The demo's command-line option that sets ``key`` (a flattened config key) to ``value``."""
    if key == "optim.epochs":
        return f"--epochs {value}"
    if key == "seed":
        return f"--seed {value}"
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    return f"--set {key}={text}"


def run_demo(out: Path, epochs: int | None = None, seed: int = 0, threads: int | None = None,
             device: str | None = None, overrides: Sequence[str] = (), console: Console | None = None) -> dict:
    """Train every demo method, print the comparison, write ``demo.json``, ``demo.md`` and ``demo.png``.

    out: the demo's folder (one run folder per method inside); a second demo into it continues unfinished runs
         and reuses finished ones. epochs: per method (None: :data:`DEMO_EPOCHS`); threads: torch's CPU threads
         (None: :func:`demo_threads` chooses); device: None keeps the config's; overrides: ``key=value`` config overrides
         (as ``--set``) applied to every run. Every setting is checked, and every run folder against them,
         before anything is written or trained (ConfigError, OutputError).
    Shows live bars on a terminal; elsewhere (a file, a pipe) a line as each method starts and ends and at most
    :data:`DEMO_EPOCH_LINES` epoch lines per method with the demo's elapsed time and ETA.
    Returns name -> {"summary", "history", "seconds"}.
    """
    console = console or Console(markup=False)  # paths print as they are, never as markup
    out = Path(out)
    chosen = threads is None  # then measured now: fewer threads when other work holds cores
    threads = demo_threads() if chosen else threads
    configs = demo_configs(out, DEMO_EPOCHS if epochs is None else epochs, seed, threads, device, overrides)
    states = {name: reusable_state(cfg) for name, cfg in configs.items()}
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(configs.values()))
    console.print(Text.assemble(("noisykd demo", "bold"), f": {setting_text(first)}, "
                                f"{first.optim.epochs} epochs per method, {_threads_text(first.threads)}"
                                f"{' (other work holds cores)' if chosen and first.threads is not None else ''}, device "
                                f"{first.device}, outputs in {out}"), soft_wrap=True)
    live = console.is_terminal or console.is_jupyter
    results = {}
    with (_Bars if live else _Lines)(console, {name: cfg.optim.epochs for name, cfg in configs.items()},
                                     {name: state == "finished" for name, state in states.items()}) as show:
        for name, cfg in configs.items():
            start = time.perf_counter()
            show.started(name, states[name], Path(cfg.out_dir))

            def epoch_done(trainer, epoch, step, name=name):
                if step == trainer.steps_per_epoch - 1:
                    show.epoch_done(name, epoch)

            with silenced():
                result = Trainer(cfg, progress=False, on_step=epoch_done).run(
                    resume=states[name] in ("resumable", "finished"))  # a second demo continues or reuses
            results[name] = {"summary": result.summary, "history": result.history,
                             "seconds": time.perf_counter() - start}
            show.finished(name, result.summary, results[name]["seconds"])
    table = comparison_table(results, setting_text(first))
    console.print(table)
    _write_outputs(results, out, setting_text(first))
    console.print("bkd: the paper's stop-gradients (default); bkd_ref: the authors' code's gradients "
                  "(method_args.reference_gradients=true)")
    console.print(f"plots: {out / 'demo.png'}; per-run outputs in {out}/<method>/ (BKD's histogram of P_A with "
                  f"Otsu's thresholds: {out / 'bkd' / 'bkd_agreement_histogram.png'})")
    return results


def _threads_text(threads: int | None) -> str:
    import torch

    return f"torch threads {threads}" if threads is not None else \
        f"torch threads {torch.get_num_threads()} (torch's default)"


def _result_text(summary: dict) -> str:
    """``last 68.52%   best 84.81%``: test accuracy at the last epoch and at the best (oracle) one."""
    return f"last {100 * summary['last']['test_acc']:.2f}%   best {100 * summary['best_test_oracle']['test_acc']:.2f}%"


class _Bars:
    """On a terminal: a live bar per method (its epochs, then its result and seconds)."""

    def __init__(self, console: Console, epochs: dict[str, int], finished: dict[str, bool]):
        self.epochs = epochs
        self.bars = Progress(TextColumn("  {task.description:<8}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("epochs"), TextColumn("{task.fields[result]}", markup=False), console=console)
        self.tasks = {name: self.bars.add_task(name, total=n, result="", start=False) for name, n in epochs.items()}

    def __enter__(self) -> "_Bars":
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def started(self, name: str, state: str, run_dir: Path) -> None:
        self.bars.start_task(self.tasks[name])

    def epoch_done(self, name: str, epoch: int) -> None:
        """``epoch`` (0-based) of run ``name`` has trained."""
        self.bars.update(self.tasks[name], completed=epoch + 1)

    def finished(self, name: str, summary: dict, seconds: float) -> None:
        self.bars.stop_task(self.tasks[name])
        self.bars.update(self.tasks[name], completed=self.epochs[name],
                         result=f"{_result_text(summary)}   ({seconds:.1f} s)")


class _Lines:
    """Not a terminal (a log file, a pipe, CI): rich's live bars would show nothing until the end, so plain
    lines instead: one as each method starts and ends, and every k-th epoch (at most :data:`DEMO_EPOCH_LINES`
    per method) the whole demo's elapsed time and ETA: the mean time of the epochs trained so far in this demo
    (data loading and each run's outputs included) times the epochs left in all its runs."""

    def __init__(self, console: Console, epochs: dict[str, int], finished: dict[str, bool]):
        self.console, self.epochs = console, epochs
        self.index = {name: i + 1 for i, name in enumerate(epochs)}
        #: epochs each run has left (a resumed run's count is known once it reports its first epoch)
        self.left = {name: 0 if finished[name] else n for name, n in epochs.items()}
        self.trained = 0

    def __enter__(self) -> "_Lines":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        pass

    def say(self, name: str, text: str) -> None:
        self.console.print(f"[{self.index[name]}/{len(self.epochs)}] {name}: {text}", markup=False, highlight=False,
                           soft_wrap=True)

    def started(self, name: str, state: str, run_dir: Path) -> None:
        what = {"resumable": f"resuming the run in {run_dir}", "finished": f"reusing the finished run in {run_dir}"}
        self.say(name, f"{what.get(state, f'training into {run_dir}')} ({self.epochs[name]} epochs)")

    def epoch_done(self, name: str, epoch: int) -> None:
        """``epoch`` (0-based) of run ``name`` has trained: a line every k-th epoch and at the last."""
        self.trained += 1
        total = self.epochs[name]
        self.left[name] = max(0, total - (epoch + 1))
        if (epoch + 1) % lines_every(total, DEMO_EPOCH_LINES) == 0 or epoch + 1 == total:
            elapsed = time.perf_counter() - self.start
            eta = eta_seconds(elapsed, self.trained, self.trained + sum(self.left.values()))
            self.say(name, f"epoch {epoch + 1:>3}/{total}   demo: {timing_text(elapsed, eta)}")

    def finished(self, name: str, summary: dict, seconds: float) -> None:
        self.left[name] = 0  # an early stop leaves none either
        self.say(name, f"done in {seconds:.1f} s (demo elapsed {format_duration(time.perf_counter() - self.start)}): "
                       f"test accuracy {_result_text(summary)}")


#: How the shipped demo setting is named in the table and the plot.
DEMO_SETTING = "8x8 digits, 40% symmetric label noise"


def setting_text(config: RunConfig) -> str:
    """The data and noise of a demo run in words: :data:`DEMO_SETTING` for the shipped ones, else the data spec
    and noise spec as given (an override of ``data.*`` is named as it is)."""
    if (config.data.spec, config.data.noise) == ("digits", "sym:0.4"):
        return DEMO_SETTING
    return f"{config.data.spec}, label noise {config.data.noise}"


def comparison_table(results: dict, setting: str = DEMO_SETTING) -> Table:
    """The demo's table: per method, test accuracy (last, best noisy-val, oracle), wrong labels fitted, detection."""
    table = Table("method", "last", "best val", "oracle", "fits\nwrong", "F1", "Pr", "Re",
                  title=f"{setting}: test accuracy (last, best noisy-val, best test) | wrong labels fitted | detection")
    for method, r in results.items():
        s = r["summary"]
        d = s.get("detection") or {}
        table.add_row(method, _pct(s["last"]["test_acc"]), _pct((s.get("best_noisy_val") or {}).get("test_acc")),
                      _pct(s["best_test_oracle"]["test_acc"]), _pct(r["history"][-1].get("train_fit_wrong_labels")),
                      _pct(d.get("f1")), _pct(d.get("precision")), _pct(d.get("recall")))
    table.caption = ("best val: epoch of best noisy-validation accuracy; detection: BKD's own rule (P_A < mu1), "
                     "for the others a 2-component GMM on the final loss")
    return table


def _write_outputs(results: dict, out: Path, setting: str = DEMO_SETTING) -> None:
    """``demo.json`` (summaries, seconds, test accuracy per epoch), ``demo.md`` (the table) and ``demo.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compact = {m: {"summary": r["summary"], "seconds": r["seconds"],
                   "test_acc": [row["test_acc"] for row in r["history"]]} for m, r in results.items()}
    (out / "demo.json").write_text(json.dumps(compact, indent=2, default=str))
    lines = ["| method | test acc (last) | test acc (best noisy val) | test acc (best, oracle) | "
             "wrong labels fitted | detection F1 (Pr / Re) |", "|---|---|---|---|---|---|"]
    for m, r in results.items():
        s = r["summary"]
        d = s.get("detection") or {}
        lines.append(f"| {m} | {_pct(s['last']['test_acc'])} | "
                     f"{_pct((s.get('best_noisy_val') or {}).get('test_acc'))} | "
                     f"{_pct(s['best_test_oracle']['test_acc'])} | "
                     f"{_pct(r['history'][-1].get('train_fit_wrong_labels'))} | {_pct(d.get('f1'))} "
                     f"({_pct(d.get('precision'))} / {_pct(d.get('recall'))}) |")
    (out / "demo.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    for m, r in results.items():
        ax.plot([row["epoch"] for row in r["history"]], [row["test_acc"] for row in r["history"]], label=m)
    ax.set_xlabel("epoch"), ax.set_ylabel("test accuracy"), ax.grid(alpha=0.3), ax.legend()
    ax.set_title(setting)
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=110)
    plt.close(fig)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
