"""Calibration of a classifier's confidence: expected calibration error and reliability-diagram bins.

ECE as Guo et al. (2017) define it and NRD reports it (Fig. 5, 15 bins): the confidence of a prediction is its
largest probability; predictions are grouped into equal-width bins of confidence, (0, 1/M], (1/M, 2/M], ...,
((M-1)/M, 1]; ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|. Pure functions of logits and labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: NRD reports ECE with 15 bins (Fig. 5), as Guo et al. do
DEFAULT_BINS = 15


@dataclass(frozen=True)
class Reliability:
    """The bins of a reliability diagram and the expected calibration error they add up to.

    ``edges`` (M+1,) bin edges from 0 to 1; ``count`` (M,) predictions per bin; ``confidence`` and ``accuracy``
    (M,) the bin's mean confidence and accuracy (None for an empty bin); ``ece`` in [0, 1].
    """

    ece: float
    edges: list[float]
    count: list[int]
    confidence: list[float | None]
    accuracy: list[float | None]

    def to_dict(self) -> dict:
        return {"ece": self.ece, "bins": len(self.count), "edges": self.edges, "count": self.count,
                "confidence": self.confidence, "accuracy": self.accuracy}

    @classmethod
    def from_dict(cls, data: dict) -> "Reliability":
        """The inverse of :meth:`to_dict` (a run's ``summary.json`` ``calibration``)."""
        return cls(ece=data["ece"], edges=list(data["edges"]), count=list(data["count"]),
                   confidence=list(data["confidence"]), accuracy=list(data["accuracy"]))


def reliability(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_BINS) -> Reliability:
    """Reliability bins and ECE of predictions ``logits`` (N, C) against ``labels`` (N,) integer classes.

    Confidence = max softmax probability, computed in float64; a confidence exactly on an edge belongs to the
    bin it closes (upper edge inclusive), as in Guo et al.'s code.
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"reliability: logits must be (N, C) and labels (N,), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("reliability: no predictions")
    if n_bins < 1:
        raise ValueError(f"reliability: n_bins must be >= 1, got {n_bins}")
    probs = torch.softmax(logits.double(), dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels.to(predicted.device)).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # bin b holds edges[b] < confidence <= edges[b+1]; confidence > 0 always (a softmax), so bin >= 0
    bins = (torch.bucketize(confidence.cpu(), edges, right=False) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins)
    conf_sum = torch.bincount(bins, weights=confidence.cpu(), minlength=n_bins)
    right_sum = torch.bincount(bins, weights=correct.cpu(), minlength=n_bins)
    ece = float((conf_sum - right_sum).abs().sum() / len(labels))
    return Reliability(
        ece=ece, edges=[float(e) for e in edges], count=[int(c) for c in count],
        confidence=[float(s / c) if c else None for s, c in zip(conf_sum, count)],
        accuracy=[float(s / c) if c else None for s, c in zip(right_sum, count)])


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_BINS) -> float:
    """ECE of ``logits`` (N, C) against ``labels`` (N,): see :func:`reliability`."""
    return reliability(logits, labels, n_bins).ece
