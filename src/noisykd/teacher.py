"""A frozen teacher from a finished run: one of its networks, rebuilt from the checkpoint's config and weights.

MODUL distils a pre-trained teacher into a small student. The teacher is any noisykd run (a folder, or one of its
checkpoints), trained with the existing command, e.g. on clean data:

    noisykd train --data cifar10:ROOT --method ce --model resnet34 --noise none --out runs/teacher

``load_teacher`` reads the checkpoint with ``weights_only=True`` after checking every member's CRC (nothing is
unpickled beyond tensors and plain data), rebuilds the named network of the architecture its config names, loads
its weights, and returns it frozen (no gradient) and in eval mode. It takes images normalised as the *student's*
run normalises them and re-normalises them to the teacher's own constants, so a teacher trained on other
statistics (e.g. the clean training images' where the student's set has out-of-distribution images mixed in)
still sees what it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import from_dict
from .data import Normalization
from .engine.checkpoint import BEST, LAST, load_checkpoint
from .errors import CheckpointError, ConfigError
from .models import ClassifierNet, create_model
from .models.registry import count_parameters


class RenormalizedTeacher(ClassifierNet):
    """``module`` (a ClassifierNet) behind an affine per-channel map from the student's normalisation to the
    teacher's: x_teacher = (x_student * std_s + mean_s - mean_t) / std_t (identity when both are the same).
    A ClassifierNet itself: ``forward(x)`` -> logits (B, C), ``forward(x, with_features=True)`` -> (logits,
    penultimate features (B, feature_dim)), so a method calls it through its network handle like any other."""

    def __init__(self, module: ClassifierNet, student: Normalization, teacher: Normalization):
        super().__init__()
        self.module = module
        self.feature_dim = module.feature_dim
        self.num_classes = module.num_classes
        def column(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", column(student.std) / column(teacher.std), persistent=False)
        self.register_buffer("shift", (column(student.mean) - column(teacher.mean)) / column(teacher.std),
                             persistent=False)
        self.identity = tuple(student.mean) == tuple(teacher.mean) and tuple(student.std) == tuple(teacher.std)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.identity else x * self.scale.to(x.dtype) + self.shift.to(x.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.features(self._inputs(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.module.classify(features)


@dataclass(frozen=True)
class Teacher:
    """A loaded teacher. ``module``: a :class:`RenormalizedTeacher` in eval mode whose parameters need no
    gradient; ``checkpoint``: the file it came from; ``network``: its name in that run (``net``, ``a`` ...);
    ``model``: its architecture; ``classes`` and ``image_shape`` (H, W, C): what it was trained on;
    ``num_parameters``: its size (MODUL reports student / teacher)."""

    module: RenormalizedTeacher
    checkpoint: Path
    network: str
    model: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    num_parameters: int

    def summary(self, student: nn.Module) -> dict:
        """The teacher's origin and the student / teacher sizes, for a distillation method's run summary (MODUL
        reports the compression)."""
        student_parameters = count_parameters(student)
        return {"teacher": str(self.checkpoint), "teacher_network": self.network, "teacher_model": self.model,
                "teacher_parameters": self.num_parameters, "student_parameters": student_parameters,
                "student_over_teacher_parameters": student_parameters / self.num_parameters}

    def describe(self) -> str:
        return (f"teacher {self.model} (network {self.network!r}, {self.num_parameters:,} parameters) from "
                f"{self.checkpoint}")


def teacher_checkpoint(target: str | Path, best: bool = False) -> Path:
    """The checkpoint file of ``target``: the file itself, or a run folder's ``checkpoints/last.pt`` (``best.pt``
    with ``best``). A missing one is a CheckpointError naming what was looked for."""
    target = Path(target).expanduser()
    if target.is_file():
        return target
    if not target.exists():
        raise CheckpointError(f"teacher {target}: no such run folder or checkpoint file")
    path = target / "checkpoints" / (BEST if best else LAST)
    if not path.is_file():
        raise CheckpointError(f"teacher {target}: a folder without {path.relative_to(target)}; give a noisykd run "
                              "folder (trained to the end or at least one epoch) or a checkpoint file")
    return path


def load_teacher(target: str | Path, *, classes: tuple[str, ...] | int, image_shape: tuple[int, int, int],
                 normalization: Normalization, network: str | None = None, best: bool = False) -> Teacher:
    """The frozen teacher of run or checkpoint ``target`` for a student on ``classes`` (names, or their count)
    and ``image_shape`` (H, W, C), whose batches arrive normalised with ``normalization``.

    ``network``: which of the run's networks (default: its only one; a run of several, such as CMD's ``a`` and
    ``b``, needs the name). Errors (one line each): no such file, damaged or tampered file, another class
    count or class names, another image size, an unknown network name.
    """
    path = teacher_checkpoint(target, best)
    state = load_checkpoint(path)
    shape = state.get("data_shape") or {}
    if "classes" not in shape or "image_shape" not in shape or "normalization" not in state:
        raise CheckpointError(f"teacher {path}: written by an earlier noisykd, without its classes, image shape and "
                              "normalisation; train the teacher again")
    teacher_classes = tuple(shape["classes"])
    teacher_shape = tuple(int(d) for d in shape["image_shape"])
    if isinstance(classes, int):
        if len(teacher_classes) != classes:
            raise ConfigError(f"teacher {path} was trained on {len(teacher_classes)} classes, this run has {classes}")
    elif teacher_classes != tuple(classes):
        raise ConfigError(f"teacher {path} was trained on classes {_short(teacher_classes)}, this run has "
                          f"{_short(tuple(classes))}: the same classes in the same order are needed")
    if teacher_shape != tuple(image_shape):
        raise ConfigError(f"teacher {path} takes {'x'.join(map(str, teacher_shape))} images, this run's are "
                          f"{'x'.join(map(str, image_shape))} (height x width x channels)")
    weights = state.get("networks") or {}
    if network is None:
        if len(weights) != 1:
            raise ConfigError(f"teacher {path} holds the networks {sorted(weights)}: name the one to use "
                              "(method_args.teacher_network)")
        network = next(iter(weights))
    elif network not in weights:
        raise ConfigError(f"teacher {path} has no network {network!r}; it holds {sorted(weights)}")
    broken = [name for name, tensor in weights[network].items()
              if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        raise CheckpointError(f"teacher {path}: the network {network!r} holds weights that are not finite numbers "
                              f"(NaN or infinite, e.g. {broken[0]}): its run diverged; train the teacher again")
    cfg = from_dict(state["config"])
    h, _, c = teacher_shape
    module = create_model(cfg.model.name, num_classes=len(teacher_classes), in_channels=c, image_size=h,
                          **cfg.model.kwargs)
    try:
        module.load_state_dict(weights[network])
    except (RuntimeError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"teacher {path}: the weights of network {network!r} do not fit {cfg.model.name}, "
                              f"the architecture its config names: {first}") from None
    saved = state["normalization"]
    own = Normalization(tuple(saved["mean"]), tuple(saved["std"]), saved.get("source", ""))
    wrapped = RenormalizedTeacher(module, normalization, own).eval()
    for p in wrapped.parameters():
        p.requires_grad_(False)
    return Teacher(wrapped, path, network, cfg.model.name, teacher_classes, teacher_shape, count_parameters(module))


def _short(names: tuple[str, ...]) -> str:
    return "(" + ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") + f"; {len(names)})"
