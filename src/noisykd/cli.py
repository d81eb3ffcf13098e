"""The ``noisykd`` command line: data inspection, training, evaluation and the built-in demo."""

from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import ConfigError, NoisyKDError
from .logs import log_to_stderr

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train image classifiers on noisy labels with knowledge distillation.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect data sources and label noise.")
app.add_typer(data_app, name="data")
# markup=False: every message holds user strings (paths, class names, config values); "[red]x[/red]" in one
# must print as it is, never as a style or a MarkupError. Our own styles go through styled().
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def styled(*parts) -> Text:
    """One line from parts: a ``(text, style)`` pair is styled, a plain string printed exactly as it is."""
    return Text.assemble(*parts)


def launched_by_torchrun() -> bool:
    from .engine.distributed import launched_by_torchrun as launched

    return launched()


def friendly_errors(fn):
    """Turn noisykd's own errors (bad input, config, checkpoints) into one clear line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        log_to_stderr()
        try:
            return fn(*args, **kwargs)
        except NoisyKDError as e:
            # soft_wrap: one line however narrow the terminal, so that logs and greps see all of it
            rank = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
            err_console.print(styled(("error:", "bold red"), f" {rank}{e}"), highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except OSError as e:  # a read-only or full output place met outside the run folder's own checks
            if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
                raise
            rank = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
            err_console.print(styled(("error:", "bold red"), f" {rank}cannot write {e.filename or 'an output'}: "
                                     f"{e.strerror}; choose another place (nothing else was changed)"),
                              highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted; a run can be continued with --resume RUN_DIR")
            raise typer.Exit(130)

    return wrapper


# ------------------------------------------------------------------------------------------------------------
# data

@data_app.command("kinds")
def data_kinds() -> None:
    """List the data and label-set spec kinds."""
    from .data import dataset_kinds, labelset_kinds

    table = Table("kind", "spec", title="data sources")
    for kind, usage in dataset_kinds().items():
        table.add_row(kind, usage)
    console.print(table)
    table = Table("kind", "spec", title="label sets (--labels)")
    for kind, usage in labelset_kinds().items():
        table.add_row(kind, usage)
    console.print(table)


@data_app.command("info")
@friendly_errors
def data_info(
    spec: str = typer.Argument(..., help="data spec, e.g. digits, cifar10:ROOT, fashion-mnist:ROOT, folder:ROOT"),
    labels: Optional[str] = typer.Option(None, help="label set replacing the training labels, e.g. "
                                         "cifar10n:CIFAR-10_human.pt:worst"),
    noise: str = typer.Option("none", help="synthetic noise on the training labels: sym:0.4, asym:0.4, ..., or "
                              "universal noise openset:RHO1:RHO2 (with --ood)"),
    noise_seed: int = typer.Option(0, help="seed of the synthetic noise"),
    ood: Optional[str] = typer.Option(None, help="out-of-distribution pool of openset noise (a data spec)"),
    resize: Optional[int] = typer.Option(None, help="resize images (folder sources)"),
    matrix: bool = typer.Option(True, help="print the noise transition matrix when the clean labels are known"),
) -> None:
    """Counts per class, image shape and, when clean labels are known, the realised noise rate and matrix."""
    import time

    from .config import DataConfig
    from .data import load_dataset
    from .engine.setup import choose_training_labels

    start = time.perf_counter()
    dataset = load_dataset(spec, **({"resize": resize} if resize else {}))
    load_s = time.perf_counter() - start
    data_cfg = DataConfig(spec=spec, labels=labels, noise=noise, noise_seed=noise_seed, ood=ood)
    data_cfg.validate()
    noisy = choose_training_labels(data_cfg, dataset)
    h, w, c = dataset.image_shape
    console.print(styled((dataset.name, "bold"), f": {dataset.num_classes} classes, images {h}x{w}x{c} uint8, "
                                                 f"loaded in {load_s:.2f} s"))
    table = Table("class", "name", "train", "train (given labels)", "test")
    train_counts = np.bincount(dataset.train.labels, minlength=dataset.num_classes)
    given_counts = np.bincount(noisy.labels, minlength=dataset.num_classes)
    test_counts = (np.bincount(dataset.test.labels, minlength=dataset.num_classes)
                   if dataset.test is not None else None)
    for k, name in enumerate(dataset.classes):
        table.add_row(str(k), name, f"{train_counts[k]:,}", f"{given_counts[k]:,}",
                      f"{test_counts[k]:,}" if test_counts is not None else "-")
    table.add_row("", "total", f"{len(dataset.train):,}", f"{len(noisy.labels):,}",
                  f"{len(dataset.test):,}" if dataset.test is not None else "-", style="bold")
    console.print(table)
    console.print(f"training labels: {noisy.kind} {noisy.params or ''}")
    if noisy.noise_rate is None:
        console.print("noise rate: unknown (no clean labels)")
        return
    console.print(styled((f"noise rate: {100 * noisy.noise_rate:.2f}%", "bold"),
                         f" ({int(noisy.is_noisy.sum()):,} of {len(noisy):,} labels differ from the clean ones)"))
    if noisy.open_set_rate:
        console.print(noisy.describe())
    if matrix and dataset.num_classes <= 20:
        t = noisy.transition_matrix(dataset.num_classes)
        table = Table("clean \\ given", *[str(k) for k in range(dataset.num_classes)],
                      title="noise transition matrix (rows: clean class, columns: given label)")
        for i in range(dataset.num_classes):
            table.add_row(str(i), *[f"{v:.2f}" if v else "." for v in t[i]])
        console.print(table)


@data_app.command("labels")
@friendly_errors
def data_labels(spec: str = typer.Argument(..., help="label-set spec, e.g. cifar100n:CIFAR-100_human.pt:noisy")) -> None:
    """Realised noise rate of a label set on its own (no images needed), e.g. CIFAR-100N."""
    from .data import load_labelset
    from .noise import from_labelset

    noisy = from_labelset(load_labelset(spec))
    classes = int(noisy.labels.max()) + 1
    console.print(styled((spec, "bold")))
    console.print(f"{len(noisy):,} labels, {classes} classes seen")
    if noisy.noise_rate is None:
        console.print("noise rate: unknown (the file has no clean labels)")
    else:
        console.print(styled((f"noise rate: {100 * noisy.noise_rate:.2f}%", "bold"),
                             f" ({int(noisy.is_noisy.sum()):,} of {len(noisy):,} labels differ from the clean ones)"))


# ------------------------------------------------------------------------------------------------------------
# listings

@app.command("configs")
def configs_cmd() -> None:
    """List the shipped run configs (configs/), for ``noisykd train --config NAME``."""
    from .config import find_config, shipped_configs

    table = Table("config", "what it is")
    for name in shipped_configs():
        title = next((line.lstrip("#").strip() for line in find_config(name).read_text().splitlines()
                      if line.startswith("#")), "")
        table.add_row(name, title)  # every shipped config starts with a one-line title comment
    console.print(table)


@app.command("models")
@friendly_errors
def models_cmd(name: Optional[str] = typer.Argument(None, help="show this network's options")) -> None:
    """List the registered networks, or show one network's options (``--set model.kwargs.KEY=VALUE``)."""
    from .models import MODELS

    _describe(MODELS, name, "model.kwargs")


@app.command("methods")
@friendly_errors
def methods_cmd(name: Optional[str] = typer.Argument(None, help="show this method's arguments and notes")) -> None:
    """List the registered training methods, or show one method's ``method_args`` with their defaults."""
    from .methods import METHODS

    _describe(METHODS, name, "method_args")


def _describe(registry, name: Optional[str], key: str) -> None:
    """A table of a registry's entries (summary and options), or one entry's whole docstring and defaults."""
    if name is None:
        table = Table(registry.kind, "what it is", f"options (--set {key}.KEY=VALUE)")
        for entry in registry.names():
            d = registry.describe(entry)
            table.add_row(entry, d.summary, ", ".join(d.options) or "-")
        console.print(table)
        return
    d = registry.describe(name)
    console.print(f"{name}: {d.doc}")
    if d.options:
        console.print(f"\n{key} defaults:")
        for option, default in d.options.items():
            console.print(f"  {option} = {default!r}")


# ------------------------------------------------------------------------------------------------------------
# train / eval

@app.command("train")
@friendly_errors
def train_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (see RUN/config.yaml)"),
    overrides: List[str] = typer.Option([], "--set", "-s", help="override a config key: --set optim.lr=0.1"),
    method: Optional[str] = typer.Option(None, help="method (noisykd methods)"),
    data: Optional[str] = typer.Option(None, help="data spec"),
    labels: Optional[str] = typer.Option(None, help="label-set spec, e.g. cifar10n:FILE:worst"),
    noise: Optional[str] = typer.Option(None, help="synthetic noise, e.g. sym:0.4, or universal noise "
                                        "openset:RHO1:RHO2 (with --ood)"),
    ood: Optional[str] = typer.Option(None, help="out-of-distribution pool of openset noise: a data spec, e.g. "
                                      "fashion-mnist:ROOT"),
    model: Optional[str] = typer.Option(None, help="network (noisykd models)"),
    epochs: Optional[int] = typer.Option(None, help="number of epochs"),
    seed: Optional[int] = typer.Option(None, help="training seed"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this folder (or from this checkpoint), "
                                          "writing to that folder"),
    extend: bool = typer.Option(False, help="with --resume and --epochs: train on past the run's planned end"),
    threads: Optional[int] = typer.Option(None, help="CPU threads of torch (default: every core)"),
    print_config: bool = typer.Option(False, "--print-config", help="print the resolved config (YAML) and stop"),
    devices: Optional[int] = typer.Option(None, "--devices", min=1,
                                          help="train data-parallel over this many processes on this machine (one per "
                                          "GPU; on the CPU, gloo): launches torchrun's elastic agent. "
                                          "optim.batch_size is the global batch"),
) -> None:
    """Train a method; writes config, metrics, checkpoints, per-sample outputs and plots to the output folder
    (default: runs/<date-time>-<method>-<data>). Data parallel: --devices N, or torchrun --nproc_per_node=N -m
    noisykd train ... (README, "Multi-GPU and multi-node")."""
    from .config import from_dict
    from .engine import Trainer
    from .engine.checkpoint import find_resume_checkpoint, load_checkpoint, run_folder_of

    if resume is not None:
        changed = [name for name, value in (("--config", config), ("--set", overrides), ("--method", method),
                                            ("--data", data), ("--labels", labels), ("--noise", noise),
                                            ("--ood", ood), ("--model", model), ("--seed", seed),
                                            ("--out", out)) if value]
        if changed:
            raise typer.BadParameter(f"--resume continues a run with its saved config; drop {', '.join(changed)} "
                                     "(only --device, and --epochs with --extend, may change)")
        if epochs is not None and not extend:
            raise typer.BadParameter("--epochs with --resume changes the run's plan: add --extend to train on")
        state = load_checkpoint(find_resume_checkpoint(resume))
        saved = dict(state["config"], out_dir=str(run_folder_of(resume)))
        if device is not None:
            saved["device"] = device
        if threads is not None:
            saved["threads"] = threads
        if epochs is not None:
            saved["optim"] = dict(saved["optim"], epochs=epochs)
        cfg = from_dict(saved).validate()
        if print_config:
            _print_config(cfg)
            return
        if devices is not None and not launched_by_torchrun():
            again = ["--resume", str(resume)] + (["--device", device] if device else []) + \
                    (["--threads", str(threads)] if threads else []) + \
                    (["--epochs", str(epochs), "--extend"] if extend and epochs is not None else [])
            _launch_processes(devices, cfg, again)
            return
        result = Trainer(cfg).run(resume=resume, extend=extend)
    else:
        flags = {"method": method, "data.spec": data, "data.labels": labels, "data.noise": noise, "data.ood": ood,
                 "model.name": model, "optim.epochs": epochs, "seed": seed, "device": device, "threads": threads,
                 "out_dir": str(out) if out else None}
        cfg = _load_config_for_data(config, _flag_sets(flags, list(overrides)))
        if print_config:
            _print_config(cfg)
            return
        if devices is not None and not launched_by_torchrun():
            _launch_new_run(devices, cfg)
            return
        result = Trainer(cfg).run()
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 says it, once
        _print_summary(result.summary, result.out_dir)


#: the flag that sets a config key, for messages
_FLAG_OF = {"data.spec": "--data", "data.labels": "--labels", "data.noise": "--noise", "data.ood": "--ood",
            "model.name": "--model", "optim.epochs": "--epochs", "out_dir": "--out"}


def _flag_sets(flags: dict, overrides: list[str]) -> list[str]:
    """``key=value`` overrides from the flags given (None: not given), then ``--set``'s; a ``--set`` of a key that a
    flag also sets, to another value, is refused (one would silently win)."""
    from .config import load_yaml

    given = {k: v for k, v in flags.items() if v is not None}
    for item in overrides:
        key, _, raw = item.partition("=")
        key = key.strip()
        if key in given:
            try:
                same = load_yaml(raw) == load_yaml(str(given[key]))
            except Exception:  # noqa: BLE001 - an unreadable value is the config's own error to report
                same = False
            if not same:
                flag = _FLAG_OF.get(key, "--" + key.rsplit(".", 1)[-1].replace("_", "-"))
                raise typer.BadParameter(f"--set {item} contradicts {flag} {given[key]}: give one of them")
    return [f"{k}={v}" for k, v in given.items()] + list(overrides)


def _load_config_for_data(config: Optional[Path], overrides: list[str]):
    """``load_config(config, overrides)``, except that a config moved to another data source (``--data``) leaves
    its own noise, label set, subsets and paper numbers behind, and one line says so (``rebase_on_data``)."""
    from .config import describe_rebase, load_config, read_config_for

    if config is None:
        return load_config(None, overrides)
    base, dropped = read_config_for(config, overrides)
    if dropped:
        from .config import data_spec_of

        err_console.print(f"note: {describe_rebase(base, data_spec_of(overrides), dropped)}", highlight=False,
                          soft_wrap=True)
    return load_config(base=base, overrides=overrides)


def _launch_new_run(devices: int, cfg) -> None:
    """``--devices N`` for a new run: the resolved config (its run folder chosen now) goes to every process."""
    import tempfile

    from .config import save_config
    from .engine.trainer import default_run_dir

    if not cfg.out_dir:
        cfg.out_dir = str(default_run_dir(cfg))
    with tempfile.TemporaryDirectory(prefix="noisykd-launch-") as tmp:
        path = Path(tmp) / "config.yaml"
        save_config(cfg, path)
        _launch_processes(devices, cfg, ["--config", str(path)])


def _launch_processes(devices: int, cfg, train_args: list[str]) -> None:
    """Run ``noisykd train TRAIN_ARGS`` in ``devices`` processes through torch's elastic launcher (what
    ``torchrun --standalone --nproc_per_node=N -m noisykd train ...`` does), after checking here, once, what
    every process would refuse."""
    import torch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from .engine.distributed import Processes, resolve_backend
    from .engine.trainer import check_world_size, resolve_device
    from .errors import DistributedError

    device = resolve_device(cfg.device)
    if device.type == "cuda" and devices > torch.cuda.device_count():
        raise ConfigError(f"--devices {devices}: this machine has {torch.cuda.device_count()} GPU(s)")
    resolve_backend(cfg.distributed.backend, device)
    check_world_size(cfg, Processes(world_size=devices))
    where = f"{devices} GPU(s)" if device.type == "cuda" else f"{devices} CPU processes (gloo)"
    err_console.print(f"launching {where}: global batch {cfg.optim.batch_size}, "
                      f"{cfg.optim.batch_size // devices} per process", highlight=False)
    try:
        run(parse_args(["--standalone", f"--nproc_per_node={devices}", "-m", "noisykd", "train", *train_args]))
    except ChildFailedError as e:
        raise DistributedError(f"{len(e.failures)} of {devices} processes failed ({_exits(e.failures)}); the messages "
                               "of those that could still write are above") from None


def _exits(failures: dict) -> str:
    """``rank 0 killed by SIGSEGV, rank 1 exit code 2`` from torch elastic's failures (rank -> ProcessFailure):
    a process killed by a signal prints nothing, so its signal is the only message it leaves."""
    import signal

    said = []
    for rank, failure in sorted(failures.items()):
        code = getattr(failure, "exitcode", None)
        if isinstance(code, int) and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            said.append(f"rank {rank} killed by {name}")
        else:
            said.append(f"rank {rank} exit code {code}")
    return ", ".join(said)


def _print_config(cfg) -> None:
    """The resolved config as YAML (what ``config.yaml`` of the run will hold; out_dir empty = chosen at start)."""
    import yaml

    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")


def _print_summary(summary: dict, out_dir: Path) -> None:
    last = summary["last"]
    console.print(styled((summary["method"], "bold"), f" on {summary['data']}: last-epoch test accuracy "
                                                      f"{_pct(last.get('test_acc'))}"), highlight=False)
    if summary.get("early_stop"):
        stop = summary["early_stop"]
        console.print(f"stopped early after epoch {stop['after_epoch']} of {summary['epochs']} (no better noisy-"
                      f"validation accuracy for {stop['patience']} evaluated epochs)", highlight=False)
    selection = summary.get("selection")
    if summary.get("best_noisy_val") and selection:
        b = summary["best_noisy_val"]
        trail = selection["last_trails_best_val_points"]
        test_trail = selection.get("last_trails_best_test_points")
        console.print(f"best noisy-validation epoch {b['epoch']}: noisy-val {_pct(b.get('val_acc'))}, test accuracy "
                      f"{_pct(b.get('test_acc'))}; the last epoch trails it by {trail:.2f} points of noisy-val"
                      + ("" if test_trail is None else f" and {test_trail:.2f} of test"), highlight=False)
    if summary.get("best_test_oracle"):
        b = summary["best_test_oracle"]
        console.print(f"best test accuracy (oracle) {_pct(b.get('test_acc'))} at epoch {b['epoch']}")
    for event in summary.get("collapse") or []:  # a method's phase change that cost accuracy: always worth saying
        if event["kind"] == "phase_change":
            console.print(styled(("warning:", "bold yellow"), f" {event['message']}"), highlight=False,
                          soft_wrap=True)
    drop = 100 * summary.get("collapse_drop", 0.05)
    if selection and selection["last_trails_best_val_points"] > drop:  # falls it recovered from are in the log
        console.print(styled(("warning:", "bold yellow"),
                             f" the last epoch trails the best noisy-validation epoch {selection['best_epoch']} by "
                             f"{selection['last_trails_best_val_points']:.1f} points: use checkpoints/best.pt "
                             f"(noisykd eval {out_dir} --best, noisykd predict ... --best)"),
                      highlight=False, soft_wrap=True)
    best = out_dir / "checkpoints" / "best.pt"
    console.print(f"outputs in {str(out_dir)}; best checkpoint ({summary.get('best_checkpoint', 'best')}): "
                  f"{str(best)} (noisykd eval/predict --best)", highlight=False)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


@app.command("eval")
@friendly_errors
def eval_cmd(
    target: Path = typer.Argument(..., help="run folder or checkpoint file"),
    data: Optional[str] = typer.Option(None, help="evaluate on another data spec's test split"),
    best: bool = typer.Option(False, help="use checkpoints/best.pt (best noisy-validation epoch)"),
) -> None:
    """Evaluate a checkpoint on the test split; prints the accuracy of every head of the method and the
    expected calibration error of its prediction."""
    from .evaluate import evaluate_checkpoint

    results = evaluate_checkpoint(target, data_spec=data, best=best)
    table = Table("head", "test accuracy")
    for head, acc in results["accuracy"].items():
        table.add_row(head, _pct(acc))
    console.print(f"{results['checkpoint']} (epoch {results['epoch']}), {results['test_samples']:,} test images")
    console.print(table)
    console.print(f"expected calibration error of the main head (15 bins): {_pct(results['ece'])}")


@app.command("predict")
@friendly_errors
def predict_cmd(
    target: Path = typer.Argument(..., help="run folder or checkpoint file"),
    data: str = typer.Option(..., help="images: a data spec (e.g. folder:ROOT, npz:FILE) or a folder of image files"),
    out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="CSV of the top classes (and .npz of "
                             "all probabilities next to it)"),
    top_k: int = typer.Option(3, help="classes per image in the CSV"),
    best: bool = typer.Option(False, help="use checkpoints/best.pt (best noisy-validation epoch)"),
) -> None:
    """Class probabilities of the run's network for any images: OUT.csv (top-k classes) and OUT.npz
    (pred_probs N x C, for cleanlab or your own analysis)."""
    from .outfiles import check_new_files, data_root
    from .predict import npz_path, predict

    if top_k < 1:
        raise typer.BadParameter("--top-k must be >= 1")
    check_new_files([out, npz_path(out)], data_roots=[data_root(data)])
    predictions = predict(target, data, best=best)
    predictions.write(out, top_k)
    console.print(f"{len(predictions.index):,} images; wrote {out} and {npz_path(out)}")


@app.command("detect")
@friendly_errors
def detect_cmd(
    run: Path = typer.Argument(..., help="a finished run folder; trained first (with the options below) if it "
                               "holds no run yet"),
    detector: str = typer.Option("auto", help="auto (with --cv: the cross-validated default rule; else the run's "
                                 "own), or a rule: otsu_mu1, otsu_s, otsu_mu2, gmm, argmax, confident_learning "
                                 "(cleanlab)"),
    cv: int = typer.Option(0, "--cv", help="K: rank with out-of-sample probabilities from K cross-validation "
                           "fold runs (RUN/cv/fold-K, reused when present) instead of the run's own (0); measured: "
                           "not better here, see benchmarks/results/practitioner-*.md"),
    verified: Optional[Path] = typer.Option(None, help="CSV of verified labels (index or path, label): score "
                                            "against these samples only"),
    overwrite: bool = typer.Option(False, help="replace this detector's earlier results in RUN"),
    method: Optional[str] = typer.Option(None, help="method to train when RUN holds no run (default ce)"),
    data: Optional[str] = typer.Option(None, help="data spec to train on when RUN holds no run (default digits)"),
    labels: Optional[str] = typer.Option(None, help="label-set spec, e.g. cifar10n:FILE:worst"),
    noise: Optional[str] = typer.Option(None, help="synthetic noise, e.g. sym:0.4 (default none)"),
    epochs: Optional[int] = typer.Option(None, help="epochs, when RUN holds no run"),
    seed: Optional[int] = typer.Option(None, help="training seed, when RUN holds no run"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N (training and cross-validation)"),
    threads: Optional[int] = typer.Option(None, help="CPU threads of torch (training and cross-validation)"),
    overrides: List[str] = typer.Option([], "--set", "-s", help="config override for training: key=value"),
    top: int = typer.Option(10, help="show this many most-likely-wrong labels"),
) -> None:
    """Rank the labels by how likely they are wrong: RUN/label_issues-DETECTOR.csv (file, given and suggested
    class, score; most likely wrong first) and RUN/detection-DETECTOR.json (precision / recall / F1 / AUROC
    against the truth when it is known, or against --verified labels). With --cv K the ranking comes from K-fold
    cross-validated probabilities: no network judges a label it trained on."""
    from .crossval import cross_validate
    from .detect.from_run import detect_from_run
    from .engine.runfolder import RunFolder
    from .engine.report import write_json

    if cv == 1 or cv < 0:  # before anything trains
        raise typer.BadParameter("--cv takes 2 or more folds (or 0: none)")
    state = RunFolder(run).state()
    sets = _flag_sets({"optim.epochs": epochs, "seed": seed, "device": device, "threads": threads}, list(overrides))
    if state != "finished":
        _train_for_detect(run, state, method, data, noise, labels, sets)
    folds = cv
    if folds:
        place = {k: v for k, v in {"device": device, "threads": threads}.items() if v is not None}
        err_console.print(f"{folds}-fold cross-validation of {str(run)}: each fold run trains without one "
                          "fold and predicts it", highlight=False)
        cross_validate(run, folds=folds, overrides=place, progress=None,
                       on_fold=lambda f, n, what: err_console.print(f"fold {f + 1}/{n}: {_FOLD_STATES[what]}"))
        detector = "cv" if detector == "auto" else detector if detector.startswith("cv") else f"cv:{detector}"
    found = detect_from_run(run, detector, verified=verified)
    name = found.detector.replace("/", "-").replace(":", "-")
    csv_path, json_path = run / f"label_issues-{name}.csv", run / f"detection-{name}.json"
    if csv_path.exists() and not overwrite:
        raise typer.BadParameter(f"{csv_path} exists (an earlier detect with this detector); pass --overwrite to "
                                 "replace it")
    found.write_csv(csv_path)
    write_json(found.summary(), json_path)
    n, flagged = len(found.index), int(found.flagged.sum())
    console.print(f"detector: {found.detector} ({found.rule}); flagged {flagged:,} of {n:,} labels "
                  f"({100 * flagged / max(n, 1):.1f}%)", highlight=False)
    if found.note:
        console.print(f"note: {found.note}", highlight=False)
    table = Table("rank", "sample", "given", "suggested", "noise score", "flagged",
                  title=f"the {top} labels most likely wrong")
    for rank, i in enumerate(found.ranking()[:top], 1):
        sample = str(found.path[i]) if found.path is not None else str(found.index[i])
        table.add_row(str(rank), sample, found.class_name(int(found.given_label[i])),
                      found.class_name(int(found.suggested_label[i])), f"{found.noise_score[i]:.3f}",
                      "yes" if found.flagged[i] else "no")
    console.print(table)
    if found.metrics is not None:
        m = found.metrics
        auroc = "-" if m.get("auroc") is None else f"{m['auroc']:.3f}"
        console.print(f"against {found.truth}: F1 {100 * m['f1']:.2f}%  precision {100 * m['precision']:.2f}%  "
                      f"recall {100 * m['recall']:.2f}%  AUROC {auroc}", highlight=False)
    else:
        console.print("the true labels are unknown: no precision or recall (give --verified FILE.csv with labels "
                      "you checked)")
    if found.noise_matrix is not None and len(found.classes) <= 20:
        matrix = Table("true \\ given", *[c[:8] for c in found.classes],
                       title="estimated noise transition matrix (confident learning; rows: true class)")
        for c, row in zip(found.classes, found.noise_matrix):
            matrix.add_row(c[:12], *[f"{v:.2f}" if v >= 0.005 else "." for v in row])
        console.print(matrix)
    console.print(f"wrote {csv_path} and {json_path}")


@app.command("clean")
@friendly_errors
def clean_cmd(
    run: Path = typer.Argument(..., help="a finished run folder"),
    out: Path = typer.Option(..., "--out", "-o", help="a new (or empty) folder for the cleaned data"),
    action: str = typer.Option("review", help="drop the suspects, relabel them (where the model is confident; see "
                               "--relabel-min, --given-max, --rest), or review: keep every label and mark them"),
    top: Optional[int] = typer.Option(None, help="the suspects are the N labels most likely wrong (default: the "
                                      "flagged ones)"),
    fraction: Optional[float] = typer.Option(None, help="the suspects are this share of the labels, most likely "
                                             "wrong first"),
    relabel_min: float = typer.Option(0.8, help="relabel only where P(suggested class) is at least this ..."),
    given_max: float = typer.Option(0.1, help="... and P(given class) at most this"),
    rest: str = typer.Option("drop", help="with --action relabel: drop or keep the suspects not confident enough "
                             "to relabel"),
    detector: str = typer.Option("auto", help="as for noisykd detect; auto: cv when RUN has cross-validated "
                                 "probabilities (noisykd detect RUN --cv K), else the run's own"),
    gallery: int = typer.Option(24, help="images in the gallery of suspects, suspects.png (0: none)"),
    verified: Optional[Path] = typer.Option(None, help="CSV of verified labels, as for noisykd detect"),
) -> None:
    """Write a cleaned copy of the run's data (a CSV manifest for folder sources, an npz otherwise) and
    suspects.png, the top suspects with their given and suggested classes; the original files stay untouched."""
    from .clean import CleaningRule, clean_run

    rule = CleaningRule(action=action, top=top, fraction=fraction, relabel_min=relabel_min, given_max=given_max,
                        rest=rest)
    result = clean_run(run, out, detector=detector, top=gallery, verified=verified, rule=rule)
    console.print(f"{result.flagged:,} suspects of {result.judged:,} labels judged ({rule.describe()}): "
                  f"dropped {result.dropped:,}, relabelled {result.relabelled:,}; {result.kept:,} samples kept; "
                  f"wrote {str(result.data_file)}" + (f" and {str(result.gallery)}" if result.gallery
                                                              else ""), highlight=False)
    reader = "folder" if result.data_file.suffix == ".csv" else "npz"
    console.print(f"train on it with: noisykd train --data {reader}:{str(result.data_file)} ...",
                  highlight=False)


@app.command("train-clean")
@friendly_errors
def train_clean_cmd(
    data: Optional[str] = typer.Option(None, help="data spec, e.g. folder:photos (default: the config's, or digits)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the stages (noisy, its cv folds when asked, "
                             "cleaned, clean) and the comparison; reused when run again"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config of the run on the given labels"),
    method: Optional[str] = typer.Option(None, help="method of both runs and the folds (default ce)"),
    labels: Optional[str] = typer.Option(None, help="label-set spec, e.g. cifar10n:FILE:worst"),
    noise: Optional[str] = typer.Option(None, help="synthetic noise (for trying it on clean data), e.g. sym:0.4"),
    model: Optional[str] = typer.Option(None, help="network (noisykd models)"),
    epochs: Optional[int] = typer.Option(None, help="epochs of every run"),
    seed: Optional[int] = typer.Option(None, help="training seed"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N"),
    threads: Optional[int] = typer.Option(None, help="CPU threads of torch (default: every core)"),
    overrides: List[str] = typer.Option([], "--set", "-s", help="config override of every run: key=value"),
    folds: int = typer.Option(0, "--folds", "--cv", help="K >= 2: judge the labels with K-fold cross-validated "
                              "probabilities (K more runs; needed for --action relabel); 0: with the noisy run's "
                              "own (measured as good for dropping, at half the cost)"),
    action: str = typer.Option("drop", help="drop the suspects, or relabel them where confident (the rest per "
                               "--rest)"),
    top: Optional[int] = typer.Option(None, help="the suspects are the N labels most likely wrong (default: the "
                                      "flagged ones)"),
    fraction: Optional[float] = typer.Option(None, help="the suspects are this share of the labels"),
    relabel_min: float = typer.Option(0.8, help="relabel only where P(suggested class) is at least this ..."),
    given_max: float = typer.Option(0.1, help="... and P(given class) at most this"),
    rest: str = typer.Option("drop", help="drop or keep the suspects not confident enough to relabel"),
    detector: Optional[str] = typer.Option(None, help="which labels are suspects: a rule on the noisy run's "
                                           "probabilities (gmm, the default: its loss GMM; otsu_mu1, "
                                           "confident_learning, ...), or with --folds: cv (confident learning, the "
                                           "default) or cv:RULE"),
) -> None:
    """Train on the labels as given, find the wrong ones, clean them, train again for as many optimiser steps,
    and print accuracy and wrong-label share before and after (OUT/train_clean.md, .json). The default (the
    noisy run's loss GMM flags, dropped) measured best on realistic noise, benchmarks/results/practitioner-*.md;
    --folds 4 --action relabel judges with cross-validated probabilities and relabels where they are confident."""
    from .clean import CleaningRule
    from .pipeline import train_clean

    rule = CleaningRule(action=action, top=top, fraction=fraction, relabel_min=relabel_min, given_max=given_max,
                        rest=rest).validate()
    flags = {"method": method, "data.spec": data, "data.labels": labels, "data.noise": noise, "model.name": model,
             "optim.epochs": epochs, "seed": seed, "device": device, "threads": threads}
    cfg = _load_config_for_data(config, _flag_sets(flags, list(overrides)))
    _check_writable(out)
    result = train_clean(cfg, out, folds=folds, detector=detector, rule=rule, progress=None,
                         on_stage=lambda stage, what: err_console.print(f"[{stage}] {what}", highlight=False,
                                                                        soft_wrap=True))
    print(result.markdown())  # plain: a Markdown table that pastes whole
    console.print(f"wrote {out / 'train_clean.md'} and {out / 'train_clean.json'}; the cleaned data: "
                  f"{result.cleaned}; the model trained on it: {result.clean_run} (noisykd predict "
                  f"{result.clean_run} --best)", highlight=False)


_FOLD_STATES = {"start": "training", "resume": "resuming", "reuse": "reusing the finished run"}


def _train_for_detect(run: Path, state: str, method, data, noise, labels, overrides) -> None:
    """Finish (or start) the run that ``noisykd detect RUN`` needs."""
    from .config import apply_overrides, from_dict, load_config
    from .engine import Trainer
    from .engine.checkpoint import find_resume_checkpoint, load_checkpoint

    sets = _flag_sets({"method": method, "data.spec": data, "data.noise": noise, "data.labels": labels},
                      list(overrides))
    if state == "resumable":  # its own config, changed only where asked (and then refused, naming the keys)
        console.print(f"{run} holds an unfinished run: continuing it first")
        saved = load_checkpoint(find_resume_checkpoint(run))["config"]
        Trainer(from_dict(apply_overrides({**saved, "out_dir": str(run)}, sets)).validate()).run(resume=True)
        return
    defaults = [f"method={method or 'ce'}", f"data.spec={data or 'digits'}", f"data.noise={noise or 'none'}"]
    cfg = load_config(overrides=defaults + sets + [f"out_dir={run}"])
    console.print(f"no finished run in {run}: training {cfg.method} on {cfg.data.spec} first")
    Trainer(cfg).run()


# ------------------------------------------------------------------------------------------------------------
# reproduce / compare

@app.command("reproduce")
@friendly_errors
def reproduce_cmd(
    ctx: typer.Context,
    names: List[str] = typer.Argument(None, help="shipped configs to run, e.g. bkd/cifar10n-worst ce/cifar10n-worst"),
    seeds: int = typer.Option(5, help="run seeds 0 .. N-1 of each setting"),
    epochs_scale: float = typer.Option(1.0, help="shorten every schedule by this factor (marked: not the paper's)"),
    smoke: bool = typer.Option(False, help="300 images, small_cnn, 2 epochs: checks the plumbing, not the number"),
    data_root: Optional[Path] = typer.Option(None, help="folder with cifar-10-batches-py/, cifar-100-python/ and "
                                             "CIFAR-10_human.pt (sets NOISYKD_CIFAR10, NOISYKD_CIFAR100 and "
                                             "NOISYKD_CIFAR_N)"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N (default: each config's)"),
    overrides: List[str] = typer.Option([], "--set", "-s", help="config override for every setting: key=value"),
    out: Path = typer.Option(Path("runs/reproduce"), "--out", "-o", help="runs go to OUT/NAME/seed-S"),
    list_: bool = typer.Option(False, "--list", help="list the paper settings and their numbers, run nothing"),
) -> None:
    """Run paper settings over seeds and print ours next to the paper's numbers (OUT/reproduce.md, .json).
    Finished seeds are reused and unfinished ones resumed, so the command can be run again."""
    from .reproduce import Report, Setting, run_seeds

    if list_:
        _list_paper_settings()
        return
    if not names:
        raise typer.BadParameter("name at least one setting (noisykd reproduce --list shows them)")
    if seeds < 1:
        raise typer.BadParameter("--seeds must be >= 1")
    if data_root is not None:
        for variable in ("NOISYKD_CIFAR10", "NOISYKD_CIFAR100", "NOISYKD_CIFAR_N"):
            os.environ[variable] = str(data_root)
    _check_writable(out)
    settings = [Setting.from_config(name, epochs_scale=epochs_scale, smoke=smoke, overrides=overrides, device=device)
                for name in names]  # every config is checked before anything trains
    report = Report("noisykd reproduce", _invocation(ctx))
    for setting in settings:
        runs = run_seeds(setting, range(seeds), out, on_seed=_say_seed)
        report.add(setting, runs)
    console.print(report.write(out / "reproduce", with_paper=True), markup=False, highlight=False)
    console.print(f"wrote {out / 'reproduce.md'} and {out / 'reproduce.json'}")


def _invocation(ctx: typer.Context) -> str:
    """The command line as typed (rebuilt from the parsed options when noisykd runs inside another program)."""
    import shlex

    if Path(sys.argv[0]).name == "noisykd":
        return shlex.join(["noisykd", *sys.argv[1:]])
    parts = ["noisykd", ctx.info_name or ""]
    for name, value in ctx.params.items():
        default = next((p.default for p in ctx.command.params if p.name == name), None)
        if value in (None, [], ()) or value == default:
            continue
        option = "--" + name.rstrip("_").replace("_", "-")
        if name == "names":
            parts += [str(v) for v in value]
        elif isinstance(value, bool):
            parts.append(option)
        elif isinstance(value, (list, tuple)):
            parts += [f"{option} {shlex.quote(str(v))}" for v in value]
        else:
            parts.append(f"{option} {shlex.quote(str(value))}")
    return " ".join(parts)


def _check_writable(folder: Path) -> None:
    """Before anything loads: the output folder is a folder we can write (not a file, not read-only)."""
    from .engine.runfolder import RunFolder

    RunFolder(folder).check_writable()


def _say_seed(setting, seed: int, state: str) -> None:
    verb = {"start": "training", "resume": "resuming", "reuse": "reusing the finished run of"}[state]
    err_console.print(f"{setting.name}: {verb} seed {seed}", highlight=False)


def _list_paper_settings() -> None:
    """A Markdown table (it does not wrap names in a narrow terminal, and pastes into a report)."""
    from .config import read_config_file, shipped_configs

    lines = ["| setting | method | network | epochs | paper test acc | paper detection F1 / Pr / Re | source |",
             "|---|---|---|---|---|---|---|"]
    for name in shipped_configs():
        data = read_config_file(name)
        expected = data.get("expected")
        if not expected:
            continue
        detection = " / ".join(_opt(expected.get(f"detection_{k}")) for k in ("f1", "precision", "recall"))
        source = "; ".join(x for x in (expected.get("paper"), expected.get("test_acc_source"),
                                       expected.get("detection_source")) if x)
        lines.append(f"| {name} | {data.get('method', 'ce')} | {data.get('model', {}).get('name', '-')} | "
                     f"{data.get('optim', {}).get('epochs', '-')} | {_opt(expected.get('test_acc'))} | {detection} | "
                     f"{source} |")
    print("\n".join(lines))


def _opt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


@app.command("compare")
@friendly_errors
def compare_cmd(
    ctx: typer.Context,
    methods: List[str] = typer.Option(..., "--methods", "-m", help="comma-separated method specs: ce,gce:q=0.5,"
                                      "bkd_ref=bkd:reference_gradients=true (label=method:key=value,...)"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="the base config every method runs on "
                                         "(default: digits/sym40 on the built-in digits; noisykd's defaults with "
                                         "--data)"),
    data: Optional[str] = typer.Option(None, help="data spec instead of the config's (your own data: no synthetic "
                                       "noise unless --noise says so)"),
    labels: Optional[str] = typer.Option(None, help="label-set spec, e.g. cifar10n:FILE:worst"),
    noise: Optional[str] = typer.Option(None, help="synthetic noise, e.g. sym:0.4, or universal noise "
                                        "openset:RHO1:RHO2 (with --ood)"),
    ood: Optional[str] = typer.Option(None, help="out-of-distribution pool of openset noise: a data spec, e.g. "
                                      "fashion-mnist:ROOT"),
    model: Optional[str] = typer.Option(None, help="network (noisykd models)"),
    epochs: Optional[int] = typer.Option(None, help="number of epochs"),
    seeds: int = typer.Option(3, help="run seeds 0 .. N-1 of each method"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N"),
    threads: Optional[int] = typer.Option(None, help="CPU threads of torch (default: every core)"),
    overrides: List[str] = typer.Option([], "--set", "-s", help="config override for every method: key=value"),
    out: Path = typer.Option(Path("runs/compare"), "--out", "-o", help="runs go to OUT/LABEL/seed-S"),
) -> None:
    """Compare methods on the same data and noisy labels over seeds: test accuracy (last, best noisy-val,
    oracle) and wrong-label detection, mean ± std (OUT/compare.md, .json)."""
    from .reproduce import Report, compare_settings, run_seeds, split_method_specs

    if seeds < 1:
        raise typer.BadParameter("--seeds must be >= 1")
    _check_writable(out)
    flags = {"data.spec": data, "data.labels": labels, "data.noise": noise, "data.ood": ood, "model.name": model,
             "optim.epochs": epochs, "threads": threads}
    sets = _flag_sets(flags, list(overrides))
    specs = [spec for value in methods for spec in split_method_specs(value)]
    base = config if config is not None else (None if data is not None else "digits/sym40")
    settings = compare_settings(specs, base=base, overrides=sets, device=device)
    report = Report("noisykd compare", _invocation(ctx))
    for setting in settings:
        report.add(setting, run_seeds(setting, range(seeds), out, on_seed=_say_seed))
    console.print(report.write(out / "compare", with_paper=False), markup=False, highlight=False)
    console.print(f"wrote {out / 'compare.md'} and {out / 'compare.json'}")


# ------------------------------------------------------------------------------------------------------------
# demo

@app.command("demo")
@friendly_errors
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="output folder"),
    epochs: int = typer.Option(60, help="epochs per method"),
    seed: int = typer.Option(0, help="training seed"),
) -> None:
    """The main job on built-in data: 8x8 digits with 40% symmetric label noise, CE against the best method
    available, with a table of test accuracies and plots."""
    from .demo import run_demo

    _check_writable(out)
    run_demo(out, epochs=epochs, seed=seed, console=console)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
