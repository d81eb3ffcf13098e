"""``noisykd clean``: a cleaned copy of a data set from a run's label issues, and a gallery of the suspects.

The user's files are never touched: everything goes into a new (or empty) output folder.

* folder and CSV sources: ``manifest.csv`` (``path,label,split``, absolute paths, class names), which
  ``folder:OUT/manifest.csv`` reads back;
* every other source: ``cleaned.npz`` (``x_train, y_train, x_test, y_test, classes``), which ``npz:`` reads back;
* ``suspects.png``: the top suspects, each with its given and suggested class and its noise score.

Actions on the training samples a run flagged: ``drop`` them, ``relabel`` them to the suggested class (the most
likely class other than the given one), or ``review``: keep every label and add the columns ``suspect``,
``suggested`` and ``noise_score`` for a person to go through. Samples the run did not train on (its held-out
validation split, the test split) are kept as they are.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import load_config
from .data import ImageDataset, load_dataset
from .detect.from_run import RunDetection, detect_from_run
from .errors import DataError, OutputError

ACTIONS = ("drop", "relabel", "review")


@dataclass(frozen=True)
class CleanResult:
    """What ``clean_run`` wrote: the data file (manifest or npz), the gallery, and the counts."""

    out_dir: Path
    data_file: Path
    gallery: Path | None
    action: str
    flagged: int
    kept: int
    relabelled: int


def clean_run(run_dir: str | Path, out_dir: str | Path, action: str = "review", detector: str = "auto",
              top: int = 24, verified: str | Path | None = None) -> CleanResult:
    """Write the cleaned data set of a finished run into ``out_dir`` (new or empty); see the module docstring."""
    if action not in ACTIONS:
        raise DataError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _check_out(out_dir, run_dir)
    found = detect_from_run(run_dir, detector, verified=verified)
    config = load_config(run_dir / "config.yaml")
    options = {"resize": config.data.resize} if config.data.resize is not None else {}
    dataset = load_dataset(config.data.spec, **options)
    given = _given_labels(run_dir, len(dataset.train))
    flagged = np.zeros(len(dataset.train), dtype=bool)
    flagged[found.index[found.flagged == 1]] = True
    suggested = given.copy()
    suggested[found.index] = found.suggested_label
    score = np.full(len(dataset.train), np.nan)
    score[found.index] = found.noise_score
    out_dir.mkdir(parents=True, exist_ok=True)
    files = dataset.meta.get("train_files")
    if files is not None:
        data_file = _write_manifest(out_dir / "manifest.csv", dataset, files, given, flagged, suggested, score, action)
    else:
        data_file = _write_npz(out_dir / "cleaned.npz", dataset, given, flagged, suggested, score, action)
    gallery = plot_suspects(found, dataset, out_dir / "suspects.png", top) if top > 0 else None
    kept = int(len(given) - (flagged.sum() if action == "drop" else 0))
    result = CleanResult(out_dir, data_file, gallery, action, int(flagged.sum()), kept,
                         int(flagged.sum()) if action == "relabel" else 0)
    (out_dir / "clean.json").write_text(json.dumps({
        "run": str(run_dir), "data": config.data.spec, "action": action, "detector": found.detector,
        "rule": found.rule, "flagged": result.flagged, "kept": kept, "relabelled": result.relabelled,
        "data_file": data_file.name, "gallery": None if gallery is None else gallery.name}, indent=2) + "\n")
    return result


def _check_out(out_dir: Path, run_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputError(f"{out_dir}: not a new or empty folder; noisykd clean writes only into one (it never "
                          "changes existing files)")
    if out_dir.resolve() == run_dir.resolve():
        raise OutputError(f"{out_dir}: is the run folder; choose a new folder for the cleaned data")


def _given_labels(run_dir: Path, count: int) -> np.ndarray:
    """The labels the run trained with (its ``noisy_labels.npz``), by dataset index."""
    from .noise import NoisyLabels

    return NoisyLabels.load(run_dir / "noisy_labels.npz", num_samples=count).labels.copy()


def _write_manifest(path: Path, dataset: ImageDataset, files, given, flagged, suggested, score, action) -> Path:
    """``path,label,split`` (+ ``suspect,suggested,noise_score`` for review), absolute paths, class names."""
    classes = dataset.classes
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["path", "label", "split"] + (["suspect", "suggested", "noise_score"] if action == "review" else [])
        writer.writerow(header)
        for i, file in enumerate(files):
            if action == "drop" and flagged[i]:
                continue
            label = suggested[i] if action == "relabel" and flagged[i] else given[i]
            row = [os.path.abspath(file), classes[label], "train"]
            if action == "review":
                row += [int(flagged[i]), classes[suggested[i]], "" if np.isnan(score[i]) else f"{score[i]:.6f}"]
            writer.writerow(row)
        test_files = dataset.meta.get("test_files") or ()
        for file, label in zip(test_files, dataset.test.labels if dataset.test is not None else ()):
            writer.writerow([os.path.abspath(file), classes[label], "test"] + (["", "", ""] if action == "review" else []))
    os.replace(tmp, path)
    return path


def _write_npz(path: Path, dataset: ImageDataset, given, flagged, suggested, score, action) -> Path:
    keep = ~flagged if action == "drop" else np.ones(len(given), dtype=bool)
    labels = np.where(flagged & (action == "relabel"), suggested, given)
    arrays = {"x_train": dataset.train.images[keep], "y_train": labels[keep].astype(np.int64),
              "classes": np.asarray(dataset.classes, dtype=str)}
    if dataset.test is not None:
        arrays.update(x_test=dataset.test.images, y_test=dataset.test.labels)
    if action == "review":
        arrays.update(suspect=flagged.astype(np.int64), suggested=suggested.astype(np.int64),
                      noise_score=score.astype(np.float32))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)
    return path


def plot_suspects(found: RunDetection, dataset: ImageDataset, path: Path, top: int = 24, columns: int = 8) -> Path:
    """A grid of the ``top`` training samples most likely wrong: each image with its given and suggested class
    and its noise score (flagged ones framed in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = found.ranking()[:top]
    rows = max(1, int(np.ceil(len(order) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 2.2 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(order):]:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        ax.set_xticks([])
        ax.set_yticks([])
        image = dataset.train.images[int(found.index[i])]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                  interpolation="nearest")
        given, suggested = int(found.given_label[i]), int(found.suggested_label[i])
        ax.set_title(f"{found.class_name(given)[:10]} → {found.class_name(suggested)[:10]}\n"
                     f"score {found.noise_score[i]:.2f}", fontsize=8,
                     color="tab:red" if found.flagged[i] else "black")
        for side in ax.spines.values():
            side.set_color("tab:red" if found.flagged[i] else "lightgrey")
            side.set_linewidth(2 if found.flagged[i] else 1)
    fig.suptitle(f"the {len(order)} labels most likely wrong ({found.detector}): given → suggested", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (2.2 * rows + 0.4)), h_pad=1.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
