"""MODUL's losses (Tang et al., "Student under universal label noise"), as pure functions of tensors.

* :func:`sl_loss`: the subjective-logic (evidential) loss of Eq. 2, the teacher's per-sample score behind the
  clean / closed-noisy / open-noisy split.
* :func:`class_prototypes`: Eq. 9, the L2-normalised mean embedding of each class.
* :func:`prototypical_contrastive_loss`: Eq. 11 (L_pcl), and its mixup form Eq. 15 (L_mixup).
* :func:`instance_contrastive_loss`: Eq. 13 (L_instance), student embeddings against the teacher's.
* :func:`rotated_copies` and :func:`rotation_loss`: Eq. 17-18 (L_rr), rotation prediction on unlabelled images.

Embeddings are rows of shape (B, P), L2-normalised by the caller (Eq. 8 and 10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .robust import check_labels, check_logits, reduce_loss


def sl_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Eq. 2: the subjective-logic loss of one-hot labels under the Dirichlet that ReLU evidence parameterises.

    e = ReLU(logits), alpha = e + 1, S = sum_k alpha_k, p = alpha / S:
    l = sum_k (y_k - p_k)^2 + p_k (1 - p_k) / (S + 1)      [= alpha_k (S - alpha_k) / (S^2 (S + 1))]
    (no KL regulariser: the split scores a trained teacher, methods.md). Lies in [0, 2); small when the
    evidence concentrates on the label. Shapes: logits (B, C), labels (B,) int64 -> (B,) float32 by default.
    """
    check_logits(logits, "logits")
    labels = check_labels(logits, labels)
    alpha = F.relu(logits.float()) + 1.0
    strength = alpha.sum(dim=1, keepdim=True)
    p = alpha / strength
    one_hot = F.one_hot(labels, logits.shape[1]).float()
    values = ((one_hot - p) ** 2 + p * (1 - p) / (strength + 1)).sum(dim=1)
    return reduce_loss(values, reduction)


def class_prototypes(embeddings: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Eq. 9: z^k = mean of the embeddings of class k, hat z^k = z^k / ||z^k||.

    embeddings (N, P), classes (N,) int64 in [0, num_classes) -> (num_classes, P). A class without any sample
    gets the zero vector (its logit in Eq. 11 is then 0 for every sample), not NaN."""
    if embeddings.ndim != 2 or classes.shape != embeddings.shape[:1]:
        raise ConfigError(f"class_prototypes needs embeddings (N, P) and classes (N,), got {tuple(embeddings.shape)} "
                          f"and {tuple(classes.shape)}")
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=torch.float32, device=embeddings.device)
    sums.index_add_(0, classes, embeddings.float())
    return F.normalize(sums, dim=1)  # the mean's direction is the sum's; a zero row stays zero


def prototypical_contrastive_loss(embeddings: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor,
                                  temperature: float = 0.3, mixed_labels: torch.Tensor | None = None,
                                  lam: float | torch.Tensor = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Eq. 11, L_pcl(z, y) = -log softmax_k(z . hat z^k / t)[y], per sample; with ``mixed_labels`` Eq. 15,
    L_mixup = lam L_pcl(z, y_i) + (1 - lam) L_pcl(z, y_j) for the embedding of lam x_i + (1 - lam) x_j.

    embeddings (B, P), prototypes (C, P) (treated as constants), labels and mixed_labels (B,) int64, t > 0."""
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    logits = embeddings.float() @ prototypes.detach().float().t() / temperature
    labels = check_labels(logits, labels)
    values = F.cross_entropy(logits, labels, reduction="none")
    if mixed_labels is not None:
        mixed_labels = check_labels(logits, mixed_labels)
        values = lam * values + (1 - lam) * F.cross_entropy(logits, mixed_labels, reduction="none")
    return reduce_loss(values, reduction)


def instance_contrastive_loss(student: torch.Tensor, teacher: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 13: L_instance = log(1 + sum_{j != i} exp(z_i^S . z_j^T - z_i^S . z_i^T)) per sample i: the student's
    embedding of image i against the teacher's embeddings of the batch, positive the same image (no temperature,
    as printed). Equal to the cross-entropy of the logits z^S (z^T)^T with target i. Shapes (B, P) each, B >= 1."""
    if student.shape != teacher.shape or student.ndim != 2:
        raise ConfigError(f"instance_contrastive_loss needs two (B, P) embeddings of one shape, got "
                          f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    logits = student.float() @ teacher.float().t()
    targets = torch.arange(len(student), device=student.device)
    return reduce_loss(F.cross_entropy(logits, targets, reduction="none"), reduction)


def rotated_copies(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 17's inputs: every image rotated by 0, 90, 180 and 270 degrees (counter-clockwise), as
    (4B, C, H, W) images grouped by angle, and their rotation classes (4B,) int64 in {0, 1, 2, 3}.
    Square images only (a rotated H x W image is W x H)."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ConfigError(f"rotation prediction needs square images (B, C, H, H), got {tuple(images.shape)}")
    copies = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    targets = torch.arange(4, device=images.device).repeat_interleave(len(images))
    return copies, targets


def rotation_loss(rotation_logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 18: L_rr = mean cross-entropy of the rotation head's logits (4B, 4) against the angles (4B,)."""
    check_logits(rotation_logits, "rotation_logits")
    return reduce_loss(F.cross_entropy(rotation_logits.float(), targets, reduction="none"), reduction)
