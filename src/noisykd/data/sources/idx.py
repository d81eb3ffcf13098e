"""``mnist:ROOT`` and ``fashion-mnist:ROOT``: the official IDX files, gzipped or not.

ROOT holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (each optionally ``.gz``); torchvision's ``ROOT/raw`` and ``ROOT/MNIST/raw``
(``ROOT/FashionMNIST/raw``) layouts are found too.

An IDX file is a big-endian header (magic number: two zero bytes, a type byte 0x08 for unsigned bytes, the
number of dimensions; then one uint32 per dimension) followed by the values in C order.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from math import prod
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..base import ImageDataset, make_split, validate_labels
from ..registry import register_dataset

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N)
GZIP_SIGNATURE = b"\x1f\x8b"

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def read_file_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip signature (whatever its name)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if raw[:2] != GZIP_SIGNATURE:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:  # truncated stream, bad CRC, corrupt data
        raise DataError(f"{path}: corrupt or truncated gzip file: {e}") from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file -> writable uint8 array of the header's shape.

    Raises :class:`DataError` naming ``path`` for a wrong magic number or a payload whose size differs from
    what the header's dimensions promise (a truncated file, or trailing bytes).
    """
    raw = read_file_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header (truncated?)")
    found_magic = int.from_bytes(raw[:4], "big")
    if found_magic != magic:
        raise DataError(f"{path}: IDX magic number {found_magic}, expected {magic} (is this the right file?)")
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path}: IDX header needs {header_size} bytes, file has {len(raw)} (truncated)")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = prod(dims)
    found = len(raw) - header_size
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes after the data"
        raise DataError(
            f"{path}: header gives shape {dims}, i.e. {expected} data bytes, found {found} ({what})"
        )
    # frombuffer on bytes is read-only; copy once so the arrays behave like the other loaders' (writable).
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header_size).reshape(dims).copy()


def _candidates(stem: str) -> list[str]:
    """File names accepted for e.g. ``train-images-idx3-ubyte``: as is, with '.' before idx, each with .gz."""
    dotted = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", dotted, dotted + ".gz"]


def find_idx_folder(root: Path, torchvision_name: str) -> Path:
    """The folder under ROOT that holds the IDX files (ROOT, ROOT/raw or ROOT/<torchvision_name>/raw)."""
    for folder in (root, root / "raw", root / torchvision_name / "raw"):
        if any((folder / n).is_file() for n in _candidates("train-images-idx3-ubyte")):
            return folder
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    raise DataError(
        f"{root}: no train-images-idx3-ubyte[.gz] here, in raw/ or in {torchvision_name}/raw/; expected the "
        "official files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte (gzipped or not)"
    )


def find_idx_file(folder: Path, stem: str) -> Path:
    """``folder/stem`` or one of its accepted variants; DataError listing what was tried when none exists."""
    names = _candidates(stem)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder / stem}: missing IDX file (tried {', '.join(names)})")


def read_idx_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray, str]:
    """One split (``train`` or ``t10k``) -> (images uint8 N x H x W, labels uint8 N, description of its files)."""
    image_path = find_idx_file(folder, f"{prefix}-images-idx3-ubyte")
    label_path = find_idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(image_path, IDX_IMAGES_MAGIC)
    labels = read_idx(label_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{label_path}: {len(labels)} labels for the {len(images)} images of {image_path}")
    return images, labels, str(label_path)


def load_idx_dataset(root: str, name: str, classes: tuple[str, ...], torchvision_name: str,
                     usage: str) -> ImageDataset:
    """Train (``train-*``) and test (``t10k-*``) splits of an MNIST-style IDX set; images N x H x W x 1."""
    if not root:
        raise DataError(f"{name} needs a folder: {usage}")
    folder = find_idx_folder(Path(root).expanduser(), torchvision_name)
    x_train, y_train, train_labels_file = read_idx_split(folder, "train")
    x_test, y_test, test_labels_file = read_idx_split(folder, "t10k")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{folder}: train images are {x_train.shape[1:]} but t10k images are {x_test.shape[1:]}; they must match"
        )
    k = len(classes)
    # Validate against the label files so a bad value names the file it came from.
    y_train = validate_labels(y_train, k, source=train_labels_file)
    y_test = validate_labels(y_test, k, source=test_labels_file)
    train = make_split(x_train, y_train, k, source=f"{folder} (train)")
    test = make_split(x_test, y_test, k, source=f"{folder} (t10k)")
    return ImageDataset(name, classes, train, test, meta={"root": str(folder)})


MNIST_USAGE = "mnist:ROOT (ROOT holds the official *-idx?-ubyte[.gz] files)"
FASHION_MNIST_USAGE = "fashion-mnist:ROOT (ROOT holds the official *-idx?-ubyte[.gz] files)"


@register_dataset("mnist", MNIST_USAGE)
def load_mnist(root: str = "") -> ImageDataset:
    """MNIST: 60,000 train + 10,000 test grey 28x28 digits, classes '0'..'9'."""
    return load_idx_dataset(root, "mnist", MNIST_CLASSES, "MNIST", MNIST_USAGE)


@register_dataset("fashion-mnist", FASHION_MNIST_USAGE)
def load_fashion_mnist(root: str = "") -> ImageDataset:
    """Fashion-MNIST: 60,000 train + 10,000 test grey 28x28 images of 10 clothing classes."""
    return load_idx_dataset(root, "fashion-mnist", FASHION_MNIST_CLASSES, "FashionMNIST", FASHION_MNIST_USAGE)
