"""Loss baselines: one network trained on the given labels with a (noise-robust) loss.

CE, label smoothing (LS), confidence penalty (CP), soft bootstrapping (Boot), GCE, SCE and NCE+RCE, each with
its papers' hyperparameters as presets (``noisykd.losses.presets``); ``method_args`` override them, e.g.
``--set method_args.q=0.5`` for GCE. Each is registered as its own method class (``LOSS_BASELINES``).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Mapping

import torch

from ..errors import ConfigError
from ..losses import LOSS_PRESETS, LOSSES, get_loss
from .base import Batch, Method, MethodContext, Prediction, StepOutput
from .registry import register_method

LOSS_BASELINES = ("ce", "ls", "cp", "boot", "gce", "sce", "nce_rce")


class LossBaseline(Method):
    """A single network ``net`` minimising ``loss(logits, given_labels)`` on one augmented view.

    Its arguments are the loss's hyperparameters (a dict), checked by a dry run of the loss when the config is
    loaded; the defaults are the loss's original paper's values.
    """

    loss: ClassVar[str] = "ce"

    def __init__(self, ctx: MethodContext, args: dict[str, Any] | None = None):
        super().__init__(ctx, dict(args or {}))
        self.net = self.add_network("net", ctx.build_model())
        self.loss_fn = get_loss(self.loss, **self.args)

    @classmethod
    def parse_args(cls, raw: Mapping[str, Any], epochs: int) -> dict[str, Any]:
        if "reduction" in raw:  # the engine minimises a batch mean; a per-sample loss would not be a scalar
            raise ConfigError(f"method_args.reduction: {cls.loss} always averages its loss over the batch")
        get_loss(cls.loss, **raw)  # unknown hyperparameters and bad values raise ConfigError, naming the loss
        return dict(raw)

    @classmethod
    def argument_defaults(cls) -> dict[str, Any]:
        return dict(LOSS_PRESETS.get(cls.loss, {}))

    def training_step(self, batch: Batch) -> StepOutput:
        logits = self.net(batch.views["train"])
        return StepOutput(loss=self.loss_fn(logits, batch.labels), logits=logits)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        return Prediction(logits=self.net(images))


def _loss_summary(loss: str) -> str:
    """"one network trained with <the loss function's docstring, first paragraph>"."""
    doc = " ".join(inspect.cleandoc(LOSSES[loss].__doc__ or "").split("\n\n")[0].split())
    if len(doc) > 1 and doc[1].islower():  # "Generalized ..." reads as "one network trained with generalized ..."
        doc = doc[0].lower() + doc[1:]
    return "One network trained with " + doc


for _loss in LOSS_BASELINES:
    register_method(_loss)(type(f"{_loss.upper()}Baseline", (LossBaseline,), {
        "loss": _loss, "__doc__": _loss_summary(_loss) + "\n\n" + inspect.cleandoc(LossBaseline.__doc__ or ""),
        "__module__": __name__}))
