"""The one abstraction every data source returns: uint8 images, integer labels, class names, indices."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .normalization import Normalization


@dataclass(frozen=True)
class ImageSplit:
    """One split of an image-classification set.

    images:  uint8 array N x H x W x C (may be a ``np.memmap`` for large sets).
    labels:  int64 array N, values in [0, num_classes).
    indices: int64 array N, the sample's index in the source (stable across sub-setting, so per-sample state
             stays keyed by it).
    """

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, rows: np.ndarray) -> "ImageSplit":
        """The samples at positions ``rows`` (keeps their original indices)."""
        rows = np.asarray(rows)
        return ImageSplit(self.images[rows], self.labels[rows], self.indices[rows])

    def with_labels(self, labels: np.ndarray) -> "ImageSplit":
        """The same images with other labels (same length)."""
        return ImageSplit(self.images, np.asarray(labels, dtype=np.int64), self.indices)

    def with_images(self, images: np.ndarray) -> "ImageSplit":
        """The same labels with other images (same count and shape), e.g. after open-set replacement."""
        return ImageSplit(images, self.labels, self.indices)


@dataclass(frozen=True)
class ImageDataset:
    """A named data set: a train split, an optional test split and the class names.

    normalization: the constants its images are normalised with when the source prescribes them (CIFAR's
    standard values), else None: a run then uses its training images' own statistics.
    labels_are_truth: True for the curated benchmark sets (digits, CIFAR, MNIST, Fashion-MNIST), whose labels
    are the ground truth against which synthetic noise is scored; False for the user's own data (``folder:``,
    ``npz:``), whose given labels may themselves be wrong: their noise is then unknown, not 0%.
    val: the source's own validation split (``folder:ROOT`` with ``train/``, ``val/`` and ``test/``), or None;
    a run then validates on it instead of holding out part of the training split.
    """

    name: str
    classes: tuple[str, ...]
    train: ImageSplit
    test: ImageSplit | None = None
    meta: dict = field(default_factory=dict)
    normalization: Normalization | None = None
    labels_are_truth: bool = True
    val: ImageSplit | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape


def make_split(images: np.ndarray, labels: np.ndarray, num_classes: int, *, source: str,
               indices: np.ndarray | None = None) -> ImageSplit:
    """Validate and wrap arrays into an :class:`ImageSplit`.

    ``images`` may be N x H x W (grey, a channel axis is added) or N x H x W x C with C in {1, 3}, uint8.
    Raises :class:`DataError` naming ``source`` when shapes, dtypes or label ranges are wrong.
    """
    images = np.asarray(images) if not isinstance(images, np.memmap) else images
    labels = np.asarray(labels)
    if images.dtype != np.uint8:
        raise DataError(f"{source}: images must be uint8 (0-255), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{source}: images must be N x H x W x C with C in (1, 3), got shape {images.shape}")
    labels = validate_labels(labels, num_classes, source=source, expected_len=len(images))
    if indices is None:
        indices = np.arange(len(labels), dtype=np.int64)
    return ImageSplit(images, labels, np.asarray(indices, dtype=np.int64))


def validate_labels(labels: np.ndarray, num_classes: int, *, source: str, expected_len: int | None = None) -> np.ndarray:
    """Check that ``labels`` is a 1-D integer array in [0, num_classes) of the expected length; return int64."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{source}: labels must be 1-D, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise DataError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    if expected_len is not None and len(labels) != expected_len:
        raise DataError(f"{source}: {len(labels)} labels for {expected_len} images; the counts must match")
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(f"{source}: labels must lie in [0, {num_classes - 1}], found values in [{lo}, {hi}]")
    return labels.astype(np.int64, copy=False)


#: Without named classes, more classes than this (0..max label) is taken for a labelling mistake.
MAX_IMPLICIT_CLASSES = 100_000


def implicit_class_count(labels: np.ndarray, *, source: str, fix: str) -> int:
    """The class count 0..max label of integer ``labels`` given without class names; a DataError (naming
    ``source`` and how to ``fix`` it) when that would make mostly empty classes (labels 0 and 5,000,000: a
    5,000,001-class network)."""
    top = int(labels.max())
    distinct = len(np.unique(labels))
    if top + 1 > MAX_IMPLICIT_CLASSES or top + 1 > 10 * distinct:
        raise DataError(f"{source}: labels go up to {top} but only {distinct} distinct values occur; without class "
                        f"names the classes are 0..max label: relabel to 0..{distinct - 1}, or {fix}")
    return top + 1


def check_class_names(names: tuple[str, ...], *, source: str) -> tuple[str, ...]:
    """``names`` if every class name is non-empty and distinct, else a DataError naming the first problem."""
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if not name.strip():
            raise DataError(f"{source}: class {k} has an empty name; every class needs one")
        if name in seen:
            raise DataError(f"{source}: classes {seen[name]} and {k} are both named {name!r}; names must differ")
        seen[name] = k
    return names


def check_test_classes_seen(train: np.ndarray, test: np.ndarray, classes: tuple[str, ...], *, source: str) -> None:
    """A DataError when test labels hold a class no training sample has: the network could never predict it."""
    unseen = sorted(set(np.unique(test).tolist()) - set(np.unique(train).tolist()))
    if unseen:
        shown = ", ".join(repr(classes[k]) for k in unseen[:5])
        raise DataError(f"{source}: the test labels hold {len(unseen)} class(es) no training sample has ({shown}); a "
                        "network cannot learn a class it never sees: drop those test images or add training ones")
