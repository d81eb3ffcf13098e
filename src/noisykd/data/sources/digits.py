"""``digits``: scikit-learn's 8x8 handwritten digits, built in (ships with scikit-learn, no file needed)."""

from __future__ import annotations

import numpy as np

from ..base import ImageDataset, make_split
from ..registry import register_dataset

DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


@register_dataset("digits", "digits")
def load_digits_dataset() -> ImageDataset:
    """1,797 grey 8x8 images in 10 classes, split once (stratified, seed 0) into 1,257 train / 540 test.

    Pixels (0-16 in scikit-learn) are rescaled to uint8 0-255.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    rows = np.arange(len(labels))
    train_rows, test_rows = train_test_split(
        rows, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=labels
    )
    train_rows, test_rows = np.sort(train_rows), np.sort(test_rows)
    classes = tuple(str(c) for c in range(10))
    train = make_split(images[train_rows], labels[train_rows], 10, source="digits (train)")
    test = make_split(images[test_rows], labels[test_rows], 10, source="digits (test)")
    return ImageDataset("digits", classes, train, test)
