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
from ..registry import Registry
from .base import ImageDataset

DatasetLoader = Callable[..., ImageDataset]


def _import_builtin_sources() -> None:
    from . import sources  # noqa: F401  (importing registers the built-in loaders)


#: Data sources by kind (the part of a spec before the first ':'); each entry's metadata holds its usage.
DATA_SOURCES: Registry[DatasetLoader] = Registry("data source", error=DataError, builtins=_import_builtin_sources)
#: Label sets (``--labels``) by kind.
LABEL_SETS: Registry[Callable[..., "LabelSet"]] = Registry("label set kind", error=DataError,
                                                           builtins=_import_builtin_sources)


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
    return DATA_SOURCES.register(kind, usage=usage)


def register_labelset(kind: str, usage: str):
    """Decorator: register ``loader(*args)`` returning a :class:`LabelSet` for label specs of this kind."""
    return LABEL_SETS.register(kind, usage=usage)


def _split_spec(spec: str, registry: Registry) -> tuple[Callable, list[str]]:
    if not isinstance(spec, str):
        raise DataError(f"a {registry.kind} spec must be a string like 'cifar10:ROOT', got {spec!r}")
    kind, _, rest = spec.partition(":")
    if kind not in registry:
        raise DataError(f"{registry.unknown(kind)} (spec {spec!r}; `noisykd data kinds` shows the form of each)")
    return registry[kind], ([rest] if rest else [])


def load_dataset(spec: str, **options) -> ImageDataset:
    """Load a data set from its spec string, e.g. ``load_dataset('cifar10:/data')``.

    ``options`` go to the loader (e.g. ``resize=32`` for ``folder:``).
    """
    loader, args = _split_spec(spec, DATA_SOURCES)
    accepted = inspect.signature(loader).parameters
    positional = [p for p in accepted.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if args and not positional:
        kind = spec.partition(":")[0]
        usage = DATA_SOURCES.meta(kind)["usage"]
        raise DataError(f"{spec}: {kind} takes nothing after its name (its form: {usage})")
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise DataError(f"{spec}: this data source takes no option {', '.join(unknown)}")
    dataset = loader(*args, **options)
    if dataset.num_classes < 2:
        raise DataError(f"{spec}: {dataset.num_classes} class ({', '.join(dataset.classes)}); a classifier needs "
                        "at least 2")
    return dataset


def load_labelset(spec: str, *, num_samples: int | None = None) -> LabelSet:
    """Load a label set from its spec, e.g. ``cifar10n:/data/CIFAR-10_human.pt:worst``.

    When ``num_samples`` is given the length is checked against it.
    """
    loader, args = _split_spec(spec, LABEL_SETS)
    labels = loader(*args)
    if num_samples is not None and len(labels.noisy) != num_samples:
        raise DataError(f"{spec}: {len(labels.noisy)} labels for a training set of {num_samples} images")
    return labels


def dataset_kinds() -> dict[str, str]:
    """Registered data kinds and their usage strings (sorted by kind)."""
    return {k: DATA_SOURCES.meta(k)["usage"] for k in DATA_SOURCES.names()}


def labelset_kinds() -> dict[str, str]:
    return {k: LABEL_SETS.meta(k)["usage"] for k in LABEL_SETS.names()}
