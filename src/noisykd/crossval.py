"""Out-of-sample class probabilities for every labelled sample of a run, by K-fold cross-validation.

A network that trained on an image has seen its label, right or wrong, and the more it memorises, the more it
agrees with a wrong label: its own probabilities rank wrong labels poorly (cleanlab's documentation asks for
out-of-sample ones). Here the K fold runs of a finished run ``RUN`` each train on all but one fold of RUN's
training samples (a stratified split seeded by RUN's ``data.val_seed``: ``data.cv_folds``, ``data.cv_fold``) and
predict the fold they did not train on; RUN's own noisy-validation samples, which RUN never trained on, are
predicted by RUN itself. Every labelled sample thus gets probabilities from a network that never saw its label.

The fold runs are ordinary run folders, ``RUN/cv/fold-K``, with RUN's config (method, network, schedule, data,
labels) but for the fold keys: a finished fold is reused, an interrupted one resumed. Which checkpoint predicts
is ``checkpoint`` ("best": the best noisy-validation epoch, default; "last"). The probabilities go to
``RUN/cv/cv_probs.npz`` (``index``, ``given_label``, ``pred_probs`` N x C, ``fold``: -1 for RUN's validation
samples), which ``noisykd detect`` / ``clean`` read (detectors ``cv:RULE``).

Example::

    from noisykd.crossval import cross_validate
    cv = cross_validate("runs/photos", folds=4)        # trains runs/photos/cv/fold-0..3 (or reuses them)
    cv.pred_probs.shape, cv.index.shape                 # (N, C), (N,): every labelled sample of the run
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import from_dict, load_config
from .engine.checkpoint import BEST, LAST, load_checkpoint
from .engine.runfolder import FINISHED
from .errors import ConfigError, DataError

log = logging.getLogger("noisykd.crossval")
CV_FOLDER = "cv"
CV_FILE = "cv_probs.npz"
CHECKPOINTS = {"best": BEST, "last": LAST}
#: Folds when none are asked for: see benchmarks/results/practitioner-*.md for the measurement behind it.
DEFAULT_FOLDS = 4
#: Keys of a run's config that a fold run may set differently: where it runs, not what it computes.
FOLD_MAY_CHANGE = ("device", "threads", "data_on_device", "eval_batch_size")


@dataclass(frozen=True)
class CrossValidated:
    """Out-of-sample probabilities, one row per labelled sample of a run (its training and validation samples).

    index:      int64 (N,) dataset indices.
    given_label: int64 (N,) the labels the run trained with.
    pred_probs: float32 (N, C) class probabilities from a network that did not train on the sample.
    fold:       int64 (N,) the fold run that predicted it, -1 for the run's own validation samples.
    folds, checkpoint: the number of folds and which checkpoint predicted ("best" or "last").
    """

    index: np.ndarray
    given_label: np.ndarray
    pred_probs: np.ndarray
    fold: np.ndarray
    folds: int
    checkpoint: str

    def save(self, path: str | Path) -> Path:
        """Write the arrays to ``path`` (an .npz, atomically)."""
        path = Path(path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two processes finishing at once do not collide
        with open(tmp, "wb") as f:
            np.savez_compressed(f, index=self.index, given_label=self.given_label, pred_probs=self.pred_probs,
                                fold=self.fold, folds=np.int64(self.folds), checkpoint=np.str_(self.checkpoint))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CrossValidated":
        """Read what :meth:`save` wrote; a missing or damaged file is one DataError naming it."""
        import zipfile

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no cross-validated probabilities; make them with noisykd detect RUN --cv K")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: damaged ({type(e).__name__}: {e}); run noisykd detect RUN --cv K again") from None
        needed = {"index", "given_label", "pred_probs", "fold", "folds", "checkpoint"}
        if needed - set(arrays):
            raise DataError(f"{path}: lacks {sorted(needed - set(arrays))}; not a noisykd cross-validation file")
        probs = arrays["pred_probs"]
        n = len(arrays["index"])
        if probs.ndim != 2 or len(probs) != n or len(arrays["given_label"]) != n or len(arrays["fold"]) != n \
                or probs.dtype.kind != "f" or not np.isfinite(probs).all():
            raise DataError(f"{path}: its arrays do not fit together (expected N indices, labels, folds and N x C "
                            "finite probabilities)")
        return cls(arrays["index"].astype(np.int64), arrays["given_label"].astype(np.int64),
                   probs.astype(np.float32), arrays["fold"].astype(np.int64), int(arrays["folds"]),
                   str(arrays["checkpoint"]))


def cv_path(run_dir: str | Path) -> Path:
    """Where a run's cross-validated probabilities live."""
    return Path(run_dir) / CV_FOLDER / CV_FILE


def fold_config(run_config: dict, run_dir: Path, folds: int, fold: int, overrides: dict | None = None) -> dict:
    """The config of fold run ``fold`` of ``folds``: the run's own, with the fold keys, its folder
    ``RUN/cv/fold-K`` and ``overrides`` (only the keys of :data:`FOLD_MAY_CHANGE`)."""
    bad = sorted(set(overrides or {}) - set(FOLD_MAY_CHANGE))
    if bad:
        raise ConfigError(f"a fold run trains what its run trained; only {', '.join(FOLD_MAY_CHANGE)} may change, "
                          f"not {', '.join(bad)}")
    config = copy.deepcopy(run_config)
    config["data"] = {**config["data"], "cv_folds": folds, "cv_fold": fold}
    config.update(overrides or {}, out_dir=str(run_dir / CV_FOLDER / f"fold-{fold}"))
    return config


def cross_validate(run_dir: str | Path, folds: int = DEFAULT_FOLDS, checkpoint: str = "best",
                   overrides: dict | None = None, on_fold: Callable[[int, int, str], None] | None = None,
                   progress: bool | None = False) -> CrossValidated:
    """Train (or reuse, or resume) the ``folds`` fold runs of the finished run ``run_dir`` and collect the
    out-of-sample probabilities of every labelled sample (module docstring); saved to ``RUN/cv/cv_probs.npz``.

    checkpoint: "best" (each fold's best noisy-validation epoch; the run's ``best.pt`` for its validation
    samples) or "last". overrides: device / threads for the fold runs. on_fold(fold, folds, state) is told
    "start", "resume" or "reuse" before each fold.
    """
    from .engine.setup import load_source, prepare_data
    from .reproduce import train_or_reuse

    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    if not isinstance(folds, int) or isinstance(folds, bool) or not 2 <= folds <= 100:
        raise ConfigError(f"--cv takes 2 to 100 folds, got {folds!r}")
    if not (run_dir / FINISHED).is_file():
        raise DataError(f"{run_dir}: not a finished noisykd run (no {FINISHED}); cross-validation folds are made "
                        "from a finished run's config")
    run_config = load_config(run_dir / "config.yaml")
    dataset = load_source(run_config.data)
    parts: list[tuple[np.ndarray, np.ndarray, int]] = []  # (dataset indices, probabilities, fold)
    given = None
    for fold in range(folds):
        config = fold_config(run_config.to_dict(), run_dir, folds, fold, overrides)
        data = prepare_data(from_dict(copy.deepcopy(config)).validate().data, dataset=dataset)
        given = data.noisy.labels
        train_or_reuse(config, data=data, progress=progress,
                       on_state=None if on_fold is None else (lambda state, f=fold: on_fold(f, folds, state)))
        parts.append((data.heldout.indices, _predict(config, data, data.heldout, checkpoint), fold))
    run_data = prepare_data(run_config.data, dataset=dataset)
    if run_data.held_out_val is not None:
        parts.append((run_data.val.indices, _predict(run_config.to_dict(), run_data, run_data.val, checkpoint), -1))
    index = np.concatenate([p[0] for p in parts])
    order = np.argsort(index, kind="stable")
    result = CrossValidated(index=index[order].astype(np.int64), given_label=given[index[order]].astype(np.int64),
                            pred_probs=np.concatenate([p[1] for p in parts])[order],
                            fold=np.concatenate([np.full(len(p[0]), p[2]) for p in parts])[order].astype(np.int64),
                            folds=folds, checkpoint=checkpoint)
    result.save(cv_path(run_dir))
    return result


def _predict(config: dict, data, split, checkpoint: str) -> np.ndarray:
    """Softmax of the method's prediction on ``split`` with the run's ``checkpoint`` ("best"/"last"): float32."""
    from .engine import Trainer

    path = Path(config["out_dir"]) / "checkpoints" / CHECKPOINTS[checkpoint]
    state = load_checkpoint(path)
    trainer = Trainer(from_dict(copy.deepcopy(config)).validate(), data=data, progress=False)
    trainer.build()
    trainer.load_networks(state)
    return torch.softmax(trainer.predict_split(split).logits, dim=1).numpy().astype(np.float32)
