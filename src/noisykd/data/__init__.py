"""Data sources: every loader returns an :class:`ImageDataset`; specs select them by a short string."""

from .base import ImageDataset, ImageSplit, make_split, validate_labels
from .normalization import Normalization, dataset_stats
from .registry import (
    DATA_SOURCES,
    LABEL_SETS,
    LabelSet,
    dataset_kinds,
    labelset_kinds,
    load_dataset,
    load_labelset,
    register_dataset,
    register_labelset,
)

__all__ = [
    "ImageDataset", "ImageSplit", "LabelSet", "Normalization", "make_split", "validate_labels", "dataset_stats",
    "load_dataset", "load_labelset", "register_dataset", "register_labelset", "dataset_kinds", "labelset_kinds",
    "DATA_SOURCES", "LABEL_SETS",
]
