"""NRD: noise-robust distillation, an EMA teacher on unseen views (NRD paper, Eqs. 19 and 24-27).

Paper: ``shared/papers/nrd-neural-vicinal-risk-minimization.md``. One network, the student theta, and an
exponential moving average of it, the teacher theta-bar (Eq. 24), which sees a view drawn from an augmentation
policy the student never trains on (AugMix). The loss is the generalized Jensen-Shannon divergence of the label,
the student's prediction and the teacher's, detached (Eqs. 19, 25-27)::

    L = 1/Z * JSD_pi(onehot(y), y_s, y_t),   JSD_pi(p_1, p_2, p_3) = sum_i pi_i KL(p_i || m),  m = sum_i pi_i p_i
    y_s = softmax f(x_s; theta)             student view x_s: RandAugment(N=1, M=3) -> crop -> flip -> Cutout
                                            (GJS's RandAugment: ildoonet/pytorch-randaugment's 16-op table)
    y_t = softmax f(x_t; theta-bar)         teacher view x_t: flip -> crop -> AugMix (severity 3, width 3,
                                            depth 1-3, alpha 1), AugMix's CIFAR order;
                                            no_grad (stop-gradient, Fig. 3 / Algorithm 1)
    theta-bar <- beta theta-bar + (1 - beta) theta   after every optimiser step (Eq. 24, beta = 0.99)

1/Z = -1/((1 - pi1) ln(1 - pi1)) is GJS's normaliser (Englesson & Azizpour 2021): NRD reuses GJS's learning
rates, which assume it (``methods.md``), so it is on by default (``scale``). pi = (pi1, pi2, pi3) with pi1 = pi3
(NRD A.1: "we fixed pi1 = pi3"), per setting from NRD Table 5 (``preset``).

Choices where the paper is silent or disagrees with itself (``methods.md``, NRD section):

* Student Cutout: 16 px on 32-px images (GJS's code and ``methods.md``); the NRD appendix A.1 says "Cutout with
  length 5". On other image sizes the default is scaled with the side, round(16 * side / 32) (4 on 8x8 digits);
  ``cutout_size`` sets it.
* The student's RandAugment is GJS's (NRD builds on GJS's code, which installs ildoonet/pytorch-randaugment:
  16 ops with Invert, SolarizeAdd and CutoutAbs, at M = 3 translate 10 px, posterize 1 bit, solarize at 25.6;
  policy ``randaugment_gjs``), not torchvision's table (14 ops with Identity, at M = 3 translate 1 px and
  posterize 8 bits: about a quarter of the pixel change); ``student_randaugment=torchvision`` selects the latter.
* Crop padding is zero (``padding_mode=constant`` in both view specs: torchvision's ``RandomCrop(32, padding=4)``
  in GJS's code); the padding width is the run's (4 px on 32-px images). The teacher view is flip -> crop ->
  AugMix, the order of AugMix's own CIFAR code (the CIFAR text says only "AugMix"; NRD's WebVision appendix
  words it "AugMix followed by random crop and flip": ``augment.views.teacher="augmix(crop_flip=after)"``).
  ``augment.views.student`` / ``augment.views.teacher`` in a run config replace either view.
* The teacher starts as a copy of the student, is always in eval mode (BatchNorm with the running statistics),
  and its BatchNorm buffers are *copied* from the student at every update (``models.ema_update``), not averaged.
* Reported accuracy (``test_acc``): the student's, with the teacher's as the head ``teacher``
  (``test_acc_teacher``); the paper does not say which network it evaluates.
* Detection: NRD has no detector of its own; as the other single-network methods, the engine's default
  applies (DivideMix's two-component GMM on the final per-sample loss of the student's prediction).

Per epoch (metrics.csv): ``train_loss`` is the mean (scaled) GJS loss; ``train_agreement`` the share of samples
whose student prediction (student view) and teacher prediction (teacher view) have the same arg-max;
``train_teacher_p_given`` the teacher's mean probability of the given label on its view; and, when the true labels
are known, ``train_teacher_right``, the share of samples whose teacher prediction is the clean label.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..augment.views import RANDAUGMENT_VARIANTS, gjs_cutout_size, gjs_student_view
from ..errors import ConfigError
from ..losses import LOSS_PRESETS
from ..losses.divergence import gjs_loss, gjs_scale
from ..losses.presets import TABLE5_SETTINGS, nrd_table5_optimizer
from ..models import ema_update
from .base import Batch, LabelCheck, Method, MethodContext, Prediction, Progress, Role, StepOutput, View
from .registry import register_method

log = logging.getLogger("noisykd")

#: pi when neither ``pis`` nor ``preset`` is given: NRD Table 5, CIFAR-10 with 20-40% symmetric noise
#: (``LOSS_PRESETS["nrd"]``).
DEFAULT_PIS = tuple(LOSS_PRESETS["nrd"]["pis"])
_TOL = 1e-6  # as the GJS loss's own check of its weights


def nrd_presets() -> tuple[str, ...]:
    """The NRD Table 5 settings ``preset`` accepts, e.g. ``cifar10-sym40``, ``cifar100-asym40``."""
    names = []
    for key in LOSS_PRESETS:
        loss, _, setting = key.partition("/")
        if loss == "nrd" and setting.rpartition("-")[2] in TABLE5_SETTINGS:
            names.append(setting)
    return tuple(sorted(names))


def _preset_parts(preset: str) -> tuple[str, str]:
    dataset, _, setting = preset.rpartition("-")
    return dataset, setting


@dataclass(frozen=True)
class NRDArgs:
    """NRD's arguments (``method_args``); defaults from the paper and ``methods.md``.

    pis:          (pi1, pi2, pi3): the weights of the label, the student and the teacher, non-negative, summing
                  to 1 (pi1 > 0 and pi2 > 0). None (default): the preset's, else (0.2, 0.6, 0.2) (NRD Table 5,
                  CIFAR-10 sym 20-40%). Given together with ``preset``, the explicit ``pis`` win (and the log
                  says so); the preset then only names Table 5's lr and weight decay in the log and summary.
    symmetric_pi: require pi1 = pi3 (default true: NRD A.1 fixes pi1 = pi3 so that label and teacher weigh the
                  same); false allows any weights (e.g. pi3 = 0: GJS of label and student alone).
    preset:       an NRD Table 5 setting, ``cifar10-sym40``, ``cifar100-asym40``, ... (:func:`nrd_presets`):
                  sets pis. A method cannot set the optimiser: Table 5's lr and weight decay for the setting are
                  logged and put in the summary (``configs/nrd/cifar10-sym40.yaml`` sets them).
    beta:         the EMA decay of the teacher, in [0, 1) (Eq. 24: 0.99 in every experiment).
    scale:        multiply by GJS's 1/Z = -1/((1 - pi1) ln(1 - pi1)) (default true; NRD reuses GJS's learning
                  rates, which assume it).
    cutout_size:  the student view's Cutout side in pixels (0: none); None: 16 on 32-px images (GJS), scaled
                  with the image side otherwise (round(16 * side / 32)).
    student_randaugment: the student view's RandAugment(N=1, M=3): ``gjs`` (default; GJS's code, the
                  ildoonet/pytorch-randaugment table) or ``torchvision`` (torchvision's table, far weaker at M = 3).
    """

    pis: tuple[float, float, float] | None = None
    symmetric_pi: bool = True
    preset: str | None = None
    beta: float = 0.99
    scale: bool = True
    cutout_size: int | None = None
    student_randaugment: str = "gjs"

    def validate(self, epochs: int) -> None:
        if self.preset is not None and self.preset not in nrd_presets():
            raise ConfigError(f"method_args.preset must be one of {', '.join(nrd_presets())} (NRD Table 5), "
                              f"got {self.preset!r}")
        pis = self.resolved_pis()
        if any(p < 0 for p in pis) or abs(sum(pis) - 1.0) > _TOL:
            raise ConfigError(f"method_args.pis must be three non-negative weights (label, student, teacher) "
                              f"summing to 1, got {list(pis)} (sum {sum(pis):.6g})")
        if not pis[0] > 0 or not pis[1] > 0:
            raise ConfigError(f"method_args.pis: pi1 (label) and pi2 (student) must be > 0 (without them nothing "
                              f"is learned from the labels), got {list(pis)}")
        if self.scale and not pis[0] < 1:
            raise ConfigError(f"method_args.pis: pi1 must be < 1 with scale=true (GJS's 1/Z needs 0 < pi1 < 1), "
                              f"got {list(pis)}")
        if self.symmetric_pi and abs(pis[0] - pis[2]) > _TOL:
            raise ConfigError(f"method_args.pis must have pi1 = pi3 (NRD A.1), got {list(pis)}; set "
                              f"method_args.symmetric_pi=false to allow unequal weights")
        if not 0.0 <= self.beta < 1.0:
            raise ConfigError(f"method_args.beta (the teacher's EMA decay) must lie in [0, 1), got {self.beta}")
        if self.student_randaugment not in RANDAUGMENT_VARIANTS:
            raise ConfigError(f"method_args.student_randaugment must be one of {', '.join(RANDAUGMENT_VARIANTS)} "
                              f"(GJS's RandAugment table or torchvision's), got {self.student_randaugment!r}")
        if self.cutout_size is not None and self.cutout_size < 0:
            raise ConfigError(f"method_args.cutout_size must be >= 0 (0: no cutout) or null (16 on 32-px images), "
                              f"got {self.cutout_size}")

    def resolved_pis(self) -> tuple[float, float, float]:
        """The weights used: explicit ``pis``, else the preset's, else :data:`DEFAULT_PIS`."""
        if self.pis is not None:
            return tuple(float(p) for p in self.pis)  # type: ignore[return-value]
        if self.preset is not None:
            return tuple(float(p) for p in LOSS_PRESETS[f"nrd/{self.preset}"]["pis"])  # type: ignore[return-value]
        return DEFAULT_PIS  # type: ignore[return-value]

    def pis_source(self) -> str:
        if self.pis is not None:
            return "method_args.pis" + (f" (preset {self.preset}'s pis not used)" if self.preset else "")
        if self.preset is not None:
            return f"NRD Table 5, {self.preset}"
        return "default: NRD Table 5, cifar10-sym20/40"


@register_method("nrd")
class NoiseRobustDistillation(Method):
    """One network and its EMA teacher on unseen AugMix views, trained with the generalized Jensen-Shannon loss
    of (label, student, detached teacher) (NRD, Eqs. 19 and 24-27).

    Arguments: the fields of :class:`NRDArgs` (listed with their defaults by ``noisykd methods nrd``). Views:
    ``student`` (RandAugment(1, 3), crop, flip, Cutout 16) and ``teacher`` (AugMix). Prediction: the student's
    logits, the teacher's as the head ``teacher``. Detection: the engine's default GMM on the final loss. See
    the module docstring for the choices where the paper is silent.
    """

    Args = NRDArgs

    def __init__(self, ctx: MethodContext, args: NRDArgs):
        super().__init__(ctx, args)
        student = ctx.build_model()
        teacher = copy.deepcopy(student)
        teacher.requires_grad_(False)
        teacher.eval()
        self.student = self.add_network("student", student)
        self.teacher = self.add_network("teacher", teacher, role=Role.SHADOW)
        self.pis = args.resolved_pis()
        self.factor = gjs_scale(self.pis[0]) if args.scale else 1.0
        self.table5 = None
        if args.preset is not None:
            dataset, setting = _preset_parts(args.preset)
            self.table5 = nrd_table5_optimizer(dataset, "nrd", setting)
            log.info(f"nrd: preset {args.preset}: pis {list(self.pis)} ({args.pis_source()}); NRD Table 5 trains "
                     f"this setting with lr {self.table5['lr']} and weight decay {self.table5['weight_decay']}: set "
                     f"optim.lr / optim.weight_decay (a method cannot), as configs/nrd/cifar10-sym40.yaml does")

    # --------------------------------------------------------------------------------------------------------
    def cutout_size(self) -> int:
        """The student's Cutout side: ``cutout_size``, or 16 scaled to the image (16 on 32 px, 4 on 8 px)."""
        return gjs_cutout_size(self.args.cutout_size, self.ctx.image_shape)

    def views(self) -> dict[str, View]:
        """``student``: GJS's RandAugment(N=1, M=3) -> crop (the run's padding, zeros) -> flip -> Cutout (GJS's);
        ``teacher``: flip -> crop -> AugMix(severity 3, width 3, depth 1-3, alpha 1) (NRD's unseen policy, in
        AugMix's CIFAR order)."""
        return {
            "student": View(gjs_student_view(self.args.student_randaugment, self.args.cutout_size,
                                             self.ctx.image_shape)),
            "teacher": View("augmix(severity=3, width=3, depth=-1, alpha=1.0, padding_mode=constant, "
                            "crop_flip=before)"),
        }

    def loss_terms(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
        """Per-sample NRD loss (B,): 1/Z * JSD_pi(onehot(y), softmax(student), softmax(teacher).detach())."""
        # the GJS loss of (onehot(y), student view, teacher view), teacher detached; float32 under mixed precision
        return gjs_loss([student_logits.float(), teacher_logits.detach().float()], labels, self.pis,
                        scale=self.args.scale, reduction="none")

    def training_step(self, batch: Batch) -> StepOutput:
        student_logits = self.student(batch.views["student"])
        with torch.no_grad():  # stop-gradient: the teacher's view never enters the backward pass
            teacher_logits = self.teacher(batch.views["teacher"])
        per_sample = self.loss_terms(student_logits, teacher_logits, batch.labels)
        with torch.no_grad():
            teacher_pred = teacher_logits.argmax(1)
            p_given = F.softmax(teacher_logits.float(), 1).gather(1, batch.labels[:, None])[:, 0]
            metrics = {"agreement": (student_logits.argmax(1) == teacher_pred).float(), "teacher_p_given": p_given}
        checks = {"teacher_right": LabelCheck(teacher_pred, torch.ones_like(teacher_pred, dtype=torch.bool))}
        return StepOutput(loss=per_sample.mean(), logits=student_logits, metrics=metrics, checks=checks)

    def after_optimizer_step(self, progress: Progress) -> None:
        """theta-bar <- beta theta-bar + (1 - beta) theta (Eq. 24); BatchNorm buffers copied."""
        ema_update(self.teacher.module, self.student.module, self.args.beta)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        return Prediction(logits=self.student(images), heads={"teacher": self.teacher(images)})

    def summary(self) -> dict:
        out = {"pis": list(self.pis), "pis_source": self.args.pis_source(), "scale": self.args.scale,
               "gjs_scale": self.factor, "beta": self.args.beta, "preset": self.args.preset,
               "student_cutout": self.cutout_size(), "student_randaugment": self.args.student_randaugment}
        if self.table5 is not None:
            out["table5_lr"] = self.table5["lr"]
            out["table5_weight_decay"] = self.table5["weight_decay"]
        return out


__all__ = ["NRDArgs", "NoiseRobustDistillation", "nrd_presets", "DEFAULT_PIS"]
