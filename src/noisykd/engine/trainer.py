"""The training engine: one loop for every method.

The engine owns data on the device, augmentation, the optimiser and its schedule, mixed precision, evaluation,
logging, checkpoints and resumption; a method (``noisykd.methods``) owns only its networks and its loss.

Reproducibility: all randomness comes from four generators (batch order, augmentation, the method's own, and
torch's global one for dropout and initialisation), whose states go into every checkpoint together with the
networks, the optimiser, the per-sample store and the metrics history. A run killed anywhere and resumed from
its last checkpoint therefore ends with the same weights and metrics as an uninterrupted run (on the CPU;
on a GPU up to the non-determinism of its kernels).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import augment
from ..config import RunConfig, save_config
from ..detect import detection_metrics, find_label_issues
from ..errors import CheckpointError, ConfigError
from ..methods import Batch, EvalBatch, Method, MethodContext, create_method
from ..models import create_model, wrap_module
from . import report
from .checkpoint import BEST, find_resume_checkpoint, load_checkpoint, save_atomic, save_rotating
from .feed import ImageFeed
from .setup import PreparedData, prepare_data
from .state import SampleStore

CHECKPOINT_FORMAT = 1
StepCallback = Callable[["Trainer", int, int], None]  # (trainer, epoch, step_in_epoch)


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
    return device


def normalization_for(data: PreparedData) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std): the standard constants for CIFAR (as the papers use), else the training
    images' own statistics."""
    name = data.dataset.name
    if name == "cifar10":
        return augment.CIFAR10_MEAN, augment.CIFAR10_STD
    if name == "cifar100":
        return augment.CIFAR100_MEAN, augment.CIFAR100_STD
    return augment.dataset_stats(data.train.images)


class Trainer:
    """Runs ``config`` end to end. ``model`` (any ``nn.Module``) replaces the registry network; ``data``
    replaces loading from ``config.data``; ``on_step`` is called after every optimiser step."""

    def __init__(self, config: RunConfig, model: nn.Module | None = None, data: PreparedData | None = None,
                 progress: bool | None = None, on_step: StepCallback | None = None, log: Callable = print):
        self.config = config.validate()
        self.user_model = model
        self._data = data
        self.show_progress = sys.stderr.isatty() if progress is None else progress
        self.on_step = on_step
        self.log = log
        self.out_dir = Path(config.out_dir)

    # ------------------------------------------------------------------------------------------------------
    def run(self, resume: bool | str | Path = False) -> RunResult:
        """Train (or continue) the run; ``resume`` is True (this run's folder) or a checkpoint/run folder."""
        checkpoint = None
        if resume:
            path = find_resume_checkpoint(self.out_dir if resume is True else resume)
            checkpoint = load_checkpoint(path)
            self.log(f"resuming from {path} (epoch {checkpoint['epoch']} done)")
        elif (self.out_dir / "checkpoints").exists():
            raise CheckpointError(f"{self.out_dir} already holds a run; continue it with --resume, or choose "
                                  "another output folder")
        self.build(checkpoint)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.out_dir / "config.yaml")
        self.data.noisy.save(self.out_dir / "noisy_labels.npz")
        for epoch in range(self.epoch, self.config.optim.epochs):
            self._train_epoch(epoch)
        return self._finish()

    # ------------------------------------------------------------------------------------------------------
    def build(self, checkpoint: dict | None = None) -> None:
        """Set up data, method, networks and optimiser; restore ``checkpoint`` (a full training state) if given."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.data = self._data or prepare_data(cfg.data)
        data = self.data
        self.feed = ImageFeed(data.train, self.device, cfg.data_on_device)
        self.clean_by_index = (torch.from_numpy(data.clean_labels).to(self.device)
                               if data.clean_labels is not None else None)
        self.noisy_by_index = (torch.from_numpy(data.noisy.is_noisy).to(self.device)
                               if data.clean_labels is not None else None)
        h, w, c = data.dataset.image_shape
        self.mean, self.std = normalization_for(data)
        self.eval_pipeline = augment.AugmentPipeline("none", self.mean, self.std, image_size=(h, w),
                                                     channels_last=cfg.channels_last)
        self.gen_shuffle = torch.Generator().manual_seed(cfg.seed)
        self.gen_augment = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.gen_method = torch.Generator(device=self.device).manual_seed(cfg.seed + 2)
        self.store = SampleStore(data.num_samples, self.device)
        batch_size = cfg.optim.batch_size
        self.steps_per_epoch = max(1, len(self.feed) // batch_size + (len(self.feed) % batch_size >= 2))
        self.ctx = MethodContext(
            num_classes=data.num_classes, num_samples=data.num_samples, image_shape=(h, w, c),
            device=self.device, store=self.store, generator=self.gen_method, build_model=self._build_model,
            iterate_train=self.iterate_train, total_epochs=cfg.optim.epochs, steps_per_epoch=self.steps_per_epoch)
        self.method: Method = create_method(cfg.method, self.ctx, **cfg.method_args)
        self.view_pipelines = {view: self._view_pipeline(policy)
                               for view, policy in self.method.view_policies(cfg.augment.policy).items()}
        self.networks = self.method.networks()
        for net in self.networks.values():
            net.to(self.device)
            if cfg.channels_last:
                net.to(memory_format=torch.channels_last)
        self.optimizer = self._make_optimizer(self.method.trainable_parameters())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16" and self.device.type == "cuda")
        self.epoch, self.step, self.history = 0, 0, []
        if checkpoint is not None:
            self._restore(checkpoint)
        if cfg.compile:
            for net in self.networks.values():
                net.compile()

    def _view_pipeline(self, policy: str) -> augment.AugmentPipeline:
        """The pipeline of one training view, with the configured options that its policy accepts."""
        cfg = self.config.augment
        h, w, _ = self.data.dataset.image_shape
        options = {"padding": cfg.padding if cfg.padding is not None else (4 if min(h, w) >= 32 else 1),
                   "padding_mode": cfg.pad_mode}
        if cfg.cutout:
            options["cutout_size"] = cfg.cutout
        accepted = augment.policy_options(policy)
        if cfg.cutout and "cutout_size" not in accepted:
            raise ConfigError(f"augment.cutout is set but policy {policy!r} has no cutout; use weak_cutout")
        return augment.AugmentPipeline(policy, self.mean, self.std, image_size=(h, w),
                                       channels_last=self.config.channels_last,
                                       **{k: v for k, v in options.items() if k in accepted})

    def _build_model(self) -> nn.Module:
        """A fresh network for the method: a deep copy of the user's module, or one from the registry."""
        h, w, c = self.data.dataset.image_shape
        if self.user_model is not None:
            return wrap_module(copy.deepcopy(self.user_model))
        cfg = self.config.model
        return create_model(cfg.name, num_classes=self.data.num_classes, in_channels=c, image_size=h, **cfg.kwargs)

    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        o = self.config.optim
        if o.name == "sgd":
            return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                                   weight_decay=o.weight_decay)
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        return cls(params, lr=o.lr, weight_decay=o.weight_decay)

    def lr_at(self, epoch_float: float) -> float:
        """Learning rate at a (fractional) epoch: warm-up, then the configured schedule."""
        o = self.config.optim
        if o.warmup_epochs and epoch_float < o.warmup_epochs:
            return o.lr * epoch_float / o.warmup_epochs
        if o.schedule == "multistep":
            return o.lr * o.gamma ** sum(int(epoch_float) >= m for m in o.milestones)
        if o.schedule == "cosine":
            span = max(o.epochs - o.warmup_epochs, 1e-9)
            return o.lr * 0.5 * (1 + math.cos(math.pi * (epoch_float - o.warmup_epochs) / span))
        return o.lr

    def _autocast(self):
        amp = self.config.amp
        if amp == "none":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

    def _set_train_mode(self, training: bool) -> None:
        for net in self.networks.values():
            net.train(training)

    # ------------------------------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> None:
        cfg = self.config
        self.ctx.epoch = epoch
        self.method.on_epoch_start(epoch)
        self._set_train_mode(True)
        order = torch.randperm(len(self.feed), generator=self.gen_shuffle)
        sums = {"loss": torch.zeros((), device=self.device), "seen": 0}
        correct_noisy = torch.zeros((), device=self.device)
        correct_clean = torch.zeros((), device=self.device)
        fit_wrong = torch.zeros((), device=self.device)  # noisy samples predicted as their wrong label
        seen_wrong = torch.zeros((), device=self.device)
        extra_sums: dict[str, torch.Tensor] = {}
        start = time.perf_counter()
        bar = _ProgressBar(self.show_progress, self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.optim.epochs}")
        for step_in_epoch, (images, labels, indices) in enumerate(self.feed.batches(order, cfg.optim.batch_size,
                                                                                     drop_last=True)):
            lr = self.lr_at(epoch + step_in_epoch / self.steps_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            views = {name: self._as_views(pipe(images, self.gen_augment))
                     for name, pipe in self.view_pipelines.items()}
            self.ctx.step = self.step
            with self._autocast():
                out = self.method.training_step(Batch(indices, labels, views))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(out.loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.method.after_optimizer_step()
            self.step += 1
            b = len(labels)
            sums["loss"] += out.loss.detach().float() * b
            sums["seen"] += b
            if out.logits is not None:
                predicted = out.logits.detach().argmax(1)
                correct_noisy += (predicted == labels).sum()
                if self.clean_by_index is not None:
                    correct_clean += (predicted == self.clean_by_index[indices]).sum()
                    wrong = self.noisy_by_index[indices]
                    fit_wrong += ((predicted == labels) & wrong).sum()
                    seen_wrong += wrong.sum()
            for key, value in out.metrics.items():
                extra_sums[key] = extra_sums.get(key, 0) + torch.as_tensor(value, device=self.device).float() * b
            bar.advance(lambda: {"loss": sums["loss"].item() / sums["seen"],
                                 "acc": correct_noisy.item() / sums["seen"],
                                 "img/s": sums["seen"] / (time.perf_counter() - start)})
            if self.on_step is not None:
                self.on_step(self, epoch, step_in_epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_time = time.perf_counter() - start
        bar.close()
        seen = max(sums["seen"], 1)
        row = {"epoch": epoch + 1, "lr": self.lr_at(epoch), "train_loss": sums["loss"].item() / seen,
               "train_acc_noisy": correct_noisy.item() / seen,
               "train_acc_clean": correct_clean.item() / seen if self.clean_by_index is not None else None,
               # memorisation: share of the wrongly labelled training samples predicted as their wrong label
               "train_fit_wrong_labels": (fit_wrong / seen_wrong).item() if seen_wrong.item() else None}
        row.update({f"train_{k}": v.item() / seen for k, v in extra_sums.items()})
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.optim.epochs:
            row.update(self.evaluate())
        row.update(self.method.on_epoch_end(epoch) or {})
        row.update({"img_per_s": seen / train_time, "epoch_time_s": train_time})
        self.history.append(row)
        self.epoch = epoch + 1
        self._checkpoint(row)
        self._log_epoch(row)

    @staticmethod
    def _as_views(out):
        return out if isinstance(out, torch.Tensor) else tuple(out)

    # ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_split(self, split) -> dict[str, torch.Tensor]:
        """Eval-mode predictions of every head on a split (un-augmented): head -> (N, C) float on the CPU."""
        self._set_train_mode(False)
        feed = ImageFeed(split, self.device, self.config.data_on_device)
        outputs: dict[str, list[torch.Tensor]] = {}
        order = torch.arange(len(feed))
        for images, _, _ in feed.batches(order, self.config.eval_batch_size):
            with self._autocast():
                heads = self.method.predict(self.eval_pipeline.eval_transform(images))
            for name, value in heads.items():
                outputs.setdefault(name, []).append(value.float().cpu())
        return {name: torch.cat(chunks) for name, chunks in outputs.items()}

    def evaluate(self) -> dict[str, float | None]:
        """Test accuracy of every head (``test_acc`` for the main one) and noisy-validation accuracy."""
        row: dict[str, float | None] = {}
        if self.data.test is not None:
            labels = torch.from_numpy(self.data.test.labels)
            for name, out in self.predict_split(self.data.test).items():
                key = "test_acc" if name == "main" else f"test_acc_{name}"
                row[key] = (out.argmax(1) == labels).float().mean().item()
        if self.data.val is not None:
            out = self.predict_split(self.data.val)["main"]
            row["val_acc"] = (out.argmax(1) == torch.from_numpy(self.data.val.labels)).float().mean().item()
        self._set_train_mode(True)
        return row

    def iterate_train(self):
        """Eval batches over the training split, un-augmented, networks in eval mode (for methods that score
        every sample, e.g. BKD's P_A at the fitting epoch). Train mode is restored at the end."""
        self._set_train_mode(False)
        order = torch.arange(len(self.feed))
        try:
            for images, labels, indices in self.feed.batches(order, self.config.eval_batch_size):
                yield EvalBatch(indices, labels, self.eval_pipeline.eval_transform(images))
        finally:
            self._set_train_mode(True)

    # ------------------------------------------------------------------------------------------------------
    def _checkpoint(self, row: dict) -> None:
        folder = self.out_dir / "checkpoints"
        state = self._state()
        save_rotating(state, folder)
        if row.get("val_acc") is not None:
            best = max((r["val_acc"] for r in self.history if r.get("val_acc") is not None))
            if row["val_acc"] >= best:
                save_atomic({"format": CHECKPOINT_FORMAT, "config": state["config"], "epoch": self.epoch,
                             "networks": state["networks"], "method": state["method"]}, folder / BEST)
        report.write_metrics(self.history, self.out_dir)

    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "networks": {name: net.state_dict() for name, net in self.networks.items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
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
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint format {state.get('format')} is not supported (expected "
                                  f"{CHECKPOINT_FORMAT})")
        self.load_networks(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
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
        if set(self.networks) != set(state["networks"]):
            raise CheckpointError(f"checkpoint networks {sorted(state['networks'])} do not match the method's "
                                  f"{sorted(self.networks)}")
        for name, net in self.networks.items():
            net.load_state_dict(state["networks"][name])
        self.method.load_state_dict(state["method"])

    # ------------------------------------------------------------------------------------------------------
    def _finish(self) -> RunResult:
        out = self.out_dir
        samples = self._sample_outputs()
        rows = self.data.train.indices
        self.store.export(out / "samples.npz", out / "samples.csv", columns=samples, rows=rows)
        summary = {
            "method": self.config.method,
            "model": self.config.model.name,
            "data": self.config.data.spec,
            "epochs": self.config.optim.epochs,
            "train_samples": len(self.data.train),
            "val_samples": len(self.data.val) if self.data.val is not None else 0,
            "test_samples": len(self.data.test) if self.data.test is not None else 0,
            "noise": self.data.noisy.summary(),
            **report.model_selection(self.history),
            "detection": self._detection(samples),
            "method_summary": self.method.summary(),
            "median_img_per_s": float(np.median([r["img_per_s"] for r in self.history])),
            "device": str(self.device),
        }
        report.write_json(summary, out / "summary.json")
        report.plot_curves(self.history, out / "curves.png", title=f"{self.config.method} on {self.config.data.spec}")
        self.method.write_reports(out, self.history, samples["is_noisy"].astype(bool) if "is_noisy" in samples else None)
        return RunResult(out, self.history, summary)

    def _sample_outputs(self) -> dict[str, np.ndarray]:
        """Per-sample columns by dataset index: given (and clean) label, the final model's prediction, its
        probability of the given label and loss, then whatever the method adds."""
        n = self.data.num_samples
        given = self.data.noisy.labels
        columns: dict[str, np.ndarray] = {"given_label": given}
        if self.data.clean_labels is not None:
            columns["clean_label"] = self.data.clean_labels
            columns["is_noisy"] = self.data.noisy.is_noisy.astype(np.int64)
        logits = self.predict_split(self.data.train)["main"]
        rows = torch.from_numpy(self.data.train.indices)
        probs = F.softmax(logits, dim=1)
        given_t = torch.from_numpy(given)[rows]
        predicted = np.full(n, -1, dtype=np.int64)
        p_given = np.full(n, np.nan, dtype=np.float32)
        loss = np.full(n, np.nan, dtype=np.float32)
        predicted[rows] = probs.argmax(1).numpy()
        p_given[rows] = probs.gather(1, given_t[:, None])[:, 0].numpy()
        loss[rows] = F.cross_entropy(logits, given_t, reduction="none").numpy()
        columns.update({"predicted_label": predicted, "p_given": p_given, "loss": loss})
        for name, values in self.method.sample_outputs().items():
            columns[name] = np.asarray(values)
        self.detector = self.config.method
        if "flagged" not in columns:
            # methods without a detector of their own: DivideMix's 2-component GMM on the final loss
            issues = find_label_issues(given[rows.numpy()], scores=p_given[rows.numpy()], method="gmm",
                                       seed=self.config.seed)
            columns["noise_score"] = np.full(n, np.nan, dtype=np.float32)
            columns["noise_score"][rows] = issues.noise_score
            columns["flagged"] = np.full(n, -1, dtype=np.int64)
            columns["flagged"][rows] = issues.is_label_issue
            self.detector = "gmm_on_final_loss"
        return columns

    def _detection(self, columns: dict[str, np.ndarray]) -> dict | None:
        """Precision, recall, F1, AUROC, AUPRC of the run's flags on the training samples, when the truth is
        known (BKD Eqs. 10-12)."""
        if "is_noisy" not in columns:
            return None
        rows = self.data.train.indices
        metrics = detection_metrics(columns["is_noisy"][rows].astype(bool), columns["flagged"][rows] == 1,
                                    columns["noise_score"][rows])
        return {"detector": self.detector, **metrics}

    def _log_epoch(self, row: dict) -> None:
        parts = [f"epoch {row['epoch']:>3}/{self.config.optim.epochs}", f"loss {row['train_loss']:.4f}",
                 f"train(noisy) {row['train_acc_noisy']:.4f}"]
        if row.get("train_acc_clean") is not None:
            parts.append(f"train(clean) {row['train_acc_clean']:.4f}")
        if row.get("val_acc") is not None:
            parts.append(f"val {row['val_acc']:.4f}")
        if row.get("test_acc") is not None:
            parts.append(f"test {row['test_acc']:.4f}")
        parts.append(f"{row['img_per_s']:.0f} img/s")
        self.log("  ".join(parts))


class _ProgressBar:
    """A rich progress bar with live loss/accuracy/throughput on a terminal; nothing otherwise."""

    REFRESH_S = 0.5

    def __init__(self, enabled: bool, total: int, description: str):
        self.enabled = enabled
        self.last = 0.0
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(description, total=total, stats="")

    def advance(self, stats: Callable[[], dict]) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        fields = {}
        if now - self.last > self.REFRESH_S:  # reading the stats synchronises the device: not every step
            self.last = now
            fields["stats"] = "  ".join(f"{k} {v:.3g}" for k, v in stats().items())
        self.progress.update(self.task, advance=1, **fields)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


def train(config: RunConfig, model: nn.Module | None = None, resume: bool | str | Path = False, **kwargs) -> RunResult:
    """Python entry point: ``noisykd.train(load_config(...))``."""
    return Trainer(config, model=model, **kwargs).run(resume=resume)
