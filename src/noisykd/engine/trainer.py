"""The training engine: one loop for every method.

The engine owns data on the device, augmentation, the optimiser and its schedule, mixed precision, evaluation,
logging, checkpoints and resumption; a method (``noisykd.methods``, contract in ``methods/base.py``) owns its
networks, its loss and its per-sample decisions. The pieces live next to this file: ``feed`` (batches by
index), ``networks`` (roles), ``schedule``, ``step`` (one optimiser step), ``meters`` (epoch sums on the
device), ``outputs`` (per-sample results), ``report`` (files and plots), ``checkpoint``, ``resume`` (what a
resumed run must match, what the processes must agree on), ``tensorboard`` (the scalars of ``log.tensorboard``).

Reproducibility: all randomness comes from four generators (batch order, augmentation, the method's own, and
torch's global one for dropout and initialisation), whose states go into every checkpoint together with the
networks, the optimiser, the per-sample store and the metrics history. A run killed anywhere and resumed from
its last checkpoint therefore ends with the same weights and metrics as an uninterrupted run (on the CPU;
on a GPU up to the non-determinism of its kernels).

Distributed runs (``torchrun``, ``noisykd train --devices N``; ``distributed.py`` says what each process
does): the shuffle generator is the same on every rank; each rank's augmentation generator and torch's global
one (dropout) are seeded at every epoch's start from (seed, epoch, rank), so ranks draw independent
augmentations and a resumed epoch draws what it drew before; the method's generator is made equal on every
rank (rank 0's) at every epoch's end. A resumed distributed run therefore ends as an uninterrupted one too,
with the same number of processes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .. import augment, plots
from ..calibration import Reliability, reliability
from ..config import RunConfig, save_config
from ..data import ImageSplit
from ..errors import CheckpointError, ConfigError, ContractError, DataError, DivergedError
from ..methods import (Batch, EvalBatch, GroundTruth, Method, MethodContext, Prediction, Progress, View, Views,
                       create_method)
from ..models import create_model, wrap_module
from . import distributed, guard, report
from .checkpoint import BEST, has_checkpoint, output_error, run_folder_of, save_atomic, save_rotating
from .feed import ImageFeed, training_batch_sizes
from .meters import ENGINE_METRICS, EpochMeter
from .networks import NetworkSet
from .outputs import collect_outputs
from .progress import EpochClock, ProgressBar, epoch_line
from .inputs import record_inputs, verify_inputs
from .resume import (CHECKPOINT_FORMAT, READABLE_FORMATS, check_same_config, check_same_data, check_world_size,
                     checkpoint_on_every_rank, claim_new_run, resume_checkpoint)
from .runfolder import RunFolder
from .schedule import LearningRateSchedule
from .setup import PreparedData, prepare_data
from .state import SampleStore
from .step import TrainStep
from .tensorboard import add_epoch_scalars, tensorboard_writer

StepCallback = Callable[["Trainer", int, int], None]  # (trainer, epoch, step_in_epoch)
log = logging.getLogger("noisykd.engine")


@dataclass
class RunResult:
    """What :meth:`Trainer.run` returns: the output folder, the per-epoch history and the summary."""

    out_dir: Path
    history: list[dict]
    summary: dict


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine; use device=cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} but this machine has {torch.cuda.device_count()} GPU(s) (cuda:0 .. "
                          f"cuda:{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not (torch.backends.mps.is_built() and torch.backends.mps.is_available()):
        raise ConfigError(f"device={name!r} but this machine (or this torch build) has no Apple GPU (MPS); use "
                          "device=cpu or auto")
    return device


class Trainer:
    """Runs ``config`` end to end. ``model`` (any ``nn.Module``) replaces the registry network; ``data``
    replaces loading from ``config.data``; ``on_step`` is called after every optimiser step; ``progress``
    shows a progress bar (default: when stderr is a terminal). Epoch lines go to ``logging.getLogger("noisykd")``.
    """

    def __init__(self, config: RunConfig, model: nn.Module | None = None, data: PreparedData | None = None,
                 progress: bool | None = None, on_step: StepCallback | None = None):
        self.config = config.validate()
        self.user_model = model
        self._data = data
        self.show_progress = sys.stderr.isatty() if progress is None else progress
        self.on_step = on_step
        self._chosen_out_dir = not config.out_dir  # chosen here: in a distributed run rank 0's choice holds
        if not config.out_dir:
            config.out_dir = str(default_run_dir(config))
        self.out_dir = Path(config.out_dir)
        self.processes = distributed.Processes()  # a single process until run() joins the others
        self.schedule = LearningRateSchedule(config.optim)
        #: (global step, reliability bins) of the latest test evaluation, for reliability.png at the end
        self.test_reliability: tuple[int, Reliability] | None = None
        #: elapsed time and ETA of this session's epochs, for the epoch lines (started by its first epoch)
        self.clock: EpochClock | None = None

    # ------------------------------------------------------------------------------------------------------
    def run(self, resume: bool | str | Path = False, extend: bool = False) -> RunResult:
        """Train (or continue) the run.

        resume: True (this run's folder) or a run folder or checkpoint, whose run folder is then written to.
                The checkpoint's config must equal this one in everything that changes the result (an error
                names the keys that differ), except ``optim.epochs`` when ``extend`` (train on past the planned
                end). A new run refuses a folder that holds a run or other files; two processes never train
                into one folder at once; a run that fails before its first checkpoint leaves nothing that would
                block starting it again.

        Under torchrun the processes join here (``distributed.join_processes``); rank 0 checks, locks and
        writes the run folder, and reads the checkpoint to resume from, which it hands the other ranks.
        """
        cfg = self.config
        device = distributed.process_device(resolve_device(cfg.device))
        with distributed.join_processes(cfg.distributed.backend, device, cfg.distributed.timeout_s) as procs:
            self.processes = procs
            check_world_size(cfg, procs)
            if self._chosen_out_dir and procs.world_size > 1:
                self.config.out_dir = procs.broadcast_object(cfg.out_dir, "the choice of the run folder")
                self.out_dir = Path(self.config.out_dir)
            with _logs_on_rank0_only(procs):
                return self._run(resume, extend)

    def _run(self, resume: bool | str | Path, extend: bool) -> RunResult:
        procs = self.processes
        if resume not in (False, True, None):
            folder = run_folder_of(resume)
            if folder.resolve() != self.out_dir.resolve():
                log.info(f"resuming into {folder} (the config said {self.out_dir})")
                self.config.out_dir, self.out_dir = str(folder), folder
        folder = RunFolder(self.out_dir)
        existed = folder.path.exists()
        writer = procs.is_writer
        with contextlib.ExitStack() as stack:
            loaded: dict = {}

            def claim_folder() -> str | None:  # rank 0 only; its result (or error) reaches every rank
                folder.check_writable()
                stack.enter_context(folder.lock())
                if not resume:
                    return claim_new_run(folder)
                verify_inputs(folder.path)  # an edited config.yaml or noisy_labels.npz: said, never overwritten
                path, loaded["checkpoint"] = resume_checkpoint(self.out_dir if resume is True else resume, self.config,
                                                               procs.world_size, extend)
                return str(path)

            path = procs.on_writer(claim_folder, "the check of the run folder")
            checkpoint = None if path is None else checkpoint_on_every_rank(procs, path, loaded.get("checkpoint"))

            def start_outputs() -> None:  # rank 0 only
                self._write_run_inputs(resumed=checkpoint is not None)
                stack.enter_context(_log_to_file(self.out_dir / "train.log"))
                if self.config.log.tensorboard:
                    self.tensorboard = stack.enter_context(tensorboard_writer(self.out_dir / "tensorboard"))
                folder.clear_finished()

            try:
                stack.enter_context(_torch_threads(self.config.threads))
                self.build(checkpoint)
                procs.on_writer(start_outputs, "the start of the run folder")
                log.info(f"training labels: {self.data.noisy.describe()}")  # the realised counts, every run
                if self.config.optim.early_stop_patience is not None and self.data.val is None:
                    log.warning("optim.early_stop_patience is set but the run has no validation split to stop "
                                "by (data.val_fraction 0, or under 50 training images): it trains every epoch")
                if procs.distributed:
                    log.info(f"data parallel over {procs.world_size} processes ({procs.backend}): global batch "
                             f"{self.config.optim.batch_size}, {self.config.optim.batch_size // procs.world_size} "
                             "per process")
                self.method.on_train_start(resumed=checkpoint is not None)
                self.store.synchronize()
                self.clock = None  # this session's time starts with its first epoch (train_epoch)
                for epoch in range(self.epoch, self.config.optim.epochs):
                    if guard.should_stop_early(self.history, self.config.optim.early_stop_patience):
                        break
                    self.train_epoch(epoch)
                if self.epoch < self.config.optim.epochs:
                    log.info(f"early stop after epoch {self.epoch}: no better noisy-validation accuracy for "
                             f"{self.config.optim.early_stop_patience} evaluated epochs (optim.early_stop_patience)")
                result = self.finish()
            except BaseException:
                if writer and checkpoint is None and not has_checkpoint(folder.path):  # nothing worth keeping yet
                    folder.clear_leftovers()
                    if not existed:
                        shutil.rmtree(folder.path, ignore_errors=True)
                raise
            # last: only now is the run finished
            procs.on_writer(lambda: folder.mark_finished(self.epoch), "the end of the run")
        return result

    def _write_run_inputs(self, resumed: bool) -> None:
        """``config.yaml`` and ``noisy_labels.npz``: written by a new run (and by an extended one: its epochs
        changed); a resumed run checked that they are the run's own."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            save_config(self.config, self.out_dir / "config.yaml")
            if not (resumed and (self.out_dir / "noisy_labels.npz").is_file()):
                self.data.noisy.save(self.out_dir / "noisy_labels.npz")
            record_inputs(self.out_dir, self.data.dataset.meta)  # what detect, clean and resume check against
            report.append_session(self.out_dir / "run_info.json", report.session_info(str(self.device)))
        except OSError as e:
            raise output_error(e, self.out_dir) from None

    # ------------------------------------------------------------------------------------------------------
    def build(self, checkpoint: dict | None = None) -> None:
        """Set up data, method, networks, views and optimiser; restore ``checkpoint`` (a full training state)."""
        cfg = self.config
        self.nets: NetworkSet | None = None  # iterate_train needs them: they exist once the method is built
        procs = self.processes
        torch.manual_seed(cfg.seed)
        self.device = distributed.process_device(resolve_device(cfg.device))
        self.data = data = self._data or prepare_data(cfg.data)
        if len(data.train) < 2 * procs.world_size:
            raise DataError(f"{cfg.data.spec}: {len(data.train)} training sample(s); BatchNorm needs at least 2 per "
                            f"process ({procs.world_size} process{'es' if procs.world_size > 1 else ''})")
        check_same_data(procs, data)
        self.feed = ImageFeed(data.train, self.device, cfg.data_on_device)
        self.clean_by_index = (torch.from_numpy(data.clean_labels).to(self.device)
                               if data.clean_labels is not None else None)
        self.noisy_by_index = (torch.from_numpy(data.noisy.is_noisy).to(self.device)
                               if data.clean_labels is not None else None)
        h, w, c = data.dataset.image_shape
        norm = data.normalization
        self.eval_pipeline = augment.AugmentPipeline("none", norm.mean, norm.std, image_size=(h, w),
                                                     channels_last=cfg.channels_last)
        self.gen_shuffle = torch.Generator().manual_seed(cfg.seed)
        self.gen_augment = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.gen_method = torch.Generator(device=self.device).manual_seed(cfg.seed + 2)
        self.store = SampleStore(data.num_samples, self.device, procs)
        self.batch_sizes = training_batch_sizes(len(self.feed), cfg.optim.batch_size, procs.world_size)
        self.steps_per_epoch = len(self.batch_sizes)
        self.ctx = MethodContext(
            num_classes=data.num_classes, num_samples=data.num_samples,
            train_indices=torch.from_numpy(np.sort(data.train.indices)).to(self.device), image_shape=(h, w, c),
            normalization=norm, device=self.device, store=self.store, generator=self.gen_method,
            build_model=self._build_model, iterate_train=self.iterate_train, total_epochs=cfg.optim.epochs,
            steps_per_epoch=self.steps_per_epoch)
        self.method: Method = create_method(cfg.method, self.ctx, cfg.method_args)
        self.view_pipelines = self._build_view_pipelines()
        self.nets = NetworkSet(self.method.networks(), self.device, cfg.channels_last,
                               sync_batchnorm=cfg.distributed.sync_batchnorm and procs.world_size > 1)
        check_same_config(procs, cfg, self.nets.frozen_fingerprints)
        optimizer = self._make_optimizer(self.nets.parameter_groups(cfg.optim.weight_decay))
        self.step_fn = TrainStep(optimizer, cfg.amp, self.device, procs if procs.distributed else None)
        self.epoch, self.step, self.history = 0, 0, []
        if checkpoint is not None:
            self._restore(checkpoint)
        else:
            self.nets.broadcast_from_rank0(procs)
        self.nets.prepare(compile=cfg.compile)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.step_fn.optimizer

    def _build_view_pipelines(self) -> dict[str, augment.AugmentPipeline]:
        """The augmentation pipeline of every view the method declared: the config's spec for that view name,
        else the method's, else the run's policy."""
        cfg = self.config.augment
        requested = self.method.views()
        if not isinstance(requested, dict) or not all(isinstance(v, View) for v in requested.values()):
            raise ContractError(f"{self.method.name}.views() must return {{name: View(...)}}, got {requested!r}")
        specs, sources = {}, {}
        for name, view in requested.items():
            spec, source = ((cfg.views[name], f"augment.views.{name}") if name in cfg.views
                            else (view.policy, "the method's own") if view.policy is not None
                            else (cfg.policy, "augment.policy"))
            specs[name], sources[name] = (spec, view.count), source
        unknown = sorted(set(cfg.views) - set(requested))
        if unknown:
            raise ConfigError(f"augment.views names {unknown}, but method {self.method.name!r} has the views "
                              f"{sorted(requested)}")
        norm = self.data.normalization
        try:
            return augment.build_views(specs, norm.mean, norm.std, self.data.dataset.image_shape[:2],
                                       cfg.common_options(), channels_last=self.config.channels_last)
        except ConfigError as e:
            named = [f"{n}: {src}" for n, src in sources.items() if f"view {n!r}" in str(e)]
            where = f" (spec of {', '.join(named)})" if named else ""
            raise ConfigError(f"method {self.method.name!r}: {e}{where}") from None

    def _build_model(self, name: str | None = None, **options) -> nn.Module:
        """A fresh network for the method (``ctx.build_model``): without a name, a deep copy of the user's module
        or the configured network; with one, that registered network with ``options``, sized for this data."""
        h, w, c = self.data.dataset.image_shape
        if name is None and self.user_model is not None:
            return wrap_module(copy.deepcopy(self.user_model))
        if name is None:
            name, options = self.config.model.name, {**self.config.model.kwargs, **options}
        return create_model(name, num_classes=self.data.num_classes, in_channels=c, image_size=h, **options)

    def _make_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        o = self.config.optim
        if o.name == "sgd":
            return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        return cls(groups, lr=o.lr)

    # ------------------------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> None:
        """One epoch: every training sample once, in a fresh random order; then evaluation, the method's
        end-of-epoch hook, the metrics row, a checkpoint and a log line."""
        cfg, procs = self.config, self.processes
        if self.clock is None:  # the session's first epoch: its time counts from here
            self.clock = EpochClock(epoch, cfg.optim.epochs)
        if procs.world_size > 1:
            self._seed_rank_streams(epoch)
        self.method.on_epoch_start(epoch)
        phase = self.method.phase(epoch)  # what the epoch trains under (a change between rows is a phase change)
        self.nets.train(True)
        order = torch.randperm(len(self.feed), generator=self.gen_shuffle)
        meter = EpochMeter(self.device, self.clean_by_index, self.noisy_by_index)
        bar = ProgressBar(self.show_progress and procs.is_writer, self.steps_per_epoch,
                          f"epoch {epoch + 1}/{cfg.optim.epochs}")
        start = time.perf_counter()
        batches = self.feed.batches(order, cfg.optim.batch_size, fold_lone_last=True, world_size=procs.world_size,
                                    rank=procs.rank)
        for step_in_epoch, (images, labels, indices) in enumerate(batches):
            progress = Progress(epoch, self.step, step_in_epoch, self.steps_per_epoch, cfg.optim.epochs)
            self.schedule.apply(self.optimizer, progress.epoch_fraction)
            views = Views({name: pipe(images, self.gen_augment) for name, pipe in self.view_pipelines.items()})
            share = len(labels) * procs.world_size / self.batch_sizes[step_in_epoch]  # 1.0 on one process
            out = self.step_fn(self.method, Batch(indices, labels, views, progress), loss_weight=share)
            self.store.synchronize()
            self.step += 1
            meter.update(out, labels, indices)
            bar.advance(lambda: {**meter.running(), "img/s": meter.seen / (time.perf_counter() - start)})
            if self.on_step is not None:
                self.on_step(self, epoch, step_in_epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_time = time.perf_counter() - start
        bar.close()
        self.nets.check(self.method.networks())
        if procs.world_size > 1:
            self.nets.agree_buffers(procs)
            self.gen_method.set_state(procs.broadcast_object(self.gen_method.get_state(), "the method's generator"))
            meter.all_reduce(procs)
        reduced = meter.reduce()
        if not math.isfinite(reduced["loss"]):  # stop now: every later epoch and the outputs would be NaN
            raise DivergedError(_diverged_message(cfg, epoch, reduced["loss"], self.out_dir))
        row = _epoch_row(epoch, self.schedule.lr_at(epoch), reduced)
        row.update({f"train_{k}": v for k, v in meter.checks().items()})
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.optim.epochs:
            row.update(self.evaluate())
        extra = self.method.on_epoch_end(epoch, _method_metrics(reduced)) or {}
        self.store.synchronize()
        self._check_ranks_agree()
        clashes = sorted(set(extra) & (set(row) | {"img_per_s", "epoch_time_s", "phase"}))
        if clashes:
            raise ContractError(f"{self.method.name}.on_epoch_end returned {clashes}, which are the engine's columns")
        row.update(extra)
        row.update({"img_per_s": meter.seen / train_time, "epoch_time_s": train_time})
        if phase is not None:
            row["phase"] = str(phase)
        self.history.append(row)
        self.epoch = epoch + 1
        procs.on_writer(lambda: self._checkpoint(row), "the checkpoint")
        log.info(epoch_line(row, cfg.optim.epochs, self.clock.timing(self.epoch)))
        for event in guard.collapse_events(self.history, cfg.log.collapse_drop):
            if event.epoch == row["epoch"] and self.processes.is_writer:  # said once, not once per process
                log.warning(f"collapse: {event.message(cfg.method, str(self.out_dir))}")
        if getattr(self, "tensorboard", None) is not None:
            add_epoch_scalars(self.tensorboard, row, epoch + 1)

    def _check_ranks_agree(self) -> None:
        """Distributed runs, after each epoch: a ContractError unless the per-sample store, the networks and the
        method's state are bit for bit the same on every rank, naming what differs and the likely cause."""
        procs = self.processes
        if procs.world_size == 1:
            return
        import hashlib
        import io

        buffer = io.BytesIO()  # on the CPU: a tensor's device (cuda:0, cuda:1) is part of what torch.save writes
        torch.save(_on_cpu(self.method.state_dict()), buffer)
        mine = {**{f"store entry {k!r}": v for k, v in self.store.digests().items()},
                **{f"network {k!r}": v for k, v in self.nets.digests().items()},
                "the method's state (state_dict)": hashlib.sha256(buffer.getvalue()).hexdigest()}
        every = procs.all_gather_object(mine, "the check that the processes agree")
        differ = sorted({k for d in every for k in set(d) | set(mine) if d.get(k) != mine.get(k)})
        if not differ:
            return
        if all(k.startswith("store entry") for k in differ):
            raise ContractError(f"{', '.join(differ)} differ between the processes: a method changed the store in place "
                                "(ctx.store[name][rows] = ...); write with ctx.store.write(name, indices, values), "
                                "which every process sees")
        raise ContractError(f"{', '.join(differ)} differ between the processes after epoch {self.epoch + 1}: a "
                            f"method's state must come from what every process sees alike (the store, the reduced "
                            "metrics, ctx.iterate_train, ctx.generator), not from its own part of the batches or the "
                            "global random generator")

    def _seed_rank_streams(self, epoch: int) -> None:
        """Distributed runs: this rank's augmentation generator and torch's global generator (dropout) start the
        epoch from a seed of (seed, epoch, rank): independent between ranks, and the same again when the epoch
        is trained again after a resume."""
        seed = _derived_seed(self.config.seed, epoch, self.processes.rank)
        self.gen_augment.manual_seed(seed)
        torch.manual_seed(seed)

    # ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_split(self, split: ImageSplit) -> Prediction:
        """Eval-mode prediction of the method on a split (un-augmented, in the split's order), on the CPU:
        logits (N, C) and each head's logits (N, C). In a distributed run each rank predicts a contiguous
        part and every rank returns the whole, gathered in order."""
        if len(split) == 0:
            raise DataError("cannot predict on an empty split")
        self.nets.train(False)
        procs = self.processes
        feed = ImageFeed(split, self.device, self.config.data_on_device)
        rows = torch.arange(len(feed))
        sharded = 1 < procs.world_size <= len(feed)
        if sharded:
            rows = distributed.rank_part(rows, procs.world_size, procs.rank)
        chunks: list[Prediction] = []
        for images, _, _ in feed.batches(rows, self.config.eval_batch_size):
            with self.step_fn.autocast():
                chunks.append(self._checked_prediction(self.method.predict(self.eval_pipeline.eval_transform(images)),
                                                       len(images)))
        if any(c.heads.keys() != chunks[0].heads.keys() for c in chunks):
            raise ContractError(f"{self.method.name}.predict returned different heads for different batches")
        accuracy_of = chunks[0].accuracy_of
        if accuracy_of is not None and not set(accuracy_of) <= set(chunks[0].heads):
            raise ContractError(f"{self.method.name}.predict: accuracy_of names {list(accuracy_of)}, but the heads are "
                                f"{sorted(chunks[0].heads)}")
        logits = torch.cat([c.logits.float() for c in chunks])
        heads = {name: torch.cat([c.heads[name].float() for c in chunks]) for name in chunks[0].heads}
        if sharded:
            counts = [len(p) for p in torch.tensor_split(torch.arange(len(feed)), procs.world_size)]
            logits = procs.gather_rows(logits, counts, "the gather of predictions")
            heads = {name: procs.gather_rows(h, counts, "the gather of predictions") for name, h in heads.items()}
        return Prediction(logits=logits.cpu(), heads={name: h.cpu() for name, h in heads.items()},
                          accuracy_of=accuracy_of)

    def _checked_prediction(self, prediction, batch_size: int) -> Prediction:
        name = self.method.name
        if not isinstance(prediction, Prediction):
            raise ContractError(f"{name}.predict must return a Prediction (logits and heads), got "
                                f"{type(prediction).__name__}")
        for head, logits in {"logits": prediction.logits, **prediction.heads}.items():
            if not (isinstance(logits, torch.Tensor) and logits.is_floating_point()
                    and tuple(logits.shape) == (batch_size, self.data.num_classes)):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ContractError(f"{name}.predict: {head} must be float logits of shape ({batch_size}, "
                                    f"{self.data.num_classes}), got {shape}")
        return prediction

    def evaluate(self) -> dict[str, float | None]:
        """Test accuracy of the prediction (``test_acc``) and of every head (``test_acc_NAME``), the expected
        calibration error of the prediction's logits (``test_ece``, 15 bins); noisy-validation accuracy
        (``val_acc``)."""
        row: dict[str, float | None] = {}
        if self.data.test is not None:
            labels = torch.from_numpy(self.data.test.labels)
            prediction = self.predict_split(self.data.test)
            row["test_acc"] = _reported_accuracy(prediction, labels)
            row.update({f"test_acc_{name}": _accuracy(logits, labels) for name, logits in prediction.heads.items()})
            self.test_reliability = (self.step, reliability(prediction.logits, labels))
            row["test_ece"] = self.test_reliability[1].ece
        if self.data.val is not None:
            row["val_acc"] = _reported_accuracy(self.predict_split(self.data.val), torch.from_numpy(self.data.val.labels))
        self.nets.train(True)
        return row

    def iterate_train(self) -> Iterator[EvalBatch]:
        """Eval batches over the training split, un-augmented, networks in eval mode (for methods that score
        every sample, e.g. BKD's P_A at the fitting epoch). Train mode is restored at the end."""
        if self.nets is None:
            raise ContractError("ctx.iterate_train is available from on_train_start on, not while the method is built")
        self.nets.train(False)
        order = torch.arange(len(self.feed))
        try:
            for images, labels, indices in self.feed.batches(order, self.config.eval_batch_size):
                yield EvalBatch(indices, labels, self.eval_pipeline.eval_transform(images))
        finally:
            self.nets.train(True)

    # ------------------------------------------------------------------------------------------------------
    def _checkpoint(self, row: dict) -> None:
        try:
            self._write_checkpoint(row)
        except OSError as e:
            raise output_error(e, self.out_dir) from None

    def _write_checkpoint(self, row: dict) -> None:
        folder = self.out_dir / "checkpoints"
        state = self._state()
        save_rotating(state, folder)
        if row.get("val_acc") is not None:
            best = max((r["val_acc"] for r in self.history if r.get("val_acc") is not None))
            if row["val_acc"] >= best:
                save_atomic(self._weights(state), folder / BEST)
        report.write_metrics(self.history, self.out_dir)

    @staticmethod
    def _weights(state: dict) -> dict:
        """What ``best.pt`` keeps of a full training state: the networks and what evaluating them needs."""
        return {key: state[key] for key in ("format", "config", "normalization", "data_shape", "epoch", "networks",
                                            "frozen", "method")}

    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "normalization": {"mean": list(self.data.normalization.mean), "std": list(self.data.normalization.std),
                              "source": self.data.normalization.source},
            "data_shape": {"image_shape": list(self.data.dataset.image_shape), "num_classes": self.data.num_classes,
                           "classes": list(self.data.dataset.classes)},
            "epoch": self.epoch,
            "step": self.step,
            "world_size": self.processes.world_size,
            **self.nets.state_dict(),
            **self.step_fn.state_dict(),
            "method": self.method.state_dict(),
            "store": self.store.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "shuffle": self.gen_shuffle.get_state(),
                    "augment": self.gen_augment.get_state(),
                    "method": self.gen_method.get_state()},
            "history": self.history,
        }

    def _restore(self, state: dict) -> None:
        self.load_networks(state)
        self.step_fn.load_state_dict(state["optimizer"], state["scaler"])
        self.store.load_state_dict(state["store"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.gen_shuffle.set_state(rng["shuffle"])
        self.gen_augment.set_state(rng["augment"])
        self.gen_method.set_state(rng["method"])
        self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])

    def load_networks(self, state: dict) -> None:
        """Load the networks and the method's own state from a checkpoint (for evaluation or resumption)."""
        if state.get("format") not in READABLE_FORMATS:
            raise CheckpointError(f"checkpoint format {state.get('format')} is not supported (expected one of "
                                  f"{READABLE_FORMATS})")
        self.nets.load_state_dict(state["networks"], state.get("frozen"))
        self.method.load_state_dict(state["method"])

    # ------------------------------------------------------------------------------------------------------
    def finish(self) -> RunResult:
        """The end-of-run outputs: per-sample results, detection, summary, plots (each file written whole, then
        renamed; ``run`` marks the folder finished after them)."""
        try:
            return self._finish()
        except OSError as e:
            raise output_error(e, self.out_dir) from None

    def _final_reliability(self) -> Reliability | None:
        """The reliability bins of the last epoch's test prediction (evaluated again if this process did not
        evaluate it, e.g. a run resumed after its last checkpoint); None without a test split."""
        if self.data.test is None:
            return None
        if self.test_reliability is None or self.test_reliability[0] != self.step:
            self.evaluate()
        return self.test_reliability[1]

    def _finish(self) -> RunResult:
        """Every rank predicts (its part, gathered) and computes the outputs; rank 0 writes them."""
        out, rows = self.out_dir, self.data.train.indices
        held_out = self.data.held_out_val
        outputs = collect_outputs(self.data, self.predict_split(self.data.train).logits, self.method.name,
                                  self.method.sample_outputs(), self.config.seed,
                                  val_logits=None if held_out is None else self.predict_split(held_out).logits)
        calibration = self._final_reliability()
        summary = report.run_summary(self.config, self.data, self.history, outputs.detection_summary(rows),
                                     self.method.summary(), str(self.device),
                                     calibration=None if calibration is None else calibration.to_dict())
        summary["selection"] = guard.selection_summary(self.history)
        summary["best_checkpoint"] = ("the best noisy-validation epoch" if summary["selection"] else
                                      "the last epoch (no validation split to choose by)")
        summary["collapse"] = [e.to_dict(self.config.method, str(self.out_dir)) for e in
                               guard.collapse_events(self.history, self.config.log.collapse_drop)]
        summary["collapse_drop"] = self.config.log.collapse_drop
        summary["epochs_trained"] = self.epoch
        if self.epoch < self.config.optim.epochs:
            summary["early_stop"] = {"after_epoch": self.epoch, "patience": self.config.optim.early_stop_patience}
        if self.processes.distributed:
            summary["processes"] = {"world_size": self.processes.world_size, "backend": self.processes.backend,
                                    "sync_batchnorm": self.config.distributed.sync_batchnorm}
        self.outputs = outputs
        self.processes.on_writer(lambda: self._write_outputs(outputs, summary, calibration), "the final outputs")
        return RunResult(out, self.history, summary)

    def _write_outputs(self, outputs, summary: dict, calibration: Reliability | None) -> None:
        """Rank 0: samples.npz/csv, summary.json, the plots, the method's reports and, for a run without a
        validation split, ``best.pt`` (its last epoch: every run has one for ``eval --best``)."""
        out, rows = self.out_dir, self.data.train.indices
        if summary["selection"] is None:
            save_atomic(self._weights(self._state()), out / "checkpoints" / BEST)
        self.store.export(out / "samples.npz", out / "samples.csv", columns=outputs.columns, rows=rows)
        report.write_json(summary, out / "summary.json")
        title = f"{self.config.method} on {self.config.data.spec}"
        report.plot_curves(self.history, out / "curves.png", title=title)
        if calibration is not None:
            plots.plot_reliability(calibration, out / "reliability.png", title=f"{title}, test set, last epoch")
        truth = None
        if self.data.clean_labels is not None:
            noisy = self.data.noisy
            truth = GroundTruth(clean_label=noisy.clean, is_noisy=noisy.is_noisy.astype(bool),
                                is_open_set=np.asarray(noisy.is_open_set, dtype=bool))
        self.method.write_reports(out, self.history, truth)


def default_run_dir(config: RunConfig, root: Path = Path("runs")) -> Path:
    """``runs/<date-time>-<method>-<data>[-<label set>]``, unique (as timm names its output folders)."""
    from datetime import datetime

    data = config.data.spec.partition(":")[0]
    if config.data.labels:
        data += "-" + config.data.labels.rsplit(":", 1)[-1]
    base = root / f"{datetime.now():%Y%m%d-%H%M%S}-{config.method}-{data}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """``torch.set_num_threads(threads)`` for the run, restored after it (a library leaves the process as it was)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _derived_seed(seed: int, epoch: int, rank: int) -> int:
    """A 63-bit seed from (seed, epoch, rank), well mixed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _on_cpu(obj):
    """``obj`` (nested dicts, lists, tuples) with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


@contextlib.contextmanager
def _logs_on_rank0_only(processes: distributed.Processes):
    """The other ranks log warnings and errors only (rank 0 says what the run does, once)."""
    logger = logging.getLogger("noisykd")
    previous = logger.level
    if not processes.is_writer:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _method_metrics(reduced: dict) -> dict[str, float]:
    """What ``on_epoch_end`` receives: the epoch's mean loss and the method's own metrics, by name."""
    return {"loss": reduced["loss"], **{k: v for k, v in reduced.items() if k not in ENGINE_METRICS}}


def _diverged_message(cfg, epoch: int, loss: float, out_dir: Path) -> str:
    """One line for a run whose mean training loss of ``epoch`` (0-based) is NaN or infinite: where, the likely
    causes with this run's values, and what is kept."""
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(cfg.method_args.items())) or "none set"
    then = (f"{out_dir}/checkpoints/last.pt holds epoch {epoch}, before it diverged; change them and start a new "
            "run in another folder" if epoch else "nothing was kept: change them and run again")
    return (f"training diverged in epoch {epoch + 1}: the mean training loss is {loss} (not a finite number). Likely "
            f"causes: a learning rate too high (optim.lr={cfg.optim.lr:g}, weight_decay={cfg.optim.weight_decay:g}) "
            f"or method arguments that make the loss undefined ({cfg.method}: {args}); {then}")


def _epoch_row(epoch: int, lr: float, reduced: dict) -> dict:
    """The training part of an epoch's row of metrics.csv (the method's metrics as ``train_NAME``)."""
    row = {"epoch": epoch + 1, "lr": lr, "train_loss": reduced["loss"], "train_acc_noisy": reduced["acc_noisy"],
           "train_acc_clean": reduced["acc_clean"], "train_fit_wrong_labels": reduced["fit_wrong_labels"]}
    row.update({f"train_{k}": v for k, v in _method_metrics(reduced).items() if k != "loss"})
    return row


@contextlib.contextmanager
def _log_to_file(path: Path):
    """The run's log lines also go to ``train.log`` in its folder (appended on resume), with their time."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("noisykd")
    previous = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the file keeps the epoch lines even when the console shows none
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def _reported_accuracy(prediction: Prediction, labels: torch.Tensor) -> float:
    """The accuracy of the prediction's logits, or the mean accuracy of its ``accuracy_of`` heads."""
    if prediction.accuracy_of is None:
        return _accuracy(prediction.logits, labels)
    return float(np.mean([_accuracy(prediction.heads[name], labels) for name in prediction.accuracy_of]))


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def train(config: RunConfig, model: nn.Module | None = None, resume: bool | str | Path = False, **kwargs) -> RunResult:
    """Python entry point: ``noisykd.train(load_config(...))``."""
    return Trainer(config, model=model, **kwargs).run(resume=resume)
