"""``noisykd clean``: a cleaned copy of a data set from a run's label issues, and a gallery of the suspects.

The user's files are never touched: everything goes into a new (or empty) output folder.

* folder and CSV sources: ``manifest.csv`` (``path,label,split``, absolute paths, class names), which
  ``folder:OUT/manifest.csv`` reads back;
* every other source: ``cleaned.npz`` (``x_train, y_train, x_val, y_val, x_test, y_test, classes``), which
  ``npz:`` reads back;
* ``suspects.png``: the top suspects, each titled with its rank, file name (or sample index), given and suggested
  class and noise score, as ``label_issues-DETECTOR.csv`` (the detector's whole ranking, as ``noisykd detect``
  writes it) holds them;
* ``clean.json``: what was decided, with the counts and the rule; ``plan.npz``: per judged sample (dataset
  ``index``) the ``label`` it keeps (-1: dropped).

Which samples: the suspects are the samples the detector flags, or, with ``top`` / ``fraction``, the N (or the
share F of the judged samples) most likely wrong by its ranking, flagged or not.

What happens to them (``action``): ``drop`` removes them; ``relabel`` gives a suspect the suggested class (the
most likely class other than the given one) only where the detector's class probabilities are confident about it
(P(suggested) >= ``relabel_min`` and P(given) <= ``given_max``: relabelling a correctly labelled sample makes a
new error, see :data:`RELABEL_MIN`), and drops (``rest="drop"``) or keeps (``rest="keep"``) the other suspects;
``review`` keeps every label and adds the columns ``suspect``, ``suggested`` and ``noise_score`` for a person.

Samples the detector does not judge are kept as they are: the run's test split always, and its noisy-validation
samples unless the detector covers them (the ``cv`` detectors do). The run's validation samples stay the
validation split of the cleaned data (``validation`` rows, or ``x_val``), so that a run on it selects its
best epoch on the same samples.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .config import load_config
from .data import ImageDataset
from .detect.from_run import SCORE_DECIMALS, RunDetection, detect_from_run, results_files, score_text
from .errors import ConfigError, DataError, NoisyKDError, OutputError

ACTIONS = ("drop", "relabel", "review")
RESTS = ("drop", "keep")
#: relabel a suspect only where P(suggested) >= this ... (benchmarks/results/practitioner-*.md: the threshold
#: at which relabelling stopped adding wrong labels on both data sets)
RELABEL_MIN = 0.8
#: ... and P(given) <= this
GIVEN_MAX = 0.1


@dataclass(frozen=True)
class CleaningRule:
    """How suspects are chosen and treated (module docstring).

    action: drop, relabel or review. top / fraction: the N / the share of judged samples most likely wrong
    (at most one; None: the flagged ones). relabel_min, given_max: the confidence rule for relabelling. rest:
    what ``relabel`` does with the suspects that fail the rule: drop or keep.
    """

    action: str = "drop"
    top: int | None = None
    fraction: float | None = None
    relabel_min: float = RELABEL_MIN
    given_max: float = GIVEN_MAX
    rest: str = "drop"

    def validate(self) -> "CleaningRule":
        if self.action not in ACTIONS:
            raise ConfigError(f"unknown action {self.action!r}; choose one of {', '.join(ACTIONS)}")
        if self.rest not in RESTS:
            raise ConfigError(f"--rest must be one of {', '.join(RESTS)}, got {self.rest!r}")
        if self.top is not None and self.fraction is not None:
            raise ConfigError("give --top N or --fraction F, not both")
        if self.top is not None and (isinstance(self.top, bool) or self.top < 0):
            raise ConfigError(f"--top must be >= 0 (samples), got {self.top}")
        if self.fraction is not None and not 0 <= self.fraction <= 1:
            raise ConfigError(f"--fraction must lie in [0, 1], got {self.fraction}")
        for name in ("relabel_min", "given_max"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} must lie in [0, 1] (a probability), got "
                                  f"{getattr(self, name)}")
        return self

    def describe(self) -> str:
        which = (f"the {self.top} labels most likely wrong" if self.top is not None else
                 f"the {100 * self.fraction:g}% of labels most likely wrong" if self.fraction is not None else
                 "the flagged labels")
        if self.action == "relabel":
            return (f"{which}: relabelled where P(suggested) >= {self.relabel_min:g} and P(given) <= "
                    f"{self.given_max:g}, the others {'dropped' if self.rest == 'drop' else 'kept'}")
        return f"{which}: {'dropped' if self.action == 'drop' else 'marked for review'}"


@dataclass(frozen=True)
class CleaningPlan:
    """Per judged sample (aligned with the detection's rows): ``suspect`` (chosen by the rule), ``relabel``
    (given the suggested class), ``drop``, and ``label``, the label it keeps (bool/int arrays)."""

    suspect: np.ndarray
    relabel: np.ndarray
    drop: np.ndarray
    label: np.ndarray


def plan_cleaning(noise_score: np.ndarray, flagged: np.ndarray, given: np.ndarray, suggested: np.ndarray,
                  probs: np.ndarray | None, rule: CleaningRule) -> CleaningPlan:
    """The decision for each judged sample (arrays of length N; ``probs`` N x C, needed to relabel).

    Suspects: the flagged ones, or the ``top`` N / ``fraction`` of N with the highest noise score (ties by
    position). Relabelled (action relabel): suspects with P(suggested) >= relabel_min and P(given) <= given_max.
    Dropped: every suspect (drop), or the suspects not relabelled (relabel with rest="drop").

    Example: scores (0.9, 0.8, 0.1), top 2, relabel with P(suggested) = (0.95, 0.5, .) -> sample 0 relabelled,
    sample 1 dropped, sample 2 kept.
    """
    rule.validate()
    n = len(noise_score)
    if rule.top is not None or rule.fraction is not None:
        order = np.lexsort((np.arange(n), -np.asarray(noise_score, dtype=np.float64)))
        count = min(n, rule.top if rule.top is not None else int(round(rule.fraction * n)))
        suspect = np.zeros(n, dtype=bool)
        suspect[order[:count]] = True
    else:
        suspect = np.asarray(flagged, dtype=bool).copy()
    relabel = np.zeros(n, dtype=bool)
    if rule.action == "relabel":
        if probs is None:
            raise DataError("relabelling needs the detector's class probabilities, which this run did not save")
        rows = np.arange(n)
        relabel = suspect & (probs[rows, suggested] >= rule.relabel_min) & (probs[rows, given] <= rule.given_max)
    drop = {"drop": suspect, "relabel": suspect & ~relabel & (rule.rest == "drop"),
            "review": np.zeros(n, dtype=bool)}[rule.action]
    label = np.where(relabel, suggested, given).astype(np.int64)
    return CleaningPlan(suspect, relabel, drop, label)


@dataclass(frozen=True)
class CleanResult:
    """What ``clean_run`` wrote (data file, gallery) and decided (counts over the judged samples)."""

    out_dir: Path
    data_file: Path
    gallery: Path | None
    action: str
    flagged: int
    kept: int
    relabelled: int
    dropped: int = 0
    judged: int = 0
    ranking: Path | None = None


def clean_run(run_dir: str | Path, out_dir: str | Path, action: str = "review", detector: str = "auto",
              top: int = 24, verified: str | Path | None = None, rule: CleaningRule | None = None) -> CleanResult:
    """Write the cleaned data set of a finished run into ``out_dir`` (new or empty); see the module docstring.

    ``detector``: as for ``noisykd detect`` ("auto": the cross-validated one when the run has ``RUN/cv``, else
    the run's own). ``top``: images in the gallery (0: none). ``rule``: which suspects and what to do with them
    (its ``action`` wins over ``action``, which is kept for the plain calls ``clean_run(run, out, "drop")``).
    """
    from .crossval import cv_path

    from .engine.inputs import verify_inputs
    from .engine.setup import load_source

    rule = (rule or CleaningRule(action=action)).validate()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _check_out(out_dir, run_dir)
    requested = detector
    if detector == "auto" and cv_path(run_dir).is_file():
        detector = "cv"
    found = detect_from_run(run_dir, detector, verified=verified)
    config = load_config(run_dir / "config.yaml")
    dataset = load_source(config.data)
    verify_inputs(run_dir, dataset.meta, config.data.spec)  # the images, labels and config the run trained on
    given = _given_labels(run_dir, len(dataset.train))
    role = _sample_roles(run_dir, len(dataset.train), config.data.train_subset is not None)
    plan = plan_cleaning(found.noise_score, found.flagged, found.given_label, found.suggested_label,
                         found.pred_probs, rule)
    label, dropped, suspect = given.copy(), np.zeros(len(given), dtype=bool), np.zeros(len(given), dtype=bool)
    label[found.index], dropped[found.index], suspect[found.index] = plan.label, plan.drop, plan.suspect
    suggested = given.copy()
    suggested[found.index] = found.suggested_label
    score = np.full(len(dataset.train), np.nan)
    score[found.index] = found.noise_score
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = {"label": label, "drop": dropped, "suspect": suspect, "suggested": suggested, "score": score,
               "role": role}
    files = dataset.meta.get("train_files")
    if files is not None:
        data_file = _write_manifest(out_dir / "manifest.csv", dataset, files, columns, rule.action)
    else:
        data_file = _write_npz(out_dir / "cleaned.npz", dataset, columns, rule.action)
    ranking = results_files(out_dir, found.detector)[0]
    found.write_csv(ranking)  # the gallery's ranks and scores, and the rest of the ranking
    gallery = plot_suspects(found, dataset, out_dir / "suspects.png", top) if top > 0 else None
    _write_plan(out_dir / "plan.npz", found.index, np.where(plan.drop, -1, plan.label))
    result = CleanResult(out_dir, data_file, gallery, rule.action, int(plan.suspect.sum()),
                         int(((role != "unused") & ~dropped).sum()), int(plan.relabel.sum()), int(plan.drop.sum()),
                         len(found.index), ranking)
    (out_dir / "clean.json").write_text(json.dumps({
        "run": str(run_dir), "data": config.data.spec, "requested_detector": requested, "detector": found.detector,
        "detector_rule": found.rule,
        "rule": asdict(rule), "decision": rule.describe(), "judged": result.judged, "suspects": result.flagged,
        "dropped": result.dropped, "relabelled": result.relabelled, "kept": result.kept,
        "kept_train": int(((role == "train") & ~dropped).sum()), "train_before": int((role == "train").sum()),
        "data_file": data_file.name, "gallery": None if gallery is None else gallery.name,
        "ranking": ranking.name}, indent=2) + "\n")
    return result


def _check_out(out_dir: Path, run_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputError(f"{out_dir}: not a new or empty folder; noisykd clean writes only into one (it never "
                          "changes existing files)")
    if out_dir.resolve() == run_dir.resolve():
        raise OutputError(f"{out_dir}: is the run folder; choose a new folder for the cleaned data")
    from .outfiles import check_output_place, data_root

    try:
        spec = load_config(run_dir / "config.yaml").data.spec
    except NoisyKDError:
        spec = None  # the run's own checks say what is wrong with it
    check_output_place(out_dir, data_roots=[data_root(spec)])


def _given_labels(run_dir: Path, count: int) -> np.ndarray:
    """The labels the run trained with (its ``noisy_labels.npz``), by dataset index."""
    from .noise import NoisyLabels

    return NoisyLabels.load(run_dir / "noisy_labels.npz", num_samples=count).labels.copy()


def _write_plan(path: Path, index: np.ndarray, label: np.ndarray) -> None:
    """``plan.npz``: the judged samples' dataset ``index`` and ``label`` after cleaning (-1: dropped)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, index=np.asarray(index, dtype=np.int64), label=np.asarray(label, dtype=np.int64))
    os.replace(tmp, path)


def _sample_roles(run_dir: Path, count: int, has_subset: bool) -> np.ndarray:
    """Per sample of the source's training split: "train" (the run trained on it), "validation" (its held-out
    noisy validation) or "unused" (outside its ``data.train_subset``), from the run's ``samples.npz``."""
    from .detect.from_run import read_samples

    samples = read_samples(run_dir / "samples.npz")
    in_train = samples.get("in_train")
    if in_train is None or len(in_train) != count:
        raise DataError(f"{run_dir / 'samples.npz'}: its rows do not match the data's {count} training images; was "
                        "the data changed since the run?")
    if "in_val" in samples:
        in_val = samples["in_val"] == 1
    elif has_subset:
        raise DataError(f"{run_dir}: made by an earlier noisykd that did not record its validation samples, and it "
                        "trained on a subset: train it again to clean its data")
    else:
        in_val = in_train == 0
    return np.where(in_train == 1, "train", np.where(in_val, "validation", "unused"))


def _write_manifest(path: Path, dataset: ImageDataset, files, columns: dict, action: str) -> Path:
    """``path,label,split`` (+ ``suspect,suggested,noise_score`` for review), absolute paths, class names; the
    run's validation samples as split ``validation``, its test images as ``test``."""
    classes = dataset.classes
    review = action == "review"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"] + (["suspect", "suggested", "noise_score"] if review else []))
        for i, file in enumerate(files):
            if columns["drop"][i] or columns["role"][i] == "unused":
                continue
            row = [os.path.abspath(file), classes[columns["label"][i]], columns["role"][i]]
            if review:
                score = columns["score"][i]
                row += [int(columns["suspect"][i]), classes[columns["suggested"][i]],
                        "" if np.isnan(score) else f"{score:.6f}"]
            writer.writerow(row)
        for split, key in (("validation", "val"), ("test", "test")):
            part = getattr(dataset, key)
            for file, label in zip(dataset.meta.get(f"{key}_files") or (), part.labels if part is not None else ()):
                writer.writerow([os.path.abspath(file), classes[label], split] + (["", "", ""] if review else []))
    os.replace(tmp, path)
    return path


def _write_npz(path: Path, dataset: ImageDataset, columns: dict, action: str) -> Path:
    """x/y of train (kept training samples), val (the run's validation samples, or the source's own) and test."""
    keep = ~columns["drop"]
    is_train, is_val = keep & (columns["role"] == "train"), keep & (columns["role"] == "validation")
    images, labels = dataset.train.images, columns["label"]
    arrays = {"x_train": images[is_train], "y_train": labels[is_train].astype(np.int64),
              "classes": np.asarray(dataset.classes, dtype=str)}
    if is_val.any():
        arrays.update(x_val=images[is_val], y_val=labels[is_val].astype(np.int64))
    elif dataset.val is not None:
        arrays.update(x_val=dataset.val.images, y_val=dataset.val.labels)
    if dataset.test is not None:
        arrays.update(x_test=dataset.test.images, y_test=dataset.test.labels)
    if action == "review":
        arrays.update(suspect=columns["suspect"][is_train].astype(np.int64),
                      suggested=columns["suggested"][is_train].astype(np.int64),
                      noise_score=columns["score"][is_train].astype(np.float32))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)
    return path


#: Decimals a gallery tile shows of a noise score, unless more are needed to tell the tiles apart (up to the CSV's).
GALLERY_DECIMALS = 3
#: Longest file name a tile shows whole (a longer one keeps its start and end around "…").
TILE_NAME_CHARS = 22


def suspect_titles(found: RunDetection, top: int = 24) -> list[str]:
    """The gallery's tile titles, most likely wrong first, one per sample of the ``top``: ``#RANK NAME`` (the rank
    and, for folder and CSV sources, the image's file name, else ``index N``), ``GIVEN → SUGGESTED`` and
    ``score S``. RANK, the file and S are the label_issues CSV's ``rank``, ``path`` and ``noise_score`` of that
    sample (:meth:`RunDetection.write_csv`); S is that CSV value rounded to 3 decimals, or to more (up to all of the
    CSV's) when at 3 most tiles would show the same few scores: a run that memorised its labels puts many scores
    within 0.0005 of 1, and "1.000" on every tile ranks nothing."""
    order = found.ranking()[:top]
    written = [score_text(found.noise_score[i]) for i in order]  # what the CSV holds
    decimals = _decimals_to_tell_apart(written)
    titles = []
    for rank, (i, text) in enumerate(zip(order, written), 1):
        given, suggested = int(found.given_label[i]), int(found.suggested_label[i])
        name = _tile_name(Path(str(found.path[i])).name) if found.path is not None else f"index {int(found.index[i])}"
        titles.append(f"#{rank} {name}\n{found.class_name(given)[:10]} → {found.class_name(suggested)[:10]}\n"
                      f"score {float(text):.{decimals}f}")
    return titles


def _decimals_to_tell_apart(written: list[str]) -> int:
    """The fewest decimals, at least :data:`GALLERY_DECIMALS`, at which at least half of the different scores
    written with the CSV's :data:`SCORE_DECIMALS` still look different. Two neighbours sharing a rounded score
    mislead no one (the rank orders them); most tiles sharing one does."""
    distinct = len(set(written))
    for decimals in range(GALLERY_DECIMALS, SCORE_DECIMALS):
        if 2 * len({f"{float(t):.{decimals}f}" for t in written}) >= distinct:
            return decimals
    return SCORE_DECIMALS


def _tile_name(name: str) -> str:
    """A file name short enough for a tile: whole, or its start and end around "…"."""
    if len(name) <= TILE_NAME_CHARS:
        return name
    keep = TILE_NAME_CHARS - 1
    return name[:keep // 2] + "…" + name[-(keep - keep // 2):]


def suspects_figure(found: RunDetection, dataset: ImageDataset, top: int = 24, columns: int = 8):
    """The gallery as a matplotlib Figure: the ``top`` training samples most likely wrong, each titled by
    :func:`suspect_titles` (flagged ones framed and titled in red). The caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = found.ranking()[:top]
    titles = suspect_titles(found, top)
    rows = max(1, int(np.ceil(len(order) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(order):]:
        ax.axis("off")
    for ax, i, title in zip(axes.flat, order, titles):
        ax.set_xticks([])
        ax.set_yticks([])
        image = dataset.train.images[int(found.index[i])]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                  interpolation="nearest")
        ax.set_title(title, fontsize=7.5, color="tab:red" if found.flagged[i] else "black")
        for side in ax.spines.values():
            side.set_color("tab:red" if found.flagged[i] else "lightgrey")
            side.set_linewidth(2 if found.flagged[i] else 1)
    fig.suptitle(f"the {len(order)} labels most likely wrong ({found.detector}): given → suggested; rank and "
                 "score as in the CSV", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (2.4 * rows + 0.4)), h_pad=1.2)
    return fig


def plot_suspects(found: RunDetection, dataset: ImageDataset, path: Path, top: int = 24, columns: int = 8) -> Path:
    """Write :func:`suspects_figure` to ``path`` (PNG) and return ``path``."""
    import matplotlib.pyplot as plt

    fig = suspects_figure(found, dataset, top, columns)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
