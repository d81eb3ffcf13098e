"""Knowledge-distillation losses between a student's and a frozen teacher's logits (MODUL's baselines).

Pure functions of logits (B, C) and labels (B,); the teacher's logits are treated as a fixed target (detached
here, whatever the caller passed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .robust import check_labels, check_logits, reduce_loss


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            reduction: str = "mean") -> torch.Tensor:
    """Hinton et al. (2015)'s soft term: T^2 * KL(softmax(t / T) || softmax(s / T)) per sample, the T^2 keeping
    its gradient on the scale of the hard term's as T changes. Shapes: (B, C) each; float32 maths."""
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    check_logits(student_logits, "student_logits")
    check_logits(teacher_logits, "teacher_logits")
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    return reduce_loss(temperature ** 2 * kl, reduction)


def hinton_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                   alpha: float = 0.1, temperature: float = 4.0, reduction: str = "mean") -> torch.Tensor:
    """Vanilla KD (Hinton et al. 2015): alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)).

    alpha in [0, 1] weighs the (possibly wrong) given label; VKD in MODUL's comparison uses it as is, ignoring
    the noise. Shapes: logits (B, C), labels (B,) int64."""
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha}")
    labels = check_labels(student_logits, labels)
    hard = F.cross_entropy(student_logits.float(), labels, reduction="none")
    return reduce_loss(alpha * hard + (1 - alpha) * soft_kl(student_logits, teacher_logits, temperature, "none"),
                       reduction)
