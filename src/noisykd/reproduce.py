"""Settings run over seeds, summarised as mean ± std, next to the paper's numbers when there are some.

``noisykd reproduce NAME...`` runs shipped configs (``configs/``, each with the paper's ``expected`` numbers)
or a suite (:data:`SUITES`: ``noisykd reproduce digits`` runs every registered method on the built-in digits);
``noisykd compare --methods ce,gce,bkd`` runs methods on the user's own data; the benchmark scripts use the
same pieces (:func:`run_seeds`, :func:`summarize`). Each seed is a run folder ``OUT/NAME/seed-S``: a finished
one is reused, an unfinished one resumed, so a second call continues where the first stopped.
:func:`paper_settings_markdown` is the list ``noisykd reproduce --list`` prints.

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
#: Memorisation: the share of wrongly labelled training samples predicted as their wrong label in the last epoch.
MEMORISATION = ("fit_wrong",)


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
    def from_config(cls, name: str, *, epochs: int | None = None, epochs_scale: float = 1.0, smoke: bool = False,
                    overrides: Sequence[str] = (), device: str | None = None,
                    threads: int | None = None) -> "Setting":
        """A shipped config (or YAML file) as a setting, changed as :func:`adjust_config` says, then ``overrides``
        (``key=value``)."""
        data = read_config_file(name)
        changes = adjust_config(data, epochs=epochs, epochs_scale=epochs_scale, smoke=smoke, device=device,
                                threads=threads)
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


def adjust_config(data: dict, *, epochs: int | None = None, epochs_scale: float = 1.0, smoke: bool = False,
                  device: str | None = None, threads: int | None = None) -> list[str]:
    """Change a config (plain data, in place) as reproduce's options ask: a smoke cut (:data:`SMOKE`), then
    ``epochs`` or ``epochs_scale`` (milestones and warm-up rescaled with them), ``device`` and ``threads``.
    Returns the changes a report must list; device and threads change no result and are not listed."""
    changes: list[str] = []
    if device is not None:
        data["device"] = device
    if threads is not None:
        data["threads"] = threads
    if smoke:
        apply_smoke(data)
        changes.append("smoke: 300 training and 500 test images, small_cnn"
                       + ("" if epochs is not None or epochs_scale != 1.0 else f", {SMOKE['optim.epochs']} epochs"))
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs must be an integer >= 1, got {epochs!r}")
        if epochs_scale != 1.0:
            raise ConfigError(f"epochs {epochs} and epochs_scale {epochs_scale:g} both set the schedule: give one")
        set_epochs(data, epochs)
        changes.append(f"{epochs} epoch{'s' if epochs != 1 else ''}")
    elif epochs_scale != 1.0:
        scale_epochs(data, epochs_scale)
        changes.append(f"epochs x{epochs_scale:g}")
    return changes


def set_epochs(data: dict, epochs: int) -> None:
    """Set a config's epochs in place, its milestones and warm-up scaled by the same factor (milestones kept
    inside the run, at least one epoch; warm-up shorter than the run)."""
    optim = data.setdefault("optim", {})
    factor = epochs / optim.get("epochs", RunConfig().optim.epochs)
    optim["epochs"] = epochs
    if optim.get("milestones"):
        optim["milestones"] = sorted({min(max(1, round(m * factor)), epochs) for m in optim["milestones"]})
    if optim.get("warmup_epochs"):
        optim["warmup_epochs"] = min(max(0, round(optim["warmup_epochs"] * factor)), epochs - 1)


def scale_epochs(data: dict, factor: float) -> None:
    """Shorten a config's schedule in place by ``factor`` in (0, 1] (:func:`set_epochs` of the rounded epochs,
    at least one)."""
    if not 0 < factor <= 1:
        raise ConfigError(f"--epochs-scale must lie in (0, 1], got {factor}")
    set_epochs(data, max(1, round((data.get("optim") or {}).get("epochs", RunConfig().optim.epochs) * factor)))


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
        """A per-seed number by name: test_last, test_best_noisy_val, test_oracle, f1, precision, ..., fit_wrong
        (the last epoch's ``train_fit_wrong_labels``; None when the truth is unknown), as %."""
        s = self.summary
        raw = {"test_last": (s.get("last") or {}).get("test_acc"),
               "test_best_noisy_val": (s.get("best_noisy_val") or {}).get("test_acc"),
               "test_oracle": (s.get("best_test_oracle") or {}).get("test_acc")}.get(name)
        if name in DETECTION:
            raw = (s.get("detection") or {}).get(name)
        if name == "fit_wrong":
            rows = self.history()
            raw = rows[-1].get("train_fit_wrong_labels") if rows else None
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
    """Mean ± std over seeds of the three test accuracies (last, best noisy-val, oracle), the detection
    metrics and the wrong labels fit in the last epoch, in %; the detector; the training time (sum of the
    engine's epoch times) per seed."""
    from .detect.from_run import detector_name

    out: dict[str, Any] = {name: mean_std([r.value(name) for r in runs])
                           for name in SELECTIONS + DETECTION + MEMORISATION}
    detection = [r.summary.get("detection") or {} for r in runs]
    out["detector"] = detector_name(detection[0]["detector"]) if detection and detection[0].get("detector") else None
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
    notes: list[str] = field(default_factory=list)  # printed under the table, one bullet each

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
        head += (["Δ last"] if with_paper else []) + ["wrong labels fit", "detection F1"]
        head += ["paper F1"] if with_paper else []
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
            cells += [fmt(ours.get("fit_wrong")), fmt(ours["f1"])]
            if with_paper:
                cells.append(_num(paper.get("detection_f1")))
            cells += [ours["detector"] or "-", str(len(ours["seeds"])), fmt(ours["train_seconds"], 1)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Accuracies and F1 in %, mean ± sample std over seeds. 'oracle' picks the epoch on the test set "
                     "(analysis only)." + (" 'Δ last' is ours at the last epoch minus the paper's number."
                                           if with_paper else "") +
                     " 'wrong labels fit': the share of the wrongly labelled training samples predicted as their "
                     "wrong label in the last epoch (memorisation; '-' when the truth is unknown).")
        shortened = [r for r in self.rows if r["changes"]]
        if shortened:
            lines += ["", "**Shortened settings are not the paper's** and their numbers are not comparable with it:"
                      if with_paper else "Changed:"]
            if len(shortened) > 1 and len(shortened) == len(self.rows) and \
                    all(r["changes"] == shortened[0]["changes"] for r in shortened):
                lines.append(f"- every setting: {'; '.join(shortened[0]['changes'])}")  # one line, not one per row
            else:
                lines += [f"- {r['name']}: {'; '.join(r['changes'])}" for r in shortened]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
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
                                                       "rows": self.rows, "notes": self.notes}, indent=1,
                                                      default=str))
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


# ------------------------------------------------------------------------------------------------------------
# suites: many methods on one setting, the first thing to run (noisykd reproduce digits)

@dataclass(frozen=True)
class Suite:
    """Every method of ``methods`` with its default arguments on the base config, over ``seeds`` seeds.

    base:      the shipped config every method runs on (its data, noise, network and optimiser).
    methods:   registered method names, in the order of the table.
    excluded:  (method, why) for each registered method left out on purpose.
    teacher:   the shipped config of the run that the methods needing a teacher (vkd, dfnd, modul: their
               ``method_args.teacher``) distil; trained once, seed 0, before them.
    epochs:    every run's epochs (the teacher's too), instead of the configs' own; None: theirs.
    notes:     what a reader of the table must know, printed under it.
    """

    name: str
    what: str
    base: str
    methods: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...] = ()
    teacher: str | None = None
    seeds: int = 3
    epochs: int | None = None
    notes: tuple[str, ...] = ()


#: The suites ``noisykd reproduce NAME`` runs. digits: the first thing to run, on the built-in data, minutes on a
#: CPU. 20 epochs (digits/sym40 has 60): memorisation is under way but not complete (one run, seed 0, when the
#: suite was added: CE fit 49% of the wrong labels in epoch 20, test 82.2% last against 88.9% at its best epoch;
#: at 60 epochs it fits them all), and BKD's fallback deadline (half the run) stays past most tipping epochs seen
#: on digits (4-13, benchmarks/results/detection-digits-bkd-10seeds.md; that run split by its own rule, F1 85.1%).
#: Its cost, estimated from the recorded 60-epoch runs
#: (s/run in benchmarks/results/*digits*.md: CE-like losses ~15 s, cmd 18, bkd 29, dfnd 30, vkd 36, modul 61;
#: gjs and nrd ~2.4x and ~3.3x CE, their ratio in nrd-grid-cifar10.md): ~400 s per seed at 60 epochs, so
#: ~130 s per seed at 20, ~7 min for 3 seeds and the teacher on 2 cores.
SUITES: dict[str, Suite] = {
    "digits": Suite(
        name="digits",
        what="every registered method on the built-in 8x8 digits with 40% symmetric noise (digits/sym40), "
             "minutes on a CPU",
        base="digits/sym40",
        methods=("ce", "ls", "boot", "cp", "gce", "sce", "nce_rce", "js", "gjs", "nrd", "proselflc", "mconf", "cmd",
                 "bkd", "vkd", "dfnd", "modul"),
        teacher="modul/digits-teacher",
        seeds=3,
        epochs=20,
        notes=("vkd, dfnd and modul distil one teacher (modul/digits-teacher: CE on the clean labels of the same "
               "digits, seed 0 for every student seed): it knows the true labels of the images the students train "
               "on, which no other method here is told, so their rows measure distillation from it, not robustness "
               "to the noise alone.",
               "Every method runs with its default arguments; the numbers are this proxy's, not a paper's."),
    ),
}


def needs_teacher(method: str) -> bool:
    """Whether a registered method distils a teacher run (its arguments include ``teacher``)."""
    from .methods import METHODS
    from .methods.vkd import TeacherArgs

    return issubclass(getattr(METHODS[method], "Args", object), TeacherArgs)


def get_suite(name: str) -> Suite:
    """The suite ``name``; a ConfigError lists the suites there are."""
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; the suites are: {', '.join(SUITES)}")
    return SUITES[name]


def suite_teacher(name: str, *, epochs: int | None = None, epochs_scale: float = 1.0, smoke: bool = False,
                  device: str | None = None, threads: int | None = None) -> Setting | None:
    """The teacher run of suite ``name`` as a setting (None when no method of it needs one); ``epochs``,
    ``epochs_scale``, ``smoke``, ``device`` and ``threads`` as for :func:`expand_suite`."""
    suite = get_suite(name)
    if suite.teacher is None or not any(needs_teacher(m) for m in suite.methods):
        return None
    data, changes = _suite_config(suite, suite.teacher, epochs, epochs_scale, smoke, device, threads)
    config = load_config(base=data)
    return Setting(name=suite.teacher, config=config.to_dict(), expected=None, changes=tuple(changes))


def expand_suite(name: str, *, teacher: str | Path | None = None, epochs: int | None = None,
                 epochs_scale: float = 1.0, smoke: bool = False, device: str | None = None,
                 threads: int | None = None, overrides: Sequence[str] = ()) -> list[Setting]:
    """One validated setting per method of suite ``name``, named by the method, in the suite's order.

    ``teacher``: the finished run folder the teacher methods distil (their config is checked against it, so
    it must exist: :func:`run_suite` trains :func:`suite_teacher` first). ``epochs``: every run's epochs
    (default: the suite's), or ``epochs_scale``: the suite's shortened by this factor (``--epochs-scale``);
    ``smoke``: a few hundred images, small_cnn (:data:`SMOKE`), for the plumbing; ``device``, ``threads``: where
    the runs train (they change no result, so the report does not list them as changes);
    ``overrides``: ``key=value`` for every method's config (not the teacher's)."""
    suite = get_suite(name)
    wanting = [m for m in suite.methods if needs_teacher(m)]
    if wanting and teacher is None:
        raise ConfigError(f"suite {name}: {', '.join(wanting)} distil a teacher run: pass its folder (run_suite "
                          f"trains one from {suite.teacher} first)")
    settings = []
    for method in suite.methods:
        data, changes = _suite_config(suite, suite.base, epochs, epochs_scale, smoke, device, threads)
        data["method"], data["method_args"] = method, ({"teacher": str(teacher)} if method in wanting else {})
        apply_overrides(data, list(overrides))
        changes += [f"--set {o}" for o in overrides]
        config = load_config(base=data)
        settings.append(Setting(name=method, config=config.to_dict(), expected=None, changes=tuple(changes)))
    return settings


def _suite_config(suite: Suite, config_name: str, epochs: int | None, epochs_scale: float, smoke: bool,
                  device: str | None, threads: int | None) -> tuple[dict, list[str]]:
    """A config of the suite as plain data: with the suite's epochs, then cut to a smoke run, then ``epochs`` or
    ``epochs_scale``; and what differs from the suite's own setting, for the report."""
    data = read_config_file(config_name)
    if suite.epochs is not None:
        set_epochs(data, suite.epochs)
    changes = adjust_config(data, epochs=epochs, epochs_scale=epochs_scale, smoke=smoke, device=device,
                            threads=threads)
    return data, changes


def _suite_setting(suite: Suite) -> str:
    """One line: what every method of the suite runs."""
    epochs = _epochs_note(suite, suite.base)
    return (f"Every method runs {suite.base}{' with ' + epochs if epochs else ''}, over {suite.seeds} seeds unless "
            "the command says otherwise.")


def _epochs_note(suite: Suite, config_name: str) -> str:
    """``"20 epochs (its own: 60)"`` when the suite changes the config's epochs, else empty."""
    own = (read_config_file(config_name).get("optim") or {}).get("epochs", RunConfig().optim.epochs)
    return "" if suite.epochs in (None, own) else f"{suite.epochs} epochs (its own: {own})"


def run_suite(name: str, out: str | Path, *, seeds: int | None = None, first_seed: int = 0, epochs: int | None = None,
              epochs_scale: float = 1.0, smoke: bool = False, device: str | None = None, threads: int | None = None,
              overrides: Sequence[str] = (), on_seed: Callable[[Setting, int, str], None] | None = None,
              command: str = "") -> Report:
    """Run suite ``name``: its teacher (when a method needs one) into ``OUT/NAME/TEACHER/seed-0``, then every method
    over ``seeds`` seeds (default: the suite's) from ``first_seed`` on into ``OUT/NAME/METHOD/seed-S`` (finished
    runs reused, as
    :func:`run_seeds`), and write the comparison table to ``OUT/NAME.md`` and ``OUT/NAME.json``; returns the
    report (``report.markdown(False)`` is the table). ``epochs``, ``epochs_scale``, ``smoke``, ``device``,
    ``threads``, ``overrides``: as :func:`expand_suite`; ``on_seed``: as :func:`run_seeds`, for progress output."""
    suite = get_suite(name)
    count = suite.seeds if seeds is None else seeds
    if count < 1 or first_seed < 0:
        raise ConfigError(f"seeds must be >= 1 and the first seed >= 0, got {count} from {first_seed}")
    root = Path(out) / suite.name
    teacher = suite_teacher(name, epochs=epochs, epochs_scale=epochs_scale, smoke=smoke, device=device,
                            threads=threads)
    teacher_run = run_seeds(teacher, [0], root, on_seed=on_seed)[0] if teacher is not None else None
    settings = expand_suite(name, teacher=None if teacher_run is None else teacher_run.out_dir, epochs=epochs,
                            epochs_scale=epochs_scale, smoke=smoke, device=device, threads=threads,
                            overrides=overrides)
    report = Report(f"noisykd reproduce {name}: {suite.what}", command or f"noisykd reproduce {name}")
    for setting in settings:
        report.add(setting, run_seeds(setting, range(first_seed, first_seed + count), root, on_seed=on_seed))
    report.notes += [_suite_setting(suite)] + list(suite.notes)
    if teacher_run is not None:
        acc = teacher_run.value("test_last")
        changed = "; ".join(teacher.changes or [x for x in [_epochs_note(suite, suite.teacher)] if x])
        report.notes.append(f"The teacher ({teacher.name}{', ' + changed if changed else ''}): "
                            f"{'-' if acc is None else f'{acc:.2f}'}% test accuracy at its last epoch "
                            f"({teacher_run.out_dir}).")
    report.write(Path(out) / suite.name, with_paper=False)
    return report


# ------------------------------------------------------------------------------------------------------------
# noisykd reproduce --list

def paper_settings_markdown() -> str:
    """What ``noisykd reproduce --list`` prints: a Markdown table of the shipped configs that carry a paper's
    numbers (its ``expected`` block), a line for each that distils a teacher run, and a table of the suites."""
    from .config import shipped_configs

    lines = ["| setting | method | network | epochs | paper test acc | paper detection F1 / Pr / Re | source |",
             "|---|---|---|---|---|---|---|"]
    teachers = []
    for name in shipped_configs():
        data = read_config_file(name)
        expected = data.get("expected")
        if not expected:
            continue
        detection = " / ".join(_num(expected.get(f"detection_{k}")) for k in ("f1", "precision", "recall"))
        source = "; ".join(x for x in (expected.get("paper"), expected.get("test_acc_source"),
                                       expected.get("detection_source")) if x)
        lines.append(f"| {name} | {data.get('method', 'ce')} | {(data.get('model') or {}).get('name', '-')} | "
                     f"{(data.get('optim') or {}).get('epochs', '-')} | {_num(expected.get('test_acc'))} | "
                     f"{detection} | {source} |")
        teacher = (data.get("method_args") or {}).get("teacher")
        if teacher:
            teachers.append(f"- {name} distils a teacher run (method_args.teacher: {teacher}): train it first, as the "
                            "comments at the top of the config say.")
    if teachers:
        lines += [""] + teachers
    lines += ["", "Suites (`noisykd reproduce NAME`): many methods on one setting, compared with each other.", "",
              "| suite | what | methods | seeds | epochs |", "|---|---|---|---|---|"]
    for suite in SUITES.values():
        lines.append(f"| {suite.name} | {suite.what} | {len(suite.methods)}: {', '.join(suite.methods)} | "
                     f"{suite.seeds} | {suite.epochs if suite.epochs is not None else 'the config'} |")
    return "\n".join(lines) + "\n"
