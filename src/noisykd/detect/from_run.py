"""Wrong-label detection from a finished training run's per-sample outputs (``RUN/samples.npz``)."""

from __future__ import annotations

import csv
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.runfolder import FINISHED
from ..errors import DataError
from .issues import CSV_COLUMNS, find_label_issues
from .metrics import detection_metrics

DETECTORS = ("auto", "otsu_mu1", "otsu_s", "otsu_mu2", "gmm", "argmax")


@dataclass(frozen=True)
class RunDetection:
    """Per training sample (arrays aligned with ``index``): given and suggested label, noise score (higher =
    more likely wrong), Otsu group (-1 when none), flag; ``metrics`` when the truth is known."""

    detector: str
    score_source: str
    index: np.ndarray
    given_label: np.ndarray
    suggested_label: np.ndarray
    noise_score: np.ndarray
    group: np.ndarray
    flagged: np.ndarray
    metrics: dict | None

    def ranking(self) -> np.ndarray:
        """Positions, most likely wrong first (ties by index)."""
        return np.lexsort((self.index, -self.noise_score))

    def write_csv(self, path: str | Path) -> None:
        """index, given_label, suggested_label, noise_score, group, flagged; most likely wrong first."""
        tmp = Path(str(path) + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for i in self.ranking():
                writer.writerow([int(self.index[i]), int(self.given_label[i]), int(self.suggested_label[i]),
                                 f"{float(self.noise_score[i]):.6f}",
                                 "" if self.group[i] < 0 else int(self.group[i]), int(self.flagged[i])])
        os.replace(tmp, path)


def detect_from_run(run_dir: str | Path, detector: str = "auto", seed: int = 0) -> RunDetection:
    """Apply ``detector`` to the per-sample outputs of a run (``samples.npz``, standard columns only).

    "auto" keeps the run's own decision (the method's detector, e.g. BKD's P_A < mu1 at the fitting epoch, or
    the GMM on the final loss for methods without one). The others re-decide from the run's clean score,
    1 - ``noise_score`` (BKD: its P_A of the given label at the fitting epoch; others: the final model's
    probability of the given label).
    """
    if detector not in DETECTORS:
        raise DataError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    path = Path(run_dir) / "samples.npz"
    if not (Path(run_dir) / FINISHED).is_file():
        raise DataError(f"{run_dir}: not a finished noisykd run (no {FINISHED}); continue an interrupted run with "
                        f"noisykd train --resume {run_dir}")
    samples = _read_samples(path)
    missing = sorted({"given_label", "noise_score", "flagged", "index"} - set(samples))
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; was the run made by another version of noisykd?")
    in_train = samples["in_train"] == 1 if "in_train" in samples else samples["flagged"] >= 0
    rows = np.flatnonzero(in_train)
    given = samples["given_label"][rows]
    suggested = samples["suggested_label" if "suggested_label" in samples else "predicted_label"][rows]
    group = samples["group"][rows] if "group" in samples else np.full(len(rows), -1)
    summary = _read_summary(Path(run_dir) / "summary.json")
    own = summary.get("detection") or {}
    if detector == "auto":
        flagged = samples["flagged"][rows] == 1
        noise_score = samples["noise_score"][rows]
        name, source = own.get("detector", "auto"), own.get("rule", "the run's own rule")
    else:
        clean_score = 1.0 - samples["noise_score"][rows].astype(np.float64)
        issues = find_label_issues(given, scores=np.clip(clean_score, 0, 1), method=detector, seed=seed)
        flagged, noise_score = issues.is_label_issue, issues.noise_score
        group = issues.group if issues.group is not None else np.full(len(rows), -1)
        name, source = detector, f"re-decided from the run's clean score ({own.get('detector', 'unknown')})"
    metrics = None
    if "is_noisy" in samples:
        metrics = detection_metrics(samples["is_noisy"][rows].astype(bool), flagged, noise_score)
    return RunDetection(name, source, samples["index"][rows], given, suggested, noise_score.astype(np.float64),
                        np.asarray(group, dtype=np.int64), np.asarray(flagged, dtype=np.int64), metrics)


def _read_samples(path: Path) -> dict[str, np.ndarray]:
    """The per-sample arrays, numeric only (no pickled objects); a damaged file is one DataError."""
    if not path.is_file():
        raise DataError(f"{path}: no per-sample outputs; is {path.parent} a finished noisykd run?")
    try:
        with np.load(path, allow_pickle=False) as npz:
            samples = {k: npz[k] for k in npz.files}
    except ValueError as e:
        if "pickle" in str(e).lower():  # an object array: never unpickled
            raise DataError(f"{path}: holds object arrays, which noisykd never unpickles; not a run's own file") from None
        raise DataError(f"{path}: damaged ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{path}: damaged or truncated ({type(e).__name__}: {e})") from None
    bad = sorted(k for k, v in samples.items() if v.dtype.kind not in "biuf")
    if bad:
        raise DataError(f"{path}: the column(s) {bad} are not numeric; not a run's own file")
    return samples


def _read_summary(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable summary ({e})") from None
    if not isinstance(summary, dict):
        raise DataError(f"{path}: not a run summary (expected a JSON object)")
    return summary
