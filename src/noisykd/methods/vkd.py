"""VKD: vanilla knowledge distillation (Hinton et al. 2015) from a frozen pre-trained teacher, on the noisy labels
as given; the baseline of MODUL's Table I that shows what ignoring the noise costs.

    L = alpha * CE(s(x), y) + (1 - alpha) * T^2 * KL(softmax(t(x) / T) || softmax(s(x) / T))

The teacher is a finished noisykd run (``method_args.teacher``: its folder or a checkpoint), loaded frozen and in
eval mode (``noisykd.teacher``), and sees the same augmented view as the student. The student is the run's
configured network. MODUL names neither alpha nor T for VKD: alpha = 0.1 (MODUL's weight of the label term,
Eq. 21) and T = 4 (the temperature MODUL gives DFND, Sec. V-C) are this project's choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import ConfigError
from ..losses.distill import hinton_kd_loss
from ..teacher import Teacher, load_teacher, teacher_checkpoint
from .base import Batch, Method, MethodContext, Prediction, Role, StepOutput
from .registry import register_method

TEACHER_HINT = ("train one first, e.g. `noisykd train --method ce --model resnet34 --noise none --out runs/teacher`, "
                "then --set method_args.teacher=runs/teacher")


@dataclass(frozen=True)
class TeacherArgs:
    """The teacher of a distillation method (``method_args``).

    teacher:            a noisykd run folder or checkpoint file (required).
    teacher_network:    which of that run's networks (default: its only one).
    teacher_checkpoint: ``last`` (default) or ``best`` (the best noisy-validation epoch) of a run folder.
    """

    teacher: str | None = None
    teacher_network: str | None = None
    teacher_checkpoint: Literal["last", "best"] = "last"

    def validate(self, epochs: int) -> None:
        if not self.teacher:
            raise ConfigError(f"method_args.teacher is required: the run folder or checkpoint to distil; {TEACHER_HINT}")
        teacher_checkpoint(self.teacher, best=self.teacher_checkpoint == "best")  # exists, before any data loads

    def load(self, ctx: MethodContext) -> Teacher:
        """The frozen teacher for this run's classes, image shape and normalisation."""
        return load_teacher(self.teacher, classes=ctx.num_classes, image_shape=ctx.image_shape,
                            normalization=ctx.normalization, network=self.teacher_network,
                            best=self.teacher_checkpoint == "best")


@dataclass(frozen=True)
class VKDArgs(TeacherArgs):
    """VKD's arguments: the teacher's (:class:`TeacherArgs`), and

    alpha:       weight of the given (noisy) label's cross-entropy, in [0, 1] (default 0.1, MODUL's alpha).
    temperature: T > 0 of the soft term (default 4, MODUL's DFND temperature).
    """

    alpha: float = 0.1
    temperature: float = 4.0

    def validate(self, epochs: int) -> None:
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"method_args.alpha must lie in [0, 1] (the weight of the label term), got {self.alpha}")
        if not self.temperature > 0:
            raise ConfigError(f"method_args.temperature must be > 0, got {self.temperature}")
        super().validate(epochs)


@register_method("vkd")
class VKD(Method):
    """Hinton KD from a frozen teacher run on the noisy labels, noise ignored (MODUL's VKD baseline)."""

    Args = VKDArgs

    def __init__(self, ctx: MethodContext, args: VKDArgs | None = None):
        super().__init__(ctx, args)
        self.teacher_info = self.args.load(ctx)
        self.student = self.add_network("student", ctx.build_model())
        self.teacher = self.add_network("teacher", self.teacher_info.module, role=Role.FROZEN)

    def training_step(self, batch: Batch) -> StepOutput:
        images = batch.views["train"]
        student_logits = self.student(images)
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        loss = hinton_kd_loss(student_logits, teacher_logits, batch.labels, alpha=self.args.alpha,
                              temperature=self.args.temperature)
        agreement = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
        return StepOutput(loss=loss, logits=student_logits, metrics={"teacher_agreement": agreement})

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        return Prediction(logits=self.student(images), heads={"teacher": self.teacher(images)})

    def summary(self) -> dict:
        return self.teacher_info.summary(self.student.module) | {
            "alpha": self.args.alpha, "temperature": self.args.temperature}
