"""``npz:FILE``: a data set saved with ``np.savez`` (your own arrays, or a converted set).

Arrays:
    x_train  uint8 N x H x W (grey) or N x H x W x C with C in (1, 3)
    y_train  integer N, values in [0, num_classes)
    x_test, y_test   optional, together; same image shape as x_train
    x_val, y_val     optional, together: the validation split (model selection) instead of a held-out part of
                     the training images; same image shape
    classes  optional, strings (``np.array(names)``, not an object array); num_classes = len(classes) when
             given, else the largest label + 1.

Loaded with ``allow_pickle=False``: an npz can hold pickled object arrays, and those are refused.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..base import (ImageDataset, check_class_names, check_test_classes_seen, implicit_class_count, make_split,
                    validate_labels)
from ..registry import register_dataset

REQUIRED = ("x_train", "y_train")


def _read_array(archive, key: str, path: Path) -> np.ndarray:
    """``archive[key]`` (decompressed now); object arrays and corrupt members become a DataError."""
    try:
        return archive[key]
    except ValueError as e:  # object arrays need pickle, which allow_pickle=False refuses
        raise DataError(f"{path}: array {key!r} cannot be read without pickle ({e}); store plain numeric/str arrays") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: array {key!r} is corrupt or truncated: {e}") from None


def _check_images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """uint8 N x H x W [x C]; anything else raises a DataError naming FILE and the array."""
    if x.dtype != np.uint8:
        raise DataError(f"{path}: array {key!r} must be uint8 images (0-255), found dtype {x.dtype}")
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise DataError(f"{path}: array {key!r} must have shape N x H x W or N x H x W x C (C = 1 or 3), found {x.shape}")
    return x


def _check_labels(y: np.ndarray, key: str, path: Path, count: int) -> np.ndarray:
    """Integer 1-D labels, one per image, non-negative."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: array {key!r} must be 1-D integers, found dtype {y.dtype} and shape {y.shape}")
    if len(y) != count:
        raise DataError(f"{path}: array {key!r} has {len(y)} labels for {count} images; the counts must match")
    if y.size and int(y.min()) < 0:
        raise DataError(f"{path}: array {key!r} holds a negative label ({int(y.min())})")
    return y.astype(np.int64, copy=False)


def _read_classes(archive, path: Path) -> tuple[str, ...] | None:
    if "classes" not in archive.files:
        return None
    names = _read_array(archive, "classes", path)
    if names.ndim != 1 or names.dtype.kind not in "US" or names.size == 0:
        raise DataError(
            f"{path}: array 'classes' must be a non-empty 1-D array of strings, found dtype {names.dtype} "
            f"and shape {names.shape}"
        )
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names.tolist())


NPZ_USAGE = "npz:FILE (x_train, y_train[, x_test, y_test][, x_val, y_val][, classes])"


def _read_pair(archive, path: Path, split: str, shape_train: tuple) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(x_SPLIT, y_SPLIT) checked against the training images' shape, or (None, None) when absent."""
    present = [k for k in (f"x_{split}", f"y_{split}") if k in archive.files]
    if not present:
        return None, None
    if len(present) == 1:
        missing = f"y_{split}" if present == [f"x_{split}"] else f"x_{split}"
        raise DataError(f"{path}: has {present[0]!r} but not {missing!r}; give both or neither")
    x = _check_images(_read_array(archive, f"x_{split}", path), f"x_{split}", path)
    y = _check_labels(_read_array(archive, f"y_{split}", path), f"y_{split}", path, len(x))
    # Compare with a channel axis on both, so N x H x W and N x H x W x 1 count as the same shape.
    if x.shape[1:] + ((1,) if x.ndim == 3 else ()) != shape_train:
        train = shape_train if x.ndim == 4 else shape_train[:2]  # in the layout of x, channels shown when it has them
        raise DataError(f"{path}: array 'x_{split}' images are {x.shape[1:]} but 'x_train' images are {train}; they "
                        "must match")
    return x, y


@register_dataset("npz", NPZ_USAGE)
def load_npz(file: str = "") -> ImageDataset:
    """Train (and test) splits from an ``.npz``; see the module docstring for the arrays it expects."""
    if not file:
        raise DataError(f"npz needs a file: {NPZ_USAGE}")
    path = Path(file).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        # numpy's own message would suggest allow_pickle=True for garbage bytes: never do that for a data file
        raise DataError(f"{path}: not a readable .npz archive (np.savez / np.savez_compressed of named arrays); "
                        "it may be truncated or another kind of file") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected an .npz archive of named arrays (np.savez), found a single array")
    with archive:
        for key in REQUIRED:
            if key not in archive.files:
                raise DataError(f"{path}: missing array {key!r} (found: {', '.join(archive.files) or 'none'})")
        x_train = _check_images(_read_array(archive, "x_train", path), "x_train", path)
        if len(x_train) == 0:
            raise DataError(f"{path}: array 'x_train' holds no images")
        y_train = _check_labels(_read_array(archive, "y_train", path), "y_train", path, len(x_train))
        shape_train = x_train.shape[1:] + ((1,) if x_train.ndim == 3 else ())
        x_test, y_test = _read_pair(archive, path, "test", shape_train)
        x_val, y_val = _read_pair(archive, path, "val", shape_train)
        classes = _read_classes(archive, path)
    if classes is None:
        every = np.concatenate([y for y in (y_train, y_test, y_val) if y is not None and y.size])
        classes = tuple(str(i) for i in range(implicit_class_count(
            every, source=str(path), fix="add a 'classes' array naming every class")))
    check_class_names(classes, source=f"{path}: array 'classes'")
    k = len(classes)
    y_train = validate_labels(y_train, k, source=f"{path}: array 'y_train'")
    train = make_split(x_train, y_train, k, source=f"{path}: array 'x_train'")
    test = val = None
    if x_test is not None:
        y_test = validate_labels(y_test, k, source=f"{path}: array 'y_test'")
        check_test_classes_seen(y_train, y_test, classes, source=str(path))
        test = make_split(x_test, y_test, k, source=f"{path}: array 'x_test'")
    if x_val is not None:
        y_val = validate_labels(y_val, k, source=f"{path}: array 'y_val'")
        val = make_split(x_val, y_val, k, source=f"{path}: array 'x_val'")
    return ImageDataset(f"npz:{path.stem}", classes, train, test, meta={"root": str(path)}, labels_are_truth=False,
                        val=val)
