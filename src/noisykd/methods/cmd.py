"""CMD: mutual distillation of confident knowledge (``shared/papers/cmd-not-all-knowledge-is-created-equal.md``).

Two models A and B see the same augmented batch. Each learns from its own refined label q~ (self label
correction, :mod:`noisykd.methods.selfkd`: CE, LS, CP, Boot-soft, ProSelfLC or Mconf) and from its peer's refined
label where the peer is confident (Eqs. 8-11)::

    L_A = H(q~_A, p_A) + 1/B sum_{i: H(p_B,i) < chi} H(q~_B,i, p_A,i)        (and symmetrically L_B)
    chi = H(u)/eta * 2 h(t/Gamma - 0.5, b2)                                  (Eq. 12, t/Gamma in epochs)

``knowledge`` picks the column of the paper's Table 1: ``zero`` (two independent models), ``all`` (SyncMKD:
every sample's peer label is distilled), ``static`` (CMD-S: b2 = 0, chi = H(u)/eta), ``progressive`` (CMD-P:
b2 != 0, default -5, so chi shrinks and only ever more confident knowledge passes); and ``kdcl``, the
ensemble-teacher baseline of Table 5 (KDCL, Guo et al. 2020): both models also learn the ensemble's prediction
(p_A + p_B)/2 on every sample.

The log in every H(., p) (self, distillation and KDCL terms) and in the selection entropy H(p_B) is exact by
default; ``log_eps=1e-6`` takes ln(p + 1e-6) there, as the appendix C snippet does (``torch.log(pA + 1e-6)``) and
ProSelfLC's official cross-entropy. eps and Mconf's r keep the exact entropy.

Stop-gradients: the peer's refined label is detached in the distillation term (the peer is a teacher there),
as is the KDCL ensemble; inside a model's own q~, p is detached unless ``detach_target=False``.

What the peer passes is its *refined label* q~_B (Eq. 8 and the appendix code): with ``self_kd=ce`` that is the
given label itself, so the only knowledge exchanged is which samples the peer is confident about.

Prediction: the two models' mean test accuracy is the reported ``test_acc`` (the paper's protocol), with
``test_acc_a``, ``test_acc_b`` and ``test_acc_ensemble`` (mean of the probabilities, also the ``logits`` used by
``noisykd predict``). Detection: the noise score is one minus the two models' mean probability of the given
label (an eval pass at the end), flagged by ``find_label_issues`` with ``detection_rule``.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np
import torch

from ..detect import find_label_issues
from ..errors import ConfigError
from ..losses.selfkd import (
    confident_mask,
    distillation_loss,
    normalized_entropy,
    selection_threshold,
    target_cross_entropy,
)
from .base import (Batch, Detection, GroundTruth, LabelCheck, Method, MethodContext, Prediction, SampleOutputs,
                   StepOutput)
from .registry import register_method
from .selfkd import SELF_KD, ScheduleUnit, SelfCorrection, SelfKD, check_self_correction_args

Knowledge = Literal["zero", "all", "static", "progressive", "kdcl"]
KNOWLEDGE = typing.get_args(Knowledge)
DetectionRule = Literal["gmm", "otsu_mu1", "otsu_s", "otsu_mu2", "argmax"]


@dataclass(frozen=True)
class CMDArgs:
    """CMD's arguments (``method_args``); defaults are the paper's (``methods.md``, CMD section).

    self_kd:       how each model is trained: ce | ls | cp | boot | proselflc (default) | mconf (Table 2).
    knowledge:     what passes between the models: zero | all | static | progressive (default) | kdcl.
    eta:           chi's scale, chi starts near H(u)/eta (default 2; > 0).
    b2:            chi's slope over the epochs for ``progressive`` (default -5; must be != 0; < 0 best in the
                   paper's Fig. 4). ``static`` is b2 = 0 by definition and ignores it.
    b1, transit, schedule_unit: ProSelfLC's g(t) (6, 0.5, "iterations"); b1 is also the smoothness of Mconf's
                   g(r).
    rho:           Mconf's certainty threshold (0.5).
    epsilon:       the fixed eps of ls / cp / boot (None: 0.1 / 0.25 / 0.05, see ``selfkd.FIXED_EPSILON``).
    detach_target: detach p inside a model's own q~ (paper); False keeps the gradient.
    log_eps:       None (default): the exact ln p in every H(., p) and in the selection entropy; a float >= 0:
                   ln(p + log_eps) there, as the appendix C snippet and ProSelfLC's code (1e-6).
    model_b:       B's architecture, a registered model name (Table 6: two different networks); None: the
                   run's ``model``, like A.
    detection_rule: how ``find_label_issues`` flags the noise score: gmm (default, DivideMix's mixture on
                   -log of the mean probability), otsu_mu1, otsu_s, otsu_mu2 or argmax.
    """

    self_kd: SelfKD = "proselflc"
    knowledge: Knowledge = "progressive"
    eta: float = 2.0
    b2: float = -5.0
    b1: float = 6.0
    transit: float = 0.5
    schedule_unit: ScheduleUnit = "iterations"
    rho: float = 0.5
    epsilon: float | None = None
    detach_target: bool = True
    log_eps: float | None = None
    model_b: str | None = None
    detection_rule: DetectionRule = "gmm"

    def validate(self, epochs: int) -> None:
        check_self_correction_args(self.self_kd, self.b1, self.transit, self.rho, self.epsilon, self.log_eps)
        if not self.eta > 0:
            raise ConfigError(f"method_args.eta must be > 0 (chi = H(u)/eta; for no exchange use knowledge=zero), "
                              f"got {self.eta}")
        if not math.isfinite(self.b2):
            raise ConfigError(f"method_args.b2 must be a finite number, got {self.b2}")
        if self.knowledge == "progressive" and self.b2 == 0:
            raise ConfigError("method_args.b2 must be != 0 for knowledge=progressive (CMD-P); b2 = 0 is "
                              "knowledge=static (CMD-S)")
        if self.model_b is not None:
            from ..models import MODELS

            if self.model_b not in MODELS:
                raise ConfigError(f"method_args.model_b must be one of {', '.join(MODELS.names())}; "
                                  f"got {self.model_b!r}")


@register_method("cmd")
class MutualConfidentDistillation(Method):
    """Two models, each with self label correction, distilling each other's confident knowledge (CMD).

    Arguments: the fields of :class:`CMDArgs` (listed with their defaults by ``noisykd methods cmd``). Per
    epoch, in metrics.csv: the share of samples whose peer knowledge was selected (``train_selected_b2a``: B's
    label distilled into A; ``train_selected_a2b``), ``train_chi``,
    the mean eps of each model (``train_epsilon_a``/``_b``) and, when the truth is known, the share of selected
    peer predictions that are the clean label (``train_selected_right_b2a``/``_a2b``). Plot: cmd_selection.png.
    """

    Args = CMDArgs

    def __init__(self, ctx: MethodContext, args: CMDArgs):
        super().__init__(ctx, args)
        self.net_a = self.add_network("a", ctx.build_model())
        self.net_b = self.add_network("b", ctx.build_model(args.model_b) if args.model_b else ctx.build_model())
        options = dict(b1=args.b1, transit=args.transit, schedule_unit=args.schedule_unit, rho=args.rho,
                       epsilon=args.epsilon, detach_target=args.detach_target)
        self.correction = {name: SelfCorrection(args.self_kd, ctx.num_classes, **options) for name in ("a", "b")}

    # --------------------------------------------------------------------------------------------------------
    def threshold(self, epoch: int) -> float:
        """chi of this epoch (Eq. 12): b2 = 0 for ``static``; +inf for ``all`` and ``kdcl`` (every sample);
        -inf for ``zero`` (none)."""
        a = self.args
        if a.knowledge in ("all", "kdcl"):
            return math.inf
        if a.knowledge == "zero":
            return -math.inf
        b2 = 0.0 if a.knowledge == "static" else a.b2
        return selection_threshold(epoch, self.ctx.total_epochs, self.ctx.num_classes, a.eta, b2)

    def training_step(self, batch: Batch) -> StepOutput:
        x, y, progress = batch.views["train"], batch.labels, batch.progress
        log_p_a = torch.log_softmax(self.net_a(x).float(), dim=1)
        log_p_b = torch.log_softmax(self.net_b(x).float(), dim=1)
        target_a, eps_a = self.correction["a"].target(y, log_p_a, progress)
        target_b, eps_b = self.correction["b"].target(y, log_p_b, progress)
        log_eps = self.args.log_eps
        self_a = target_cross_entropy(target_a, log_p_a, log_eps).mean()
        self_b = target_cross_entropy(target_b, log_p_b, log_eps).mean()

        chi = self.threshold(progress.epoch)
        selected_b2a = confident_mask(log_p_b, chi, log_eps)  # B is confident: its label goes to A (Eq. 8)
        selected_a2b = confident_mask(log_p_a, chi, log_eps)  # Eq. 9
        if self.args.knowledge == "kdcl":  # the ensemble's prediction teaches both, on every sample
            ensemble = (log_p_a.exp() + log_p_b.exp()).detach() / 2
            peer_a = distillation_loss(ensemble, log_p_a, selected_b2a, log_eps)
            peer_b = distillation_loss(ensemble, log_p_b, selected_a2b, log_eps)
        elif self.args.knowledge == "zero":  # no term at all, not a zero-weighted one: nothing flows
            peer_a = peer_b = torch.zeros((), device=x.device)
        else:  # Eqs. 10-11: distillation_loss detaches the peer's label
            peer_a = distillation_loss(target_b, log_p_a, selected_b2a, log_eps)
            peer_b = distillation_loss(target_a, log_p_b, selected_a2b, log_eps)

        with torch.no_grad():
            ensemble_log_probs = torch.logsumexp(torch.stack([log_p_a, log_p_b]), dim=0) - math.log(2)
        metrics = {
            "loss_a": (self_a + peer_a).detach(), "loss_b": (self_b + peer_b).detach(),
            "selected_b2a": selected_b2a.float(), "selected_a2b": selected_a2b.float(),
            "epsilon_a": eps_a, "epsilon_b": eps_b,
            "norm_entropy_a": normalized_entropy(log_p_a.detach()),
            "norm_entropy_b": normalized_entropy(log_p_b.detach()),
        }
        if math.isfinite(chi):
            metrics["chi"] = chi
        checks = {"selected_right_b2a": LabelCheck(log_p_b.detach().argmax(1), selected_b2a),
                  "selected_right_a2b": LabelCheck(log_p_a.detach().argmax(1), selected_a2b)}
        return StepOutput(loss=self_a + peer_a + self_b + peer_b, logits=ensemble_log_probs, metrics=metrics,
                          checks=checks)

    def phase(self, epoch: int) -> str | None:
        """ProSelfLC's or Mconf's side (labels or predictions) leading model A's refined label (B's follows the
        same schedule; Mconf's may cross an epoch apart); None for the fixed-eps kinds."""
        return self.correction["a"].phase(epoch, self.ctx.total_epochs, self.ctx.steps_per_epoch)

    def on_epoch_end(self, epoch: int, train_metrics: Mapping[str, float]) -> dict[str, float]:
        for name in ("a", "b"):  # Mconf's r for the next epoch (unused by the other kinds)
            self.correction[name].end_epoch(train_metrics[f"norm_entropy_{name}"])
        return {}

    # --------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        """Heads ``a``, ``b`` and ``ensemble`` (log of the mean probabilities, also ``logits``); the reported
        accuracy is the mean of A's and B's (the paper's)."""
        log_p_a = torch.log_softmax(self.net_a(images).float(), dim=1)
        log_p_b = torch.log_softmax(self.net_b(images).float(), dim=1)
        ensemble = torch.logsumexp(torch.stack([log_p_a, log_p_b]), dim=0) - math.log(2)
        return Prediction(logits=ensemble, heads={"a": log_p_a, "b": log_p_b, "ensemble": ensemble},
                          accuracy_of=("a", "b"))

    def _given_label_probabilities(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """An eval pass over the training samples: P_A(y|x), P_B(y|x) (NaN for rows not trained on), the given
        labels and the ensemble's arg-max, by dataset index."""
        n = self.ctx.num_samples
        p_a, p_b = np.full(n, np.nan), np.full(n, np.nan)
        given, suggested = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
        for batch in self.ctx.iterate_train():
            prediction = self.predict(batch.images)
            rows, labels = batch.indices.cpu().numpy(), batch.labels[:, None]
            p_a[rows] = prediction.heads["a"].exp().gather(1, labels)[:, 0].cpu().numpy()
            p_b[rows] = prediction.heads["b"].exp().gather(1, labels)[:, 0].cpu().numpy()
            given[rows] = batch.labels.cpu().numpy()
            suggested[rows] = prediction.logits.argmax(1).cpu().numpy()
        return p_a, p_b, given, suggested

    def sample_outputs(self) -> SampleOutputs:
        """Clean score: the two models' mean probability of the given label, flagged by ``detection_rule``."""
        p_a, p_b, given, suggested = self._given_label_probabilities()
        clean_score = (p_a + p_b) / 2
        rows = self.ctx.train_indices.cpu().numpy()
        issues = find_label_issues(given[rows], scores=np.clip(clean_score[rows], 0.0, 1.0),
                                   method=self.args.detection_rule,
                                   pred_probs=None if self.args.detection_rule != "argmax" else
                                   _one_hot(suggested[rows], self.ctx.num_classes))
        flagged = np.zeros(len(clean_score), dtype=bool)
        flagged[rows] = issues.is_label_issue
        rule = {"gmm": "GMM clean probability < 0.5 on -log", "otsu_mu1": "Otsu: below mu1 of",
                "otsu_s": "Otsu: at most s of", "otsu_mu2": "Otsu: below mu2 of",
                "argmax": "ensemble arg-max differs from the given label; score"}[self.args.detection_rule]
        detection = Detection(clean_score=clean_score, flagged=flagged, detector="cmd",
                              rule=f"{rule} (P_A(y|x) + P_B(y|x)) / 2 after the last epoch")
        # suggested labels: the engine's default, the final prediction's arg-max, is the ensemble's
        return SampleOutputs(detection=detection, columns={"p_given_a": p_a, "p_given_b": p_b})

    def write_reports(self, out_dir, history: list[dict], truth: GroundTruth | None) -> None:
        """cmd_selection.png: per epoch, the share of peer knowledge selected (A<-B, B<-A), chi, the mean eps
        and, when the truth is known, the share of selected peer predictions that are right."""
        from ..plots import plot_cmd_selection

        plot_cmd_selection(history, out_dir / "cmd_selection.png",
                           title=f"CMD ({self.args.knowledge} knowledge, self_kd={self.args.self_kd})")

    def summary(self) -> dict:
        last = {"self_kd": self.args.self_kd, "knowledge": self.args.knowledge,
                "model_b": self.args.model_b or "same as model A"}
        if self.args.self_kd == "mconf":
            last["mconf_certainty_a"] = self.correction["a"].certainty
            last["mconf_certainty_b"] = self.correction["b"].certainty
        return last

    def state_dict(self) -> dict:
        return {name: c.state_dict() for name, c in self.correction.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, c in self.correction.items():
            c.load_state_dict(state[name])


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), num_classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


__all__ = ["CMDArgs", "MutualConfidentDistillation", "KNOWLEDGE", "SELF_KD"]
