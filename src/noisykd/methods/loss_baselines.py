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

from ..augment.views import gjs_student_view
from ..errors import ConfigError
from ..losses import LOSS_PRESETS, LOSSES, get_loss
from .base import Batch, Method, MethodContext, Prediction, StepOutput, View
from .registry import register_method

LOSS_BASELINES = ("ce", "ls", "cp", "boot", "gce", "sce", "nce_rce", "js")


class LossBaseline(Method):
    """A single network ``net`` minimising ``loss(logits, given_labels)`` on one augmented view.

    Its arguments are the loss's keyword hyperparameters (a dict), checked by a dry run of the loss when the
    config is loaded; the defaults are the loss's original paper's values.
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


#: What each loss baseline's arguments mean, as ``name: meaning`` lines (``noisykd methods NAME`` lists them with
#: their defaults); part of each baseline's docstring.
ARGUMENT_DOCS: dict[str, str] = {
    "ce": "",
    "ls": """
        epsilon: eps in [0, 1], the share of the label moved to the uniform distribution over all C classes
                 (Szegedy et al. 2016: 0.1; eps = 0 is CE).
        """,
    "cp": """
        beta:           weight of the entropy penalty -beta * H(p), >= 0 (0.25: a point of the ProSelfLC/CMD
                        grid; beta = 0 is CE).
        proselflc_form: false: CE - beta * H(p) (Pereyra et al.); true: (1 - beta) * CE - beta * H(p), as
                        written in CMD Table 2 and coded in ProSelfLC (beta then in [0, 1]).
        """,
    "boot": """
        beta:              weight of the given label in the target t = beta * onehot(y) + (1 - beta) * p, in
                           [0, 1] (Reed et al. 2015: 0.95; beta = 1 is CE).
        detach_prediction: true: p inside the target is detached (CMD's Boot-soft); false: the gradient also
                           flows through it (Reed et al.'s minimum-entropy form, the SCE and GJS/NRD baseline code).
        """,
    "gce": """
        q: the exponent of L_q = (1 - p_y^q) / q, in (0, 1]: q -> 0 gives CE, q = 1 gives 1 - p_y (MAE / 2)
           (Zhang & Sabuncu 2018: 0.7).
        """,
    "sce": """
        alpha:     weight of the cross-entropy term (Wang et al. 2019: 0.1 on CIFAR-10, 6.0 on CIFAR-100).
        beta:      weight of the reverse cross-entropy term RCE (1.0 on CIFAR-10, 0.1 on CIFAR-100).
        log_clamp: A, the negative value RCE takes for ln 0 (the paper's -4).
        """,
    "nce_rce": """
        alpha:     weight of the normalised cross-entropy NCE (Ma et al. 2020: 1 on CIFAR-10, 10 on CIFAR-100).
        beta:      weight of the reverse cross-entropy RCE (1 on CIFAR-10, 0.1 on CIFAR-100).
        log_clamp: A, the negative value RCE takes for ln 0 (-4; the authors' code uses ln 1e-4).
        """,
    "js": """
        pi1:   the label's weight in JS_pi(onehot(y), p), in (0, 1); p weighs 1 - pi1 (NRD Table 5 per setting,
               0.1-0.9).
        scale: divide by GJS's normaliser Z = -(1 - pi1) ln(1 - pi1) (their code "JSWCS" scales JS too).
        """,
}


def _loss_summary(loss: str) -> str:
    """"one network trained with <the loss function's docstring, first paragraph>"."""
    doc = " ".join(inspect.cleandoc(LOSSES[loss].__doc__ or "").split("\n\n")[0].split())
    if len(doc) > 1 and doc[1].islower():  # "Generalized ..." reads as "one network trained with generalized ..."
        doc = doc[0].lower() + doc[1:]
    return "One network trained with " + doc


for _loss in LOSS_BASELINES:
    _doc = "\n\n".join(filter(None, (_loss_summary(_loss), inspect.cleandoc(ARGUMENT_DOCS[_loss]),
                                       inspect.cleandoc(LossBaseline.__doc__ or ""))))
    register_method(_loss)(type(f"{_loss.upper()}Baseline", (LossBaseline,), {
        "loss": _loss, "__doc__": _doc, "__module__": __name__}))


#: GJS's own arguments (the rest are the loss's): the views' augmentation and how they go through the network
GJS_METHOD_DEFAULTS: dict[str, Any] = {"randaugment": "gjs", "one_batch": False, "cutout_size": None}
#: ``randaugment`` values: GJS's RandAugment table, torchvision's, or the run's ``augment.policy`` for both views
GJS_VIEW_SOURCES = ("gjs", "torchvision", "run")


@register_method("gjs")
class GJSBaseline(LossBaseline):
    """One network trained with GJS (Englesson & Azizpour 2021) on two augmented views of every image.

    Loss: GJS_pi(onehot(y), p(view 1), p(view 2)) / Z with Z = -(1 - pi1) ln(1 - pi1). Views (as GJS's CIFAR
    code): two independent draws of RandAugment(N=1, M=3) -> crop (zero padding) -> flip -> Cutout 16 px (scaled
    to other image sizes). The first view's logits are the training accuracy's.

    pis:         pi1, the label's weight (the views share 1 - pi1 equally), or the three weights (label, view 1,
                 view 2).
    scale:       divide the loss by Z (their CIFAR code, "JSWCS"; default true).
    randaugment: the views' RandAugment table: ``gjs`` (default: the ildoonet/pytorch-randaugment table GJS's
                 code installs, policy ``randaugment_gjs``), ``torchvision`` (torchvision's table) or ``run``
                 (both views from the run's ``augment.policy``); ``augment.views.train`` replaces the spec in
                 any case.
    one_batch:   false (default): one forward pass per view, as the authors' scripts (they never set
                 ``--onebatch``): BatchNorm normalises each view with its own batch statistics and updates its
                 running statistics twice per step. true: the two views in one batch of 2B images (one pass,
                 BatchNorm over both; faster on a GPU).
    cutout_size: the Cutout side in pixels (0: no Cutout); None: 16 on 32-px images, scaled with the image
                 side otherwise.
    """

    loss: ClassVar[str] = "gjs"

    def __init__(self, ctx: MethodContext, args: dict[str, Any] | None = None):
        args = dict(args or {})
        own = {key: args.pop(key, default) for key, default in GJS_METHOD_DEFAULTS.items()}
        super().__init__(ctx, args)
        self.args = {**args, **own}  # the summary and the saved config show all of them
        self.view_source, self.one_batch = own["randaugment"], own["one_batch"]
        self.cutout_size = own["cutout_size"]

    @classmethod
    def parse_args(cls, raw: Mapping[str, Any], epochs: int) -> dict[str, Any]:
        raw = dict(raw)
        pis = raw.get("pis")
        if isinstance(pis, (list, tuple)) and len(pis) != 3:  # the label and the two views
            raise ConfigError(f"method_args.pis: gjs takes pi1 (the label's weight) or three weights (label, view "
                              f"1, view 2), got {len(pis)}: {list(pis)}")
        own = {key: raw.pop(key) for key in GJS_METHOD_DEFAULTS if key in raw}
        if own.get("randaugment", "gjs") not in GJS_VIEW_SOURCES:
            raise ConfigError(f"method_args.randaugment must be one of {', '.join(GJS_VIEW_SOURCES)} (GJS's "
                              f"RandAugment table, torchvision's, or the run's augment.policy), got "
                              f"{own['randaugment']!r}")
        if not isinstance(own.get("one_batch", False), bool):
            raise ConfigError(f"method_args.one_batch must be true or false, got {own['one_batch']!r}")
        cutout = own.get("cutout_size")
        if cutout is not None and (isinstance(cutout, bool) or not isinstance(cutout, int) or cutout < 0):
            raise ConfigError(f"method_args.cutout_size must be an int >= 0 (0: no Cutout) or null (16 on 32-px "
                              f"images), got {cutout!r}")
        return {**super().parse_args(raw, epochs), **own}

    @classmethod
    def argument_defaults(cls) -> dict[str, Any]:
        return {**super().argument_defaults(), **GJS_METHOD_DEFAULTS}

    def views(self):
        if self.view_source == "run":
            return {"train": View(count=2)}
        return {"train": View(gjs_student_view(self.view_source, self.cutout_size, self.ctx.image_shape), count=2)}

    def training_step(self, batch: Batch) -> StepOutput:
        first, second = batch.views["train"]
        if self.one_batch:
            views = list(self.net(torch.cat([first, second])).chunk(2))
        else:  # GJS's scripts: one forward pass per view (--onebatch unset)
            views = [self.net(first), self.net(second)]
        return StepOutput(loss=self.loss_fn(views, batch.labels), logits=views[0])
