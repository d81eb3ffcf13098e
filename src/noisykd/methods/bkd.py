"""BKD: Blind Knowledge Distillation (Kaiser et al.; ``shared/papers/bkd-blind-knowledge-distillation.md``).

Two networks of the same topology see the same augmented batch:

* the **teacher** T learns from the given labels: cross-entropy (Eq. 2) in stage 1, the robust loss with
  per-sample label smoothing towards the student and sharpening (Eqs. 7-8) in stage 2;
* the **blind student** S learns only the teacher's logits of the classes *other* than the given label
  (Eq. 3), so it never sees the (possibly wrong) label itself.

Every epoch records, per sample, P_T(y|x), P_S(y|x) and the agreement P_A(y|x) (Eq. 5), and the mean max
student probability (Eq. 4). The first strict maximum of the latter over a window of 2k+1 epochs is the
*fitting epoch* e* (the tipping point from learning patterns to fitting details), known k epochs later. Otsu's
method (Eq. 6) on P_A(y|x) at e* gives the thresholds s, mu1, mu2, four groups and their alphas; from the next
epoch on the teacher trains with Eq. 7-8. Prediction is argmax P_A; detection flags P_A(y|x) < mu1.

Stop-gradients (the paper's semantics, default): the teacher's logits are detached in the student loss
(Eq. 3), and the student's probabilities are detached in the teacher's target (Eq. 7).
``reference_gradients=True`` reproduces the authors' code: neither is detached (the teacher also receives the
student-loss gradient) and Eq. 3 is normalised by B*C - 1 instead of B*(C - 1).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..detect import assign_groups, otsu_threshold, split_quality_by_epoch, tipping_epoch_with_fallback
from ..errors import ConfigError
from .base import Batch, Detection, GroundTruth, Method, MethodContext, Prediction, SampleOutputs, StepOutput
from .registry import register_method

SplitSource = Literal["train_pass", "eval_pass"]
DetectionThreshold = Literal["mu1", "s", "mu2"]
SPLIT_SOURCES = typing.get_args(SplitSource)
DETECTION_THRESHOLDS = typing.get_args(DetectionThreshold)


# ------------------------------------------------------------------------------------------------------------
# The equations, as pure functions (B = batch size, C = classes)

def blind_student_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor,
                       reference_gradients: bool = False) -> torch.Tensor:
    """Eq. 3: mean over the batch of 1/(C-1) * sum_{c != y} (l_c^T - l_c^S)^2.

    teacher_logits, student_logits: (B, C); labels: (B,). The teacher's logits are detached (paper) unless
    ``reference_gradients`` (authors' code: no detach, and the sum divided by B*C - 1).
    """
    b, c = student_logits.shape
    target = teacher_logits if reference_gradients else teacher_logits.detach()
    others = 1.0 - F.one_hot(labels, c).to(student_logits.dtype)  # masks out the given label's logit
    squared = (target - student_logits).pow(2) * others
    denominator = b * c - 1 if reference_gradients else b * (c - 1)
    return squared.sum() / denominator


def agreement_probability(teacher_probs: torch.Tensor, student_probs: torch.Tensor) -> torch.Tensor:
    """Eq. 5: P_A = P_T * P_S renormalised over the classes. (B, C) -> (B, C)."""
    joint = teacher_probs * student_probs
    return joint / joint.sum(dim=1, keepdim=True).clamp_min(torch.finfo(joint.dtype).tiny)


def log_agreement(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """log P_A computed stably from the logits: log_softmax(log_softmax(l^T) + log_softmax(l^S)). (B, C)."""
    return torch.log_softmax(torch.log_softmax(teacher_logits, 1) + torch.log_softmax(student_logits, 1), 1)


def robust_target(labels: torch.Tensor, student_probs: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Eqs. 7-8: beta = (1 - alpha) onehot(y) + alpha P_S, sharpened S(beta)_c = beta_c^(1+alpha) / sum.

    labels (B,), student_probs (B, C), alpha (B,) -> (B, C) target distribution.
    """
    a = alpha[:, None].to(student_probs.dtype)
    beta = (1 - a) * F.one_hot(labels, student_probs.shape[1]).to(student_probs.dtype) + a * student_probs
    sharpened = beta.clamp_min(0).pow(1 + a)
    return sharpened / sharpened.sum(dim=1, keepdim=True)


def robust_teacher_loss(teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 7: -1/B sum_x sum_c S(beta)_c log P_T(c|x)."""
    return -(target * torch.log_softmax(teacher_logits, dim=1)).sum(dim=1).mean()


def mean_max_probability(probs: torch.Tensor) -> torch.Tensor:
    """Eq. 4 summand: max_c P(c|x) per sample. (B, C) -> (B,)."""
    return probs.max(dim=1).values


# ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BKDArgs:
    """BKD's arguments (``method_args``); the defaults are the paper's, or its authors' code's where the paper
    is silent (each named below).

    k:                   half window of the tipping detector (authors' code: 2).
    min_epochs:          epochs recorded before the detector may fire (authors' code: 6).
    tipping_deadline:    if no tipping point is found after this many epochs, take the arg-max of the mean
                         max student probability so far (reported as ``fallback`` in the summary); None: half
                         the run (at least 2k + 1 epochs).
    tipping_fallback_epoch: use this fixed (0-based) epoch instead of the arg-max at the deadline. The
                         authors' code amounts to ``tipping_deadline=10, tipping_fallback_epoch=8``.
    alphas:              (alpha1..alpha4) for the groups P_A >= mu2, [s, mu2), [mu1, s), < mu1 (paper Sec. 4.3).
    otsu_step, otsu_variance ("sigma2" paper | "sigma" code), otsu_search ("grid" | "histogram" code).
    split_source:        "train_pass" (default): P_A recorded during the training pass of e* (augmented
                         views, train-mode BatchNorm; the authors' code). "eval_pass": an eval-mode pass on
                         un-augmented images after every stage-1 epoch (one extra forward pass per epoch).
                         The default is the one with the better detection F1 in benchmarks/detection.py:
                         train_pass won on all 10 digits seeds (mu1 F1 +0.035) and by 0.0035 on CIFAR-10N
                         worst (one seed); see benchmarks/results/detection-*.md.
    detection_threshold: "mu1" (paper's Table 2 choice), "s" or "mu2".
    reference_gradients: reproduce the authors' code's gradients (see the module docstring).
    robust_stage:        False keeps the teacher on cross-entropy after the split (the paper's Sec. 5.2
                         analysis, Figs. 3-4: "trained without robust training"); the split, detection and
                         histories are still computed.
    """

    k: int = 2
    min_epochs: int = 6
    tipping_deadline: int | None = None
    tipping_fallback_epoch: int | None = None
    alphas: tuple[float, ...] = (0.3, 0.45, 0.55, 0.7)
    otsu_step: float = 0.001
    otsu_variance: Literal["sigma2", "sigma"] = "sigma2"
    otsu_search: Literal["grid", "histogram"] = "grid"
    split_source: SplitSource = "train_pass"
    detection_threshold: DetectionThreshold = "mu1"
    reference_gradients: bool = False
    robust_stage: bool = True

    def deadline(self, epochs: int) -> int:
        """The epoch count by which a split must be made (``tipping_deadline`` or its default)."""
        return self.tipping_deadline if self.tipping_deadline is not None else max(epochs // 2, 2 * self.k + 1)

    def validate(self, epochs: int) -> None:
        if self.k < 1:
            raise ConfigError(f"method_args.k must be >= 1, got {self.k}")
        if self.min_epochs < 0:
            raise ConfigError(f"method_args.min_epochs must be >= 0, got {self.min_epochs}")
        if self.tipping_deadline is not None and self.tipping_deadline < 1:
            raise ConfigError(f"method_args.tipping_deadline must be >= 1 or null, got {self.tipping_deadline}")
        fallback = self.tipping_fallback_epoch
        if fallback is not None and not 0 <= fallback < self.deadline(epochs):
            raise ConfigError(f"method_args.tipping_fallback_epoch must lie in [0, {self.deadline(epochs)}) (the "
                              f"deadline), got {fallback}")
        if len(self.alphas) != 4 or not all(0 <= a <= 1 for a in self.alphas) or list(self.alphas) != sorted(self.alphas):
            raise ConfigError(f"method_args.alphas must be 4 increasing values in [0, 1], got {list(self.alphas)}")
        if not 1e-5 <= self.otsu_step <= 0.5:  # the grid has 1/step points: below 1e-5 it would not fit in memory
            raise ConfigError(f"method_args.otsu_step must lie in [1e-05, 0.5] (the paper's grid: 0.001), got "
                              f"{self.otsu_step}")


@register_method("bkd")
class BlindKnowledgeDistillation(Method):
    """Teacher + blind student, tipping-point detection, Otsu noise estimation, robust second stage.

    Arguments: :class:`BKDArgs`. When the true labels are known, the reports also score the Otsu split of
    every recorded epoch (``bkd_split_quality.csv``/``.png``, the paper's Fig. 3c), to judge the tipping epoch
    after the fact.
    """

    Args = BKDArgs

    def __init__(self, ctx: MethodContext, args: BKDArgs):
        super().__init__(ctx, args)
        self.tipping_deadline = args.deadline(ctx.total_epochs)
        self.otsu_options = {"step": args.otsu_step, "variance": args.otsu_variance, "search": args.otsu_search}
        self.teacher = self.add_network("teacher", ctx.build_model())
        self.student = self.add_network("student", ctx.build_model())
        epochs, store = ctx.total_epochs, ctx.store
        # per-sample histories by epoch (Eq. 5 inputs), float16 to keep 50k x 300 x 3 small on the device
        for name in ("p_teacher", "p_student", "p_agree"):
            store.add(f"{name}_history", shape=(epochs,), dtype=torch.float16)
        if args.split_source == "eval_pass":
            store.add("p_agree_eval_history", shape=(epochs,), dtype=torch.float16)
        store.add("alpha", dtype=torch.float32, fill=0.0)
        store.add("group", dtype=torch.int64)
        # method state (checkpointed through state_dict)
        self.stage = 1
        self.mean_max_student: list[float] = []
        self.split: dict = {}

    # --------------------------------------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> StepOutput:
        x, y = batch.views["train"], batch.labels
        teacher_logits = self.teacher(x)
        student_logits = self.student(x)
        loss_student = blind_student_loss(teacher_logits, student_logits, y, self.args.reference_gradients)
        if self.stage == 1 or not self.args.robust_stage:
            loss_teacher = F.cross_entropy(teacher_logits, y)  # Eq. 2
        else:
            student_probs = torch.softmax(student_logits.float(), 1)
            if not self.args.reference_gradients:
                student_probs = student_probs.detach()
            alpha = self.ctx.store["alpha"][batch.indices]
            loss_teacher = robust_teacher_loss(teacher_logits.float(), robust_target(y, student_probs, alpha))
        with torch.no_grad():  # log P_A once per batch: recorded below, and the engine's train accuracy
            teacher_logits, student_logits = teacher_logits.float(), student_logits.float()
            log_p_agree = log_agreement(teacher_logits, student_logits)
            p_student = torch.softmax(student_logits, 1)
            self._record_training_pass(batch, torch.softmax(teacher_logits, 1), p_student, log_p_agree.exp())
        return StepOutput(loss=loss_teacher + loss_student, logits=log_p_agree,
                          metrics={"loss_teacher": loss_teacher.detach(), "loss_student": loss_student.detach(),
                                   # Eq. 4 summand per sample; the engine's epoch mean is Eq. 4
                                   "mean_max_p_student": mean_max_probability(p_student)})

    def phase(self, epoch: int) -> str:
        if self.stage == 1:
            return "stage 1: teacher on cross-entropy until the fitting epoch"
        loss = "the robust loss (Eqs. 7-8)" if self.args.robust_stage else "cross-entropy (robust_stage=false)"
        return f"stage 2: split at the fitting epoch {self.split['fitting_epoch']}, teacher on {loss}"

    def _record_training_pass(self, batch: Batch, p_t, p_s, p_a) -> None:
        """P_T(y|x), P_S(y|x) and P_A(y|x) of this training pass, in the column of the current epoch."""
        labels = batch.labels[:, None]
        for name, probs in (("p_teacher", p_t), ("p_student", p_s), ("p_agree", p_a)):
            self.ctx.store.write(f"{name}_history", batch.indices, probs.gather(1, labels)[:, 0],
                                 column=batch.progress.epoch)

    def on_epoch_end(self, epoch: int, train_metrics: Mapping[str, float]) -> dict[str, float]:
        self.mean_max_student.append(train_metrics["mean_max_p_student"])  # Eq. 4
        if self.args.split_source == "eval_pass" and self.stage == 1:
            self._record_eval_pass(epoch)
        if self.stage == 1:
            tipping = tipping_epoch_with_fallback(self.mean_max_student, k=self.args.k,
                                                  min_epochs=self.args.min_epochs, deadline=self.tipping_deadline,
                                                  fallback_epoch=self.args.tipping_fallback_epoch)
            if tipping is not None:
                self._split_at(tipping.epoch, detected_at=epoch, fallback=tipping.fallback)
        return {"stage": float(self.stage)}

    @torch.no_grad()
    def _record_eval_pass(self, epoch: int) -> None:
        for batch in self.ctx.iterate_train():
            log_pa = log_agreement(self.teacher(batch.images).float(), self.student(batch.images).float())
            self.ctx.store.write("p_agree_eval_history", batch.indices,
                                 log_pa.exp().gather(1, batch.labels[:, None])[:, 0], column=epoch)

    def _split_at(self, fitting_epoch: int, detected_at: int, fallback: bool) -> None:
        """Otsu on P_A(y|x) of the fitting epoch (Eq. 6), groups and alphas; switch to stage 2."""
        rows = self._training_rows()
        values = self.ctx.store[self._split_history][:, fitting_epoch].float().cpu().numpy()[rows]
        result = otsu_threshold(values, **self.otsu_options)
        groups, alpha = assign_groups(values, result, alphas=self.args.alphas)
        self.ctx.store.write("group", torch.from_numpy(rows), torch.from_numpy(groups))
        self.ctx.store.write("alpha", torch.from_numpy(rows), torch.from_numpy(alpha.astype(np.float32)))
        self.stage = 2
        self.split = {
            "fitting_epoch": fitting_epoch + 1, "detected_after_epoch": detected_at + 1, "fallback": fallback,
            "split_source": self.args.split_source, "s": float(result.threshold), "mu1": float(result.mu1),
            "mu2": float(result.mu2), "group_sizes": np.bincount(groups, minlength=4).tolist(),
        }

    @property
    def _split_history(self) -> str:
        """The store column of per-epoch P_A(y|x) that Otsu splits (``split_source``)."""
        return "p_agree_eval_history" if self.args.split_source == "eval_pass" else "p_agree_history"

    def _training_rows(self) -> np.ndarray:
        """Dataset indices of the training samples (the engine's ``train_indices``), sorted."""
        return self.ctx.train_indices.cpu().numpy()

    # --------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        """log P_A (Eq. 5, log-probabilities: valid logits), with the teacher's and student's logits as heads."""
        teacher_logits, student_logits = self.teacher(images).float(), self.student(images).float()
        return Prediction(logits=log_agreement(teacher_logits, student_logits),
                          heads={"teacher": teacher_logits, "student": student_logits})

    def _p_agree_at_split(self) -> np.ndarray:
        """P_A(y|x) at the fitting epoch, float (num_samples,), NaN for samples not trained on."""
        return self.ctx.store[self._split_history][:, self.split["fitting_epoch"] - 1].float().cpu().numpy()

    def sample_outputs(self) -> SampleOutputs:
        """Detection: P_A(y|x) at the fitting epoch is the clean score; flagged below mu1 (by default).
        Per sample also its Otsu group, alpha and P_A(y|x). Nothing before the split."""
        if not self.split:
            return SampleOutputs(note=f"bkd made no split: no tipping point within its {len(self.mean_max_student)} "
                                      f"epochs (the fallback deadline is epoch {self.tipping_deadline}); train "
                                      "longer, or set method_args.tipping_deadline")
        p_agree = self._p_agree_at_split()
        rule = self.args.detection_threshold
        threshold = self.split[rule]
        flagged = (p_agree <= threshold) if rule == "s" else (p_agree < threshold)  # NaN compares False
        detection = Detection(clean_score=p_agree, flagged=flagged, detector="bkd",
                              rule=f"P_A(y|x) {'<=' if rule == 's' else '<'} {rule} = {threshold:.4f} at the "
                                   f"fitting epoch {self.split['fitting_epoch']} ({self.args.split_source})")
        store = self.ctx.store
        return SampleOutputs(detection=detection, group=store["group"].cpu().numpy(),
                             columns={"p_agree_at_split": p_agree, "alpha": store["alpha"].cpu().numpy()})

    def write_reports(self, out_dir, history: list[dict], truth: GroundTruth | None) -> None:
        """The paper's Fig. 1 (P_A histogram at the fitting epoch with mu1, s, mu2), Fig. 3 (mean max P_S
        with the tipping epoch, next to test accuracy) and Fig. 4 (teacher / student / agreement accuracy)."""
        from ..engine.report import write_rows_csv
        from ..plots import plot_head_accuracies, plot_score_histogram, plot_split_quality, plot_tipping_point

        tipping = self.split.get("fitting_epoch") if self.split else None
        is_noisy = None if truth is None else truth.is_noisy
        if self.split:
            rows = self._training_rows()
            plot_score_histogram(
                self._p_agree_at_split()[rows], out_dir / "bkd_agreement_histogram.png",
                is_noisy=None if is_noisy is None else is_noisy[rows],
                thresholds={k: self.split[k] for k in ("mu1", "s", "mu2")},
                title=f"P_A of the given label at the fitting epoch {tipping} ({self.args.split_source})")
        plot_tipping_point(self.mean_max_student, out_dir / "bkd_tipping_point.png", tipping_epoch=tipping,
                           test_accuracy=[r.get("test_acc") for r in history],
                           title="blind student: mean max probability per epoch")
        plot_head_accuracies(history, {"test_acc_teacher": "teacher P_T", "test_acc_student": "student P_S",
                                       "test_acc": "agreement P_A"}, out_dir / "bkd_accuracies.png",
                             vertical=tipping, title="test accuracy per head")
        if is_noisy is not None:
            rows = self.split_quality(is_noisy)
            write_rows_csv(rows, out_dir / "bkd_split_quality.csv")
            plot_split_quality(rows, out_dir / "bkd_split_quality.png", tipping_epoch=tipping,
                               title=f"Otsu split at each epoch, flag P_A < {self.args.detection_threshold} "
                                     f"({self.args.split_source})")

    def split_quality(self, is_noisy: np.ndarray) -> list[dict]:
        """Detection quality of the Otsu split at every recorded epoch (Fig. 3c); is_noisy: bool N over the
        dataset indices. Uses the same P_A source, threshold and Otsu options as the real split."""
        rows = self._training_rows()
        values = self.ctx.store[self._split_history].float().cpu().numpy()[rows]
        return split_quality_by_epoch(values, is_noisy[rows], threshold=self.args.detection_threshold,
                                      **self.otsu_options)

    def summary(self) -> dict:
        return {"stage": self.stage, "split": self.split or None, "mean_max_p_student": self.mean_max_student,
                "detection_threshold": self.args.detection_threshold,
                "reference_gradients": self.args.reference_gradients, "robust_stage": self.args.robust_stage}

    def state_dict(self) -> dict:
        return {"stage": self.stage, "mean_max_student": list(self.mean_max_student), "split": dict(self.split)}

    def load_state_dict(self, state: dict) -> None:
        self.stage = int(state["stage"])
        self.mean_max_student = [float(v) for v in state["mean_max_student"]]
        self.split = dict(state["split"])
