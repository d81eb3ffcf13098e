"""Data sources: every loader returns an :class:`ImageDataset`; specs select them by a short string."""

from .base import ImageDataset, ImageSplit, make_split, validate_labels
from .registry import LabelSet, dataset_kinds, labelset_kinds, load_dataset, load_labelset, register_dataset, register_labelset

__all__ = [
    "ImageDataset", "ImageSplit", "LabelSet", "make_split", "validate_labels", "load_dataset", "load_labelset",
    "register_dataset", "register_labelset", "dataset_kinds", "labelset_kinds",
]
