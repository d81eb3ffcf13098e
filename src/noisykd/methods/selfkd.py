"""Self label correction (self KD): one network learning from a refined label q~ = (1 - eps) q + eps p.

The two corrections CMD builds on (``cmd-...md`` Sec. 3, Table 2), registered as single-network methods:

* ``proselflc``: eps = h(t/Gamma - 0.5, b1) * (1 - H(p)/H(u)) (Eq. 5), trust growing with training time;
* ``mconf``: eps = h(r - rho, b1) * (1 - H(p)/H(u)) (Eq. 6), trust growing with the model's overall certainty r.

:class:`SelfCorrection` computes the refined label of every self-KD kind of CMD's Table 2 (CE, LS, CP, Boot-soft,
ProSelfLC, Mconf) and keeps Mconf's state; the ``cmd`` method uses it for both of its models.

Stop-gradient (the paper's semantics, default): p inside the target is detached, so the gradient with respect
to the logits is p - q~. ``detach_target=False`` keeps the gradient through p, as ProSelfLC's older code does.
eps itself never carries a gradient. CP is the exception: its target -eps p must keep the gradient (detached,
its term has zero gradient), so it always does.

The log of H(q~, p) (``log_eps``, :mod:`noisykd.losses.selfkd`): exact by default (the paper's equations);
``log_eps=1e-6`` takes ln(p + 1e-6) as ProSelfLC's official code and CMD's appendix do, which halves the
gradient of a sample whose given label has probability 1e-6 (the paper configs under ``configs/cmd`` set it).
eps (Eq. 5/6) and Mconf's r always use the exact entropy (ProSelfLC's code: ln(p + 1e-12), the same within 1e-9).

The time t of ProSelfLC's g(t) is :class:`~noisykd.methods.base.Progress`'s 0-based counter: the optimiser step
(``schedule_unit="iterations"``: the number of updates made before this batch, Gamma = steps per epoch x
epochs) or the epoch (``"epochs"``: 0 in the first epoch, Gamma = the number of epochs). The official code
counts both from 1, so its t/Gamma is ours + 1/Gamma: negligible in iteration mode, one epoch's shift of g in
epoch mode (see :func:`~noisykd.losses.selfkd.proselflc_global_trust`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal, Mapping

import torch

from ..errors import ConfigError
from ..losses import LOSS_PRESETS
from ..losses.selfkd import (
    check_log_eps,
    confidence_penalty_target,
    label_smoothing_target,
    mconf_global_trust,
    mean_certainty,
    normalized_entropy,
    proselflc_global_trust,
    refined_target,
    self_trust,
    target_cross_entropy,
)
from .base import Batch, Method, MethodContext, Prediction, Progress, StepOutput
from .registry import register_method

SelfKD = Literal["ce", "ls", "cp", "boot", "proselflc", "mconf"]
SELF_KD = typing.get_args(SelfKD)
ScheduleUnit = Literal["iterations", "epochs"]

#: The fixed eps of LS, CP and Boot-soft when ``epsilon`` is not given, from the loss presets (their papers):
#: LS 0.1 (Szegedy et al.), CP 0.25 (a point of the ProSelfLC/CMD grid; no paper gives one), Boot-soft
#: 1 - 0.95 = 0.05 (Reed et al. weigh the label by 0.95).
FIXED_EPSILON = {"ls": LOSS_PRESETS["ls"]["epsilon"], "cp": LOSS_PRESETS["cp"]["beta"],
                 "boot": round(1.0 - LOSS_PRESETS["boot"]["beta"], 10)}


def check_self_correction_args(kind: str, b1: float, transit: float, rho: float, epsilon: float | None,
                               log_eps: float | None = None) -> None:
    """ConfigError naming the ``method_args`` key for a value out of range."""
    check_log_eps(log_eps, "method_args.log_eps")
    if not b1 >= 0:
        raise ConfigError(f"method_args.b1 must be >= 0 (the smoothness of h; the authors' grid is 4-14), got {b1}")
    if not 0 <= transit <= 1:
        raise ConfigError(f"method_args.transit must lie in [0, 1] (the point t/Gamma where g = 0.5), got {transit}")
    if not 0 <= rho <= 1:
        raise ConfigError(f"method_args.rho must lie in [0, 1] (Mconf's certainty threshold), got {rho}")
    if epsilon is not None:
        if kind not in FIXED_EPSILON:
            raise ConfigError(f"method_args.epsilon is the fixed eps of self_kd ls, cp or boot; {kind} "
                              + ("has none" if kind == "ce" else "computes eps per sample (Eq. 5/6)"))
        if not 0 <= epsilon <= 1:
            raise ConfigError(f"method_args.epsilon must lie in [0, 1], got {epsilon}")


class SelfCorrection:
    """The refined label of one model for one self-KD kind, and Mconf's certainty r (state, checkpointed).

    kind: one of ``SELF_KD``; b1, transit, schedule_unit ("iterations": t, Gamma are optimiser steps, the
    default; "epochs": 0-based epochs): ProSelfLC's g(t); rho: Mconf's threshold; epsilon: the fixed eps of
    LS / CP / Boot (None: ``FIXED_EPSILON``); detach_target: detach p inside q~ (not for CP, see the module).

    Mconf's r comes from the previous epoch's training predictions: the mean normalised entropy of the
    predictions made during that epoch's training pass (train mode, augmented views, no extra pass), passed to
    :meth:`end_epoch`. Before the first epoch ends r = 0 (a model that knows nothing), so g = h(-rho, b1).
    """

    def __init__(self, kind: str, num_classes: int, *, b1: float = 6.0, transit: float = 0.5,
                 schedule_unit: str = "iterations", rho: float = 0.5, epsilon: float | None = None,
                 detach_target: bool = True):
        if kind not in SELF_KD:
            raise ConfigError(f"self_kd must be one of {', '.join(SELF_KD)}; got {kind!r}")
        self.kind, self.num_classes = kind, num_classes
        self.b1, self.transit, self.schedule_unit, self.rho = b1, transit, schedule_unit, rho
        self.epsilon = epsilon if epsilon is not None else FIXED_EPSILON.get(kind, 0.0)
        self.detach_target = detach_target
        self.certainty = 0.0  # Mconf's r of the previous epoch

    def global_trust(self, progress: Progress) -> float:
        """g: ProSelfLC's h(t/Gamma - transit, b1) or Mconf's h(r - rho, b1); 1 for the fixed-eps kinds."""
        if self.kind == "proselflc":
            if self.schedule_unit == "epochs":
                return proselflc_global_trust(progress.epoch, progress.total_epochs, self.b1, self.transit)
            return proselflc_global_trust(progress.step, progress.total_steps, self.b1, self.transit)
        if self.kind == "mconf":
            return mconf_global_trust(self.certainty, self.rho, self.b1)
        return 1.0

    def phase(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> str | None:
        """ProSelfLC and Mconf: which side leads the refined label at the start of ``epoch`` (0-based): the given
        labels (global trust g < 0.5) or the model's predictions (g >= 0.5); None for the other kinds."""
        if self.kind not in ("proselflc", "mconf"):
            return None
        g = self.global_trust(Progress(epoch, epoch * steps_per_epoch, 0, steps_per_epoch, total_epochs))
        return ("global trust g >= 0.5: the predictions lead the refined labels" if g >= 0.5
                else "global trust g < 0.5: the given labels lead")

    def target(self, labels: torch.Tensor, log_probs: torch.Tensor,
               progress: Progress) -> tuple[torch.Tensor, torch.Tensor]:
        """(q~ (B, C), eps (B,)) for given labels (B,) and the model's log-probabilities (B, C) (float32)."""
        b, c = log_probs.shape
        probs = log_probs.exp()
        target_probs = probs.detach() if self.detach_target else probs
        if self.kind in ("proselflc", "mconf"):
            eps = self_trust(self.global_trust(progress), log_probs)
            return refined_target(labels, target_probs, eps), eps
        eps = torch.full((b,), float(self.epsilon if self.kind != "ce" else 0.0), device=log_probs.device)
        if self.kind == "ce":
            return refined_target(labels, probs.detach(), 0.0), eps
        if self.kind == "ls":
            return label_smoothing_target(labels, c, self.epsilon, log_probs.dtype), eps
        if self.kind == "cp":
            return confidence_penalty_target(labels, probs, self.epsilon), eps
        return refined_target(labels, target_probs, self.epsilon), eps  # boot

    def end_epoch(self, mean_normalized_entropy: float) -> None:
        """Mconf: r = 1 - the epoch's mean normalised entropy (Eq. 6), used throughout the next epoch."""
        self.certainty = mean_certainty(mean_normalized_entropy)

    def state_dict(self) -> dict:
        return {"certainty": self.certainty}

    def load_state_dict(self, state: Mapping) -> None:
        self.certainty = float(state["certainty"])


# ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProSelfLCArgs:
    """ProSelfLC's arguments (``method_args``): the paper's defaults (``methods.md``, CMD section).

    b1:            smoothness of g(t) = h(t/Gamma - transit, b1) (default 6; the authors' grid 4-14).
    transit:       the point t/Gamma where g(t) = 0.5 (0.5).
    schedule_unit: "iterations" (t and Gamma in optimiser steps, the default) or "epochs"; t is 0-based
                   (the official code's counters start at 1: one epoch's shift of g in epoch mode).
    detach_target: detach p inside q~ (paper); False keeps the gradient (ProSelfLC's older code).
    log_eps:       None (default): H(q~, p) with the exact ln p; a float >= 0: ln(p + log_eps), as the official
                   ProSelfLC code (1e-6, ``crossentropy.py``).
    """

    b1: float = 6.0
    transit: float = 0.5
    schedule_unit: ScheduleUnit = "iterations"
    detach_target: bool = True
    log_eps: float | None = None

    def validate(self, epochs: int) -> None:
        check_self_correction_args("proselflc", self.b1, self.transit, 0.5, None, self.log_eps)


@dataclass(frozen=True)
class MconfArgs:
    """Mconf's arguments (``method_args``): the paper's defaults.

    b1:            smoothness of g(r) = h(r - rho, b1) (default 6, as ProSelfLC's).
    rho:           the certainty above which the model is trusted more (0.5, "in all our experiments").
    detach_target: detach p inside q~ (paper); False keeps the gradient.
    log_eps:       None (default): exact ln p in H(q~, p); a float >= 0: ln(p + log_eps) (CMD appendix C, 1e-6).
    """

    b1: float = 6.0
    rho: float = 0.5
    detach_target: bool = True
    log_eps: float | None = None

    def validate(self, epochs: int) -> None:
        check_self_correction_args("mconf", self.b1, 0.5, self.rho, None, self.log_eps)


class SelfLabelCorrection(Method):
    """One network ``net`` minimising H(q~, p) with its own refined label q~ (see the module docstring).

    Per epoch, in metrics.csv: ``train_epsilon`` (mean eps), ``train_global_trust`` (g) and
    ``train_norm_entropy`` (mean H(p)/H(u) of the training predictions; Mconf's r is one minus it).
    """

    kind: typing.ClassVar[str] = "proselflc"

    def __init__(self, ctx: MethodContext, args):
        super().__init__(ctx, args)
        self.net = self.add_network("net", ctx.build_model())
        options = {k: getattr(args, k) for k in ("b1", "transit", "schedule_unit", "rho", "detach_target")
                   if hasattr(args, k)}
        self.correction = SelfCorrection(self.kind, ctx.num_classes, **options)
        self.log_eps = getattr(args, "log_eps", None)

    def training_step(self, batch: Batch) -> StepOutput:
        logits = self.net(batch.views["train"])
        log_probs = torch.log_softmax(logits.float(), dim=1)
        target, eps = self.correction.target(batch.labels, log_probs, batch.progress)
        loss = target_cross_entropy(target, log_probs, self.log_eps).mean()
        return StepOutput(loss=loss, logits=logits, metrics={
            "epsilon": eps, "global_trust": self.correction.global_trust(batch.progress),
            "norm_entropy": normalized_entropy(log_probs.detach())})

    def phase(self, epoch: int) -> str | None:
        return self.correction.phase(epoch, self.ctx.total_epochs, self.ctx.steps_per_epoch)

    def on_epoch_end(self, epoch: int, train_metrics: Mapping[str, float]) -> dict[str, float]:
        self.correction.end_epoch(train_metrics["norm_entropy"])
        return {}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        return Prediction(logits=self.net(images))

    def state_dict(self) -> dict:
        return {"correction": self.correction.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.correction.load_state_dict(state["correction"])


@register_method("proselflc")
class ProSelfLC(SelfLabelCorrection):
    """One network with ProSelfLC's progressive self label correction: trust in the prediction grows with
    training time and with the prediction's confidence (CMD Eq. 5; Wang et al., CVPR 2021).

    Arguments: the fields of :class:`ProSelfLCArgs` (listed with their defaults by ``noisykd methods proselflc``).
    """

    Args = ProSelfLCArgs
    kind = "proselflc"


@register_method("mconf")
class Mconf(SelfLabelCorrection):
    """One network with Mconf self label correction: trust in the prediction grows with the model's overall
    certainty on the previous epoch and with the prediction's confidence (CMD Eq. 6-7).

    Arguments: the fields of :class:`MconfArgs` (listed with their defaults by ``noisykd methods mconf``).
    Mconf's r is kept in the method's state, so a resumed run continues exactly.
    """

    Args = MconfArgs
    kind = "mconf"
