"""What a method is to the engine: it owns networks and a loss; the engine owns everything else.

A method never writes a training loop. The engine calls, for every epoch:

    on_epoch_start(epoch)
    for each batch:  training_step(batch) -> StepOutput ; optimizer step ; after_optimizer_step()
    evaluation with predict(x)
    on_epoch_end(epoch) -> extra metrics

and, at the end, ``sample_outputs()`` for per-sample results (noise scores, suggested labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # the engine imports the methods; methods only need the store's type
    from ..engine.state import SampleStore


@dataclass
class Batch:
    """One training batch.

    indices: int64 (B,) dataset indices (key of the per-sample store).
    labels:  int64 (B,) the given, possibly noisy, labels.
    views:   name -> float (B, C, H, W) augmented, normalised images, one entry per view the method asked for.
    """

    indices: torch.Tensor
    labels: torch.Tensor
    views: dict[str, torch.Tensor]


@dataclass
class StepOutput:
    """What a training step returns.

    loss:    scalar tensor to minimise.
    logits:  (B, C) predictions used for the running train accuracy (the method's main prediction), or None.
    metrics: extra scalars to average over the epoch (tensors or floats).
    """

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)


@dataclass
class EvalBatch:
    """Un-augmented, normalised images in eval order: indices (B,), labels (B,), images (B, C, H, W)."""

    indices: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor


@dataclass
class MethodContext:
    """What the engine hands a method: sizes, a model factory, the sample store, an RNG, and a way to iterate
    over the (un-augmented) training set, e.g. to score every sample in eval mode.

    num_samples is the size of the store (largest dataset index + 1), not the number of training samples.
    The method never sees the clean labels.
    """

    num_classes: int
    num_samples: int
    image_shape: tuple[int, int, int]
    device: torch.device
    store: "SampleStore"
    generator: torch.Generator
    build_model: Callable[[], nn.Module]
    iterate_train: Callable[[], Iterator[EvalBatch]]
    total_epochs: int
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0  # global optimiser step, updated by the engine


class Method:
    """Base class. Subclasses set ``name``, build networks in ``__init__`` and implement ``training_step``.

    Methods are constructed as ``cls(ctx, **method_args)``; unknown arguments are an error.
    """

    name = "method"

    def __init__(self, ctx: MethodContext):
        self.ctx = ctx

    # --- what the engine needs to know -------------------------------------------------------------------
    def view_policies(self, default_policy: str) -> dict[str, str]:
        """Augmentation view name -> policy name. Default: one view ``train`` with the configured policy."""
        return {"train": default_policy}

    def networks(self) -> dict[str, nn.Module]:
        """Every network of the method by name; the engine moves, checkpoints and toggles train/eval on them."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the engine's optimiser updates (default: every parameter of every network)."""
        return [p for net in self.networks().values() for p in net.parameters() if p.requires_grad]

    # --- hooks ----------------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        pass

    def training_step(self, batch: Batch) -> StepOutput:
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eval-mode predictions on normalised images (B, C, H, W): name -> logits or probabilities (B, C).
        The key ``main`` is the method's prediction; other keys (e.g. teacher, student) are reported too."""
        raise NotImplementedError

    def sample_outputs(self) -> dict[str, np.ndarray]:
        """Per-sample results at the end of the run, arrays of length num_samples (e.g. noise_score,
        suggested_label, group). Default: none beyond the engine's own."""
        return {}

    def write_reports(self, out_dir, history: list[dict], is_noisy: np.ndarray | None) -> None:
        """Method-specific plots into ``out_dir`` at the end of a run. ``is_noisy`` (bool, by dataset index) is
        the ground truth when known, for colouring only."""

    def summary(self) -> dict:
        """Method-specific values for the run summary (e.g. BKD's tipping epoch and thresholds)."""
        return {}

    # --- checkpointing of the method's own scalars (networks and store are saved by the engine) ------------
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
