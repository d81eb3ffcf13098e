"""From a :class:`DataConfig` to the splits a run trains and evaluates on.

Order: load the source -> choose the training labels (saved file, label set, or synthetic noise on the clean
labels) -> optional stratified subset -> optional held-out noisy validation split. Every sample keeps its
index in the source's training split, which keys the per-sample store.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..config import DataConfig
from ..data import ImageDataset, ImageSplit, Normalization, load_dataset, load_labelset
from ..errors import ConfigError
from ..noise import NoisyLabels, from_labelset, make_noise


@dataclass(frozen=True)
class PreparedData:
    """The splits of one run.

    train / val: the training samples (noisy labels) and the held-out noisy validation samples, or None.
    test:        the clean test split, or None.
    noisy:       the training labels of every sample of the source's train split (N = num_samples), with
                 the ground truth when known; saved with the run so that other runs can reuse it.
    """

    dataset: ImageDataset
    train: ImageSplit
    val: ImageSplit | None
    test: ImageSplit | None
    noisy: NoisyLabels

    @property
    def num_samples(self) -> int:
        return len(self.noisy.labels)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def clean_labels(self) -> np.ndarray | None:
        """int64 (num_samples,) ground truth by dataset index, or None when unknown."""
        return self.noisy.clean

    @cached_property
    def normalization(self) -> Normalization:
        """The source's prescribed constants (CIFAR's standard values), else the training images' statistics."""
        return self.dataset.normalization or Normalization.of_images(self.train.images)


def prepare_data(cfg: DataConfig, dataset: ImageDataset | None = None) -> PreparedData:
    """Load (unless ``dataset`` is given) and split the data as ``cfg`` says."""
    if dataset is None:
        options = {"resize": cfg.resize} if cfg.resize is not None else {}
        dataset = load_dataset(cfg.spec, **options)
    source_train = dataset.train
    noisy = choose_training_labels(cfg, dataset)
    train = source_train.with_labels(noisy.labels)
    rows = np.arange(len(train))
    rng = np.random.default_rng(cfg.val_seed)
    if cfg.train_subset is not None and cfg.train_subset < len(rows):
        rows = stratified_pick(train.labels, cfg.train_subset, rng)
    val = None
    if cfg.val_fraction > 0:
        n_val = int(round(cfg.val_fraction * len(rows)))
        if n_val < 1 or n_val >= len(rows):
            raise ConfigError(f"data.val_fraction={cfg.val_fraction} leaves no training or validation samples")
        held = np.sort(rng.choice(rows, size=n_val, replace=False))
        val = train.subset(held)
        rows = np.setdiff1d(rows, held)
    test = dataset.test
    if test is not None and cfg.test_subset is not None and cfg.test_subset < len(test):
        # its own generator: the training subset and validation split do not depend on this option
        test = test.subset(stratified_pick(test.labels, cfg.test_subset, np.random.default_rng(cfg.val_seed)))
    return PreparedData(dataset, train.subset(np.sort(rows)), val, test, noisy)


def choose_training_labels(cfg: DataConfig, dataset: ImageDataset) -> NoisyLabels:
    """The labels to train on, for every sample of the source's train split."""
    n, c = len(dataset.train), dataset.num_classes
    clean = dataset.train.labels
    if cfg.noise_file:
        return NoisyLabels.load(cfg.noise_file, num_samples=n, num_classes=c)
    if cfg.labels:
        if cfg.noise not in ("none", ""):
            raise ConfigError("data.labels and data.noise are both set: use a label set or synthetic noise, not both")
        labelset = load_labelset(cfg.labels, num_samples=n)
        return from_labelset(labelset, num_classes=c)
    if cfg.noise in ("none", "") and not dataset.labels_are_truth:
        # the user's own labels: they are what we train on, and whether they are right is what we do not know
        return NoisyLabels(clean, clean=None, kind="given", params={"num_classes": int(c)})
    features = None
    if cfg.noise.startswith("instance"):
        # Xia et al.'s generator projects the flattened image; uint8 is scaled to [0, 1] there, in chunks.
        features = dataset.train.images.reshape(n, -1)
    return make_noise(cfg.noise, clean, c, seed=cfg.noise_seed, features=features, dataset=dataset.name)


def stratified_pick(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` positions drawn without replacement, in proportion to each label's share; sorted."""
    picked = []
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.floor(counts / counts.sum() * count).astype(int)
    # hand the remainder to the classes with the largest fractional parts so that the total is exact
    remainder = count - quotas.sum()
    order = np.argsort(-(counts / counts.sum() * count - quotas), kind="stable")
    quotas[order[:remainder]] += 1
    for cls, quota in zip(classes, quotas):
        members = np.flatnonzero(labels == cls)
        picked.append(rng.choice(members, size=min(quota, len(members)), replace=False))
    return np.sort(np.concatenate(picked))
