"""Spec strings (``cifar10:ROOT``, ``digits``, ``cifar10n:FILE:worst`` ...) resolved to loaders.

A data spec is ``KIND`` or ``KIND:ARG[:ARG...]``; loaders register under their kind. Paths may contain ':'
only as the last argument of a spec whose kind takes a single argument.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import DataError
from .base import ImageDataset

DatasetLoader = Callable[..., ImageDataset]
_DATASETS: dict[str, tuple[DatasetLoader, str]] = {}
_LABELSETS: dict[str, tuple[Callable[..., "LabelSet"], str]] = {}


@dataclass(frozen=True)
class LabelSet:
    """Alternative training labels for a data set (e.g. CIFAR-10N's human labels).

    noisy: int64 N, the labels to train on.  clean: int64 N or None, the ground truth when known.
    """

    name: str
    noisy: np.ndarray
    clean: np.ndarray | None = None


def register_dataset(kind: str, usage: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator: register ``loader(*args, **options)`` for data specs of this kind."""

    def wrap(loader: DatasetLoader) -> DatasetLoader:
        _DATASETS[kind] = (loader, usage)
        return loader

    return wrap


def register_labelset(kind: str, usage: str):
    """Decorator: register ``loader(*args)`` returning a :class:`LabelSet` for label specs of this kind."""

    def wrap(loader):
        _LABELSETS[kind] = (loader, usage)
        return loader

    return wrap


def _split_spec(spec: str, table: dict, what: str) -> tuple[Callable, list[str]]:
    _ensure_builtin_loaders()
    kind, _, rest = spec.partition(":")
    if kind not in table:
        known = ", ".join(f"{u}" for _, u in table.values())
        raise DataError(f"unknown {what} spec {spec!r}: expected one of {known}")
    return table[kind][0], ([rest] if rest else [])


def load_dataset(spec: str, **options) -> ImageDataset:
    """Load a data set from its spec string, e.g. ``load_dataset('cifar10:/data')``.

    ``options`` go to the loader (e.g. ``resize=32`` for ``folder:``).
    """
    loader, args = _split_spec(spec, _DATASETS, "data")
    accepted = inspect.signature(loader).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise DataError(f"{spec}: this data source takes no option {', '.join(unknown)}")
    return loader(*args, **options)


def load_labelset(spec: str, *, num_samples: int | None = None) -> LabelSet:
    """Load a label set from its spec, e.g. ``cifar10n:/data/CIFAR-10_human.pt:worst``.

    When ``num_samples`` is given the length is checked against it.
    """
    loader, args = _split_spec(spec, _LABELSETS, "labels")
    labels = loader(*args)
    if num_samples is not None and len(labels.noisy) != num_samples:
        raise DataError(f"{spec}: {len(labels.noisy)} labels for a training set of {num_samples} images")
    return labels


def dataset_kinds() -> dict[str, str]:
    """Registered data kinds and their usage strings."""
    _ensure_builtin_loaders()
    return {k: u for k, (_, u) in _DATASETS.items()}


def labelset_kinds() -> dict[str, str]:
    _ensure_builtin_loaders()
    return {k: u for k, (_, u) in _LABELSETS.items()}


def _ensure_builtin_loaders() -> None:
    # Imported lazily so that registry.py has no import cycle with the loader modules.
    from . import sources  # noqa: F401
