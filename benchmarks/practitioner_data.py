"""Real images exported to class folders with realistic wrong labels, the truth kept aside: what a practitioner's
own data looks like to noisykd (``folder:ROOT``), for ``benchmarks/practitioner.py``.

* ``fashion``: Fashion-MNIST (``../shared/data/fashion-mnist``), 3,000 training and 1,000 test images drawn
  stratified (seed 0), 20% wrong training labels, mostly between classes people confuse: a flipped top
  (T-shirt, Pullover, Coat, Shirt) or shoe (Sandal, Sneaker, Ankle boot) gets another class of its group with
  probability 0.85, any other class otherwise; Trouser, Dress and Bag get any other class.
* ``cifar10n``: 5,000 CIFAR-10 training images (stratified by true class, seed 0) with their CIFAR-10N
  ``worst`` human labels (40% wrong here: real crowd noise), and 2,000 test images (stratified, seed 0).

Layout: ``ROOT/train/CLASS/NNNNN.png`` (the given, possibly wrong, label is the folder), ``ROOT/test/CLASS/``,
and ``ROOT.truth.npz`` beside ``ROOT`` (never inside it): ``path`` (absolute), ``given``, ``clean`` for the
training images. Nothing here is ever committed (the data's licences; DEVELOPERS.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FASHION_GROUPS = ((0, 2, 4, 6), (5, 7, 9))  # tops; shoes (Fashion-MNIST class ids)
FASHION_CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle-boot")


def confusable_noise(labels: np.ndarray, rate: float, groups, num_classes: int, within: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Flip round(rate * N) labels chosen at random: a label in one of ``groups`` goes to another class of its
    group with probability ``within``, else (and for labels in no group) to any other class. int64 (N,)."""
    noisy = labels.copy()
    flip = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    group_of = {c: g for g in groups for c in g}
    for i in flip:
        c = int(labels[i])
        if c in group_of and rng.random() < within:
            noisy[i] = rng.choice([k for k in group_of[c] if k != c])
        else:
            noisy[i] = rng.choice([k for k in range(num_classes) if k != c])
    return noisy


def stratified(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` positions, the same number per class (labels balanced), sorted."""
    classes = np.unique(labels)
    per = count // len(classes)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in classes]))


def write_folder(root: Path, split: str, images: np.ndarray, labels: np.ndarray, classes) -> list[str]:
    """PNG files ``root/split/CLASS/NNNNN.png``; returns their absolute paths, in order."""
    from PIL import Image

    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / split / classes[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
        paths.append(os.path.abspath(path))
    return paths


def export(kind: str, root: Path, shared: Path, cifar_root: Path | None = None) -> Path:
    """Write the ``kind`` data set (module docstring) under ``root`` (a new folder) and its truth beside it;
    returns ``root``. An existing complete export is reused."""
    from noisykd.data import load_dataset, load_labelset

    truth_path = Path(str(root) + ".truth.npz")
    if truth_path.is_file():
        return root
    rng = np.random.default_rng(0)
    if kind == "fashion":
        data = load_dataset(f"fashion-mnist:{shared / 'fashion-mnist'}")
        train = stratified(data.train.labels, 3000, rng)
        test = stratified(data.test.labels, 1000, rng)
        clean = data.train.labels[train]
        given = confusable_noise(clean, 0.2, FASHION_GROUPS, 10, 0.85, rng)
        classes = FASHION_CLASSES
    elif kind == "cifar10n":
        if cifar_root is None:
            raise SystemExit("error: the cifar10n export needs --cifar-root (a folder with cifar-10-batches-py/)")
        data = load_dataset(f"cifar10:{cifar_root}")
        human = load_labelset(f"cifar10n:{shared / 'cifar-n' / 'CIFAR-10_human.pt'}:worst",
                              num_samples=len(data.train))
        train = stratified(data.train.labels, 5000, rng)
        test = stratified(data.test.labels, 2000, rng)
        clean = data.train.labels[train]
        given = np.asarray(human.noisy)[train]
        classes = data.classes
    else:
        raise SystemExit(f"error: unknown data set {kind!r} (fashion, cifar10n)")
    paths = write_folder(root, "train", data.train.images[train], given, classes)
    write_folder(root, "test", data.test.images[test], data.test.labels[test], classes)
    np.savez(truth_path, path=np.asarray(paths), given=given.astype(np.int64), clean=clean.astype(np.int64),
             classes=np.asarray(classes))
    return root


def load_truth(root: Path) -> dict[str, tuple[str, str]]:
    """{absolute image path: (given class name, true class name)} of an export's training images (names: a
    folder source numbers its classes by sorted folder name, not by the original ids)."""
    with np.load(Path(str(root) + ".truth.npz"), allow_pickle=False) as npz:
        names = [str(c) for c in npz["classes"]]
        return {str(p): (names[int(g)], names[int(c)]) for p, g, c in zip(npz["path"], npz["given"], npz["clean"])}


def true_labels(paths, classes, truth: dict[str, tuple[str, str]]) -> np.ndarray:
    """The true class id (in a run's class numbering ``classes``) of each image path: int64."""
    index = {name: k for k, name in enumerate(classes)}
    return np.asarray([index[truth[str(p)][1]] for p in paths], dtype=np.int64)
