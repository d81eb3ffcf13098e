"""Settings run over seeds, summarised as mean ± std, next to the paper's numbers when there are some.

``noisykd reproduce NAME...`` runs shipped configs (``configs/``, each with the paper's ``expected`` numbers);
``noisykd compare --methods ce,gce,bkd`` runs methods on the user's own data; the benchmark scripts use the
same pieces (:func:`run_seeds`, :func:`summarize`). Each seed is a run folder ``OUT/NAME/seed-S``: a finished
one is reused, an unfinished one resumed, so a second call continues where the first stopped.

Example::

    from noisykd.reproduce import Setting, run_seeds, summarize
    setting = Setting.from_config("bkd/cifar10n-worst", epochs_scale=0.1)
    runs = run_seeds(setting, seeds=[0, 1, 2], out_root="runs/reproduce")
    summarize(runs)["test_last"]      # {"mean": ..., "std": ..., "n": 3}
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import (PaperResult, RunConfig, apply_overrides, data_spec_of, describe_rebase, from_dict, load_config,
                     load_yaml, read_config_file, read_config_for)
from .engine.runfolder import RunFolder
from .errors import ConfigError

log = logging.getLogger("noisykd.reproduce")

#: What ``--smoke`` changes: the plumbing of a setting in seconds, not its number.
SMOKE = {"data.train_subset": 300, "data.test_subset": 500, "model.name": "small_cnn", "optim.epochs": 2,
         "eval_every": 1}
#: The per-seed numbers a summary reports, in the order of its table: summary.json path -> name.
SELECTIONS = ("test_last", "test_best_noisy_val", "test_oracle")
DETECTION = ("f1", "precision", "recall", "auroc")


@dataclass(frozen=True)
class Setting:
    """One thing to run over seeds: a name (a shipped config's, or a method spec's), the resolved config as
    plain data, the paper's numbers (or None), and how it was changed from the paper's (``changes``: e.g.
    ``"epochs x0.1"``, ``"smoke"``; empty for the paper's own setting)."""

    name: str
    config: dict
    expected: PaperResult | None = None
    changes: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, name: str, *, epochs_scale: float = 1.0, smoke: bool = False,
                    overrides: Sequence[str] = (), device: str | None = None) -> "Setting":
        """A shipped config (or YAML file) as a setting, shortened by ``epochs_scale`` or cut to ``smoke``."""
        data = read_config_file(name)
        changes: list[str] = []
        if device is not None:
            data["device"] = device
        if epochs_scale != 1.0:
            scale_epochs(data, epochs_scale)
            changes.append(f"epochs x{epochs_scale:g}")
        if smoke:
            apply_smoke(data)
            changes.append("smoke: 300 training and 500 test images, small_cnn, 2 epochs")
        apply_overrides(data, list(overrides))
        changes += [f"--set {o}" for o in overrides]
        config = load_config(base=data)  # validated, ${VARS} expanded
        return cls(name=name, config=config.to_dict(), expected=config.expected, changes=tuple(changes))

    @property
    def shortened(self) -> bool:
        return bool(self.changes)

    @property
    def folder(self) -> str:
        """The name as a folder name (``bkd/cifar10n-worst`` -> ``bkd-cifar10n-worst``)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name.replace("/", "-")).strip("_") or "setting"


def scale_epochs(data: dict, factor: float) -> None:
    """Scale a config's schedule in place: epochs, milestones and warm-up by ``factor`` (at least one epoch;
    milestones kept inside the shorter run)."""
    if not 0 < factor <= 1:
        raise ConfigError(f"--epochs-scale must lie in (0, 1], got {factor}")
    optim = data.setdefault("optim", {})
    epochs = max(1, round(optim.get("epochs", RunConfig().optim.epochs) * factor))
    optim["epochs"] = epochs
    if optim.get("milestones"):
        optim["milestones"] = sorted({min(max(1, round(m * factor)), epochs) for m in optim["milestones"]})
    if optim.get("warmup_epochs"):
        optim["warmup_epochs"] = max(0, round(optim["warmup_epochs"] * factor))


def apply_smoke(data: dict) -> None:
    """Cut a config to a few hundred images, a small network and two epochs (the plumbing only)."""
    apply_overrides(data, [f"{k}={v}" for k, v in SMOKE.items()])
    data["model"]["kwargs"] = {}
    data["optim"]["milestones"] = []
    data["optim"]["warmup_epochs"] = 0


@dataclass
class SeedRun:
    """One seed of a setting: its run folder, its summary.json, and the wall time this call spent on it (0 when
    the finished run was reused)."""

    seed: int
    out_dir: Path
    summary: dict
    seconds: float
    reused: bool = False

    def value(self, name: str) -> float | None:
        """A per-seed number by name: test_last, test_best_noisy_val, test_oracle, f1, precision, ..., as %."""
        s = self.summary
        raw = {"test_last": (s.get("last") or {}).get("test_acc"),
               "test_best_noisy_val": (s.get("best_noisy_val") or {}).get("test_acc"),
               "test_oracle": (s.get("best_test_oracle") or {}).get("test_acc")}.get(name)
        if name in DETECTION:
            raw = (s.get("detection") or {}).get(name)
        return None if raw is None else 100 * raw

    def history(self) -> list[dict]:
        """The run's per-epoch rows (``metrics.jsonl``); empty when the run wrote none."""
        return read_history(self.out_dir)


def read_history(run_dir: str | Path) -> list[dict]:
    """A run folder's per-epoch rows (``metrics.jsonl``); empty when the run wrote none."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def run_seeds(setting: Setting, seeds: Sequence[int], out_root: str | Path,
              on_seed: Callable[[Setting, int, str], None] | None = None) -> list[SeedRun]:
    """Train ``setting`` once per seed into ``out_root/NAME/seed-S``: reuse a finished run (it holds its
    ``finished.json``), resume an unfinished one, start the others. ``on_seed(setting, seed,
    state)`` is told "start", "resume" or "reuse" first (for progress output)."""
    runs = []
    for seed in seeds:
        folder = Path(out_root) / setting.folder / f"seed-{seed}"
        config = copy.deepcopy(setting.config)
        config.update(seed=seed, out_dir=str(folder))
        summary, seconds, state = train_or_reuse(
            config, on_state=None if on_seed is None else (lambda state, s=seed: on_seed(setting, s, state)))
        runs.append(SeedRun(seed, folder, summary, seconds, reused=state == "reuse"))
    return runs


def train_or_reuse(config: dict, data=None, on_state: Callable[[str], None] | None = None,
                   progress: bool | None = False) -> tuple[dict, float, str]:
    """Train the run ``config`` describes into its ``out_dir``, unless that folder already holds it: a finished
    run is reused, an unfinished one resumed (only for the same config: a ConfigError names the keys that
    differ). ``data``: a ``PreparedData`` to train on instead of loading ``config``'s. ``on_state`` is told
    "start", "resume" or "reuse" first; ``progress``: a progress bar (None: when stderr is a terminal).
    Returns (summary, seconds spent here, state)."""
    from .engine import Trainer

    folder = Path(config["out_dir"])
    state = _run_state(folder)
    if state != "start":
        _check_same_config(folder, config)
    if on_state is not None:
        on_state(state)
    if state == "reuse":
        return json.loads((folder / "summary.json").read_text()), 0.0, state
    start = time.perf_counter()
    result = Trainer(from_dict(copy.deepcopy(config)).validate(), data=data, progress=progress).run(
        resume=state == "resume")
    return result.summary, time.perf_counter() - start, state


def _run_state(folder: Path) -> str:
    state = RunFolder(folder).state()
    return {"finished": "reuse", "resumable": "resume"}.get(state, "start")


def _check_same_config(folder: Path, config: dict) -> None:
    """A run folder is reused or resumed only for the config it was made with (a --smoke run must not stand in
    for the real one); otherwise a ConfigError names the keys that differ."""
    saved_path = folder / "config.yaml"
    if not saved_path.is_file():
        return
    saved = load_config(saved_path).to_dict()
    wanted = load_config(base=config).to_dict()
    from .engine.resume import config_fingerprint  # the keys that decide what a run computes

    saved, wanted = config_fingerprint(saved), config_fingerprint(wanted)
    differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if differ:
        raise ConfigError(f"{folder} holds a run of another config (differs in {', '.join(differ)}); "
                          "use another --out, or remove that folder")


def mean_std(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """{"mean", "std" (sample std; None for one value), "n"} of the values that are not None."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.mean(present), "std": statistics.stdev(present) if len(present) > 1 else None,
            "n": len(present)}


def summarize(runs: Sequence[SeedRun]) -> dict[str, Any]:
    """Mean ± std over seeds of the three test accuracies (last, best noisy-val, oracle) and the detection
    metrics, in %; the detector; the training time (sum of the engine's epoch times) per seed."""
    out: dict[str, Any] = {name: mean_std([r.value(name) for r in runs]) for name in SELECTIONS + DETECTION}
    detection = [r.summary.get("detection") or {} for r in runs]
    out["detector"] = detection[0].get("detector") if detection else None
    out["train_seconds"] = mean_std([sum(row["epoch_time_s"] for row in r.history()) for r in runs])
    out["seeds"] = [r.seed for r in runs]
    return out


def fmt(stat: dict | None, digits: int = 2) -> str:
    """``mean ± std`` (or the single value, or ``-``)."""
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("std") is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


@dataclass
class Report:
    """The rows of a reproduction or comparison, written as Markdown and JSON."""

    title: str
    command: str
    rows: list[dict] = field(default_factory=list)

    def add(self, setting: Setting, runs: Sequence[SeedRun]) -> dict:
        row = {"name": setting.name, "method": setting.config["method"], "changes": list(setting.changes),
               "expected": None if setting.expected is None else setting.expected.__dict__,
               "ours": summarize(runs), "runs": [str(r.out_dir) for r in runs],
               "wall_seconds": sum(r.seconds for r in runs), "reused": sum(r.reused for r in runs)}
        self.rows.append(row)
        return row

    def markdown(self, with_paper: bool) -> str:
        lines = [f"# {self.title}", "", f"Command: `{self.command}`", ""]
        head = ["setting"] + (["paper"] if with_paper else []) + ["last", "best noisy-val", "oracle"]
        head += (["Δ last"] if with_paper else []) + ["detection F1"] + (["paper F1"] if with_paper else [])
        head += ["detector", "seeds", "train s/seed"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            ours, paper = row["ours"], row["expected"] or {}
            name = row["name"] + (" (shortened)" if row["changes"] else "")
            cells = [name]
            if with_paper:
                cells.append(_num(paper.get("test_acc")))
            cells += [fmt(ours[k]) for k in SELECTIONS]
            if with_paper:
                delta = (None if paper.get("test_acc") is None or ours["test_last"]["mean"] is None
                         else ours["test_last"]["mean"] - paper["test_acc"])
                cells.append("-" if delta is None else f"{delta:+.2f}")
            cells.append(fmt(ours["f1"]))
            if with_paper:
                cells.append(_num(paper.get("detection_f1")))
            cells += [ours["detector"] or "-", str(len(ours["seeds"])), fmt(ours["train_seconds"], 1)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Accuracies and F1 in %, mean ± sample std over seeds. 'oracle' picks the epoch on the test set "
                     "(analysis only)." + (" 'Δ last' is ours at the last epoch minus the paper's number."
                                           if with_paper else ""))
        shortened = [r for r in self.rows if r["changes"]]
        if shortened:
            lines += ["", "**Shortened settings are not the paper's** and their numbers are not comparable with it:"]
            lines += [f"- {r['name']}: {'; '.join(r['changes'])}" for r in shortened]
        sources = [r for r in self.rows if r["expected"]]
        if with_paper and sources:
            lines += ["", "Paper numbers:"]
            for r in sources:
                e = r["expected"]
                where = "; ".join(x for x in (e.get("test_acc_source"), e.get("detection_source")) if x)
                lines.append(f"- {r['name']}: {e.get('paper')}, {where} (epoch: {e.get('epoch')}"
                             f"{', seeds ' + e['seeds'] if e.get('seeds') else ''})")
        return "\n".join(lines) + "\n"

    def write(self, out: Path, with_paper: bool) -> str:
        """``out.md`` and ``out.json``; returns the Markdown."""
        out.parent.mkdir(parents=True, exist_ok=True)
        text = self.markdown(with_paper)
        _atomic(out.with_suffix(".md"), text)
        _atomic(out.with_suffix(".json"), json.dumps({"title": self.title, "command": self.command,
                                                       "rows": self.rows}, indent=1, default=str))
        return text


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------------
# compare: methods on the user's own data

def parse_method_spec(spec: str) -> tuple[str, str, dict]:
    """``"bkd"``, ``"bkd:reference_gradients=true,k=3"`` or ``"bkd_ref=bkd:reference_gradients=true"`` ->
    (label, method, method_args); values are read as YAML scalars."""
    head, sep, tail = spec.partition("=")
    label, rest = (head, tail) if sep and ":" not in head else (spec, spec)  # "label=method:args" or "method:args"
    method, _, args_text = rest.partition(":")
    args: dict = {}
    for item in filter(None, (a.strip() for a in args_text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ConfigError(f"method spec {spec!r}: expected NAME[:KEY=VALUE,...], got {item!r}")
        args[key.strip()] = load_yaml(value)
    if not method.strip():
        raise ConfigError(f"method spec {spec!r} names no method")
    return label.strip(), method.strip(), args


def split_method_specs(text: str) -> list[str]:
    """``"ce,gce:q=0.5,bkd:k=3,robust_stage=false,bkd_ref=bkd:reference_gradients=true"`` -> the four specs:
    a comma starts a new spec unless what follows is one more ``key=value`` of a spec that has arguments."""
    specs: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        continues = specs and ":" in specs[-1] and "=" in token and ":" not in token
        if continues:
            specs[-1] += "," + token
        else:
            specs.append(token)
    return specs


def compare_settings(methods: Sequence[str], base: str | Path | None = "digits/sym40", overrides: Sequence[str] = (),
                     device: str | None = None) -> list[Setting]:
    """One setting per method spec on the same data and noisy labels (the base config, or noisykd's defaults when
    ``base`` is None, with ``overrides``). When
    the overrides name another data source than the base config's, the base's noise, label set, subsets and
    paper numbers are left out (``noisykd.config.rebase_on_data``) and a warning says so."""
    settings = []
    for number, spec in enumerate(methods):
        label, method, args = parse_method_spec(spec)
        data, dropped = read_config_for(base, list(overrides)) if base is not None else ({}, [])
        if dropped and number == 0:  # said once: every method runs on the same data
            log.warning(describe_rebase(data, data_spec_of(overrides), dropped))
        data["method"], data["method_args"] = method, args
        if device is not None:
            data["device"] = device
        apply_overrides(data, list(overrides))
        config = load_config(base=data)
        settings.append(Setting(name=label, config=config.to_dict(), expected=None))
    labels = [s.name for s in settings]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--methods names a setting twice: {labels}; give each a label (label=method:args)")
    return settings
