"""Loss baselines: one network trained on the given labels with a (noise-robust) loss.

CE, label smoothing (LS), confidence penalty (CP), soft bootstrapping (Boot), GCE, SCE and NCE+RCE, each with
its papers' hyperparameters as presets (``noisykd.losses.presets``); ``method_args`` override them, e.g.
``--set method_args.q=0.5`` for GCE.
"""

from __future__ import annotations

import torch

from ..losses import get_loss
from .base import Batch, Method, MethodContext, StepOutput
from .registry import register_method

LOSS_BASELINES = ("ce", "ls", "cp", "boot", "gce", "sce", "nce_rce")


class LossBaseline(Method):
    """A single network ``net`` minimising ``loss(logits, given_labels)`` on one augmented view."""

    def __init__(self, ctx: MethodContext, loss: str, **hyperparameters):
        super().__init__(ctx)
        self.name = loss
        self.net = ctx.build_model()
        self.loss_fn = get_loss(loss, **hyperparameters)

    def networks(self):
        return {"net": self.net}

    def training_step(self, batch: Batch) -> StepOutput:
        logits = self.net(batch.views["train"])
        return StepOutput(loss=self.loss_fn(logits, batch.labels), logits=logits)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"main": self.net(images)}


for _name in LOSS_BASELINES:
    register_method(_name, loss=_name)(LossBaseline)
