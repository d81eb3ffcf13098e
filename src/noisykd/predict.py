"""``noisykd predict``: class probabilities and the top classes of a trained run for any images.

The images are a data spec (every image of its train and test splits) or a folder of image files (no class
folders needed), resized to the size the network was trained on. They are normalised as the network was
trained (the checkpoint's constants), and predicted with the method's own prediction (BKD: P_A).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import from_dict
from .data import ImageDataset, ImageSplit, Normalization, load_dataset
from .data.sources.folder import decode_all, is_image_file
from .engine import Trainer
from .engine.checkpoint import load_checkpoint, run_checkpoint
from .engine.setup import PreparedData
from .errors import CheckpointError, DataError
from .noise import NoisyLabels
from .outfiles import write_new_files


@dataclass(frozen=True)
class Predictions:
    """Per image: where it comes from (``split``, ``index``, ``path`` or empty), and its class probabilities
    (N x C float32) under the run's class names."""

    classes: tuple[str, ...]
    split: np.ndarray
    index: np.ndarray
    path: np.ndarray
    probs: np.ndarray

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(class ids, probabilities), N x k, most probable first."""
        order = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(self.probs, order, axis=1)

    def write(self, csv_path: Path, top_k: int = 3) -> Path:
        """``csv_path`` (one row per image: split, index, path, then class and probability of the top k) and the
        same name with ``.npz`` (``pred_probs`` N x C, ``classes``, ``split``, ``index``, ``path``). Both are
        written, or neither, and never replace a file (:func:`noisykd.outfiles.write_new_files`)."""
        ids, values = self.top(top_k)

        def write_csv(raw) -> None:
            f = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            writer = csv.writer(f)
            writer.writerow(["split", "index", "path"] + [x for r in range(1, ids.shape[1] + 1)
                                                          for x in (f"class_{r}", f"prob_{r}")])
            for i in range(len(self.index)):
                row = [self.split[i], int(self.index[i]), spreadsheet_safe(self.path[i])]
                for c, p in zip(ids[i], values[i]):
                    row += [spreadsheet_safe(self.classes[c]), f"{p:.6f}"]
                writer.writerow(row)
            f.flush()
            f.detach()  # the caller closes (and syncs) the file

        write_new_files([(csv_path, write_csv), (npz_path(csv_path), lambda f: np.savez_compressed(
            f, pred_probs=self.probs, classes=np.asarray(self.classes), split=self.split, index=self.index,
            path=self.path))])  # both or neither
        return csv_path


def npz_path(csv_path: Path) -> Path:
    """Where the probabilities of ``csv_path`` go: the same name with ``.npz`` (``out.csv`` -> ``out.npz``; a name
    without ``.csv`` keeps it whole: ``run/samples.txt`` -> ``run/samples.txt.npz``, never another file's name)."""
    return csv_path.with_suffix(".npz") if csv_path.suffix == ".csv" else csv_path.with_name(csv_path.name + ".npz")


def spreadsheet_safe(cell: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula: text starting with = + - @ (or a tab / carriage
    return) gets a leading apostrophe, as OWASP advises for CSV injection."""
    return "'" + cell if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def predict(target: str | Path, images: str, best: bool = False) -> Predictions:
    """Predict ``images`` (a data spec or a folder of image files) with the run or checkpoint ``target``."""
    target = Path(target)
    path = run_checkpoint(target, best)
    state = load_checkpoint(path)
    shape = state.get("data_shape")
    if shape is None or "classes" not in shape:
        raise CheckpointError(f"{path}: written by an earlier noisykd, without its class names; train again")
    h, w, c = shape["image_shape"]
    classes = tuple(shape["classes"])
    splits = _load_images(images, (h, w, c))
    cfg = from_dict(state["config"]).validate()
    saved = state["normalization"]
    normalization = Normalization(tuple(saved["mean"]), tuple(saved["std"]), saved.get("source", ""))
    out = {k: [] for k in ("split", "index", "path", "probs")}
    for split_name, split, paths in splits:
        dataset = ImageDataset("predict", classes, split, normalization=normalization)
        noisy = NoisyLabels(split.labels, kind="given", params={})
        trainer = Trainer(cfg, data=PreparedData(dataset, split, None, None, noisy), progress=False)
        trainer.build()
        trainer.load_networks(state)
        logits = trainer.predict_split(split).logits
        out["split"] += [split_name] * len(split)
        out["index"].append(split.indices)
        out["path"] += list(paths) if paths is not None else [""] * len(split)
        out["probs"].append(torch.softmax(logits, 1).numpy().astype(np.float32))
    return Predictions(classes, np.asarray(out["split"]), np.concatenate(out["index"]), np.asarray(out["path"]),
                       np.concatenate(out["probs"]))


def _load_images(images: str, shape: tuple[int, int, int]) -> list[tuple[str, ImageSplit, list[str] | None]]:
    """(split name, images as a split with placeholder labels, file paths or None) for each part of ``images``."""
    h, w, c = shape
    folder = Path(images).expanduser()
    if folder.is_dir() and any(is_image_file(p) for p in folder.iterdir()):
        files = sorted(p for p in folder.iterdir() if is_image_file(p))
        decoded = [_fit(a, h, w, c, str(p)) for p, a in zip(files, decode_all(files, None))]
        split = ImageSplit(np.stack(decoded), np.zeros(len(files), np.int64), np.arange(len(files), dtype=np.int64))
        return [("files", split, [str(p) for p in files])]
    dataset = load_dataset(images)
    parts = []
    for name, split in (("train", dataset.train), ("test", dataset.test)):
        if split is None:
            continue
        if split.image_shape != (h, w, c):
            raise DataError(f"{images}: its {name} images are {'x'.join(map(str, split.image_shape))}, the network "
                            f"takes {h}x{w}x{c}")
        paths = dataset.meta.get(f"{name}_files")
        parts.append((name, dataclasses.replace(split, labels=np.zeros(len(split), np.int64)), paths))
    return parts


def _fit(image: np.ndarray, h: int, w: int, c: int, source: str) -> np.ndarray:
    """An image resized to h x w with c channels (grey <-> RGB), uint8 H x W x C."""
    from PIL import Image

    pil = Image.fromarray(image)
    pil = pil.convert("L" if c == 1 else "RGB")
    if pil.size != (w, h):
        pil = pil.resize((w, h), Image.Resampling.BILINEAR)
    array = np.asarray(pil, dtype=np.uint8)
    return array[..., None] if c == 1 else array
