"""Wrong-label detection from a finished training run's per-sample outputs (``RUN/samples.npz``).

Reads only the standard columns every run writes (``noisykd.engine.outputs``): the given labels, the run's
noise score, flags and groups, the final class probabilities (``pred_probs``), and the image files of folder
and CSV sources. The truth comes from the run when it knows it (synthetic noise, CIFAR-N), or from a CSV of
verified labels for some samples; otherwise no precision or recall is claimed.

Detectors: ``auto`` (the run's own decision), a rule re-deciding from the run's own scores or probabilities
(``otsu_mu1``, ``otsu_s``, ``otsu_mu2``, ``gmm``, ``argmax``, ``confident_learning``), or ``cv`` / ``cv:RULE``:
a rule on the out-of-sample probabilities of the run's cross-validation folds (``noisykd.crossval``), which also
cover the run's validation samples.

A run whose method has no detector of its own is decided at its end by ``gmm`` on its final P(given label) (the
engine's default detector); ``gmm`` here repeats that fit (the same scores, rows and seed), so on such a run
``auto`` and ``gmm`` flag the same samples. Runs made before that detector was named ``gmm`` call it
``gmm_on_final_loss`` (:data:`RENAMED_DETECTORS`); they are read under the new name.
"""

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
from .issues import estimate_noise_matrix, find_label_issues, most_likely_other
from .metrics import detection_metrics

RULES = ("otsu_mu1", "otsu_s", "otsu_mu2", "gmm", "argmax", "confident_learning")
DETECTORS = ("auto", *RULES, "cv", *(f"cv:{rule}" for rule in RULES))
#: The rule ``cv`` applies to cross-validated probabilities: see benchmarks/results/practitioner-*.md.
CV_DEFAULT_RULE = "confident_learning"
#: Detector names that earlier noisykd versions wrote into a run's summary.json -> their name now.
RENAMED_DETECTORS = {"gmm_on_final_loss": "gmm"}
#: Decimals of the noise score in label_issues-*.csv (and the most a gallery tile shows: it shows the CSV's value).
SCORE_DECIMALS = 6
CSV_HEADER = ("rank", "index", "path", "given_label", "given_class", "suggested_label", "suggested_class",
              "noise_score", "group", "flagged")


@dataclass(frozen=True)
class RunDetection:
    """Per training sample (arrays aligned with ``index``): the image file (or None), given label, suggested
    label (the most likely *other* class), noise score (higher = more likely wrong), Otsu group (-1: none) and
    flag; the detector, its rule and a note; ``truth`` says what the metrics are measured against (or that
    the truth is unknown); ``noise_matrix`` is the estimated transition matrix (rows: true class, columns:
    given label) and ``pred_probs`` (N x C) the class probabilities the detector judged by, when there are some
    (the run's final ones, or the cross-validated ones of a ``cv`` detector)."""

    detector: str
    rule: str
    note: str
    classes: tuple[str, ...]
    index: np.ndarray
    path: np.ndarray | None
    given_label: np.ndarray
    suggested_label: np.ndarray
    noise_score: np.ndarray
    group: np.ndarray
    flagged: np.ndarray
    truth: str
    metrics: dict | None
    noise_matrix: np.ndarray | None
    pred_probs: np.ndarray | None = None

    def ranking(self) -> np.ndarray:
        """Positions, most likely wrong first (ties by index)."""
        return np.lexsort((self.index, -self.noise_score))

    def class_name(self, label: int) -> str:
        return self.classes[label] if 0 <= label < len(self.classes) else str(label)

    def write_csv(self, path: str | Path) -> None:
        """One row per training sample, most likely wrong first (:data:`CSV_HEADER`), after a ``#`` line that
        names the detector, its rule and any note (read it with ``pandas.read_csv(path, comment="#")``)."""
        tmp = Path(str(path) + ".tmp")
        with open(tmp, "w", newline="") as f:
            f.write(f"# detector {self.detector}: {self.rule}{'; ' + self.note if self.note else ''}\n")
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            for rank, i in enumerate(self.ranking(), 1):
                given, suggested = int(self.given_label[i]), int(self.suggested_label[i])
                writer.writerow([rank, int(self.index[i]), "" if self.path is None else self.path[i], given,
                                 self.class_name(given), suggested, self.class_name(suggested),
                                 score_text(self.noise_score[i]), "" if self.group[i] < 0 else int(self.group[i]),
                                 int(self.flagged[i])])
        os.replace(tmp, path)

    def summary(self) -> dict:
        """What ``detection-DETECTOR.json`` holds."""
        return {"detector": self.detector, "rule": self.rule, "note": self.note, "truth": self.truth,
                "n": int(len(self.index)), "n_flagged": int(self.flagged.sum()),
                "metrics": self.metrics, "classes": list(self.classes),
                "estimated_noise_matrix": None if self.noise_matrix is None else np.round(self.noise_matrix, 4).tolist()}


def score_text(noise_score: float) -> str:
    """A noise score as label_issues-*.csv writes it: :data:`SCORE_DECIMALS` decimals."""
    return f"{float(noise_score):.{SCORE_DECIMALS}f}"


def detector_name(name: str) -> str:
    """A detector's name as noisykd writes it now (``gmm_on_final_loss``, an earlier name, -> ``gmm``)."""
    return RENAMED_DETECTORS.get(name, name)


def results_files(folder: str | Path, detector: str) -> tuple[Path, Path]:
    """Where a detector's results go in ``folder``: ``label_issues-NAME.csv`` and ``detection-NAME.json``, NAME
    the detector's name with ``/`` and ``:`` (``cv:otsu_mu1``) made file-name safe."""
    name = detector.replace("/", "-").replace(":", "-")
    return Path(folder) / f"label_issues-{name}.csv", Path(folder) / f"detection-{name}.json"


def detect_from_run(run_dir: str | Path, detector: str = "auto", seed: int | None = None,
                    verified: str | Path | None = None) -> RunDetection:
    """Apply ``detector`` to the per-sample outputs of a finished run.

    "auto" keeps the run's own decision (the method's detector, e.g. BKD's P_A < mu1 at the fitting epoch, or
    ``gmm``, the GMM on the final loss, for methods without one). The Otsu and GMM rules re-decide from the run's
    clean score (its final P(given label) when the run's own detector is ``gmm``, else 1 - ``noise_score``);
    "argmax" and "confident_learning" (cleanlab) use the final class probabilities. ``seed``: of the GMM fit
    (None: the run's own seed, so that ``gmm`` repeats the run's fit). ``verified``: a CSV of true labels for
    some samples (columns ``index`` or ``path``, and ``label``, a class name or id); the metrics are then
    measured on those samples only.
    """
    if detector not in DETECTORS:
        raise DataError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    run_dir = Path(run_dir)
    if not (run_dir / FINISHED).is_file():
        raise DataError(f"{run_dir}: not a finished noisykd run (no {FINISHED}); continue an interrupted run with "
                        f"noisykd train --resume {run_dir}")
    from ..engine.inputs import verify_inputs

    verify_inputs(run_dir)  # its config and noisy labels as the run wrote them
    if detector == "cv" or detector.startswith("cv:"):
        return _detect_cross_validated(run_dir, detector.partition(":")[2] or CV_DEFAULT_RULE, seed, verified)
    samples = read_samples(run_dir / "samples.npz")
    missing = sorted({"given_label", "noise_score", "flagged", "index"} - set(samples))
    if missing:
        raise DataError(f"{run_dir / 'samples.npz'}: no column(s) {missing}; was the run made by another version of "
                        "noisykd?")
    summary = _read_summary(run_dir / "summary.json")
    in_train = samples["in_train"] == 1 if "in_train" in samples else samples["flagged"] >= 0
    rows = np.flatnonzero(in_train)
    given = samples["given_label"][rows]
    probs = samples["pred_probs"][rows].astype(np.float64) if "pred_probs" in samples else None
    num_classes = probs.shape[1] if probs is not None else int(given.max()) + 1
    classes = tuple(summary.get("classes") or (str(c) for c in range(num_classes)))
    own = summary.get("detection") or {}
    own_name = detector_name(own.get("detector", "the run's own"))
    group = samples["group"][rows] if "group" in samples else np.full(len(rows), -1)
    if detector == "auto":
        flagged = samples["flagged"][rows] == 1
        noise_score = samples["noise_score"][rows].astype(np.float64)
        name, rule, note = own_name, own.get("rule", ""), own.get("note", "")
    else:
        if detector in ("argmax", "confident_learning") and probs is None:
            raise DataError(f"{run_dir}: detector {detector!r} needs the run's class probabilities (pred_probs), "
                            "which this run did not save")
        issues = find_label_issues(given, probs if detector in ("argmax", "confident_learning") else None,
                                   scores=_clean_score(samples, rows, own_name),
                                   method=detector, seed=_run_seed(run_dir) if seed is None else seed)
        flagged, noise_score = issues.is_label_issue, issues.noise_score
        group = issues.group if issues.group is not None else np.full(len(rows), -1)
        name, rule = detector, f"{issues.thresholds.get('rule', detector)}, re-decided from the run's scores"
        note = ""
    suggested = samples["suggested_label" if "suggested_label" in samples else "predicted_label"][rows]
    if probs is not None:  # a suggestion is another class than the given one
        suggested = np.where(suggested != given, suggested, most_likely_other(given, probs))
    paths = samples["path"][rows] if "path" in samples else None
    truth, metrics = _truth_and_metrics(samples, rows, given, flagged, noise_score, classes, paths, verified)
    return RunDetection(name, rule, note, classes, samples["index"][rows], paths, given, suggested.astype(np.int64),
                        noise_score.astype(np.float64), np.asarray(group, dtype=np.int64),
                        np.asarray(flagged, dtype=np.int64), truth, metrics,
                        None if probs is None else estimate_noise_matrix(given, probs), probs)


def _clean_score(samples: dict[str, np.ndarray], rows: np.ndarray, own_detector: str) -> np.ndarray:
    """The run's clean score of ``rows`` (float64, in [0, 1], higher = cleaner). For the engine's default detector
    ``gmm`` that is the final P(given label), read from ``p_given``: the stored noise score, 1 - P in float32,
    rounds the smallest probabilities to 0, which moves the GMM's min-max normalised losses."""
    if own_detector == "gmm" and "p_given" in samples:
        return np.clip(samples["p_given"][rows].astype(np.float64), 0, 1)
    return np.clip(1.0 - samples["noise_score"][rows].astype(np.float64), 0, 1)


def _run_seed(run_dir: Path) -> int:
    """The run's training seed (its config.yaml; 0 when it names none), which its own GMM fit used."""
    from ..config import read_config_file
    from ..errors import ConfigError

    try:
        seed = read_config_file(run_dir / "config.yaml").get("seed", 0)
    except ConfigError:
        return 0  # verify_inputs has checked the file; a config this cannot read decides nothing else here
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else 0


def _detect_cross_validated(run_dir: Path, rule: str, seed: int | None, verified) -> RunDetection:
    """``rule`` on the run's cross-validated probabilities (``RUN/cv/cv_probs.npz``): every labelled sample."""
    from ..crossval import CrossValidated, cv_path

    samples = read_samples(run_dir / "samples.npz")
    cv = CrossValidated.load(cv_path(run_dir))
    rows = cv.index
    if len(rows) and (rows.max() >= len(samples["given_label"]) or
                      not np.array_equal(samples["given_label"][rows], cv.given_label)):
        raise DataError(f"{cv_path(run_dir)}: its labels are not the run's; run noisykd detect {run_dir} --cv K again")
    summary = _read_summary(run_dir / "summary.json")
    given, probs = cv.given_label, cv.pred_probs.astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    classes = tuple(summary.get("classes") or (str(c) for c in range(probs.shape[1])))
    issues = find_label_issues(given, probs, method=rule, seed=0 if seed is None else seed)
    paths = samples["path"][rows] if "path" in samples else None
    flagged, noise_score = issues.is_label_issue, issues.noise_score
    truth, metrics = _truth_and_metrics(samples, rows, given, flagged, noise_score, classes, paths, verified)
    group = issues.group if issues.group is not None else np.full(len(rows), -1)
    what = f"{cv.folds}-fold cross-validated probabilities ({cv.checkpoint} checkpoint of each fold)"
    return RunDetection(f"cv:{rule}", f"{issues.thresholds.get('rule', rule)}, on {what}", "", classes, rows, paths,
                        given, most_likely_other(given, probs), noise_score.astype(np.float64),
                        np.asarray(group, dtype=np.int64), np.asarray(flagged, dtype=np.int64), truth, metrics,
                        estimate_noise_matrix(given, probs), probs)


def _truth_and_metrics(samples, rows, given, flagged, noise_score, classes, paths, verified):
    if verified is not None:
        truth_labels = read_verified(verified, samples["index"][rows], paths, classes)
        known = truth_labels >= 0
        if not known.any():
            raise DataError(f"{verified}: none of its samples is a training sample of this run")
        is_noisy = given[known] != truth_labels[known]
        metrics = detection_metrics(is_noisy, np.asarray(flagged, dtype=bool)[known], noise_score[known])
        return f"{int(known.sum())} verified labels ({verified})", metrics
    if "is_noisy" in samples:
        return "known (the run's clean labels)", detection_metrics(samples["is_noisy"][rows].astype(bool),
                                                                  np.asarray(flagged, dtype=bool), noise_score)
    return "unknown", None


def read_verified(path: str | Path, index: np.ndarray, paths: np.ndarray | None,
                  classes: tuple[str, ...]) -> np.ndarray:
    """True labels from a CSV (columns ``index`` or ``path``, and ``label``: a class name or id), aligned with
    ``index``: int64, -1 where the CSV says nothing. Errors name the file and line."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in reader.fieldnames or []]
            reader.fieldnames = fields
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read the verified labels: {e}") from None
    key = "index" if "index" in fields else "path" if "path" in fields else None
    if key is None or "label" not in fields:
        raise DataError(f"{path}: needs the columns 'label' and 'index' (or 'path'), found {fields}")
    if key == "path" and paths is None:
        raise DataError(f"{path}: identifies samples by path, but this run's data has no image files; use 'index'")
    position = ({int(i): p for p, i in enumerate(index)} if key == "index"
                else {os.path.realpath(str(x)): p for p, x in enumerate(paths)})
    by_name = {name: c for c, name in enumerate(classes)}
    out = np.full(len(index), -1, dtype=np.int64)
    first_line: dict[int, int] = {}
    for line, row in rows:
        ident, label = (row.get(key) or "").strip(), (row.get("label") or "").strip()
        try:
            where = position[int(ident)] if key == "index" else position[os.path.realpath(ident)]
        except (KeyError, ValueError):
            raise DataError(f"{path}, line {line}: {key} {ident!r} is not a training sample of this run") from None
        if where in first_line:  # two verdicts on one sample: which one is true is the user's call, not ours
            raise DataError(f"{path}, line {line}: {key} {ident!r} is verified a second time (first on line "
                            f"{first_line[where]}); keep one line per sample")
        first_line[where] = line
        if label in by_name:
            out[where] = by_name[label]
        elif label.isdigit() and int(label) < len(classes):
            out[where] = int(label)
        else:
            raise DataError(f"{path}, line {line}: label {label!r} is not a class of this run ({', '.join(classes)})")
    return out


def read_samples(path: Path) -> dict[str, np.ndarray]:
    """The per-sample arrays, numeric only (and the image paths as strings); a damaged file is one DataError."""
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
    bad = sorted(k for k, v in samples.items() if v.dtype.kind not in ("U" if k == "path" else "biuf"))
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
