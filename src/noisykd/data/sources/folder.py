"""``folder:ROOT`` and ``folder:FILE.csv``: image files on disk, one class per folder or listed in a CSV.

Folder layout (as torchvision's ImageFolder): ``ROOT/CLASS/**/*.png|jpg|jpeg|bmp|webp`` (extensions
case-insensitive, classes sorted by name). When ROOT has a ``train/`` sub-folder, ``train/`` and ``test/``
(or, failing that, ``val/``) are the splits, each in that layout; with ``train/``, ``val/`` and ``test/`` all
three, ``val/`` is the validation split (model selection) and ``test/`` the test split; otherwise everything
is train.

CSV manifest: a header with ``path`` and ``label`` columns and an optional ``split`` column (train, val,
validation, test): ``validation`` rows are the validation split; ``val`` rows too when some rows are test, else
they are the test split (the layout of many data sets). Paths are relative to the CSV's folder. Labels are class names, or integers when every label
is one (classes are then '0'..str(max)).

Images become RGB, or L (one channel) when every image is grey. With ``resize=S`` every image is resized to
S x S (bilinear, antialiased); without it all images must share one size.
"""

from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from ..base import ImageDataset, check_test_classes_seen, implicit_class_count, make_split
from ..registry import register_dataset

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
TEST_FOLDERS = ("test", "val")  # first one present is the test split
SPLIT_NAMES = {"train": "train", "test": "test", "val": "val?", "valid": "val?", "validation": "val"}
# Decoding is mostly C code that releases the GIL, so threads help; below this many files they only add overhead.
THREADS_FROM = 64
MAX_THREADS = 8


@dataclass(frozen=True)
class FileList:
    """Image files of one split with their class indices (``labels`` int64, same length as ``paths``)."""

    paths: list[Path]
    labels: np.ndarray


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def class_folders(root: Path) -> list[Path]:
    """The class sub-folders of ``root``, sorted by name (hidden folders skipped)."""
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def scan_class_folders(root: Path, classes: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], FileList]:
    """List ``root/CLASS/**/image`` -> (class names, files with labels), files sorted within each class.

    With ``classes`` given (the train split's), every folder of ``root`` must be one of them.
    """
    folders = class_folders(root)
    train = classes is None
    if classes is None:
        classes = tuple(p.name for p in folders)
    index = {name: i for i, name in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        if folder.name not in index:
            raise DataError(f"{folder}: class {folder.name!r} is not among the train classes {list(classes)}")
        files = sorted(p for p in folder.rglob("*") if is_image_file(p))
        if not files and train:
            raise DataError(f"{folder}: class folder {folder.name!r} holds no images; a class without training "
                            "images cannot be learnt: add images or remove the folder")
        paths.extend(files)
        labels.extend([index[folder.name]] * len(files))
    if not paths:
        raise DataError(
            f"{root}: no images found; expected {root}/CLASS/*.png (or .jpg, .jpeg, .bmp, .webp), one folder per class"
        )
    return classes, FileList(paths, np.asarray(labels, dtype=np.int64))


def scan_folder_root(root: Path) -> tuple[tuple[str, ...], FileList, FileList | None, str | None, FileList | None]:
    """Folder layout -> (classes, train files, test files or None, name of the test folder or None, validation
    files or None: ``val/`` when ``test/`` is there too)."""
    if not (root / "train").is_dir():
        classes, train = scan_class_folders(root)
        return classes, train, None, None, None
    classes, train = scan_class_folders(root / "train")
    if (root / "test").is_dir() and (root / "val").is_dir():
        _, test = scan_class_folders(root / "test", classes)
        _, val = scan_class_folders(root / "val", classes)
        return classes, train, test, "test", val
    for name in TEST_FOLDERS:
        if (root / name).is_dir():
            _, test = scan_class_folders(root / name, classes)
            return classes, train, test, name, None
    return classes, train, None, None, None


def read_manifest(csv_path: Path) -> tuple[tuple[str, ...], FileList, FileList | None, FileList | None]:
    """CSV manifest -> (classes, train files, test files or None, validation files or None); errors name the CSV
    and its line. Rows of split val are the validation split when some rows are test, else the test split."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a spreadsheet's BOM
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in (reader.fieldnames or [])]
            reader.fieldnames = fields
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: cannot read the CSV manifest: {e}") from None
    for column in ("path", "label"):
        if column not in fields:
            raise DataError(f"{csv_path}: the header must name columns 'path' and 'label' (found {fields})")
    if not rows:
        raise DataError(f"{csv_path}: the manifest lists no images")
    base = csv_path.parent
    entries: list[tuple[str, Path, str]] = []  # (split, path, raw label)
    first_line: dict[str, int] = {}
    for line, row in rows:
        rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not rel or not label:
            raise DataError(f"{csv_path}, line {line}: empty path or label")
        split_value = (row.get("split") or "train").strip().lower() if "split" in fields else "train"
        if split_value not in SPLIT_NAMES:
            raise DataError(f"{csv_path}, line {line}: split {split_value!r} must be train, validation (or val) or test")
        path = base / rel
        if not path.is_file():
            raise DataError(f"{csv_path}, line {line}: image {path} not found")
        real = os.path.realpath(path)
        if real in first_line:  # one image twice (perhaps with two labels) would count twice and contradict itself
            raise DataError(f"{csv_path}, line {line}: image {rel} is listed a second time (first on line "
                            f"{first_line[real]}); list each image once")
        first_line[real] = line
        entries.append((SPLIT_NAMES[split_value], path, label))
    classes, label_ids = _manifest_classes(csv_path, [e[2] for e in entries])
    # val (not validation) alone is the test split, as in many data sets' layout; beside test rows, validation
    has_test = any(e[0] == "test" for e in entries)
    entries = [(("val" if has_test else "test") if e[0] == "val?" else e[0], e[1], e[2]) for e in entries]
    splits: dict[str, FileList] = {}
    for split in ("train", "test", "val"):
        rows_of_split = [i for i, e in enumerate(entries) if e[0] == split]
        if rows_of_split:
            splits[split] = FileList([entries[i][1] for i in rows_of_split], label_ids[rows_of_split])
    if "train" not in splits:
        raise DataError(f"{csv_path}: no row has split 'train'")
    if "test" in splits:
        check_test_classes_seen(splits["train"].labels, splits["test"].labels, classes, source=str(csv_path))
    return classes, splits["train"], splits.get("test"), splits.get("val")


def _manifest_classes(csv_path: Path, labels: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """Raw label strings -> (class names, int64 ids). All-integer labels are ids; otherwise names, sorted."""
    try:
        ids = np.asarray([int(v) for v in labels], dtype=np.int64)
    except ValueError:
        classes = tuple(sorted(set(labels)))
        index = {name: i for i, name in enumerate(classes)}
        return classes, np.asarray([index[v] for v in labels], dtype=np.int64)
    if ids.min() < 0:
        raise DataError(f"{csv_path}: integer labels must be >= 0, found {int(ids.min())}")
    count = implicit_class_count(ids, source=str(csv_path), fix="use class names as labels")
    return tuple(str(i) for i in range(count)), ids


def decode_image(path: Path | str, resize: int | None, data: bytes | None = None) -> np.ndarray:
    """Decode one image -> uint8 H x W (grey source) or H x W x 3 (anything else), resized when asked. With
    ``data`` the image is those bytes (a member of an archive) and ``path`` only names it in errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path if data is None else io.BytesIO(data)) as img:
            if img.mode.startswith("I;16") or img.mode in ("I", "F"):
                # 16-bit (or 32-bit) grey: PIL's convert("L") clips every value above 255 to white; scale instead
                img = Image.fromarray(_to_uint8(np.asarray(img), img.mode), "L")
            img = img.convert("L") if img.mode in GREY_MODES else img.convert("RGB")
            if resize is not None and img.size != (resize, resize):
                img = img.resize((resize, resize), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read the image: {e}") from None


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Grey values of a 16-bit (``I;16*``), 32-bit integer (``I``) or float (``F``) image as uint8: 16-bit (and
    integer images within 0..65535) scaled by 255 / 65535, floats within [0, 1] by 255, others by their own range."""
    values = values.astype(np.float64)
    if mode.startswith("I;16") or (mode == "I" and values.min() >= 0 and values.max() <= 65535):
        scaled = values * (255.0 / 65535.0)
    elif mode == "F" and values.min() >= 0 and values.max() <= 1:
        scaled = values * 255.0
    else:
        low, high = values.min(), values.max()
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def decode_all(paths: list[Path] | list[str], resize: int | None,
               data: list[bytes] | None = None) -> list[np.ndarray]:
    """Decode ``paths`` (or the ``data`` they name) in order, in a thread pool when there are many."""
    blobs = data if data is not None else [None] * len(paths)
    if len(paths) < THREADS_FROM:
        return [decode_image(p, resize, b) for p, b in zip(paths, blobs)]
    workers = min(MAX_THREADS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pb: decode_image(pb[0], resize, pb[1]), zip(paths, blobs)))


def stack_images(splits: list[tuple[list[Path], list[np.ndarray]]]) -> list[np.ndarray]:
    """Decoded images of each split -> one uint8 N x H x W x C array per split, C = 1 if all grey else 3.

    All images (of every split) must share one H x W; the first that differs raises a DataError naming it.
    """
    first_path, first = splits[0][0][0], splits[0][1][0]
    all_grey = all(a.ndim == 2 for _, arrays in splits for a in arrays)
    stacked = []
    for paths, arrays in splits:
        for path, a in zip(paths, arrays):
            if a.shape[:2] != first.shape[:2]:
                raise DataError(
                    f"{path}: image is {a.shape[1]}x{a.shape[0]} but {first_path} is {first.shape[1]}x{first.shape[0]}; "
                    "all images must share one size (pass resize=S to resize them to S x S)"
                )
        out = np.empty((len(arrays), *first.shape[:2], 1 if all_grey else 3), dtype=np.uint8)
        for i, a in enumerate(arrays):
            # Grey images among colour ones are replicated into R, G and B (what PIL's convert('RGB') does).
            out[i] = a[..., None] if a.ndim == 2 else a
        stacked.append(out)
    return stacked


def _check_resize(resize) -> int | None:
    if resize is None:
        return None
    if isinstance(resize, bool) or not isinstance(resize, (int, np.integer)) or resize < 1:
        raise ConfigError(f"folder: resize must be a positive integer or None, got {resize!r}")
    return int(resize)


FOLDER_USAGE = "folder:ROOT or folder:FILE.csv (ROOT/CLASS/*.png, or ROOT/train/CLASS/... and ROOT/test/CLASS/...)"


@register_dataset("folder", FOLDER_USAGE)
def load_folder(root: str = "", *, resize: int | None = None) -> ImageDataset:
    """Images from a class-per-folder tree or a CSV manifest (see the module docstring).

    ``meta`` holds ``root`` and ``train_files`` / ``test_files`` (paths in split order, as strings).
    """
    if not root:
        raise DataError(f"folder needs a path: {FOLDER_USAGE}")
    resize = _check_resize(resize)
    source = Path(root).expanduser()
    test_name = "test"
    if source.is_file() and source.suffix.lower() == ".csv":
        classes, train, test, val = read_manifest(source)
    elif source.is_dir():
        classes, train, test, test_name, val = scan_folder_root(source)
    elif source.suffix.lower() == ".csv":
        raise DataError(f"{source}: CSV manifest not found")
    elif source.exists():
        raise DataError(f"{source}: expected a folder of class folders or a .csv manifest")
    else:
        raise DataError(f"{source}: no such folder")
    # key -> (files, the folder or split name errors give)
    present = {key: (files, shown) for key, files, shown in (("train", train, "train"), ("test", test, test_name),
                                                            ("val", val, "val")) if files is not None}
    stacked = stack_images([(files.paths, decode_all(files.paths, resize)) for files, _ in present.values()])
    k = len(classes)
    splits = {key: make_split(images, files.labels, k, source=f"{source} ({shown})")
              for (key, (files, shown)), images in zip(present.items(), stacked)}
    meta = {"root": str(source), "train_files": tuple(str(p) for p in train.paths)}
    if test is not None:
        meta["test_files"] = tuple(str(p) for p in test.paths)
    if val is not None:
        meta["val_files"] = tuple(str(p) for p in val.paths)
    return ImageDataset(f"folder:{source.name}", classes, splits["train"], splits.get("test"), meta=meta,
                        labels_are_truth=False, val=splits.get("val"))
