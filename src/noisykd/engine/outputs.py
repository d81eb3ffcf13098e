"""Per-sample results of a finished run: the engine's own columns, the method's :class:`SampleOutputs`, and the
wrong-label detection that ``summary.json``, ``noisykd detect`` and ``label_issues.csv`` read.

Every column is an array by dataset index (length num_samples). The standard columns, which readers rely on
without knowing any method: ``given_label``, ``clean_label`` and ``is_noisy`` (when the truth is known),
``predicted_label``, ``p_given`` and ``loss`` (the final model's), ``in_train`` (1 for the samples trained on),
``suggested_label``, ``noise_score`` (in [0, 1], higher = more likely wrong; NaN off the training set),
``flagged`` (1 / 0; -1 off the training set), ``group`` (-1 for none), ``path`` (the image file, for folder
and CSV sources), ``pred_probs`` (N x C, the final model's class probabilities, for other detectors and
for cleanlab) and ``in_val`` (1 for the held-out noisy-validation samples, whose ``pred_probs``,
``predicted_label``, ``p_given`` and ``loss`` are then out-of-sample). The method's own columns follow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..detect import detection_metrics, find_label_issues
from ..errors import ContractError
from ..methods import Detection, SampleOutputs
from .setup import PreparedData

log = logging.getLogger("noisykd.engine")
#: The detector a run uses when its method has none: DivideMix's 2-component GMM on the final per-sample loss, the
#: rule ``noisykd detect --detector gmm`` applies to a run's clean score, hence its name (runs made before it was
#: named so say "gmm_on_final_loss": ``noisykd.detect.from_run.RENAMED_DETECTORS``).
DEFAULT_DETECTOR = "gmm"
#: What the default detector does, for people (summary.json, label_issues-gmm.csv's first line).
DEFAULT_RULE = "2-component GMM on the final per-sample loss (DivideMix); flagged: the high-loss component"


@dataclass(frozen=True)
class RunOutputs:
    """The per-sample columns of a run and the detection they hold (name and rule of the detector, and a note
    when the method's own detector gave nothing)."""

    columns: dict[str, np.ndarray]
    detector: str
    rule: str
    note: str = ""

    def detection_summary(self, train_rows: np.ndarray) -> dict:
        """Detector, rule and, when the truth is known, precision / recall / F1 / AUROC / AUPRC on the training
        samples (BKD Eqs. 10-12)."""
        out: dict = {"detector": self.detector, "rule": self.rule}
        if self.note:
            out["note"] = self.note
        if "is_noisy" in self.columns:
            c = self.columns
            out.update(detection_metrics(c["is_noisy"][train_rows].astype(bool), c["flagged"][train_rows] == 1,
                                         c["noise_score"][train_rows]))
        return out


def collect_outputs(data: PreparedData, train_logits: torch.Tensor, method_name: str, outputs: SampleOutputs,
                    seed: int, val_logits: torch.Tensor | None = None) -> RunOutputs:
    """All per-sample columns. ``train_logits``: (N_train, C) final logits on the training split (its order);
    ``val_logits``: (N_val, C) on the held-out validation samples (``data.val``, dataset indices), or None."""
    if not isinstance(outputs, SampleOutputs):
        raise ContractError(f"{method_name}.sample_outputs must return a SampleOutputs, got {type(outputs).__name__}")
    n, rows = data.num_samples, data.train.indices
    given = data.noisy.labels
    columns: dict[str, np.ndarray] = {"given_label": given}
    if data.clean_labels is not None:
        columns["clean_label"] = data.clean_labels
        columns["is_noisy"] = data.noisy.is_noisy.astype(np.int64)
    predicted = [(rows, train_logits)] + ([(data.val.indices, val_logits)] if val_logits is not None else [])
    num_classes = train_logits.shape[1]
    pred_probs = np.full((n, num_classes), np.nan, dtype=np.float32)  # the final model's class distribution
    columns["predicted_label"] = np.full(n, -1, dtype=np.int64)
    columns["p_given"] = np.full(n, np.nan, dtype=np.float32)
    columns["loss"] = np.full(n, np.nan, dtype=np.float32)
    for where, logits in predicted:
        probs = F.softmax(logits, dim=1)
        given_t = torch.from_numpy(given[where])
        pred_probs[where] = probs.numpy()
        columns["predicted_label"][where] = probs.argmax(1).numpy()
        columns["p_given"][where] = probs.gather(1, given_t[:, None])[:, 0].numpy()
        columns["loss"][where] = F.cross_entropy(logits, given_t, reduction="none").numpy()
    in_train = np.zeros(n, dtype=np.int64)
    in_train[rows] = 1
    columns["in_train"] = in_train
    if val_logits is not None:
        in_val = np.zeros(n, dtype=np.int64)
        in_val[data.val.indices] = 1
        columns["in_val"] = in_val
    files = data.dataset.meta.get("train_files")
    if files is not None and len(files) == n:  # folder / CSV sources: the image file of every index
        columns["path"] = np.asarray(files, dtype=str)

    _check_lengths(method_name, outputs, n)
    columns["suggested_label"] = (np.asarray(outputs.suggested_label, dtype=np.int64)
                                  if outputs.suggested_label is not None else columns["predicted_label"])
    detection = outputs.detection
    if detection is None:
        why = outputs.note or f"{method_name} has no wrong-label detector of its own"
        log.info(f"{why}: flagging with detector {DEFAULT_DETECTOR}, DivideMix's 2-component GMM on the final "
                 "per-sample loss")
        detection = _default_detection(given, columns["p_given"], rows, seed)
    _check_scores(method_name, detection, rows)
    noise_score = np.asarray(detection.noise_score, dtype=np.float32)
    flagged = np.full(n, -1, dtype=np.int64)
    flagged[rows] = np.asarray(detection.flagged, dtype=bool)[rows]
    columns["noise_score"] = np.where(in_train == 1, noise_score, np.nan).astype(np.float32)
    columns["flagged"] = flagged
    columns["group"] = (np.asarray(outputs.group, dtype=np.int64) if outputs.group is not None
                        else np.full(n, -1, dtype=np.int64))
    columns["pred_probs"] = pred_probs
    for name, values in outputs.columns.items():
        if name in columns:
            raise ContractError(f"{method_name}.sample_outputs: column {name!r} is one of the engine's own")
        columns[name] = np.asarray(values)
    return RunOutputs(columns, detection.detector, detection.rule, outputs.note)


def _default_detection(given: np.ndarray, p_given: np.ndarray, rows: np.ndarray, seed: int) -> Detection:
    """The GMM's score is the final P(given label) (its loss is -log of it); flagged: the high-loss component.
    ``noisykd detect --detector gmm`` repeats this fit (the same scores, rows and seed)."""
    issues = find_label_issues(given[rows], scores=p_given[rows], method="gmm", seed=seed)
    clean_score = p_given  # NaN outside the training and held-out validation samples
    flagged = np.zeros(len(given), dtype=bool)
    flagged[rows] = issues.is_label_issue
    return Detection(clean_score=clean_score, flagged=flagged, detector=DEFAULT_DETECTOR, rule=DEFAULT_RULE)


def _check_lengths(method_name: str, outputs: SampleOutputs, n: int) -> None:
    arrays = {"suggested_label": outputs.suggested_label, "group": outputs.group, **outputs.columns}
    if outputs.detection is not None:
        arrays.update(clean_score=outputs.detection.clean_score, flagged=outputs.detection.flagged)
    for name, values in arrays.items():
        if values is not None and len(np.asarray(values)) != n:
            raise ContractError(f"{method_name}.sample_outputs: {name!r} has {len(np.asarray(values))} rows; every "
                                f"per-sample array has one row per dataset index ({n})")


def _check_scores(method_name: str, detection: Detection, rows: np.ndarray) -> None:
    scores = np.asarray(detection.clean_score, dtype=np.float64)[rows]
    if not np.all((scores >= 0) & (scores <= 1)):
        raise ContractError(f"{method_name}: Detection.clean_score must lie in [0, 1] on every training sample "
                            f"(found {np.nanmin(scores):.4g} .. {np.nanmax(scores):.4g}, NaN: {int(np.isnan(scores).sum())})")
