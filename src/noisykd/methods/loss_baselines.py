"""Loss baselines: one network trained on the given labels with a (noise-robust) loss.

CE, label smoothing (LS), confidence penalty (CP), soft bootstrapping (Boot), GCE, SCE, NCE+RCE and JS, each with
its papers' hyperparameters as presets (``noisykd.losses.presets``); ``method_args`` override them, e.g.
``--set method_args.q=0.5`` for GCE. Each is registered as its own method class (``LOSS_BASELINES``). GJS
(Englesson & Azizpour 2021) is the one that sees two augmented views of every image (``GJSBaseline``).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Mapping

import torch

from ..errors import ConfigError
from ..losses import LOSS_PRESETS, LOSSES, get_loss
from .base import Batch, Method, MethodContext, Prediction, StepOutput, View
from .registry import register_method

LOSS_BASELINES = ("ce", "ls", "cp", "boot", "gce", "sce", "nce_rce", "js")


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


@register_method("gjs")
class GJSBaseline(LossBaseline):
    """One network trained with GJS (Englesson & Azizpour 2021) on two augmented views of every image.

    Loss: GJS_pi(onehot(y), p(view 1), p(view 2)) / Z. ``pis``: pi1 (the label's weight; the views share
    1 - pi1 equally) or the three weights; ``scale``: divide by Z = -(1 - pi1) ln(1 - pi1) (their CIFAR code,
    "JSWCS"; default). The two views are two independent draws of the run's augmentation policy
    (``augment.views.train`` replaces it). Both go through the network as one batch of 2B images: one
    forward pass, and BatchNorm normalises the two views together (our choice; the paper does not say). The
    first view's logits are the training accuracy's.
    """

    loss: ClassVar[str] = "gjs"

    @classmethod
    def parse_args(cls, raw: Mapping[str, Any], epochs: int) -> dict[str, Any]:
        pis = raw.get("pis")
        if isinstance(pis, (list, tuple)) and len(pis) != 3:  # the label and the two views
            raise ConfigError(f"method_args.pis: gjs takes pi1 (the label's weight) or three weights (label, view "
                              f"1, view 2), got {len(pis)}: {list(pis)}")
        return super().parse_args(raw, epochs)

    def views(self):
        return {"train": View(count=2)}

    def training_step(self, batch: Batch) -> StepOutput:
        first, second = batch.views["train"]
        logits = self.net(torch.cat([first, second]))
        views = logits.chunk(2)
        return StepOutput(loss=self.loss_fn(list(views), batch.labels), logits=views[0])
