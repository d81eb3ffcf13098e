"""Typed run configuration, validated up front, loadable from YAML and ``--set key=value`` overrides.

Every run saves its resolved config as ``config.yaml`` in its output folder, so ``noisykd train --config
RUN/config.yaml`` reproduces it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass
class DataConfig:
    """Where the images and labels come from.

    spec:          a data spec (``digits``, ``cifar10:ROOT``, ``folder:ROOT`` ...; see ``noisykd data kinds``).
    labels:        a label-set spec replacing the training labels (``cifar10n:FILE:worst``), or None.
    noise:         synthetic noise applied to the (clean) training labels: ``none``, ``sym:0.4``,
                   ``sym-all:0.4``, ``sym-all-exact:0.4`` (exactly ceil(0.4 N) labels redrawn, GJS's code),
                   ``asym:0.4``, ``pairflip:0.45``, ``instance:0.4``.
    noise_seed:    seed of the synthetic noise (independent of the training seed, so runs share labels).
    noise_file:    a saved noisy-label file (``noisy_labels.npz`` of an earlier run); overrides labels/noise.
    val_fraction:  share of the noisy training set held out as noisy validation, stratified by given label, for
                   model selection (``best.pt``), the collapse guard and early stopping. None (default): the data's
                   own validation split when it has one (``folder:ROOT`` with ``train/``, ``val/`` and
                   ``test/``), else 10% (the CIFAR-N protocol), else none for sets too small to spare one
                   sample per class (fewer than :data:`MIN_AUTO_VALIDATION` training samples); 0: no validation.
    val_seed:      seed of that split (and of the cross-validation folds).
    cv_folds, cv_fold: train on all but fold ``cv_fold`` of a stratified ``cv_folds``-fold split of the training
                   samples (after the validation split; seeded by val_seed): the fold runs of ``noisykd detect
                   --cv K`` (``noisykd.crossval``), whose held-out fold they predict. None: every training sample.
    train_subset:  keep only this many training samples (stratified, seeded by val_seed), or None for all.
    test_subset:   evaluate on this many test samples only (stratified, seeded by val_seed), or None for all:
                   for quick checks (``noisykd reproduce --smoke``), never for reported numbers.
    resize:        resize images to this size when loading (``folder:`` sources), or None.
    ood:           universal noise (``noise: openset:RHO1:RHO2``): the data spec of the out-of-distribution pool
                   (its training split; ``folder:``, ``npz:``, ``fashion-mnist:``, ``cifar100:`` ...). Its images
                   are resized and converted to the training images' size and channels.
    ood_exclude:   pool classes never used (e.g. those overlapping the in-distribution classes), by name or id.
    ood_reuse:     allow a pool image to stand in for several open-set samples when the pool is too small
                   (default false: that is an error).
    """

    spec: str = "digits"
    labels: str | None = None
    noise: str = "none"
    noise_seed: int = 0
    noise_file: str | None = None
    val_fraction: float | None = None
    val_seed: int = 0
    cv_folds: int | None = None
    cv_fold: int | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    resize: int | None = None
    ood: str | None = None
    ood_exclude: list = field(default_factory=list)
    ood_reuse: bool = False

    @property
    def universal_noise(self) -> bool:
        """True when the noise is universal, closed- plus open-set (``openset:RHO1:RHO2``)."""
        return self.noise.strip().lower().startswith("openset")

    def validate(self) -> None:
        if self.val_fraction is not None:
            _check_range("data.val_fraction", self.val_fraction, 0.0, 0.9)
        self._validate_folds()
        self._validate_open_set()
        for name in ("noise_seed", "val_seed"):
            _check_seed(f"data.{name}", getattr(self, name))
        if self.labels and self.noise not in ("none", "") and not self.noise_file:
            raise ConfigError("data.labels and data.noise are both set: use a label set or synthetic noise, not both")
        noise_kind, sep, rate_text = self.noise.strip().lower().partition(":")
        if sep and noise_kind != "openset":  # sym:R, asym:R, pairflip:R, ...: the rate, checked before any data loads
            from .noise.labels import check_rate, rate_from_text

            try:
                rate = rate_from_text(rate_text)
            except ValueError:
                raise ConfigError(f"data.noise={self.noise!r}: the rate {rate_text!r} is not a number written with "
                                  "ASCII digits (e.g. sym:0.4)") from None
            try:
                check_rate(rate)
            except ValueError as e:  # a DataError: out of [0, 1]
                raise ConfigError(f"data.noise={self.noise!r}: {e}") from None
        kind = self.spec.partition(":")[0]
        if self.noise.strip().lower().startswith("asym") and kind not in ASYMMETRIC_DATA:
            raise ConfigError(f"data.noise={self.noise!r}: the asymmetric maps are defined for CIFAR-10 and CIFAR-100 "
                              f"(by class meaning), not for {kind!r}; use pairflip:R or sym:R")
        if self.train_subset is not None and self.train_subset < 2:
            raise ConfigError(f"data.train_subset must be >= 2 or null, got {self.train_subset}")
        if self.test_subset is not None and self.test_subset < 1:
            raise ConfigError(f"data.test_subset must be >= 1 or null, got {self.test_subset}")

    def _validate_folds(self) -> None:
        """Both fold keys or neither; 2 <= cv_folds <= 100, 0 <= cv_fold < cv_folds."""
        if (self.cv_folds is None) != (self.cv_fold is None):
            raise ConfigError("data.cv_folds and data.cv_fold go together (the fold run of a K-fold split): set both "
                              f"or neither, got cv_folds={self.cv_folds}, cv_fold={self.cv_fold}")
        if self.cv_folds is None:
            return
        if not 2 <= self.cv_folds <= 100:
            raise ConfigError(f"data.cv_folds must lie in [2, 100], got {self.cv_folds}")
        if not 0 <= self.cv_fold < self.cv_folds:
            raise ConfigError(f"data.cv_fold must lie in [0, {self.cv_folds - 1}] (0-based), got {self.cv_fold}")

    def _validate_open_set(self) -> None:
        """The spec parses, a pool is named when open-set samples are asked for, and the pool options are only
        given with open-set noise."""
        from .noise.openset import OPENSET_SPEC, parse_openset_spec

        if not isinstance(self.ood_exclude, list) or not all(
                isinstance(c, (str, int)) and not isinstance(c, bool) for c in self.ood_exclude):
            raise ConfigError(f"data.ood_exclude must be a list of class names or ids, got {self.ood_exclude!r}")
        if self.noise_file:
            return  # a saved file: an open-set one needs data.ood to rebuild its images (checked when loaded)
        if self.universal_noise:
            try:
                _, rho2 = parse_openset_spec(self.noise)
            except ValueError as exc:
                raise ConfigError(f"data.noise: {exc}") from None
            if rho2 > 0 and not self.ood:
                raise ConfigError(f"data.noise={self.noise!r} swaps images for out-of-distribution ones: name the "
                                  "pool with --ood SPEC (data.ood), e.g. fashion-mnist:ROOT, folder:ROOT, npz:FILE")
            if self.ood and _same_source(self.ood, self.spec):
                raise ConfigError(f"data.ood={self.ood!r} is the training data itself: its images are not out of "
                                  "distribution; name another data set as the pool")
        elif self.ood or self.ood_exclude:
            option = "data.ood" if self.ood else "data.ood_exclude"
            raise ConfigError(f"{option} is only used by universal noise (data.noise={OPENSET_SPEC}), but "
                              f"data.noise is {self.noise!r}")


@dataclass
class ModelConfig:
    """Network from the registry (``noisykd.models.list_models()``) and its keyword arguments."""

    name: str = "small_cnn"
    kwargs: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    schedule: ``multistep`` (lr x gamma at each milestone epoch), ``cosine`` (to 0 over the run),
              ``constant``. Milestones are epochs; warmup_epochs ramps the lr linearly from 0.
    lr, schedule defaults: SGD at 0.05 with a cosine decay (the digits config's): on 3,000 Fashion-MNIST images
              with 20% wrong labels (benchmarks/practitioner_data.py), CE for 20 epochs reached 76.4% test
              accuracy with them against 73.7% with a constant 0.02 and 73.0% with a cosine 0.02 (one seed each).
    batch_size: the global batch: a run of N processes trains on batch_size / N per process, and the lr is
              that of the global batch. A loss that is a mean over the batch gets the same gradient on 1 or N
              processes; what a method decides per batch (small-loss selection, mixing partners, means over a
              data-dependent part of the batch) acts on each process's part.
    early_stop_patience: stop the run after this many evaluated epochs in a row without a better
              noisy-validation accuracy (needs a validation split); None: train every epoch. The schedule stays
              the one planned for ``epochs``; the outputs are those of the last epoch trained, and ``best.pt``
              holds the best one.
    """

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    epochs: int = 30
    batch_size: int = 128
    schedule: str = "cosine"
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: int = 0
    early_stop_patience: int | None = None

    def validate(self) -> None:
        _check_choice("optim.name", self.name, ("sgd", "adam", "adamw"))
        _check_choice("optim.schedule", self.schedule, ("multistep", "cosine", "constant"))
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise ConfigError(f"optim.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ConfigError(f"optim.batch_size must be >= 2 (BatchNorm needs two samples), got {self.batch_size}")
        for m in self.milestones:
            if not isinstance(m, int) or not 0 < m < self.epochs + 1:
                raise ConfigError(f"optim.milestones must be epochs in [1, {self.epochs}], got {self.milestones}")
        _check_range("optim.momentum", self.momentum, 0.0, 1.0)
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ConfigError(f"optim.nesterov needs sgd with momentum > 0 (Nesterov's momentum), got "
                              f"{self.name} with momentum {self.momentum}")
        if self.name != "sgd" and self.momentum != OptimConfig.momentum:
            raise ConfigError(f"optim.momentum is SGD's; {self.name} has its own betas and would ignore "
                              f"momentum {self.momentum}: leave it at its default {OptimConfig.momentum}")
        if not 0 <= self.weight_decay <= 1:
            raise ConfigError(f"optim.weight_decay must lie in [0, 1] (papers use 1e-4 .. 5e-4), got "
                              f"{self.weight_decay}")
        if not self.gamma > 0:
            raise ConfigError(f"optim.gamma must be > 0 (the lr factor at each milestone), got {self.gamma}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"optim.warmup_epochs must lie in [0, {self.epochs}) (the epochs), got {self.warmup_epochs}")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            raise ConfigError(f"optim.early_stop_patience must be >= 1 (evaluated epochs without a better noisy-"
                              f"validation accuracy) or null, got {self.early_stop_patience}")


@dataclass
class AugmentConfig:
    """Training augmentation (``noisykd.augment``).

    policy:   the spec of every view a method leaves to the run (the default view ``train`` of the loss
              baselines and BKD): ``weak``, ``none``, ``weak_cutout(cutout_size=8)`` ...
    views:    view name -> spec, replacing what a method asks for by default (``views: {teacher: augmix}``).
    padding, pad_mode, cutout: offered to every view's policy that accepts them (padding None: 4 px for images
              of 32 px and more, else 1; cutout 0: none).
    """

    policy: str = "weak"
    views: dict = field(default_factory=dict)
    padding: int | None = None
    pad_mode: str = "reflect"
    cutout: int = 0

    def validate(self) -> None:
        from . import augment

        _check_choice("augment.pad_mode", self.pad_mode, ("reflect", "constant"))
        if self.padding is not None and self.padding < 0:
            raise ConfigError(f"augment.padding must be >= 0, got {self.padding}")
        if self.cutout < 0:
            raise ConfigError(f"augment.cutout must be >= 0, got {self.cutout}")
        for where, spec in [("augment.policy", self.policy), *((f"augment.views.{k}", v) for k, v in self.views.items())]:
            try:
                parsed = augment.parse_view_spec(spec)
                # built once on a stand-in image, so that option values (not only names) are checked up front
                augment.get_policy(parsed.policy, mean=(0.5,) * 3, std=(0.5,) * 3, image_size=(32, 32),
                                   **parsed.options)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None

    def common_options(self):
        """The options offered to every view (:class:`noisykd.augment.CommonOptions`)."""
        from .augment import CommonOptions

        return CommonOptions(padding=self.padding, padding_mode=self.pad_mode, cutout_size=self.cutout)


@dataclass
class LogConfig:
    """Where a run's progress goes besides metrics.csv and train.log.

    tensorboard: also write every epoch's metrics as TensorBoard scalars under ``RUN/tensorboard`` (needs the
                 tensorboard package; ``pip install tensorboard``).
    collapse_drop: the collapse guard (``noisykd.engine.guard``): the log and the summary say so when the
                 noisy-validation accuracy falls this much (a fraction: 0.05 = 5 points) below its best, or below
                 its value before a method's phase change (BKD's split ...), naming the best checkpoint.
    """

    tensorboard: bool = False
    collapse_drop: float = 0.05

    def validate(self) -> None:
        _check_range("log.collapse_drop", self.collapse_drop, 0.0, 1.0)
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError:
                raise ConfigError("log.tensorboard=true needs the tensorboard package: python -m pip install "
                                  "tensorboard") from None


@dataclass
class DistributedConfig:
    """Settings of a run over several processes (``torchrun`` or ``noisykd train --devices N``); ignored by a
    single process.

    backend:        ``auto`` (NCCL on GPUs, gloo on the CPU), ``nccl`` or ``gloo``.
    sync_batchnorm: BatchNorm statistics over the global batch instead of each process's part (torch's
                    SyncBatchNorm on GPUs, the engine's own on the CPU): what makes N processes compute what one
                    process does; costs collectives in every BatchNorm layer's forward and backward, so every
                    process must call each network equally often per step (every registered method does).
    timeout_s:      how long a process waits for the others in one collective before it stops with an error
                    (a process died or hangs). torch's default is 30 minutes; checkpoint saving and the
                    methods' scoring passes take well under that.
    """

    backend: str = "auto"
    sync_batchnorm: bool = False
    timeout_s: float = 1800.0

    def validate(self) -> None:
        _check_choice("distributed.backend", self.backend, ("auto", "nccl", "gloo"))
        if not 1 <= self.timeout_s <= 7 * 24 * 3600:
            raise ConfigError(f"distributed.timeout_s must lie in [1, 604800] seconds (a collective of a real run "
                              f"takes more than a millisecond), got {self.timeout_s}")


@dataclass
class PaperResult:
    """What a paper reports for a setting (the ``expected`` block of a shipped config), in percent, with where
    it is printed; ``noisykd reproduce`` puts our numbers next to it.

    test_acc:   test accuracy; ``test_acc_source`` names the table, row and column.
    detection_f1 / detection_precision / detection_recall: wrong-label detection, ``detection_source`` likewise.
    epoch:      which epoch the paper reports (``last``, ``best``), or ``unstated``.
    seeds:      how many runs the paper averages, as it says (``">= 5"``), or empty.
    """

    paper: str = ""
    test_acc: float | None = None
    test_acc_source: str = ""
    detection_f1: float | None = None
    detection_precision: float | None = None
    detection_recall: float | None = None
    detection_source: str = ""
    epoch: str = "unstated"
    seeds: str = ""

    def validate(self) -> None:
        _check_choice("expected.epoch", self.epoch, ("last", "best", "unstated"))
        for name in ("test_acc", "detection_f1", "detection_precision", "detection_recall"):
            value = getattr(self, name)
            if value is not None:
                _check_range(f"expected.{name}", value, 0.0, 100.0)


@dataclass
class RunConfig:
    """A whole experiment.

    method / method_args: a registered method (``noisykd.methods.list_methods()``) and its arguments.
    device:  ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ...
    amp:     mixed precision: ``none``, ``bf16``, ``fp16`` (autocast; fp16 adds a grad scaler).
    channels_last, compile: opt-in speed options (they slow training down on small CPUs).
    data_on_device: ``auto`` keeps the uint8 training set on the device when it fits, else streams it from
             pinned host memory; ``yes``/``no`` force either.
    eval_every: evaluate on the test and validation splits every this many epochs (and always at the last);
             model selection (best noisy-val, best test) then chooses among the evaluated epochs.
    expected: the paper's numbers for this setting (shipped configs), or None; training ignores it.
    threads: CPU threads of torch (``torch.set_num_threads``) during the run; None: torch's default (every
             core). Measured on the 2-core AMD EPYC (benchmarks/results/demo-time-fixed-threads.md, the demo):
             idle, 2 threads 60.7 s and 1 thread 74.1 s; beside two busy processes, 389.4 s and 151.5 s. It
             depends on the load (and on an earlier machine 1 thread was faster for small_cnn even idle), so a
             run keeps torch's default; the demo chooses by the idle cores. The thread count can change the last
             digits of a result (float sums in another order).
    out_dir: the run folder; empty: ``runs/<date-time>-<method>-<data>``, chosen when the run starts.
    distributed: settings of a run over several processes (:class:`DistributedConfig`).
    """

    method: str = "ce"
    method_args: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    data_on_device: str = "auto"
    eval_batch_size: int = 1024
    eval_every: int = 1
    threads: int | None = None
    out_dir: str = ""
    log: LogConfig = field(default_factory=LogConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    expected: PaperResult | None = None

    def validate(self) -> "RunConfig":
        """Check every value, the method's arguments and the model's option names included, before any data
        loads; raises ConfigError naming the key."""
        from .methods.registry import parse_method_args
        from .models.registry import check_model_options

        self.data.validate()
        self.optim.validate()
        self.augment.validate()
        if self.expected is not None:
            self.expected.validate()
        self.log.validate()
        self.distributed.validate()
        cores = os.cpu_count() or 1
        if self.threads is not None and not 1 <= self.threads <= 4 * cores:
            raise ConfigError(f"threads must lie in [1, {4 * cores}] (this machine has {cores} cores) or be null, "
                              f"got {self.threads}")
        parse_method_args(self.method, self.method_args, epochs=self.optim.epochs)
        check_model_options(self.model.name, self.model.kwargs)
        _check_seed("seed", self.seed)
        _check_choice("amp", self.amp, ("none", "bf16", "fp16"))
        _check_choice("data_on_device", self.data_on_device, ("auto", "yes", "no"))
        if not (self.device in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:[0-9]{1,3}", self.device)):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps (N a device number), got "
                              f"{self.device!r}")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


#: Below this many training samples the automatic validation split (``data.val_fraction: null``) is skipped:
#: 10% of them would leave classes without a validation or a training sample.
MIN_AUTO_VALIDATION = 50
#: The share the automatic validation split holds out (the CIFAR-N protocol's 10%).
AUTO_VALIDATION_FRACTION = 0.1
#: Data sets with an asymmetric noise map (methods.md: CIFAR-10's pairs, CIFAR-100's superclasses).
ASYMMETRIC_DATA = ("cifar10", "cifar100")
#: Seeds are drawn into torch and numpy generators (the engine adds up to 2 to the training seed).
#: the largest seed every consumer takes: scikit-learn's random_state (the detectors' mixtures) and numpy's legacy
#: seeds stop at 2**32 - 1 (torch's generators take more); one range for every seed, checked before any work
MAX_SEED = 2**32 - 1


def _same_source(a: str, b: str) -> bool:
    """Whether two data specs name the same source: the same kind and the same path (resolved)."""
    kind_a, _, rest_a = a.strip().partition(":")
    kind_b, _, rest_b = b.strip().partition(":")
    if kind_a != kind_b:
        return False
    if not rest_a or not rest_b:
        return rest_a == rest_b
    return os.path.realpath(os.path.expanduser(rest_a)) == os.path.realpath(os.path.expanduser(rest_b))


def _check_seed(name: str, value: int) -> None:
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} must be an integer in [0, 2**32 - 1], got {value}")


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must lie in [{lo}, {hi}], got {value}")


# ----------------------------------------------------------------------------------------------------------
# Building a config from plain data (YAML, CLI overrides) with type checks.

def from_dict(data: dict, cls: type = RunConfig, where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and ill-typed values."""
    section = where.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{section}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; known: {sorted(names)}")
    values = {k: _coerce(v, hints[k], f"{where}{k}") for k, v in data.items()}
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(value, hint, where + ".")
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if origin in (list, tuple) and typing.get_args(hint):
        return _coerce_sequence(value, hint, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # NaN passes every comparison: refuse it here, for every field
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if hint is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if hint is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return value


def _coerce_sequence(value: Any, hint: Any, where: str) -> list | tuple:
    """``list[int]``, ``tuple[float, ...]`` or ``tuple[float, float]``: a YAML list, element types checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {len(value)}: {list(value)!r}")
        element_types = list(args)
    else:
        element_types = [args[0]] * len(value)
    items = [_coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, element_types))]
    return tuple(items) if origin is tuple else items


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two changes for configs: ``1e-4`` is a number (YAML 1.2's float syntax, as
    people write it; YAML 1.1 reads it as a string), and aliases are refused (a config never needs one, and they
    make alias bombs and self-references)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"an alias (*{event.anchor}): configs take no aliases, "
                                              "write the value out", event.start_mark)
        return super().compose_node(parent, index)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))
# booleans as YAML 1.2 writes them: true / false only; YAML 1.1's yes, no, on, off stay strings (a class called
# "no" or a value "off" is never silently a boolean)
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _ConfigLoader.yaml_implicit_resolvers.items()}
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def load_yaml(text: str) -> Any:
    """A YAML document as a config reads it (:class:`_ConfigLoader`); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


#: the largest config file read (shipped ones are a few kB)
MAX_CONFIG_BYTES = 1_000_000


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict, in place; return it."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {part} is not a section")
        try:
            node[parts[-1]] = load_yaml(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: value is not valid YAML: {e}") from None
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None, updates: dict | None = None) -> RunConfig:
    """Resolve a config: defaults <- ``base`` <- the YAML file ``path`` <- ``updates`` <- ``overrides``; then
    ``${NAME}`` in string values is replaced by the environment variable NAME; validated.

    ``path``: a YAML file, or the name of a config shipped in ``configs/`` (``"digits/sym40"``; see
    :func:`shipped_configs`). ``updates``: a nested dict (``{"method": "bkd", "optim": {"epochs": 8}}``);
    ``overrides``: ``key.sub=value`` strings as on the command line.
    """
    data: dict = _deep_merge({}, base or {})
    if path is not None:
        data = _deep_merge(data, read_config_file(path))
    data = _deep_merge(data, copy.deepcopy(updates or {}))
    apply_overrides(data, overrides or [])
    return from_dict(_expand_environment(data)).validate()


#: Where the shipped configs live: ``configs/`` of the repository, reached through the package (src/noisykd/configs
#: links to it), so that an installed package has them too.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the configs in ``configs/`` (``"digits/sym40"`` for ``configs/digits/sym40.yaml``), sorted."""
    return sorted(p.relative_to(CONFIGS_DIR).with_suffix("").as_posix() for p in CONFIGS_DIR.rglob("*.yaml"))


def find_config(path: str | Path) -> Path:
    """A YAML file's path: ``path`` itself when it is a file, else the shipped config of that name."""
    given = Path(path)
    if given.is_file():
        return given
    name = str(path).removesuffix(".yaml")
    shipped = CONFIGS_DIR / f"{name}.yaml"
    if not given.is_absolute() and shipped.is_file():
        return shipped
    raise ConfigError(f"{path}: config file not found (nor a shipped config; those are: "
                      f"{', '.join(shipped_configs()) or 'none'})")


def read_config_file(path: str | Path) -> dict:
    """The mapping in a YAML config file or shipped config (see :func:`find_config`), not yet validated."""
    path = find_config(path)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes, not a config file (those are a few kB)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text (UTF-8) file, so not a YAML config (byte {e.start} is "
                          f"{path.read_bytes()[e.start]:#04x})") from None
    try:
        loaded = load_yaml(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_environment(data: Any, where: str = "") -> Any:
    """Replace ``${NAME}`` in every string by the environment variable NAME (data paths stay out of configs);
    an unset variable is a ConfigError naming the key."""
    if isinstance(data, dict):
        return {k: _expand_environment(v, f"{where}{k}.") for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_environment(v, where) for v in data]
    if isinstance(data, str):
        def value_of(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{where.rstrip('.')}: {data!r} uses ${{{name}}}, but the environment variable "
                                  f"{name} is not set")
            return os.environ[name]

        return _ENV_REFERENCE.sub(value_of, data)
    return data


def _deep_merge(into: dict, other: dict) -> dict:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v
    return into


#: What a config says about its own data set, which another data source must not inherit: its label noise, label
#: set, saved labels, open-set pool and subsets (keys of ``data``), and the paper's numbers (``expected``).
DATA_BOUND_KEYS = ("labels", "noise", "noise_file", "ood", "ood_exclude", "train_subset", "test_subset", "cv_folds",
                   "cv_fold")
#: Keys reset to their automatic default on another source without a word: the validation split follows the new
#: data (its own val split, else 10% stratified), whatever the config chose for its own.
DATA_DEFAULTED_KEYS = ("val_fraction",)


def rebase_on_data(data: dict, spec: str, given: set[str] = frozenset()) -> list[str]:
    """Move a config mapping (a YAML file's, before overrides) to the data source ``spec``, in place.

    When ``spec`` is another source than the config's own ``data.spec``, what the config says about its own data
    (:data:`DATA_BOUND_KEYS`: synthetic noise, label set, saved labels, open-set pool, subsets, fold; and the
    paper's numbers; :data:`DATA_DEFAULTED_KEYS`: the validation share) is dropped, except the keys named in ``given`` (``"data.noise"``: the user set it again). Returns
    the dropped settings as ``key=value`` strings, for the line that says so; empty when nothing was dropped.
    Example: digits/sym40 moved to ``folder:photos`` drops ``data.noise=sym:0.4``: the user's own labels are
    trained on as they are, not flipped further by 40%.
    """
    section = data.get("data") or {}
    if not isinstance(section, dict) or section.get("spec", DataConfig.spec) == spec:
        return []
    dropped = []
    for key in DATA_BOUND_KEYS:
        if key in section and f"data.{key}" not in given:
            value = section.pop(key)
            if value not in (None, "", "none", [], False):
                dropped.append(f"data.{key}={value}")
    for key in DATA_DEFAULTED_KEYS:
        if f"data.{key}" not in given:
            section.pop(key, None)
    if data.get("expected") and "expected" not in given:
        data.pop("expected")
        dropped.append("expected (the paper's numbers)")
    return dropped


def read_config_for(path: str | Path, overrides: list[str]) -> tuple[dict, list[str]]:
    """A config file's mapping (:func:`read_config_file`) moved to the data source that ``overrides`` name
    (``data.spec=...``), if any, by :func:`rebase_on_data`: (mapping, what was dropped). The overrides are not
    applied; the keys they set count as given again."""
    data = read_config_file(path)
    given = {o.partition("=")[0].strip() for o in overrides}
    spec = data_spec_of(overrides)
    return data, (rebase_on_data(data, spec, given) if spec else [])


def data_spec_of(overrides: list[str]) -> str:
    """The data spec the last ``data.spec=...`` override names (empty when none does)."""
    specs = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == "data.spec"]
    return specs[-1] if specs else ""


def describe_rebase(data: dict, spec: str, dropped: list[str]) -> str:
    """The line that says what a config moved to another data source left behind (and what it keeps)."""
    own = (data.get("data") or {}).get("spec", DataConfig.spec)
    kept = f"; it keeps method_args {data['method_args']}" if data.get("method_args") else ""
    return (f"{spec} replaces the config's data ({own}): not applied to it: {', '.join(dropped)} (set them again "
            f"to keep them, e.g. --noise or --set){kept}")


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
