"""The contract between a method and the engine: what each gives the other, and nothing more.

A method owns its networks, its loss and its per-sample decisions; the engine owns everything else (data on the
device, augmentation, the optimiser and its schedule, mixed precision, evaluation, checkpoints, logging, and
the processes of a distributed run: it averages the gradients, exchanges per-sample store writes, reduces the
metrics, so that a method written for one process runs unchanged on N). A method never writes a loop and never calls torch.distributed; the
engine never reads a method's attributes or column names. In order::

    Method(ctx, args)                 build networks with add_network(...) and per-sample state in ctx.store
    views() -> {name: View}           the augmented images each training batch must carry
    on_train_start(resumed)           networks placed, before the first epoch (e.g. score every sample once)
    for each epoch:
        on_epoch_start(epoch); phase() -> str | None   what the epoch trains under
        for each batch:
            training_step(batch) -> StepOutput        [engine: backward, optimiser step]
            after_optimizer_step(progress)             e.g. an EMA update
        [engine: evaluation, calling predict(images) -> Prediction]
        on_epoch_end(epoch, train_metrics) -> {column: value} for the epoch's row
    sample_outputs() -> SampleOutputs     per-sample results (detection, suggested labels, extra columns)
    summary(), write_reports(...)         method-specific summary values and plots
    state_dict() / load_state_dict()      the method's own state (networks and ctx.store are the engine's)

Networks have one of three roles (:class:`Role`): trainable (optimised, switched between train and eval mode,
checkpointed, compiled when asked, their gradients averaged over the processes of a distributed run), shadow (an EMA
teacher: updated by the method, always in eval mode, checkpointed, never optimised or wrapped) and frozen (a
pre-trained teacher: always in eval mode, never optimised, wrapped or saved; the engine checks on resume that
it is the same network). A method calls a network through the handle ``add_network`` returned, which runs the
module the engine prepared.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ContractError

if TYPE_CHECKING:  # the engine imports the methods; methods only need these types
    from ..data.normalization import Normalization
    from ..engine.state import SampleStore


# ------------------------------------------------------------------------------------------------------------
# Networks and their roles

class Role(enum.Enum):
    """What the engine does with a network (see the module docstring)."""

    TRAINABLE = "trainable"
    SHADOW = "shadow"
    FROZEN = "frozen"


@dataclass(frozen=True)
class ParamGroup:
    """Optimiser settings of some parameters of a trainable network (an adapter or head with its own lr).

    lr_scale:     multiplies the scheduled learning rate (warm-up and decay apply to every group alike).
    weight_decay: this group's weight decay; None: the run's ``optim.weight_decay``.
    """

    lr_scale: float = 1.0
    weight_decay: float | None = None

    def __post_init__(self) -> None:
        if not self.lr_scale >= 0:
            raise ConfigError(f"ParamGroup.lr_scale must be >= 0, got {self.lr_scale}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ConfigError(f"ParamGroup.weight_decay must be >= 0 or None, got {self.weight_decay}")


class Network:
    """A method's network: its name, role, the bare module, and its parameter groups.

    Calling the handle runs the module the engine prepared (``prepared``: compiled or wrapped for trainable
    networks, the bare module otherwise); so does :meth:`forward_with_features`. ``module`` is the bare
    network, for what is not a forward pass: EMA updates, reading or copying weights. ``groups`` maps a
    submodule path (``"linear"``, ``"stages.2"``) or a parameter name to its :class:`ParamGroup`; the longest
    matching path wins and ``""`` (the default group) covers the rest.
    """

    def __init__(self, name: str, module: nn.Module, role: Role, groups: Mapping[str, ParamGroup]):
        self.name = name
        self.module = module
        self.role = role
        self.groups = {"": ParamGroup(), **{path.rstrip("."): group for path, group in dict(groups).items()}}
        self.prepared: nn.Module = module

    def __call__(self, *args, **kwargs):
        return self.prepared(*args, **kwargs)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, C), penultimate features (B, D)) through the prepared module, so that a wrapper (DDP)
        sees the call; the network must be a ``noisykd.models.ClassifierNet``."""
        from ..models import ClassifierNet

        if not isinstance(self.module, ClassifierNet):
            raise ContractError(f"network {self.name!r} ({type(self.module).__name__}) has no features; build it with "
                                "noisykd.models.create_model or wrap_module")
        return self.prepared(x, with_features=True)

    def group_of(self, parameter_name: str) -> ParamGroup:
        """The group of a parameter (by its name within the module): the longest group path that is the
        parameter itself or one of its parent modules (``"layer1"`` covers ``layer1.0.weight``, not
        ``layer10.weight``)."""
        matches = [p for p in self.groups if p == "" or parameter_name == p or parameter_name.startswith(p + ".")]
        return self.groups[max(matches, key=len)]

    def __repr__(self) -> str:
        return f"Network({self.name!r}, {self.role.value}, {type(self.module).__name__})"


# ------------------------------------------------------------------------------------------------------------
# What flows between the engine and a method

@dataclass(frozen=True)
class View:
    """An augmented view of every training image that a method asks for.

    policy: a view spec (``"weak"``, ``"randaugment(n=1, m=3)"``; see ``noisykd.augment.parse_view_spec``), or
            None for the run's configured policy (``augment.policy``). A run config can replace the spec of
            any view by name (``augment.views.NAME``).
    count:  independent draws per image: 1 puts a (B, C, H, W) tensor in ``batch.views[name]``, k > 1 a tuple
            of k of them. The engine refuses, before training, a policy that makes another number of views.
    """

    policy: str | None = None
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 1:
            raise ContractError(f"View.count must be a positive int, got {self.count!r}")


class Views(dict):
    """``name -> (B, C, H, W) tensor`` (a tuple of them for views of count > 1); an undeclared name is a clear
    ContractError rather than a KeyError."""

    def __missing__(self, name):
        raise ContractError(f"view {name!r} was not declared by the method's views(); declared: {sorted(self)}")


@dataclass(frozen=True)
class Progress:
    """Where training stands when a batch is processed.

    epoch: 0-based epoch; step: global optimiser step (0-based: the number of updates made before this batch;
    in ``after_optimizer_step``, which receives the same object, ``step + 1`` updates have been made);
    step_in_epoch: 0-based position of the batch in its epoch.
    """

    epoch: int
    step: int
    step_in_epoch: int
    steps_per_epoch: int
    total_epochs: int

    @property
    def epoch_fraction(self) -> float:
        """The epoch as a real number, e.g. 2.5 halfway through the third epoch."""
        return self.epoch + self.step_in_epoch / self.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs


@dataclass(frozen=True)
class Batch:
    """One training batch.

    indices:  int64 (B,) dataset indices (the key of the per-sample store).
    labels:   int64 (B,) the given, possibly noisy, labels.
    views:    the augmented, normalised views the method declared (:class:`Views`).
    progress: epoch and global step of this batch.
    """

    indices: torch.Tensor
    labels: torch.Tensor
    views: Views
    progress: Progress


@dataclass(frozen=True)
class LabelCheck:
    """Labels a method predicts or selects for some samples, which the engine scores against the clean labels
    (methods never see them): the share of ``selected`` samples whose ``predicted`` label is the clean one,
    reported as ``train_NAME`` when the truth is known (e.g. CMD: is the peer knowledge it distils right?).

    predicted: int64 (B,) labels; selected: bool (B,) which of them count.
    """

    predicted: torch.Tensor
    selected: torch.Tensor


@dataclass
class StepOutput:
    """What a training step returns.

    loss:    scalar tensor to minimise.
    logits:  (B, C) the method's main prediction on this batch, for the running train accuracy; or None.
    metrics: more values to average over the epoch, reported as ``train_NAME`` and passed, reduced, to
             ``on_epoch_end``. A 0-d value is a batch mean (weighted by the batch size in the epoch's mean);
             a (B,) tensor holds one value per sample (the epoch's mean is then over every sample seen).
    checks:  :class:`LabelCheck` by name, scored by the engine against the clean labels when they are known.
    """

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    checks: dict[str, LabelCheck] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalBatch:
    """Un-augmented, normalised images in eval order: indices (B,), labels (B,), images (B, C, H, W)."""

    indices: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor


@dataclass
class Prediction:
    """What ``predict`` returns, in eval mode on normalised images (B, C, H, W).

    logits: (B, C) the method's prediction as **logits**: real numbers whose softmax is the predicted class
            distribution. Log-probabilities qualify (softmax(log p) = p); probabilities do not. The engine
            takes the arg-max for accuracy and softmax / cross-entropy for per-sample scores.
    heads:  further predictions by name, logits too (e.g. BKD's ``teacher`` and ``student``), reported as
            ``test_acc_NAME``.
    accuracy_of: head names whose *mean accuracy* is the method's reported accuracy (``test_acc``, ``val_acc``,
            and so model selection), instead of the accuracy of ``logits``: CMD reports the mean of its two
            models, as its paper does. None: the accuracy of ``logits``.
    """

    logits: torch.Tensor
    heads: dict[str, torch.Tensor] = field(default_factory=dict)
    accuracy_of: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Detection:
    """A method's own decision about which given labels are wrong. Arrays by dataset index, length num_samples;
    rows that are not training samples are ignored (NaN / False there).

    clean_score: float in [0, 1], how likely the given label is right: higher = cleaner (BKD: P_A(y|x)). Its
                 complement, ``noise_score`` = 1 - clean_score, ranks the labels most likely wrong first, and
                 other detectors (``noisykd detect --detector otsu_s``) re-decide from it.
    flagged:     bool, the samples the method flags as wrongly labelled.
    detector:    short name for reports (``"bkd"``).
    rule:        what was decided, for people (``"P_A(y|x) < mu1 at the fitting epoch 6"``).
    """

    clean_score: np.ndarray
    flagged: np.ndarray
    detector: str
    rule: str

    @property
    def noise_score(self) -> np.ndarray:
        return 1.0 - self.clean_score


@dataclass(frozen=True)
class SampleOutputs:
    """Per-sample results at the end of a run, arrays by dataset index (first dimension num_samples).

    detection:       the method's own wrong-label decision, or None: the engine then applies the default
                     detector (DivideMix's 2-component GMM on the final per-sample loss) and says so.
    suggested_label: int, the label the method would give each sample; None: the final prediction's arg-max.
    group:           int, a group per sample (BKD's Otsu groups, MODUL's clean/closed/open), -1 for none.
    columns:         more per-sample arrays by name, written to samples.npz (and samples.csv when 1-D).
    note:            why there is no detection although the method has a detector (e.g. BKD never split),
                     said in the log, the summary and the label-issues file.
    """

    detection: Detection | None = None
    suggested_label: np.ndarray | None = None
    group: np.ndarray | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class GroundTruth:
    """What is known of the true labels, by dataset index (num_samples,), for reports only (a method never
    trains on it): the clean label, whether the given label is wrong, and whether the image is open-set
    (out-of-distribution with an in-distribution label; all False without open-set noise)."""

    clean_label: np.ndarray
    is_noisy: np.ndarray
    is_open_set: np.ndarray


@dataclass(frozen=True)
class MethodContext:
    """What the engine knows and hands a method when it is built. Nothing in it changes during the run.

    num_samples:   size of the per-sample store (the source's training split), not the number of samples
                   trained on: held-out validation samples have rows too.
    train_indices: int64 (N_train,) sorted dataset indices of the samples trained on, on the device.
    image_shape:   (H, W, C) of the stored images; the tensors a method sees are (B, C, H, W).
    normalization: the mean / std the views and evaluation images are normalised with (from the data layer).
    generator:     the method's own random generator (checkpointed; never the global RNG).
    build_model:   ``build_model()``: a fresh network of the run's configured architecture (or the user's
                   module); ``build_model("resnet34", width=2)``: a registered network by name, sized for this
                   data (num_classes, channels, image size).
    iterate_train: eval-mode batches over the un-augmented training samples (trainable networks switched to
                   eval mode and back), e.g. to score every sample; from ``on_train_start`` on. In a distributed
                   run every process iterates over every sample (networks and buffers are equal on every rank at
                   that point), so that a decision made from it is the same everywhere without any exchange.
    store:         the per-sample store; write with ``store.write`` (in a distributed run the engine exchanges
                   writes after every step: an in-place change of ``store[name]`` would stay on one process, and
                   the engine stops the run naming the entry).
    The method never sees the clean labels.
    """

    num_classes: int
    num_samples: int
    train_indices: torch.Tensor
    image_shape: tuple[int, int, int]
    normalization: "Normalization"
    device: torch.device
    store: "SampleStore"
    generator: torch.Generator
    build_model: Callable[..., nn.Module]
    iterate_train: Callable[[], Iterator[EvalBatch]]
    total_epochs: int
    steps_per_epoch: int


# ------------------------------------------------------------------------------------------------------------
# Method arguments

@dataclass(frozen=True)
class NoArgs:
    """A method without arguments."""

    def validate(self, epochs: int) -> None:
        pass


def dataclass_defaults(args_type: type) -> dict[str, Any]:
    """{field: default} of an arguments dataclass, for ``noisykd methods``."""
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
            for f in dataclasses.fields(args_type)}


# ------------------------------------------------------------------------------------------------------------

class Method:
    """Base class of every method. A subclass sets ``name`` and ``Args``, builds its networks in ``__init__``
    with :meth:`add_network`, and implements ``training_step`` and ``predict``.

    ``Args`` is a frozen dataclass of the method's arguments (``method_args`` in a run config), with type
    annotations and defaults, and a ``validate(epochs)`` method for ranges: both are checked when the config is
    loaded, before any data loads (:meth:`parse_args`). Its docstring says what each field means, in a
    paragraph of ``field: meaning`` lines (a longer meaning continues on deeper-indented lines; ``a, b: ...``
    for a shared one): ``noisykd methods NAME`` lists every field with its default and that meaning.
    """

    name: ClassVar[str] = "method"
    Args: ClassVar[type] = NoArgs

    def __init__(self, ctx: MethodContext, args: Any = None):
        self.ctx = ctx
        self.args = args if args is not None else self.Args()
        self._networks: dict[str, Network] = {}

    # --- arguments -------------------------------------------------------------------------------------------
    @classmethod
    def parse_args(cls, raw: Mapping[str, Any], epochs: int) -> Any:
        """``method_args`` (plain data) -> the typed ``Args`` the method is built with; ConfigError naming the
        key for an unknown key, a wrong type or a value out of range."""
        from ..config import from_dict

        args = from_dict(dict(raw), cls.Args, where="method_args.")
        args.validate(epochs)
        return args

    @classmethod
    def argument_defaults(cls) -> dict[str, Any]:
        """Each ``method_args`` key and its default, for ``noisykd methods NAME``."""
        return dataclass_defaults(cls.Args)

    # --- networks --------------------------------------------------------------------------------------------
    def add_network(self, name: str, module: nn.Module, role: Role = Role.TRAINABLE, *,
                    groups: Mapping[str, ParamGroup] | None = None) -> Network:
        """Register a network; returns the handle to call it through. ``groups`` (trainable networks only):
        parameter-name prefix -> :class:`ParamGroup`, e.g. ``{"head.": ParamGroup(lr_scale=10)}``."""
        if name in self._networks:
            raise ContractError(f"{self.name}: network {name!r} is added twice")
        if not isinstance(module, nn.Module):
            raise ContractError(f"{self.name}: network {name!r} must be a torch.nn.Module, got {type(module).__name__}")
        if groups and role is not Role.TRAINABLE:
            raise ContractError(f"{self.name}: only trainable networks have parameter groups ({name!r} is {role.value})")
        paths = {n for n, _ in module.named_modules()} | {n for n, _ in module.named_parameters()}
        unmatched = sorted(p for p in (groups or {}) if p.rstrip(".") not in paths)
        if unmatched:
            raise ContractError(f"{self.name}: parameter group(s) {unmatched} of network {name!r} name no submodule "
                                f"or parameter of it")
        network = Network(name, module, role, groups or {})
        self._networks[name] = network
        return network

    def networks(self) -> list[Network]:
        """Every network, in the order they were added (the engine moves, wraps, optimises and saves them)."""
        return list(self._networks.values())

    # --- what the engine asks ------------------------------------------------------------------------------
    def views(self) -> dict[str, View]:
        """The views each training batch must carry. Default: one view ``train`` of the configured policy."""
        return {"train": View()}

    # --- hooks ----------------------------------------------------------------------------------------------
    def on_train_start(self, resumed: bool) -> None:
        """Called once the networks are on the device (and restored, when ``resumed``), before the first epoch
        this process trains: e.g. a split that scores every sample once with a frozen teacher."""

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def phase(self, epoch: int) -> str | None:
        """The phase epoch ``epoch`` (0-based) trains in, for people (BKD: ``"stage 2: split at the fitting epoch
        8, teacher on the robust loss"``), or None for a method without phases (the default). The engine asks
        after ``on_epoch_start`` and records it with the epoch; a change is a phase change, after which the collapse
        guard (``noisykd.engine.guard``) watches the noisy-validation accuracy."""
        return None

    def training_step(self, batch: Batch) -> StepOutput:
        raise NotImplementedError

    def after_optimizer_step(self, progress: Progress) -> None:
        """Called after every optimiser step (e.g. to update an EMA network); ``progress`` is the batch's, so
        ``progress.step + 1`` updates have been made."""

    def on_epoch_end(self, epoch: int, train_metrics: Mapping[str, float]) -> dict[str, float]:
        """``train_metrics``: the epoch's means over the training samples, reduced by the engine: ``loss`` and
        each name of ``StepOutput.metrics``. Returns extra columns for the epoch's row of metrics.csv (new
        names: a column of the engine's is not overwritten)."""
        return {}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        """Eval-mode prediction on normalised images (B, C, H, W); see :class:`Prediction`."""
        raise NotImplementedError

    def sample_outputs(self) -> SampleOutputs:
        """Per-sample results at the end of the run; default: none beyond the engine's own."""
        return SampleOutputs()

    def write_reports(self, out_dir, history: list[dict], truth: GroundTruth | None) -> None:
        """Method-specific plots and tables into ``out_dir`` at the end of a run; ``truth`` when the true labels
        are known (synthetic noise, CIFAR-N), for scoring the method's decisions."""

    def summary(self) -> dict:
        """Method-specific values for the run summary (e.g. BKD's tipping epoch and thresholds)."""
        return {}

    # --- checkpointing of the method's own state (networks and store are saved by the engine) -------------
    def state_dict(self) -> dict:
        """The method's own state that is not in a network or the store: tensors and plain Python values
        (numbers, strings, lists, dicts) only, as checkpoints are read with ``torch.load(weights_only=True)``."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
