"""Noisy-label detection with numpy in and out (torch tensors are accepted and converted).

* :func:`otsu_threshold`, :func:`assign_groups`: BKD's Otsu noise estimation (Eq. 6) and its four α groups.
* :func:`find_tipping_epoch`, :func:`tipping_epoch_with_fallback`: BKD's fitting epoch (Eq. 4, Sec. 4.1).
* :func:`gmm_clean_probability`, :func:`fit_loss_gmm`, :func:`small_loss_mask`: DivideMix's loss GMM and the
  small-loss criterion.
* :func:`split_quality_by_epoch`: Otsu's split of every epoch scored against the truth (BKD Fig. 3c).
* :func:`detection_metrics` (BKD Eq. 10-12, AUROC, AUPRC, precision@k), :func:`expected_calibration_error`.
* :func:`find_label_issues`: the user-facing detector, in the spirit of cleanlab's function of that name::

    from noisykd.detect import find_label_issues, detection_metrics
    issues = find_label_issues(labels, pred_probs)            # BKD default: Otsu, flag P(label) < mu1
    detection_metrics(labels != clean_labels, issues.is_label_issue, issues.noise_score)
    issues.to_csv("label_issues.csv")
"""

from .by_epoch import split_quality_by_epoch
from .issues import (CSV_COLUMNS, METHODS, LabelIssues, confident_joint, estimate_noise_matrix, estimate_noise_rate,
                     find_label_issues, get_label_quality_scores, most_likely_other)
from .metrics import detection_metrics, expected_calibration_error
from .mixture import LossGMM, fit_loss_gmm, gmm_clean_probability, small_loss_mask
from .otsu import (
    DEFAULT_ALPHAS,
    GROUP_RULES,
    SEARCHES,
    VARIANCES,
    OtsuResult,
    assign_groups,
    otsu_threshold,
    threshold_grid,
)
from .tipping import DEFAULT_K, DEFAULT_MIN_EPOCHS, TippingResult, find_tipping_epoch, tipping_epoch_with_fallback

__all__ = [
    "otsu_threshold", "assign_groups", "threshold_grid", "OtsuResult",
    "DEFAULT_ALPHAS", "GROUP_RULES", "VARIANCES", "SEARCHES",
    "find_tipping_epoch", "tipping_epoch_with_fallback", "TippingResult", "DEFAULT_K", "DEFAULT_MIN_EPOCHS",
    "gmm_clean_probability", "fit_loss_gmm", "small_loss_mask", "LossGMM",
    "detection_metrics", "expected_calibration_error", "split_quality_by_epoch",
    "find_label_issues", "get_label_quality_scores", "LabelIssues", "METHODS", "CSV_COLUMNS",
    "estimate_noise_matrix", "most_likely_other", "confident_joint", "estimate_noise_rate",
]
