"""The ``noisykd`` command line: data inspection, training, evaluation and the built-in demo."""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from .errors import ConfigError, NoisyKDError
from .helptext import argument_help, elide_middle, first_sentence, plain, without_arguments
from .logs import log_to_stderr


class _ProseHelp:
    """What every noisykd command and group shows in ``--help`` besides typer's defaults: a flag (``--help``,
    ``--overwrite``) shows no ``<bool>`` value, since it takes none (typer 0.29 labels every flag with its bool
    type), and an argument reads ``RUN`` / ``[NAMES]...`` in the usage line and the arguments panel (typer writes
    a required one as ``{run}``)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""  # a flag takes no value: nothing to show after it
            elif isinstance(param, TyperArgument) and param.metavar is None:
                param.metavar = param.name.upper()
        return params

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or param.name.upper()
                pieces.append((name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else ""))
        if isinstance(self, TyperGroup):
            pieces.append(self.subcommand_metavar)
        return pieces


class ProseCommand(_ProseHelp, TyperCommand):
    """A noisykd command (see :class:`_ProseHelp`)."""


class ProseGroup(_ProseHelp, TyperGroup):
    """A noisykd command group (see :class:`_ProseHelp`)."""


app = typer.Typer(cls=ProseGroup, add_completion=False, no_args_is_help=True,
                  help="Train image classifiers on noisy labels with knowledge distillation.")
data_app = typer.Typer(cls=ProseGroup, no_args_is_help=True, help="Inspect data sources and label noise.")
app.add_typer(data_app, name="data")
# markup=False: every message holds user strings (paths, class names, config values); "[red]x[/red]" in one
# must print as it is, never as a style or a MarkupError. Our own styles go through styled().
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


@app.callback()
def _start() -> None:
    """Fresh consoles for each invocation: rich reads the terminal width (COLUMNS) when a console is made, and
    tables are fitted to the width of the terminal the command runs in now."""
    global console, err_console
    console = Console(markup=False)
    err_console = Console(stderr=True, markup=False)


def command(group: typer.Typer, name: str):
    """Register the decorated function as command ``name`` of ``group``. Its help is its docstring as plain
    prose (:func:`noisykd.helptext.plain`: no reST markup), the commands list shows its first sentence, and
    ``[`` in it prints as written (typer reads help as rich markup)."""

    def register(fn):
        text = plain(fn.__doc__)
        return group.command(name, cls=ProseCommand, help=escape(text),
                             short_help=escape(first_sentence(text)))(fn)

    return register


# ------------------------------------------------------------------------------------------------------------
# The flags the training commands share (train, detect, compare, demo, reproduce; train-clean too): one
# definition each, so that their spelling, short form, type and help cannot drift apart between commands
# (tests/test_flags.py checks every command against these). Each means the same everywhere; a command that has
# no use for one leaves it out (detect has no --out: it writes into its RUN folder).

EPOCHS_OPTION = typer.Option(None, "--epochs", help="epochs of each training run (default: the config's, or a suite's)")
SEED_OPTION = typer.Option(None, "--seed", help="training seed S (default: the config's); where a command also takes "
                           "--seeds N (compare, reproduce), its runs use seeds S, S+1, ..., S+N-1 (default S = 0)")
THREADS_OPTION = typer.Option(None, "--threads", help="CPU threads of torch (default: the config's; none set: every "
                              "core)")
DEVICE_OPTION = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default: the config's)")
OUT_OPTION = typer.Option(None, "--out", "-o", help="output folder (default: runs/<date-time>-<method>-<data> for "
                          "train, else runs/COMMAND); compare and reproduce write each run to OUT/NAME/seed-S")
SET_OPTION = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="override a config key of every run this "
                          "command trains, e.g. --set optim.lr=0.1 (repeatable)")


def styled(*parts) -> Text:
    """One line from parts: a ``(text, style)`` pair is styled, a plain string printed exactly as it is."""
    return Text.assemble(*parts)


def _table(*headers: str, **options) -> Table:
    """A rich table whose cells and headers wrap, and fold a word too long for their column, but are never cut
    with an ellipsis (rich's default) however narrow the terminal."""
    table = Table(*headers, **options)
    for column in table.columns:
        column.overflow = "fold"
    return table


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

@command(data_app, "kinds")
def data_kinds() -> None:
    """List the data and label-set spec kinds."""
    from .data import dataset_kinds, labelset_kinds

    table = _table("kind", "spec", title="data sources")
    for kind, usage in dataset_kinds().items():
        table.add_row(kind, usage)
    console.print(table)
    table = _table("kind", "spec", title="label sets (--labels)")
    for kind, usage in labelset_kinds().items():
        table.add_row(kind, usage)
    console.print(table)


@command(data_app, "info")
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
    relabelled = not np.array_equal(noisy.labels, dataset.train.labels)
    # one train column when the training labels are the data's own; two when noise or a label set changed them
    train_columns = ["train (data's labels)", "train (training labels)"] if relabelled else ["train"]
    table = _table("class", "name", *train_columns, "test")
    train_counts = np.bincount(dataset.train.labels, minlength=dataset.num_classes)
    given_counts = np.bincount(noisy.labels, minlength=dataset.num_classes)
    test_counts = (np.bincount(dataset.test.labels, minlength=dataset.num_classes)
                   if dataset.test is not None else None)
    for k, name in enumerate(dataset.classes):
        counts = [f"{train_counts[k]:,}"] + ([f"{given_counts[k]:,}"] if relabelled else [])
        table.add_row(str(k), name, *counts, f"{test_counts[k]:,}" if test_counts is not None else "-")
    totals = [f"{len(dataset.train):,}"] + ([f"{len(noisy.labels):,}"] if relabelled else [])
    table.add_row("", "total", *totals, f"{len(dataset.test):,}" if dataset.test is not None else "-", style="bold")
    console.print(table)
    console.print(f"training labels: {_training_labels(noisy, data_cfg)}", highlight=False)
    if noisy.noise_rate is None:
        console.print("noise rate: unknown (no clean labels)")
        return
    console.print(styled((f"noise rate: {100 * noisy.noise_rate:.2f}%", "bold"),
                         f" ({int(noisy.is_noisy.sum()):,} of {len(noisy):,} labels differ from the clean ones)"))
    if noisy.open_set_rate:
        console.print(noisy.describe())
    if matrix and dataset.num_classes <= 20:
        _print_matrix(noisy.transition_matrix(dataset.num_classes), dataset.classes, "clean class",
                      "noise transition matrix: the share of each clean class (rows) given each label (columns, "
                      "numbered as the classes)", lambda v: f"{v:.2f}" if v else ".")


def _training_labels(noisy, data_cfg) -> str:
    """Where the training labels come from, in words: the data's own, a label set, or synthetic noise."""
    if data_cfg.labels:
        return f"the label set {data_cfg.labels}"
    if noisy.kind == "given":
        return "the data's own (whether they are right is unknown: no clean labels)"
    if data_cfg.noise in ("none", ""):
        return "the data's own, no noise added"
    line = f"the data's with {data_cfg.noise} noise ({noisy.kind.replace('_', ' ')}, noise seed {data_cfg.noise_seed})"
    return line + (f", out-of-distribution images from {data_cfg.ood}" if data_cfg.ood else "")


def _print_matrix(matrix, classes, row_header: str, title: str, cell) -> None:
    """A C x C matrix with every class name whole: rows are named ``k name``, columns numbered k (the rows are
    their legend). Columns that do not fit the terminal go to further blocks below (as numpy prints wide arrays),
    so that no name and no value is ever cut."""
    rows = [f"{k} {name}" if str(name) != str(k) else str(k) for k, name in enumerate(classes)]

    def block(columns: range) -> Table:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
        table.add_column(row_header, no_wrap=True)
        for j in columns:
            table.add_column(str(j), justify="right", no_wrap=True)
        for i, row in enumerate(rows):
            table.add_row(row, *[cell(matrix[i][j]) for j in columns])
        return table

    def fits(n: int) -> bool:
        return _natural_width(block(range(n))) <= console.width

    per_block = len(classes)
    while per_block > 1 and not fits(per_block):
        per_block -= 1
    for start in range(0, len(classes), per_block):
        columns = range(start, min(start + per_block, len(classes)))
        note = "" if len(columns) == len(classes) else f" (columns {columns[0]}-{columns[-1]} of {len(classes)})"
        console.print(title + note, highlight=False)
        console.print(block(columns))


def _natural_width(renderable) -> int:
    """The width ``renderable`` takes when nothing limits it (rich's own measure stops at the console's width)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10_000), renderable).maximum


@command(data_app, "labels")
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

@command(app, "configs")
def configs_cmd() -> None:
    """List the shipped run configs (configs/), for ``noisykd train --config NAME``."""
    from .config import find_config, shipped_configs

    table = _table("config", "what it is")
    for name in shipped_configs():
        title = next((line.lstrip("#").strip() for line in find_config(name).read_text().splitlines()
                      if line.startswith("#")), "")
        table.add_row(name, title)  # every shipped config starts with a one-line title comment
    console.print(table)


@command(app, "models")
@friendly_errors
def models_cmd(name: Optional[str] = typer.Argument(None, help="show this network's options")) -> None:
    """List the registered networks, or show one network's options (``--set model.kwargs.KEY=VALUE``) with
    their defaults and meaning."""
    from .models import MODELS

    _describe(MODELS, name, "model.kwargs")


@command(app, "methods")
@friendly_errors
def methods_cmd(name: Optional[str] = typer.Argument(None, help="show this method's arguments and notes")) -> None:
    """List the registered training methods, or show one method's arguments (``--set method_args.KEY=VALUE``)
    with their defaults and meaning."""
    from .methods import METHODS

    _describe(METHODS, name, "method_args")


def entry_options(registry, name: str) -> dict:
    """``{option: default}`` of a registered method or model: everything ``--set method_args.KEY`` (or
    ``model.kwargs.KEY``) accepts. For a loss baseline (a method with a ``loss``) that is every keyword
    hyperparameter of its loss (``reduction`` aside: the engine needs a batch mean), each with the preset's
    default where there is one (its paper's value), else the loss function's own."""
    import inspect

    from .registry import REQUIRED

    options = dict(registry.describe(name).options)
    entry = registry[name]
    loss = getattr(entry, "loss", None)
    if registry.kind == "method" and isinstance(loss, str):
        from .losses import LOSSES

        for p in list(inspect.signature(LOSSES[loss]).parameters.values())[2:]:  # after (logits, labels)
            if p.name != "reduction" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                options.setdefault(p.name, REQUIRED if p.default is p.empty else p.default)
    return options


def _doc_sources(entry) -> list[str]:
    """The docstrings that may document an entry's options, most specific first: the entry's own, its typed
    arguments' (``Args`` and the dataclasses it extends) and, for a class, its ``__init__``'s."""
    import dataclasses
    import inspect

    sources = [inspect.getdoc(entry) or ""]
    args = getattr(entry, "Args", None)
    if isinstance(args, type):
        sources += [inspect.getdoc(c) or "" for c in args.__mro__ if dataclasses.is_dataclass(c)]
    if inspect.isclass(entry) and "__init__" in vars(entry):
        sources.append(inspect.getdoc(entry.__init__) or "")
    return sources


def option_help(registry, name: str) -> list[tuple[dict, str]]:
    """Every option of entry ``name`` in order, grouped with the others that share its meaning:
    ``[({option: default, ...}, meaning), ...]``; meaning "" where no docstring describes the option."""
    options = entry_options(registry, name)
    meanings = argument_help(_doc_sources(registry[name]), options)
    group_of = {option: names for names in meanings for option in names}
    groups: list[tuple[dict, str]] = []
    done: set[str] = set()
    for option in options:
        if option in done:
            continue
        names = [n for n in group_of.get(option, (option,)) if n in options]
        done.update(names)
        groups.append(({n: options[n] for n in names}, meanings.get(group_of.get(option, ()), "")))
    return groups


def _describe(registry, name: Optional[str], key: str) -> None:
    """A table of a registry's entries (the first sentence of each and its options), or one entry's whole
    docstring and every option with its default and meaning, all as plain prose."""
    if name is None:
        table = _table(registry.kind, "what it is", f"options (--set {key}.KEY=VALUE)")
        for entry in registry.names():
            d = registry.describe(entry)
            table.add_row(entry, d.summary, ", ".join(entry_options(registry, entry)) or "-")
        console.print(table)
        return
    d = registry.describe(name)
    options = entry_options(registry, name)
    text = plain(without_arguments(d.doc, options))  # the arguments are shown below, with their defaults
    console.print(styled((name, "bold"), f": {text}" if text else ""), highlight=False)
    if not options:
        console.print(f"\n{registry.kind} {name} has no options.")
        return
    console.print(f"\n{key} (--set {key}.KEY=VALUE), with their defaults:")
    for defaults, meaning in option_help(registry, name):
        console.print(styled("  ", (", ".join(f"{k} = {v!r}" for k, v in defaults.items()), "bold")),
                      highlight=False)
        # wrapped here, not by rich: rich pads every wrapped line with spaces up to the block's width
        console.print(textwrap.fill(meaning or "(not described)", width=max(20, console.width - 1),
                                    initial_indent=" " * 6, subsequent_indent=" " * 6, break_long_words=False,
                                    break_on_hyphens=False), highlight=False,
                      soft_wrap=True)


# ------------------------------------------------------------------------------------------------------------
# train / eval

@command(app, "train")
@friendly_errors
def train_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (see RUN/config.yaml)"),
    overrides: List[str] = SET_OPTION,
    method: Optional[str] = typer.Option(None, help="method (noisykd methods)"),
    data: Optional[str] = typer.Option(None, help="data spec"),
    labels: Optional[str] = typer.Option(None, help="label-set spec, e.g. cifar10n:FILE:worst"),
    noise: Optional[str] = typer.Option(None, help="synthetic noise, e.g. sym:0.4, or universal noise "
                                        "openset:RHO1:RHO2 (with --ood)"),
    ood: Optional[str] = typer.Option(None, help="out-of-distribution pool of openset noise: a data spec, e.g. "
                                      "fashion-mnist:ROOT"),
    model: Optional[str] = typer.Option(None, help="network (noisykd models)"),
    epochs: Optional[int] = EPOCHS_OPTION,
    seed: Optional[int] = SEED_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    out: Optional[Path] = OUT_OPTION,
    resume: Optional[Path] = typer.Option(None, help="continue the run in this folder (or from this checkpoint), "
                                          "writing to that folder"),
    extend: bool = typer.Option(False, help="with --resume and --epochs: train on past the run's planned end"),
    threads: Optional[int] = THREADS_OPTION,
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


@command(app, "eval")
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
    table = _table("head", "test accuracy")
    for head, acc in results["accuracy"].items():
        table.add_row(head, _pct(acc))
    console.print(f"{results['checkpoint']} (epoch {results['epoch']}), {results['test_samples']:,} test images")
    console.print(table)
    console.print(f"expected calibration error of the main head (15 bins): {_pct(results['ece'])}")


@command(app, "predict")
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


@command(app, "detect")
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
    overwrite: bool = typer.Option(False, help="replace RUN's files of this detector even when they are not its "
                                   "own unchanged results (edited since, or another program's)"),
    method: Optional[str] = typer.Option(None, help="method to train when RUN holds no run (default ce)"),
    data: Optional[str] = typer.Option(None, help="data spec to train on when RUN holds no run (default digits)"),
    labels: Optional[str] = typer.Option(None, help="label-set spec, e.g. cifar10n:FILE:worst"),
    noise: Optional[str] = typer.Option(None, help="synthetic noise, e.g. sym:0.4 (default none)"),
    epochs: Optional[int] = EPOCHS_OPTION,
    seed: Optional[int] = SEED_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    overrides: List[str] = SET_OPTION,
    top: int = typer.Option(10, help="show this many most-likely-wrong labels"),
) -> None:
    """Rank the labels by how likely they are wrong: RUN/label_issues-DETECTOR.csv (file, given and suggested
    class, score; most likely wrong first) and RUN/detection-DETECTOR.json (precision / recall / F1 / AUROC
    against the truth when it is known, or against --verified labels). With --cv K the ranking comes from K-fold
    cross-validated probabilities: no network judges a label it trained on.

    Running it again (to add --verified, say) replaces this detector's files in RUN when they are its own
    results, unchanged since detect wrote them; a file that is not (edited since, or another program's) is left
    alone unless --overwrite. The results go into RUN, next to the run they judge, so detect has no --out.
    --epochs, --seed and --set apply when RUN holds no run yet and is trained first; --device and --threads to
    that training and to the --cv fold runs."""
    from .crossval import cross_validate
    from .detect.from_run import detect_from_run, results_files
    from .engine.runfolder import RunFolder
    from .engine.report import write_json

    if cv == 1 or cv < 0:  # before anything trains
        raise typer.BadParameter("--cv takes 2 or more folds (or 0: none)")
    state = RunFolder(run).state()
    sets = _flag_sets({"optim.epochs": epochs, "seed": seed, "device": device, "threads": threads}, list(overrides))
    if state != "finished":
        _train_for_detect(run, state, method, data, noise, labels, sets)
    else:
        unused = [flag for flag, value in (("--epochs", epochs), ("--seed", seed), ("--set", overrides),
                                           ("--method", method), ("--data", data), ("--labels", labels),
                                           ("--noise", noise)) if value] + \
                 ([flag for flag, value in (("--device", device), ("--threads", threads)) if value is not None]
                  if not cv else [])
        if unused:
            err_console.print(f"{str(run)} holds a finished run: {', '.join(unused)} change nothing (they apply when "
                              "RUN is trained first" + ("" if cv else "; --device and --threads also to --cv runs")
                              + ")", highlight=False, soft_wrap=True)
    folds = cv
    if folds:
        place = {k: v for k, v in {"device": device, "threads": threads}.items() if v is not None}
        err_console.print(f"{folds}-fold cross-validation of {str(run)}: each fold run trains without one "
                          "fold and predicts it", highlight=False)
        cross_validate(run, folds=folds, overrides=place, progress=None,
                       on_fold=lambda f, n, what: err_console.print(f"fold {f + 1}/{n}: {_FOLD_STATES[what]}"))
        detector = "cv" if detector == "auto" else detector if detector.startswith("cv") else f"cv:{detector}"
    found = detect_from_run(run, detector, verified=verified)
    csv_path, json_path = results_files(run, found.detector)
    foreign = foreign_results(csv_path, json_path, found.detector)
    if foreign and not overwrite:
        raise typer.BadParameter(f"{foreign[0]} exists and is not detector {found.detector}'s own unchanged result "
                                 "(edited since, or another program's): pass --overwrite to replace it, or move "
                                 "it away")
    if csv_path.exists() or json_path.exists():
        err_console.print(f"replacing {'the files' if foreign else 'the earlier results'} of detector "
                          f"{found.detector} in {str(run)}", highlight=False, soft_wrap=True)
    found.write_csv(csv_path)
    # the digests let the next detect tell our files from ones a user edited (foreign_results)
    summary = json.loads(json.dumps({**found.summary(), "label_issues_csv": {"file": csv_path.name,
                                                                             "sha256": _sha256(csv_path)}},
                                    default=str))  # as it will read back
    write_json({**summary, SUMMARY_DIGEST: _summary_digest(summary)}, json_path)
    n, flagged = len(found.index), int(found.flagged.sum())
    console.print(f"detector: {found.detector} ({found.rule}); flagged {flagged:,} of {n:,} labels "
                  f"({100 * flagged / max(n, 1):.1f}%)", highlight=False)
    if found.note:
        console.print(f"note: {found.note}", highlight=False)
    rows = [[str(rank), str(found.path[i]) if found.path is not None else str(found.index[i]),
             found.class_name(int(found.given_label[i])), found.class_name(int(found.suggested_label[i])),
             f"{found.noise_score[i]:.3f}", "yes" if found.flagged[i] else "no"]
            for rank, i in enumerate(found.ranking()[:top], 1)]
    console.print(f"the {len(rows)} labels most likely wrong (all of them, with full paths: {csv_path.name}):",
                  highlight=False)
    console.print(fitted_table(("rank", "sample", "given", "suggested", "noise score", "flagged"), rows, elide=1))
    if found.metrics is not None:
        m = found.metrics
        auroc = "-" if m.get("auroc") is None else f"{m['auroc']:.3f}"
        console.print(f"against {found.truth}: F1 {100 * m['f1']:.2f}%  precision {100 * m['precision']:.2f}%  "
                      f"recall {100 * m['recall']:.2f}%  AUROC {auroc}", highlight=False)
    else:
        console.print("the true labels are unknown: no precision or recall (give --verified FILE.csv with labels "
                      "you checked)")
    if found.noise_matrix is not None and len(found.classes) <= 20:
        _print_matrix(found.noise_matrix, found.classes, "true class",
                      "estimated noise transition matrix (confident learning): the share of each true class (rows) "
                      "given each label (columns, numbered as the classes)",
                      lambda v: f"{v:.2f}" if v >= 0.005 else ".")
    console.print(f"wrote {csv_path} and {json_path}", highlight=False)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


#: The key of detection-X.json holding the SHA-256 of the rest of it (canonical JSON, sorted keys).
SUMMARY_DIGEST = "summary_sha256"


def _summary_digest(summary: dict) -> str:
    """SHA-256 of a detection summary without its own digest: the JSON text with sorted keys, so that it does
    not depend on how the file was indented."""
    import hashlib

    rest = {k: v for k, v in summary.items() if k != SUMMARY_DIGEST}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def foreign_results(csv_path: Path, json_path: Path, detector: str) -> list[Path]:
    """Which of a detector's two result files in a run folder must not be replaced without ``--overwrite``.

    Both are derived files that ``noisykd detect`` writes and may replace: ``detection-X.json`` when it reads as
    this detector's summary (its ``detector`` field names it) and still holds the digest of its own content
    (:data:`SUMMARY_DIGEST`: unchanged since detect wrote it); ``label_issues-X.csv`` when that summary holds
    the CSV's SHA-256 and the file still has it. A summary written before digests were kept (no digest at all)
    is taken as ours when its fields are, and its CSV when it starts with this detector's ``# detector`` line
    and our header and has one row per sample of the summary's ``n``. Any other existing file (edited since,
    written by another program, a CSV without its summary, unreadable) is returned: replacing it could lose
    someone's work. A missing file is nothing to protect.
    """
    from .detect.from_run import CSV_HEADER

    foreign: list[Path] = []
    summary = None
    if json_path.exists():
        try:
            summary = json.loads(json_path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            summary = None
        ours = (isinstance(summary, dict) and summary.get("detector") == detector
                and {"n", "n_flagged", "metrics"} <= set(summary)
                and summary.get(SUMMARY_DIGEST, _summary_digest(summary)) == _summary_digest(summary))
        if not ours:
            summary = None
            foreign.append(json_path)
    if csv_path.exists():
        recorded = (summary or {}).get("label_issues_csv") or {}
        if summary is None:  # no summary of ours beside it: nothing says the CSV is ours
            ours = False
        elif recorded.get("sha256"):
            ours = recorded.get("file") == csv_path.name and recorded["sha256"] == _sha256(csv_path)
        else:
            try:
                with open(csv_path, encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except (OSError, UnicodeDecodeError):
                lines = []
            ours = (len(lines) >= 2 and lines[0].startswith(f"# detector {detector}:")
                    and lines[1] == ",".join(CSV_HEADER) and len(lines) - 2 == summary.get("n"))
        if not ours:
            foreign.insert(0, csv_path)
    return foreign


def fitted_table(headers, rows, elide: int) -> Table:
    """A table that fits the terminal without cutting a header or a cell: column ``elide`` (paths) is shortened
    in its middle (:func:`noisykd.helptext.elide_middle`, keeping each file name), every other column is shown
    whole. rows: lists of strings, one per header."""

    def table_of(cells, fold_others: bool = False) -> Table:
        table = Table(*headers)
        for j, column in enumerate(table.columns):
            # measured unwrapped; shown with the other columns folding (never an ellipsis) should even they
            # not fit a very narrow terminal
            column.no_wrap = j == elide or not fold_others
            column.overflow = "ellipsis" if j == elide else "fold"
        for row in cells:
            table.add_row(*row)
        return table

    others = _natural_width(table_of([[c if j != elide else "" for j, c in enumerate(r)] for r in rows]))
    room = max(len(headers[elide]), console.width - (others - len(headers[elide])))
    return table_of([[elide_middle(c, room) if j == elide else c for j, c in enumerate(r)] for r in rows],
                    fold_others=True)


@command(app, "clean")
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


@command(app, "train-clean")
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
    epochs: Optional[int] = EPOCHS_OPTION,
    seed: Optional[int] = SEED_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    overrides: List[str] = SET_OPTION,
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

@command(app, "reproduce")
@friendly_errors
def reproduce_cmd(
    ctx: typer.Context,
    names: List[str] = typer.Argument(None, help="shipped configs to run, e.g. bkd/cifar10n-worst ce/cifar10n-worst, "
                                      "or one suite, e.g. digits (--list shows both)"),
    seeds: Optional[int] = typer.Option(None, help="run N seeds of each setting, S .. S+N-1 with S from --seed "
                                        "(default: 5; a suite's own for a suite)"),
    seed: Optional[int] = SEED_OPTION,
    epochs: Optional[int] = EPOCHS_OPTION,
    epochs_scale: float = typer.Option(1.0, help="shorten every schedule by this factor (marked: not the paper's)"),
    smoke: bool = typer.Option(False, help="300 images, small_cnn, 2 epochs: checks the plumbing, not the number"),
    data_root: Optional[Path] = typer.Option(None, help="folder with cifar-10-batches-py/, cifar-100-python/ and "
                                             "CIFAR-10_human.pt (sets NOISYKD_CIFAR10, NOISYKD_CIFAR100 and "
                                             "NOISYKD_CIFAR_N)"),
    device: Optional[str] = DEVICE_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    overrides: List[str] = SET_OPTION,
    out: Optional[Path] = OUT_OPTION,
    list_: bool = typer.Option(False, "--list", help="list the paper settings and their numbers, run nothing"),
) -> None:
    """Run paper settings over seeds and print ours next to the paper's numbers (OUT/reproduce.md, .json;
    default OUT: runs/reproduce), or a suite of methods on one data set (OUT/SUITE.md, .json). Finished seeds
    are reused and unfinished ones resumed, so the command can be run again. --epochs N (as --set
    optim.epochs=N), --epochs-scale, --smoke and --set change a setting from the paper's: the report marks it
    "(shortened)" and lists the change; --device and --threads do not."""
    from .reproduce import SUITES, Report, Setting, paper_settings_markdown, run_seeds, run_suite

    if list_:
        print(paper_settings_markdown(), end="")  # plain: a Markdown table that pastes whole
        return
    if not names:
        raise typer.BadParameter("name at least one setting or suite (noisykd reproduce --list shows them)")
    suites = [name for name in names if name in SUITES]
    if suites and len(names) > 1:
        others = ", ".join(n for n in names if n != suites[0])
        raise typer.BadParameter(f"a suite runs on its own: run {suites[0]} apart from {others}")
    first_seed = _check_seeds(1 if seeds is None else seeds, seed)
    if epochs is not None and epochs_scale != 1.0:
        raise typer.BadParameter(f"--epochs {epochs} and --epochs-scale {epochs_scale:g} both set the schedule: "
                                 "give one of them")
    out = Path("runs/reproduce") if out is None else out
    if data_root is not None:
        for variable in ("NOISYKD_CIFAR10", "NOISYKD_CIFAR100", "NOISYKD_CIFAR_N"):
            os.environ[variable] = str(data_root)
    _check_writable(out)
    _flag_sets({"optim.epochs": epochs}, list(overrides))  # refuses a --set contradicting --epochs
    if suites:
        report = run_suite(suites[0], out, seeds=seeds, first_seed=first_seed, epochs=epochs,
                           epochs_scale=epochs_scale, smoke=smoke, device=device, threads=threads,
                           overrides=list(overrides), on_seed=_say_seed, command=_invocation(ctx))
        _print_markdown(report.markdown(with_paper=False))
        console.print(f"wrote {out / (suites[0] + '.md')} and {out / (suites[0] + '.json')}", highlight=False)
        return
    seeds = 5 if seeds is None else seeds
    settings = [Setting.from_config(name, epochs=epochs, epochs_scale=epochs_scale, smoke=smoke,
                                    overrides=list(overrides), device=device, threads=threads)
                for name in names]  # every config is checked before anything trains
    report = Report("noisykd reproduce", _invocation(ctx))
    for setting in settings:
        runs = run_seeds(setting, range(first_seed, first_seed + seeds), out, on_seed=_say_seed)
        report.add(setting, runs)
    _print_markdown(report.write(out / "reproduce", with_paper=True))
    console.print(f"wrote {out / 'reproduce.md'} and {out / 'reproduce.json'}", highlight=False)


def _check_seeds(seeds: int, seed: Optional[int]) -> int:
    """The first seed of ``--seeds N`` runs (``--seed``, default 0), after checking both."""
    if seeds < 1:
        raise typer.BadParameter(f"--seeds must be >= 1, got {seeds}")
    if seed is not None and seed < 0:
        raise typer.BadParameter(f"--seed must be >= 0, got {seed}")
    return 0 if seed is None else seed


def _print_markdown(text: str) -> None:
    """A Markdown table as it is, every row one line however narrow the terminal (rich would wrap it, and a
    wrapped table cannot be pasted)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _invocation(ctx: typer.Context) -> str:
    """The command line as typed (rebuilt from the parsed options when noisykd runs inside another program)."""
    import shlex

    if Path(sys.argv[0]).name == "noisykd":
        return shlex.join(["noisykd", *sys.argv[1:]])
    parts = ["noisykd", ctx.info_name or ""]
    params = {p.name: p for p in ctx.command.params}
    for name, value in ctx.params.items():
        param = params.get(name)
        default = None if param is None else param.default
        if value in (None, [], ()) or value == default:
            continue
        longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        option = longs[0] if longs else "--" + name.rstrip("_").replace("_", "-")  # --set for overrides
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


@command(app, "compare")
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
    epochs: Optional[int] = EPOCHS_OPTION,
    seeds: int = typer.Option(3, help="run N seeds of each method (S .. S+N-1, S from --seed)"),
    seed: Optional[int] = SEED_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    overrides: List[str] = SET_OPTION,
    out: Optional[Path] = OUT_OPTION,
) -> None:
    """Compare methods on the same data and noisy labels over seeds: test accuracy (last, best noisy-val,
    oracle) and wrong-label detection, mean ± std (OUT/compare.md, .json; default OUT: runs/compare). Finished
    runs are reused and unfinished ones resumed, so the command can be run again."""
    from .reproduce import Report, compare_settings, run_seeds, split_method_specs

    first_seed = _check_seeds(seeds, seed)
    out = Path("runs/compare") if out is None else out
    _check_writable(out)
    flags = {"data.spec": data, "data.labels": labels, "data.noise": noise, "data.ood": ood, "model.name": model,
             "optim.epochs": epochs, "threads": threads}
    sets = _flag_sets(flags, list(overrides))
    specs = [spec for value in methods for spec in split_method_specs(value)]
    base = config if config is not None else (None if data is not None else "digits/sym40")
    settings = compare_settings(specs, base=base, overrides=sets, device=device)
    report = Report("noisykd compare", _invocation(ctx))
    for setting in settings:
        report.add(setting, run_seeds(setting, range(first_seed, first_seed + seeds), out, on_seed=_say_seed))
    _print_markdown(report.write(out / "compare", with_paper=False))
    console.print(f"wrote {out / 'compare.md'} and {out / 'compare.json'}", highlight=False)


# ------------------------------------------------------------------------------------------------------------
# demo

@command(app, "demo")
@friendly_errors
def demo_cmd(
    out: Optional[Path] = OUT_OPTION,
    epochs: Optional[int] = EPOCHS_OPTION,
    seed: Optional[int] = SEED_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    overrides: List[str] = SET_OPTION,
) -> None:
    """The main job on built-in data: 8x8 digits with 40% symmetric label noise, CE against the best method
    available, with a table of test accuracies and plots (default output folder: runs/demo). A second demo
    into the same folder reuses the finished runs and continues unfinished ones."""
    from .demo import run_demo

    out = Path("runs/demo") if out is None else out
    # a --set contradicting a flag is refused, as in train, compare and reproduce
    _flag_sets({"optim.epochs": epochs, "seed": seed, "threads": threads, "device": device}, list(overrides))
    seed = 0 if seed is None else seed  # the demo's own seed
    _check_writable(out)
    run_demo(out, epochs=epochs, seed=seed, threads=threads, device=device, overrides=list(overrides),
             console=console)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
