"""MODUL (Tang et al., "Student under universal label noise", Alg. 1): a small student distilled from a frozen,
pre-trained teacher on a web-like set whose labels carry closed-set noise (a wrong known label) and open-set noise
(an image of no known class with a known label).

Stage 1, once before training (``on_train_start``): the teacher scores every training sample, un-augmented, with
the SL loss of its given label (Eq. 2); a 20-component GMM on the min-max normalised scores splits the set into
clean D_c, closed-set noisy D_cn and open-set noisy D_on (Eq. 3-5, ``noisykd.detect.universal``); D_cn's labels
are replaced by the teacher's arg-max (Eq. 6), D_on's are dropped.

Stage 2, every batch: its D_c and D_cn members are Alg. 1's labelled batch and its D_on members the unlabelled
one (one batch drawn from all training samples, so the two parts are in proportion to the groups' sizes), and

    L = alpha CE(s(x), y) + (1 - alpha) L_kd + beta (L_category + L_instance) + gamma L_rr      (Eq. 21)

* CE (Eq. 19) on the refined labels y.
* L_kd (Eq. 20): MSE between the teacher's penultimate features and the student's, through a learned linear
  adapter when their widths differ (the penultimate features every registered network exposes; the authors'
  code takes ResNet layer-4 maps, which needs matching spatial sizes and is not offered).
* L_category (Eq. 16): prototypical contrastive loss (Eq. 11, temperature t) of the teacher's and the student's
  projected, L2-normalised embeddings (Eq. 8, 10) of mixed images x_bar = lam x_i + (1 - lam) x_j (Eq. 14, one
  lam ~ Beta(delta, delta) per batch, j a random partner within the labelled part; the teacher runs on x_bar),
  against class prototypes (Eq. 9), with the mixup targets of Eq. 15. Prototypes: the mean teacher embedding of
  the labelled samples of each class *as the teacher judges it* (its arg-max), L2-normalised; recomputed at the
  start of every epoch with the current teacher projection head (default), or once before training with the
  untrained head as the authors' code does (``prototypes=once``). The teacher's features are computed once
  (frozen teacher, un-augmented images) and cached for this.
* L_instance (Eq. 13): each student embedding against the teacher embeddings of the labelled part, positive the
  same image.
* L_rr (Eq. 18): a linear rotation head on the student's features predicts 0/90/180/270 degrees for the four
  rotated copies of each open-set image (Eq. 17).

The projection heads (student's, teacher's), the adapter and the rotation head form the trainable network
``heads``, called once per step; the teacher network itself stays frozen and in eval mode. The student is the
run's configured network. Prediction: the student; the teacher is reported as the head ``teacher``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..augment import sample_beta
from ..detect.universal import CLEAN, GROUP_NAMES, OPEN, split_confusion, split_universal_noise
from ..errors import ConfigError
from ..losses.contrastive import (class_prototypes, instance_contrastive_loss, prototypical_contrastive_loss,
                                  rotated_copies, rotation_loss, sl_loss)
from .base import (Batch, Detection, GroundTruth, LabelCheck, Method, MethodContext, Prediction, Role,
                   SampleOutputs, StepOutput)
from .registry import register_method
from .vkd import TeacherArgs

log = logging.getLogger("noisykd")
#: The paper's CE weight (Sec. V-B), which a short run learns slowly with (see MODULArgs).
PAPER_ALPHA = 0.1
#: Runs shorter than this many epochs with the paper's alpha get a hint in the log (the paper trains 200).
SHORT_RUN_EPOCHS = 100
#: The split warns when at least OPEN_CONFIDENT_WARNING of its open-set group gets a known class with probability
#: >= CONFIDENT_TEACHER from the teacher (what a closed-set noisy sample looks like to it).
OPEN_CONFIDENT_WARNING = 0.5
CONFIDENT_TEACHER = 0.9


@dataclass(frozen=True)
class MODULArgs(TeacherArgs):
    """MODUL's arguments: the teacher's (:class:`TeacherArgs`), and

    alpha, beta, gamma: the weights of Eq. 21 (paper Sec. V-B: 0.1, 0.1, 0.01); alpha in [0, 1]. The paper's
                        alpha = 0.1 puts a tenth of the loss on CE (the rest on feature KD, whose MSE does not
                        train the classifier head), which a short run learns slowly with: on digits with
                        openset:0.5:0.5 noise (Fashion-MNIST images), an ``mlp`` student and the default
                        30-epoch schedule it ended at 59.3% test accuracy, against 81.1% with alpha 0.5, 86.9%
                        with 0.9 and 97.2% for VKD (one seed each; the log says so for runs under 100 epochs).
    temperature:        t of Eq. 11 (0.3).
    mixup_delta:        delta of lam ~ Beta(delta, delta) (Eq. 14; the authors' code: 8).
    projection_dim:     width of the embeddings z (Eq. 8, 10; the paper does not give it: 128, SimCLR's).
    category, instance: include L_category / L_instance in L_hybrid (the ablation; beta = 0 drops both,
                        gamma = 0 drops L_rr).
    prototypes:         ``every_epoch`` (recomputed with the current teacher head) or ``once`` (the code's).
    components, tau_min, tau_max, split_seed: the split's GMM (20 components, thresholds 0.3 / 0.9 on the
                        normalised SL loss, the mixture's random_state).
    """

    alpha: float = 0.1
    beta: float = 0.1
    gamma: float = 0.01
    temperature: float = 0.3
    mixup_delta: float = 8.0
    projection_dim: int = 128
    category: bool = True
    instance: bool = True
    prototypes: Literal["every_epoch", "once"] = "every_epoch"
    components: int = 20
    tau_min: float = 0.3
    tau_max: float = 0.9
    split_seed: int = 0

    def validate(self, epochs: int) -> None:
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"method_args.alpha must lie in [0, 1] (the weight of CE against L_kd), got {self.alpha}")
        for name in ("beta", "gamma"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"method_args.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("temperature", "mixup_delta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"method_args.{name} must be > 0, got {getattr(self, name)}")
        if self.projection_dim < 1:
            raise ConfigError(f"method_args.projection_dim must be >= 1, got {self.projection_dim}")
        if self.components < 3:
            raise ConfigError(f"method_args.components must be >= 3 (one per group), got {self.components}")
        if not 0 <= self.tau_min < self.tau_max <= 1:
            raise ConfigError(f"method_args needs 0 <= tau_min < tau_max <= 1, got tau_min={self.tau_min}, "
                              f"tau_max={self.tau_max}")
        if self.split_seed < 0:
            raise ConfigError(f"method_args.split_seed must be >= 0, got {self.split_seed}")
        super().validate(epochs)


class MODULHeads(nn.Module):
    """The trainable parts besides the student: an adapter student -> teacher feature width (identity when they
    match), the student's and the teacher's projection heads (Eq. 10, 8) and the rotation head (Eq. 17).

    forward(student_features (Ns, Ds), teacher_features (Nt, Dt)) -> (adapted student features (Ns, Dt),
    student embeddings (Ns, P), teacher embeddings (Nt, P), rotation logits (Ns, 4)); embeddings L2-normalised."""

    def __init__(self, student_dim: int, teacher_dim: int, projection_dim: int):
        super().__init__()
        self.adapter = nn.Linear(student_dim, teacher_dim) if student_dim != teacher_dim else nn.Identity()
        self.project_student = nn.Linear(student_dim, projection_dim)
        self.project_teacher = nn.Linear(teacher_dim, projection_dim)
        self.rotation = nn.Linear(student_dim, 4)

    def embed_teacher(self, teacher_features: torch.Tensor) -> torch.Tensor:
        """Eq. 8: L2-normalised teacher embeddings (N, P)."""
        return F.normalize(self.project_teacher(teacher_features.float()), dim=1)

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor):
        student_features = student_features.float()
        return (self.adapter(student_features), F.normalize(self.project_student(student_features), dim=1),
                self.embed_teacher(teacher_features), self.rotation(student_features))


@register_method("modul")
class MODUL(Method):
    """MODUL (Alg. 1): split by the teacher's SL loss, refine closed-set labels, distil with CE + feature KD +
    hybrid contrastive loss + rotation prediction on the open-set samples. See the module docstring."""

    Args = MODULArgs

    def __init__(self, ctx: MethodContext, args: MODULArgs | None = None):
        super().__init__(ctx, args)
        self.teacher_info = self.args.load(ctx)
        student = ctx.build_model()
        self.student = self.add_network("student", student)
        self.heads = self.add_network("heads", MODULHeads(student.feature_dim, self.teacher_info.module.feature_dim,
                                                          self.args.projection_dim))
        self.teacher = self.add_network("teacher", self.teacher_info.module, role=Role.FROZEN)
        store = ctx.store
        store.add("modul_group", dtype=torch.int64, fill=-1)       # 0 clean, 1 closed-set noisy, 2 open-set noisy
        store.add("modul_target", dtype=torch.int64, fill=-1)      # refined label (Eq. 6); -1: open-set / not trained
        store.add("modul_sl_loss", dtype=torch.float32, fill=math.nan)        # Eq. 2, raw
        store.add("modul_group_probability", shape=(3,), dtype=torch.float32, fill=math.nan)
        self.split: dict = {}
        self.prototypes: torch.Tensor | None = None  # (C, P), Eq. 9
        self._teacher_features: torch.Tensor | None = None  # (num_samples, Dt), cached for the prototypes
        self._teacher_labels: torch.Tensor | None = None    # (num_samples,) the teacher's arg-max
        if self.args.alpha == PAPER_ALPHA and ctx.total_epochs < SHORT_RUN_EPOCHS:
            log.info(f"modul: alpha = {PAPER_ALPHA} is the paper's CE weight for 200 epochs; in {ctx.total_epochs} "
                     "epochs the student learns its classes slowly (digits with openset:0.5:0.5 noise, mlp student, "
                     "30 epochs: 59.3% test accuracy, against 86.9% with alpha 0.9): for a short run set "
                     "method_args.alpha=0.9")

    # --------------------------------------------------------------------------------------------------------
    # Stage 1: the split (Alg. 1 lines 1-5)
    def on_train_start(self, resumed: bool) -> None:
        """Score every training sample with the teacher (cached features and arg-max, SL loss); split and refine
        the labels unless resumed (the split is in the store then); prototypes for ``prototypes=once``."""
        n, device = self.ctx.num_samples, self.ctx.device
        features = torch.zeros(n, self.teacher_info.module.feature_dim, device=device)
        teacher_labels = torch.full((n,), -1, dtype=torch.int64, device=device)
        confidence = torch.zeros(n, device=device)
        given = torch.full((n,), -1, dtype=torch.int64, device=device)
        with torch.no_grad():
            for batch in self.ctx.iterate_train():
                logits, feats = self.teacher.forward_with_features(batch.images)
                features[batch.indices] = feats.float()
                teacher_labels[batch.indices] = logits.argmax(1)
                confidence[batch.indices] = torch.softmax(logits.float(), 1).max(1).values
                given[batch.indices] = batch.labels
                if not resumed:
                    self.ctx.store.write("modul_sl_loss", batch.indices, sl_loss(logits, batch.labels))
        self._teacher_features, self._teacher_labels = features, teacher_labels
        if not resumed:
            self._split(given, teacher_labels, confidence)
            if self.args.prototypes == "once":
                self.prototypes = self._compute_prototypes()

    def _split(self, given: torch.Tensor, teacher_labels: torch.Tensor, confidence: torch.Tensor) -> None:
        """Eqs. 4-6 on the teacher's SL losses; ``confidence``: the teacher's max probability per sample, for the
        warning about an open group the teacher would rather correct."""
        rows = self.ctx.train_indices
        scores = self.ctx.store["modul_sl_loss"][rows].cpu().numpy()
        split = split_universal_noise(scores, components=self.args.components, tau_min=self.args.tau_min,
                                      tau_max=self.args.tau_max, seed=self.args.split_seed)
        group = torch.from_numpy(split.group).to(rows.device)
        target = torch.where(group == CLEAN, given[rows], teacher_labels[rows])  # Eq. 6 for closed-set noisy
        target = torch.where(group == OPEN, torch.full_like(target, -1), target)
        store = self.ctx.store
        store.write("modul_group", rows, group)
        store.write("modul_target", rows, target)
        store.write("modul_group_probability", rows, torch.from_numpy(split.probabilities.astype(np.float32)))
        changed = int(((target != given[rows]) & (group != OPEN)).sum())
        in_open = group == OPEN
        confident_other = (in_open & (confidence[rows] >= CONFIDENT_TEACHER)
                           & (teacher_labels[rows] != given[rows]))
        share = float(confident_other.sum() / max(int(in_open.sum()), 1))
        self.split = split.summary() | {"relabelled": changed, "open_confident_other": round(share, 4)}
        if in_open.any() and share >= OPEN_CONFIDENT_WARNING:
            log.warning(f"modul: {int(confident_other.sum())} of the {int(in_open.sum())} samples the split sends to "
                        f"the open-set group ({100 * share:.0f}%) get a known class other than their label with "
                        f"probability >= {CONFIDENT_TEACHER} from the teacher: to it they look closed-set noisy, "
                        "whose labels it would correct rather than drop (a teacher can be as confident on foreign images, so check "
                        f"modul_split.png). If few of your images belong to no class, lower method_args.tau_max (now "
                        f"{self.args.tau_max}) to send more of them to the closed-set group")

    @torch.no_grad()
    def _compute_prototypes(self) -> torch.Tensor:
        """Eq. 9 over the labelled (clean and closed-set) training samples, classes by the teacher's arg-max."""
        rows = self.ctx.train_indices
        labelled = rows[self.ctx.store["modul_group"][rows] != OPEN]
        embeddings = self.heads.module.embed_teacher(self._teacher_features[labelled])
        return class_prototypes(embeddings, self._teacher_labels[labelled], self.ctx.num_classes)

    def on_epoch_start(self, epoch: int) -> None:
        if self.args.prototypes == "every_epoch":
            self.prototypes = self._compute_prototypes()

    # --------------------------------------------------------------------------------------------------------
    # Stage 2 (Alg. 1 lines 9-18)
    def training_step(self, batch: Batch) -> StepOutput:
        args, store = self.args, self.ctx.store
        images = batch.views["train"]
        group, target = store["modul_group"][batch.indices], store["modul_target"][batch.indices]
        labelled = group != OPEN
        x, y, x_open = images[labelled], target[labelled], images[~labelled]
        n = len(x)
        lam = float(sample_beta(args.mixup_delta, args.mixup_delta, 1, self.ctx.generator, images.device))
        partner = torch.randperm(n, generator=self.ctx.generator, device=self.ctx.generator.device).to(images.device)
        x_mixed = lam * x + (1 - lam) * x[partner]                                   # Eq. 14
        x_rotated, angles = rotated_copies(x_open)                                   # Eq. 17 inputs
        logits, student_features = self.student.forward_with_features(torch.cat([x, x_mixed, x_rotated]))
        with torch.no_grad():
            _, teacher_features = self.teacher.forward_with_features(torch.cat([x, x_mixed]))
        adapted, z_student, z_teacher, rotation_logits = self.heads(student_features, teacher_features)

        # an empty part (no labelled or no open-set sample in the batch) adds 0 but keeps every parameter in the
        # graph, so that each gets a (zero) gradient every step
        zero = 0.0 * (logits.sum() + adapted.sum() + z_student.sum() + z_teacher.sum() + rotation_logits.sum())
        loss_ce = loss_kd = loss_category = loss_instance = loss_rotation = zero
        if n:
            loss_ce = F.cross_entropy(logits[:n].float(), y)                                     # Eq. 19
            loss_kd = F.mse_loss(adapted[:n], teacher_features[:n].float())                      # Eq. 20
            pcl = dict(prototypes=self.prototypes, labels=y, temperature=args.temperature,
                       mixed_labels=y[partner], lam=lam)
            loss_category = (prototypical_contrastive_loss(z_teacher[n:], **pcl)                 # Eq. 16
                             + prototypical_contrastive_loss(z_student[n:2 * n], **pcl))
            loss_instance = instance_contrastive_loss(z_student[:n], z_teacher[:n])              # Eq. 13
        if len(x_open):
            loss_rotation = rotation_loss(rotation_logits[2 * n:], angles)                       # Eq. 18
        hybrid = (loss_category if args.category else zero) + (loss_instance if args.instance else zero)
        loss = (args.alpha * loss_ce + (1 - args.alpha) * loss_kd + args.beta * hybrid
                + args.gamma * loss_rotation + zero)                                             # Eq. 21
        with torch.no_grad():
            main = torch.zeros(len(images), logits.shape[1], device=logits.device, dtype=logits.dtype)
            main[labelled] = logits[:n].detach()
            main[~labelled] = logits[2 * n:2 * n + len(x_open)].detach()  # the un-rotated copies
        return StepOutput(
            loss=loss, logits=main,
            metrics={"loss_ce": loss_ce.detach(), "loss_kd": loss_kd.detach(),
                     "loss_category": loss_category.detach(), "loss_instance": loss_instance.detach(),
                     "loss_rotation": loss_rotation.detach(), "labelled_share": labelled.float()},
            checks={"refined_label": LabelCheck(predicted=target, selected=labelled)})

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        return Prediction(logits=self.student(images), heads={"teacher": self.teacher(images)})

    # --------------------------------------------------------------------------------------------------------
    # Results
    def _columns(self) -> dict[str, np.ndarray]:
        store = self.ctx.store
        raw = store["modul_sl_loss"].cpu().numpy().astype(np.float64)
        lo, hi = self.split["loss_min"], self.split["loss_max"]
        probability = store["modul_group_probability"].cpu().numpy()
        return {"sl_loss": raw, "sl_loss_normalized": (raw - lo) / (hi - lo),
                **{f"p_{name}": probability[:, g] for g, name in enumerate(GROUP_NAMES)},
                "teacher_label": self._teacher_labels.cpu().numpy()}

    def sample_outputs(self) -> SampleOutputs:
        """Detection: the normalised SL loss ranks the labels (clean score 1 - it); flagged: the closed- and
        open-set groups. Group per sample (0 clean, 1 closed, 2 open); suggested label: the refined one (the
        teacher's arg-max for the open-set group, whose images belong to no class: drop them)."""
        store = self.ctx.store
        columns = self._columns()
        group = store["modul_group"].cpu().numpy()
        trained = group >= 0
        detection = Detection(
            clean_score=np.where(trained, 1.0 - columns["sl_loss_normalized"], np.nan),
            flagged=trained & (group != CLEAN), detector="modul",
            rule=f"{self.args.components}-component GMM on the teacher's normalised SL loss; flagged: the samples "
                 f"most probably from components with mean >= {self.args.tau_max} (closed-set noisy, group 1) or "
                 f"between {self.args.tau_min} and {self.args.tau_max} (open-set noisy, group 2)")
        target = store["modul_target"].cpu().numpy()
        suggested = np.where(target >= 0, target, columns["teacher_label"])
        return SampleOutputs(detection=detection, suggested_label=suggested, group=group, columns=columns)

    def split_table(self, truth: GroundTruth | None) -> list[dict]:
        """Rows of ``modul_split.csv``: per assigned group, its size and, when the truth is known, how many of
        its samples are truly clean / closed-set noisy / open-set noisy (the 3 x 3 table)."""
        rows = self.ctx.train_indices.cpu().numpy()
        group = self.ctx.store["modul_group"].cpu().numpy()[rows]
        table = None if truth is None else split_confusion(group, truth.is_noisy[rows], truth.is_open_set[rows])
        out = []
        for g, name in enumerate(GROUP_NAMES):
            row = {"group": name, "samples": int((group == g).sum())}
            if table is not None:
                row |= {f"true_{t}": int(table[i, g]) for i, t in enumerate(GROUP_NAMES)}
                row["precision"] = round(float(table[g, g] / max(table[:, g].sum(), 1)), 4)
                row["recall"] = round(float(table[g, g] / max(table[g].sum(), 1)), 4)
            out.append(row)
        return out

    def write_reports(self, out_dir, history: list[dict], truth: GroundTruth | None) -> None:
        """``modul_split.csv`` (the split against the truth when known) and ``modul_split.png`` (the normalised SL
        loss histogram by true type, the GMM's components coloured by group, the thresholds)."""
        from ..engine.report import write_rows_csv
        from ..plots import plot_universal_split

        if not self.split:
            return
        write_rows_csv(self.split_table(truth), out_dir / "modul_split.csv")
        rows = self.ctx.train_indices.cpu().numpy()
        scores = self._columns()["sl_loss_normalized"][rows]
        true_type = None if truth is None else np.where(truth.is_open_set[rows], 2,
                                                        np.where(truth.is_noisy[rows], 1, 0))
        plot_universal_split(scores, self.split, out_dir / "modul_split.png", true_type=true_type,
                             thresholds=(self.args.tau_min, self.args.tau_max),
                             title=f"teacher SL loss (normalised), {self.args.components}-component GMM split")

    def summary(self) -> dict:
        return self.teacher_info.summary(self.student.module) | {
            "split": self.split or None, "alpha": self.args.alpha, "beta": self.args.beta, "gamma": self.args.gamma,
            "prototypes": self.args.prototypes, "category": self.args.category, "instance": self.args.instance}

    def state_dict(self) -> dict:
        return {"split": dict(self.split), "prototypes": self.prototypes}

    def load_state_dict(self, state: dict) -> None:
        self.split = dict(state["split"])
        self.prototypes = state["prototypes"]
        if self.prototypes is not None:
            self.prototypes = self.prototypes.to(self.ctx.device)


__all__ = ["MODUL", "MODULArgs", "MODULHeads"]
