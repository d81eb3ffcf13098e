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

The authors' code (github.com/TimoK93/blind_knowledge_distillation, read at commit 56ae05a, 2025-01-06;
``blind_knowledge_dist_training.py`` unchanged since 4a15e26, 2022-06-28) differs from the paper's semantics
(our defaults) in ways each one option reproduces: ``reference_gradients=true``; Otsu with
``otsu_variance=sigma, otsu_search=histogram, otsu_bins=1000, otsu_min_variance=1e-5, otsu_means=left_edge``;
``detection_source=eval_pass`` (its detection output comes from its own eval pass and Otsu, its groups from the
training pass); ``tipping_fallback=none`` (no tipping point: CE to the end). Its per-sample P_A is float32, as
ours. Left as they are (see :class:`BKDArgs`): its Otsu tries only s in [0.002, 0.997], its float32 arg-max
may break near-ties of Q otherwise than ours, and its detection pass sees augmented images and also scores the
held-out validation samples.
"""

from __future__ import annotations

import math
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
DetectionSource = Literal["split", "train_pass", "eval_pass"]
DetectionThreshold = Literal["mu1", "s", "mu2"]
TippingFallback = Literal["argmax", "none"]
OtsuMeans = Literal["centre", "left_edge"]
SPLIT_SOURCES = typing.get_args(SplitSource)
DETECTION_SOURCES = typing.get_args(DetectionSource)
DETECTION_THRESHOLDS = typing.get_args(DetectionThreshold)
#: Largest ``otsu_bins``: the histogram and its cumulative sums stay small.
MAX_OTSU_BINS = 1_000_000
#: Store entries of the per-sample histories by P_A source; float32, as the authors' code keeps them.
HISTORY_OF_SOURCE = {"train_pass": "p_agree_history", "eval_pass": "p_agree_eval_history"}
HISTORY_DTYPE = torch.float32


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
    is silent (each named below). "Authors' code" is TimoK93/blind_knowledge_distillation at 56ae05a.

    k (2):               half window of the tipping detector (authors' code: 2).
    min_epochs (6):      epochs recorded before the detector may fire (authors' code: 6).
    tipping_fallback ("argmax"): what happens when no tipping point appears. "argmax": at the deadline
                         (``tipping_deadline``) the fitting epoch is the arg-max of the mean max student
                         probability over epochs >= k so far (``tipping_fallback_epoch`` instead, if set),
                         reported as ``fallback`` in the summary. "none": the authors' code: no split is ever
                         forced; without a tipping point the teacher trains on cross-entropy (stage 1) to the
                         end, and the run's detection falls back to the engine's default detector (GMM on the
                         final per-sample loss), said in the summary, the log and the label-issues file (the
                         authors' code writes no detection at all then). "none" refuses the two options below.
    tipping_deadline (None): epochs after which the "argmax" fallback applies; None: half the run (at least
                         2k + 1 epochs).
    tipping_fallback_epoch (None): a fixed (0-based) epoch to fall back to at the deadline instead of the
                         arg-max. (Only an intermediate commit of the authors' code, 1c3c351, forced epoch 8 at
                         10 recorded epochs; 8cec543 removed it: their code has no fallback, "none" above.)
    alphas ((0.3, 0.45, 0.55, 0.7)): alpha1..alpha4 for the groups P_A >= mu2, [s, mu2), [mu1, s), < mu1
                         (paper Sec. 4.3, 5.1; authors' code the same).
    otsu_step (0.001):   the grid of thresholds s tried by Eq. 6 (paper: 0.001). With ``otsu_search=histogram``
                         keep it 1/otsu_bins: s = j/bins then splits the bins as the authors' code.
    otsu_variance ("sigma2"): Eq. 6's denominator n1 sigma1^2 + n2 sigma2^2 (paper); "sigma": n1 sigma1 +
                         n2 sigma2 (authors' code).
    otsu_search ("grid"): "grid" splits the exact values; "histogram": the values binned first into
                         ``otsu_bins`` equal bins on [0, 1] (authors' code: ``torch.histc(p, 1000, 0, 1)``).
    otsu_bins (1000):    number of histogram bins of ``otsu_search=histogram``, an integer in [2, 1000000]
                         (authors' code: 1000); unused by the grid search.
    otsu_min_variance (0.0): floor on each class's variance sigma^2 inside Q; 0: none (paper). Authors' code:
                         1e-5 (``clamp(0.00001)`` before the square root).
    otsu_means ("centre"): with ``otsu_search=histogram``, the value a bin counts with in mu1, mu2 and Q: its
                         centre (i + 0.5)/bins, or "left_edge" i/bins (authors' code): mu1 and mu2 half a bin
                         lower, Q's between-class term (and so possibly s) changed. Needs the histogram search.
                         Ties of Q over s go to the smallest s in every mode; the authors' float32
                         ``torch.argmax`` can order near-ties (within float32 rounding) otherwise, and may pick
                         another s of a run of empty bins (same groups, another reported s): not reproduced.
    split_source ("train_pass"): the P_A(y|x) that Otsu splits into the training groups. "train_pass": recorded
                         during the training pass of e* (augmented views, train-mode BatchNorm; the authors'
                         code). "eval_pass": an eval-mode pass on un-augmented images after every stage-1 epoch
                         (one extra forward pass per epoch). train_pass had the better detection F1 in
                         benchmarks/detection.py: all 10 digits seeds (mu1 F1 +0.035) and by 0.0035 on CIFAR-10N
                         worst (one seed); see benchmarks/results/detection-*.md.
    detection_source ("split"): the P_A(y|x) of the run's detection output. "split": the split's own values and
                         thresholds (one Otsu; paper). "train_pass" / "eval_pass": that pass's P_A at the
                         fitting epoch with its own Otsu (same options) when it differs from ``split_source``.
                         The authors' code is ``split_source=train_pass, detection_source=eval_pass``: training
                         groups from the training pass, ``detection.npy`` from an eval-mode pass with its own
                         Otsu. Two differences remain: their pass sees augmented images (the training transform)
                         where ours sees un-augmented ones, and it also scores the held-out validation samples
                         (``val_ratio``, default 0.1 there), which ``ctx.iterate_train`` does not reach here:
                         with ``data.val_fraction: 0`` (configs/bkd) train + validation is all of the data.
    detection_threshold ("mu1"): flag P_A(y|x) < mu1 (paper's Table 2 choice; authors' code), <= "s", or
                         < "mu2".
    reference_gradients (False): reproduce the authors' code's gradients (see the module docstring).
    robust_stage (True): False keeps the teacher on cross-entropy after the split (the paper's Sec. 5.2
                         analysis, Figs. 3-4: "trained without robust training"); the split, detection and
                         histories are still computed.

    The per-sample P_T, P_S and P_A histories are float32 (as the authors' code). A checkpoint written before
    (float16 histories) resumes with them widened to float32, every value kept (``SampleStore.load_state_dict``).
    """

    k: int = 2
    min_epochs: int = 6
    tipping_fallback: TippingFallback = "argmax"
    tipping_deadline: int | None = None
    tipping_fallback_epoch: int | None = None
    alphas: tuple[float, ...] = (0.3, 0.45, 0.55, 0.7)
    otsu_step: float = 0.001
    otsu_variance: Literal["sigma2", "sigma"] = "sigma2"
    otsu_search: Literal["grid", "histogram"] = "grid"
    otsu_bins: int = 1000
    otsu_min_variance: float = 0.0
    otsu_means: OtsuMeans = "centre"
    split_source: SplitSource = "train_pass"
    detection_source: DetectionSource = "split"
    detection_threshold: DetectionThreshold = "mu1"
    reference_gradients: bool = False
    robust_stage: bool = True

    def deadline(self, epochs: int) -> int | None:
        """The epoch count by which a split must be made (``tipping_deadline`` or its default); None with
        ``tipping_fallback="none"`` (never forced)."""
        if self.tipping_fallback == "none":
            return None
        return self.tipping_deadline if self.tipping_deadline is not None else max(epochs // 2, 2 * self.k + 1)

    def validate(self, epochs: int) -> None:
        if self.k < 1:
            raise ConfigError(f"method_args.k must be >= 1, got {self.k}")
        if self.min_epochs < 0:
            raise ConfigError(f"method_args.min_epochs must be >= 0, got {self.min_epochs}")
        if self.tipping_deadline is not None and self.tipping_deadline < 1:
            raise ConfigError(f"method_args.tipping_deadline must be >= 1 or null, got {self.tipping_deadline}")
        if self.tipping_fallback == "none":
            given = [name for name in ("tipping_deadline", "tipping_fallback_epoch") if getattr(self, name) is not None]
            if given:
                raise ConfigError(f"method_args.tipping_fallback is none (never force a split, the authors' code), "
                                  f"which leaves nothing for {' and '.join(given)} to set: drop "
                                  f"{'it' if len(given) == 1 else 'them'}, or use tipping_fallback: argmax")
        fallback = self.tipping_fallback_epoch
        if fallback is not None and not 0 <= fallback < self.deadline(epochs):
            raise ConfigError(f"method_args.tipping_fallback_epoch must lie in [0, {self.deadline(epochs)}) (the "
                              f"deadline), got {fallback}")
        if len(self.alphas) != 4 or not all(0 <= a <= 1 for a in self.alphas) or list(self.alphas) != sorted(self.alphas):
            raise ConfigError(f"method_args.alphas must be 4 increasing values in [0, 1], got {list(self.alphas)}")
        if not 1e-5 <= self.otsu_step <= 0.5:  # the grid has 1/step points: below 1e-5 it would not fit in memory
            raise ConfigError(f"method_args.otsu_step must lie in [1e-05, 0.5] (the paper's grid: 0.001), got "
                              f"{self.otsu_step}")
        bins = self.otsu_bins
        if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= MAX_OTSU_BINS:
            raise ConfigError(f"method_args.otsu_bins must be an integer in [2, {MAX_OTSU_BINS}] (the histogram "
                              f"of otsu_search: histogram; the authors' code: 1000), got {bins!r}")
        floor = self.otsu_min_variance
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not (math.isfinite(floor) and floor >= 0):
            raise ConfigError(f"method_args.otsu_min_variance must be a finite number >= 0 (a floor on each "
                              f"class's variance in Q; 0: none, the paper; the authors' code: 1e-05), got {floor!r}")
        if self.otsu_means == "left_edge" and self.otsu_search != "histogram":
            raise ConfigError(f"method_args.otsu_means: left_edge counts each histogram bin at its left edge (the "
                              f"authors' code) and needs otsu_search: histogram, got otsu_search: "
                              f"{self.otsu_search}")


@register_method("bkd")
class BlindKnowledgeDistillation(Method):
    """Teacher + blind student, tipping-point detection, Otsu noise estimation, robust second stage.

    Arguments: the fields of :class:`BKDArgs` (listed with their defaults by ``noisykd methods bkd``). When the
    true labels are known, the reports also score the Otsu split of every recorded epoch
    (``bkd_split_quality.csv``/``.png``, the paper's Fig. 3c), to judge the tipping epoch after the fact.
    """

    Args = BKDArgs

    def __init__(self, ctx: MethodContext, args: BKDArgs):
        super().__init__(ctx, args)
        self.tipping_deadline = args.deadline(ctx.total_epochs)
        self.otsu_options = {"step": args.otsu_step, "variance": args.otsu_variance, "search": args.otsu_search,
                             "bins": args.otsu_bins, "min_variance": args.otsu_min_variance,
                             "means": args.otsu_means}
        self.detection_source = args.split_source if args.detection_source == "split" else args.detection_source
        self.teacher = self.add_network("teacher", ctx.build_model())
        self.student = self.add_network("student", ctx.build_model())
        epochs, store = ctx.total_epochs, ctx.store
        # per-sample histories by epoch (Eq. 5 inputs), float32 as in the authors' code (float16 moved 0.01-0.15%
        # of the group assignments, 7.8% on a narrow mode near 0.5: issue 25); 50k x 300 x 4 bytes = 60 MB each
        for name in ("p_teacher", "p_student", "p_agree"):
            store.add(f"{name}_history", shape=(epochs,), dtype=HISTORY_DTYPE)
        self.records_eval_pass = "eval_pass" in (args.split_source, self.detection_source)
        if self.records_eval_pass:
            store.add(HISTORY_OF_SOURCE["eval_pass"], shape=(epochs,), dtype=HISTORY_DTYPE)
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
        if self.records_eval_pass and self.stage == 1:
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
            self.ctx.store.write(HISTORY_OF_SOURCE["eval_pass"], batch.indices,
                                 log_pa.exp().gather(1, batch.labels[:, None])[:, 0], column=epoch)

    def _split_at(self, fitting_epoch: int, detected_at: int, fallback: bool) -> None:
        """Otsu on P_A(y|x) of the fitting epoch (Eq. 6), groups and alphas; switch to stage 2. With a
        ``detection_source`` other than ``split_source``, also the detection's own Otsu (``split["detection"]``)."""
        rows = self._training_rows()
        values = self._history_at(self._split_history, fitting_epoch)[rows]
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
        if self._detection_history != self._split_history:  # the detection's own Otsu on its own pass
            own = otsu_threshold(self._history_at(self._detection_history, fitting_epoch)[rows], **self.otsu_options)
            self.split["detection"] = {"source": self.detection_source, "s": float(own.threshold),
                                       "mu1": float(own.mu1), "mu2": float(own.mu2)}

    @property
    def _split_history(self) -> str:
        """The store entry of per-epoch P_A(y|x) that Otsu splits (``split_source``)."""
        return HISTORY_OF_SOURCE[self.args.split_source]

    @property
    def _detection_history(self) -> str:
        """The store entry of per-epoch P_A(y|x) the detection output reads (``detection_source``)."""
        return HISTORY_OF_SOURCE[self.detection_source]

    def _history_at(self, name: str, epoch: int) -> np.ndarray:
        """Column ``epoch`` of history ``name``, float64 (num_samples,), NaN for samples not recorded."""
        return self.ctx.store[name][:, epoch].double().cpu().numpy()

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

    def _p_agree_at_split(self, history: str | None = None) -> np.ndarray:
        """P_A(y|x) at the fitting epoch (of ``history``, default the split's), float (num_samples,), NaN for
        samples not trained on."""
        return self._history_at(history or self._split_history, self.split["fitting_epoch"] - 1)

    def sample_outputs(self) -> SampleOutputs:
        """Detection: P_A(y|x) at the fitting epoch (``detection_source``) is the clean score; flagged below
        mu1 (by default). Per sample also its Otsu group, alpha and P_A(y|x). Nothing before the split."""
        if not self.split:
            epochs = len(self.mean_max_student)
            if self.tipping_deadline is None:
                return SampleOutputs(note=f"bkd made no split: no tipping point within its {epochs} epochs and "
                                          "method_args.tipping_fallback is none (the authors' code): the teacher "
                                          "trained on cross-entropy throughout; train longer, or set "
                                          "tipping_fallback: argmax")
            return SampleOutputs(note=f"bkd made no split: no tipping point within its {epochs} epochs (the "
                                      f"fallback deadline is epoch {self.tipping_deadline}); train longer, or set "
                                      "method_args.tipping_deadline")
        p_split = self._p_agree_at_split()
        p_agree = self._p_agree_at_split(self._detection_history)
        cut = self.split.get("detection", self.split)  # its own Otsu when detection_source differs
        rule = self.args.detection_threshold
        threshold = cut[rule]
        flagged = (p_agree <= threshold) if rule == "s" else (p_agree < threshold)  # NaN compares False
        own = ", its own Otsu" if "detection" in self.split else ""
        detection = Detection(clean_score=p_agree, flagged=flagged, detector="bkd",
                              rule=f"P_A(y|x) {'<=' if rule == 's' else '<'} {rule} = {threshold:.4f} at the "
                                   f"fitting epoch {self.split['fitting_epoch']} ({self.detection_source}{own})")
        store = self.ctx.store
        columns = {"p_agree_at_split": p_split, "alpha": store["alpha"].cpu().numpy()}
        if "detection" in self.split:
            columns["p_agree_detection"] = p_agree
        return SampleOutputs(detection=detection, group=store["group"].cpu().numpy(), columns=columns)

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
                                     f"({self.detection_source})")

    def split_quality(self, is_noisy: np.ndarray) -> list[dict]:
        """Detection quality of the Otsu split at every recorded epoch (Fig. 3c); is_noisy: bool N over the
        dataset indices. Uses the same P_A source (``detection_source``), threshold and Otsu options as the
        run's detection."""
        rows = self._training_rows()
        values = self.ctx.store[self._detection_history].double().cpu().numpy()[rows]
        return split_quality_by_epoch(values, is_noisy[rows], threshold=self.args.detection_threshold,
                                      **self.otsu_options)

    def summary(self) -> dict:
        return {"stage": self.stage, "split": self.split or None, "mean_max_p_student": self.mean_max_student,
                "detection_source": self.detection_source, "detection_threshold": self.args.detection_threshold,
                "reference_gradients": self.args.reference_gradients, "robust_stage": self.args.robust_stage}

    def state_dict(self) -> dict:
        return {"stage": self.stage, "mean_max_student": list(self.mean_max_student), "split": dict(self.split)}

    def load_state_dict(self, state: dict) -> None:
        self.stage = int(state["stage"])
        self.mean_max_student = [float(v) for v in state["mean_max_student"]]
        self.split = dict(state["split"])
