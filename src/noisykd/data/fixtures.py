"""Small data sets written in the official file formats, for smoke runs where the real files are absent.

``noisykd reproduce --smoke`` and ``benchmarks/gpu_check.sh --smoke`` check the plumbing of a setting in CI,
which has no CIFAR-10: these writers give them a CIFAR-10 folder (``cifar-10-batches-py/``, the official pickled
batches), a CIFAR-100 folder (``cifar-100-python/``) and a CIFAR-10N file (``CIFAR-10_human.pt``, a torch zip of numpy arrays, as the official one) that
the real loaders read unchanged. The images are noise with a colour per class, so that a network learns
something; none of this is a benchmark.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
#: CIFAR-10N's label sets (key in the official file) and their real noise rates (Wei et al. 2022).
CIFAR10N_RATES = {"aggre_label": 0.0901, "random_label1": 0.1723, "random_label2": 0.1812,
                  "random_label3": 0.1764, "worse_label": 0.4021}


def write_cifar10(root: str | Path, per_batch: int = 60, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with ``per_batch`` 32x32 RGB images in each of the five training batches and
    the test batch; returns that folder. Image i gets a random class and a colour tint of that class."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    tints = rng.integers(0, 256, (10, 3))
    for name in CIFAR10_BATCHES:
        labels = rng.integers(0, 10, per_batch)
        noise = rng.integers(0, 96, (per_batch, 32, 32, 3))
        images = np.clip(0.6 * tints[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        rows = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # R, G and B planes, as the official rows
        _write_pickle(folder / name, {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": rows,
                                      b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]})
    _write_pickle(folder / "batches.meta", {b"num_cases_per_batch": per_batch, b"num_vis": 3072,
                                            b"label_names": [n.encode() for n in CIFAR10_NAMES]})
    return folder


def write_cifar10n(path: str | Path, clean_labels: np.ndarray, seed: int = 0) -> Path:
    """A ``CIFAR-10_human.pt`` for the training labels ``clean_labels``: each label set flips a share of them
    (CIFAR-10N's rates) to another class, at random."""
    import torch

    rng = np.random.default_rng(seed)
    clean = np.asarray(clean_labels, dtype=np.int64)
    arrays = {"clean_label": clean}
    for key, rate in CIFAR10N_RATES.items():
        flip = rng.random(len(clean)) < rate
        arrays[key] = np.where(flip, (clean + rng.integers(1, 10, len(clean))) % 10, clean).astype(np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(arrays, path)
    return path


def write_cifar10_with_cifar10n(root: str | Path, per_batch: int = 60, seed: int = 0) -> Path:
    """Both in one folder (``root/cifar-10-batches-py`` and ``root/CIFAR-10_human.pt``), the layout of
    ``noisykd reproduce --data-root``; returns ``root``."""
    from .sources.cifar import load_cifar10

    write_cifar10(root, per_batch, seed)
    write_cifar10n(Path(root) / "CIFAR-10_human.pt", load_cifar10(str(root)).train.labels, seed)
    return Path(root)


def write_cifar100(root: str | Path, train: int = 400, test: int = 100, seed: int = 0) -> Path:
    """``root/cifar-100-python`` (``train``, ``test`` and ``meta``, the official pickles with fine and coarse
    labels) with ``train`` / ``test`` 32x32 RGB images; returns that folder. Image i gets a random fine class and
    a colour tint of that class."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    tints = rng.integers(0, 256, (100, 3))
    for name, n in (("train", train), ("test", test)):
        fine = rng.integers(0, 100, n)
        noise = rng.integers(0, 96, (n, 32, 32, 3))
        images = np.clip(0.6 * tints[fine][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)
        _write_pickle(folder / name, {b"batch_label": name.encode(), b"fine_labels": fine.tolist(),
                                      b"coarse_labels": (fine // 5).tolist(), b"data": rows,
                                      b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]})
    _write_pickle(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                                    b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return folder


def _write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
