"""``cifar10:ROOT`` and ``cifar100:ROOT``: the official CIFAR "python version" batches.

ROOT is either the folder that contains ``cifar-10-batches-py/`` (``cifar-100-python/``) or that folder itself.
Every pickle goes through :func:`noisykd.safe_pickle.load_pickle`, so a tampered batch cannot run code.

Each batch is a dict (bytes keys in the official files; str keys are accepted too) whose ``data`` is a
uint8 array of rows of 3072 bytes: the 1024 red, then 1024 green, then 1024 blue pixels of one 32x32 image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ...safe_pickle import load_pickle
from ..base import ImageDataset, check_class_names, make_split, validate_labels
from ..normalization import CIFAR10_NORMALIZATION, CIFAR100_NORMALIZATION
from ..registry import register_dataset

CIFAR_SIDE = 32
CIFAR_ROW_BYTES = 3 * CIFAR_SIDE * CIFAR_SIDE  # 3072

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_META_FILE = "batches.meta"

CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_TRAIN_FILES = ("train",)
CIFAR100_TEST_FILES = ("test",)
CIFAR100_META_FILE = "meta"


def get_key(mapping: Any, key: str, *, source: str) -> Any:
    """``mapping[key]``, trying the str key and then its bytes form (the official pickles use bytes keys).

    Raises :class:`DataError` naming ``source`` when ``mapping`` is not a dict or lacks the key.
    """
    if not isinstance(mapping, dict):
        raise DataError(f"{source}: expected a pickled dict, found {type(mapping).__name__}")
    for candidate in (key, key.encode("utf-8")):
        if candidate in mapping:
            return mapping[candidate]
    found = ", ".join(sorted(_key_text(k) for k in mapping)) or "none"
    raise DataError(f"{source}: missing key {key!r} (found keys: {found})")


def _key_text(key: Any) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


def _resolve_folder(root: str, folder: str, what: str, usage: str) -> Path:
    """The folder that holds the batch files: ``ROOT/folder`` when it exists, else ROOT itself."""
    if not root:
        raise DataError(f"{what} needs a folder: {usage}")
    base = Path(root).expanduser()
    if (base / folder).is_dir():
        return base / folder
    if base.is_dir():
        return base
    raise DataError(f"{base}: no such folder; expected the folder containing {folder}/ or {folder}/ itself")


def _batch_path(folder: Path, name: str, what: str, all_files: tuple[str, ...]) -> Path:
    path = folder / name
    if not path.is_file():
        raise DataError(
            f"{path}: missing {what} batch file; {folder} should hold {', '.join(all_files)} "
            f"(ROOT may be the folder containing the official {what} folder or that folder itself)"
        )
    return path


def read_batch(path: Path, label_keys: dict[str, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One batch file -> (rows: uint8 N x 3072, {label key: int64 N}), validated; errors name ``path``.

    ``label_keys`` maps each label key to read (e.g. ``fine_labels``) to its number of classes.
    """
    batch = load_pickle(path, encoding="bytes")
    source = str(path)
    rows = get_key(batch, "data", source=source)
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != 2:
        desc = f"{rows.dtype} array of shape {rows.shape}" if isinstance(rows, np.ndarray) else type(rows).__name__
        raise DataError(f"{source}: 'data' must be a uint8 array N x {CIFAR_ROW_BYTES}, found {desc}")
    if rows.shape[1] != CIFAR_ROW_BYTES:
        raise DataError(
            f"{source}: 'data' rows must hold {CIFAR_ROW_BYTES} bytes (3 x {CIFAR_SIDE} x {CIFAR_SIDE}), "
            f"found {rows.shape[1]}"
        )
    labels = {}
    for key, num_classes in label_keys.items():
        raw = get_key(batch, key, source=source)
        try:
            values = np.asarray(raw)
        except (TypeError, ValueError) as e:  # ragged or non-numeric lists
            raise DataError(f"{source}: {key!r} is not a list of integers: {e}") from None
        labels[key] = validate_labels(values, num_classes, source=f"{source} ({key!r})", expected_len=len(rows))
    return rows, labels


def rows_to_images(rows: list[np.ndarray]) -> np.ndarray:
    """CIFAR rows (each uint8 n_i x 3072, planes R, G, B) -> one C-contiguous uint8 N x 32 x 32 x 3 array.

    The reshape/transpose are views; the single ``np.concatenate`` into a preallocated C-ordered array is the
    only copy of the pixels (without ``out=`` numpy would keep the transposed, non-contiguous layout).
    """
    views = [r.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1) for r in rows]
    out = np.empty((sum(len(v) for v in views), CIFAR_SIDE, CIFAR_SIDE, 3), dtype=np.uint8)
    if views:
        np.concatenate(views, axis=0, out=out)
    return out


def read_names(path: Path, key: str) -> tuple[str, ...]:
    """Class names stored under ``key`` in a meta pickle (bytes or str entries)."""
    meta = load_pickle(path, encoding="bytes")
    names = get_key(meta, key, source=str(path))
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{path}: {key!r} must be a non-empty list of class names, found {type(names).__name__}")
    decoded = []
    for k, name in enumerate(names):
        if not isinstance(name, (bytes, str)):
            raise DataError(f"{path}: {key!r} entry {k} is a {type(name).__name__}, not a class name (text)")
        try:
            decoded.append(name.decode("utf-8") if isinstance(name, bytes) else name)
        except UnicodeDecodeError:
            raise DataError(f"{path}: {key!r} entry {k} is not UTF-8 text: {name[:40]!r}") from None
    return check_class_names(tuple(decoded), source=f"{path}: {key!r}")


def _read_split(folder: Path, files: tuple[str, ...], all_files: tuple[str, ...], what: str,
                label_keys: dict[str, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Concatenate the batches ``files`` -> (images N x 32 x 32 x 3 uint8, {label key: int64 N})."""
    rows, labels = [], {key: [] for key in label_keys}
    for name in files:
        r, y = read_batch(_batch_path(folder, name, what, all_files), label_keys)
        rows.append(r)
        for key, values in y.items():
            labels[key].append(values)
    return rows_to_images(rows), {key: np.concatenate(parts) for key, parts in labels.items()}


def _expect_count(names: tuple[str, ...], count: int, path: Path, key: str) -> tuple[str, ...]:
    if len(names) != count:
        raise DataError(f"{path}: {key!r} lists {len(names)} class names; the official file has {count}")
    return names


CIFAR10_USAGE = "cifar10:ROOT (ROOT holds cifar-10-batches-py/ or is that folder)"


@register_dataset("cifar10", CIFAR10_USAGE)
def load_cifar10(root: str = "") -> ImageDataset:
    """CIFAR-10: 50,000 train (data_batch_1..5, in order) + 10,000 test images, 32x32x3, 10 classes.

    Train index i is image i of the official order, so CIFAR-10N label sets apply by index.
    """
    folder = _resolve_folder(root, CIFAR10_FOLDER, "cifar10", CIFAR10_USAGE)
    all_files = CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES + (CIFAR10_META_FILE,)
    meta_path = _batch_path(folder, CIFAR10_META_FILE, "CIFAR-10", all_files)
    classes = _expect_count(read_names(meta_path, "label_names"), 10, meta_path, "label_names")
    keys = {"labels": len(classes)}
    x_train, y_train = _read_split(folder, CIFAR10_TRAIN_FILES, all_files, "CIFAR-10", keys)
    x_test, y_test = _read_split(folder, CIFAR10_TEST_FILES, all_files, "CIFAR-10", keys)
    train = make_split(x_train, y_train["labels"], len(classes), source=f"{folder} (train)")
    test = make_split(x_test, y_test["labels"], len(classes), source=f"{folder} (test)")
    return ImageDataset("cifar10", classes, train, test, meta={"root": str(folder)},
                        normalization=CIFAR10_NORMALIZATION)


CIFAR100_USAGE = "cifar100:ROOT (ROOT holds cifar-100-python/ or is that folder)"


@register_dataset("cifar100", CIFAR100_USAGE)
def load_cifar100(root: str = "") -> ImageDataset:
    """CIFAR-100: 50,000 train + 10,000 test images, 32x32x3, 100 fine classes.

    ``meta`` also carries the 20 superclasses: ``coarse_classes`` (names) and ``train_coarse_labels`` /
    ``test_coarse_labels`` (int64 N each, aligned with the splits).
    """
    folder = _resolve_folder(root, CIFAR100_FOLDER, "cifar100", CIFAR100_USAGE)
    all_files = CIFAR100_TRAIN_FILES + CIFAR100_TEST_FILES + (CIFAR100_META_FILE,)
    meta_path = _batch_path(folder, CIFAR100_META_FILE, "CIFAR-100", all_files)
    classes = _expect_count(read_names(meta_path, "fine_label_names"), 100, meta_path, "fine_label_names")
    coarse_classes = _expect_count(read_names(meta_path, "coarse_label_names"), 20, meta_path, "coarse_label_names")
    keys = {"fine_labels": len(classes), "coarse_labels": len(coarse_classes)}
    x_train, y_train = _read_split(folder, CIFAR100_TRAIN_FILES, all_files, "CIFAR-100", keys)
    x_test, y_test = _read_split(folder, CIFAR100_TEST_FILES, all_files, "CIFAR-100", keys)
    train = make_split(x_train, y_train["fine_labels"], len(classes), source=f"{folder} (train)")
    test = make_split(x_test, y_test["fine_labels"], len(classes), source=f"{folder} (test)")
    meta = {
        "root": str(folder),
        "coarse_classes": coarse_classes,
        "train_coarse_labels": y_train["coarse_labels"],
        "test_coarse_labels": y_test["coarse_labels"],
    }
    return ImageDataset("cifar100", classes, train, test, meta=meta, normalization=CIFAR100_NORMALIZATION)
