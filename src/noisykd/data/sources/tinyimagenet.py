"""``tinyimagenet:PATH``: the labelled Tiny ImageNet validation images, e.g. as the out-of-distribution pool of
universal noise (MODUL's open-set images; the paper uses downsampled ImageNet).

PATH is the official ``tiny-imagenet-200/`` folder, a folder holding it, or a ``.tar.gz``/``.tar`` of it (read
in place: members are decoded from the archive, nothing is extracted). Read: ``words.txt`` (wnid -> names),
``val/val_annotations.txt`` (file, wnid, box) and ``val/images/*.JPEG``. The training split is every annotated
validation image (50 per class in the standard 200 classes); the unlabelled test images are not read. Classes are
the annotated wnids, sorted; a class's name is the first of its ``words.txt`` names (the wnid added when two
classes share it); ``meta["wnids"]`` keeps the wnids, which ``data.ood_exclude`` accepts as well as names. Images
are 64 x 64 RGB (grey ones replicated into R, G and B; all-grey data stays one channel); universal noise resizes
them to the in-distribution size. ``resize=S`` (Python API) resizes them at decoding.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import DataError
from ..base import ImageDataset, make_split
from ..registry import register_dataset
from .folder import _check_resize, decode_all, stack_images

ROOT = "tiny-imagenet-200"
TINYIMAGENET_USAGE = "tinyimagenet:PATH (the tiny-imagenet-200 folder, a folder holding it, or its .tar.gz)"


def _reader(path: Path) -> tuple[Callable[[str], bytes], str, Callable[[], None]]:
    """(read(relative name) -> bytes, description, close) for a folder or a tar archive of tiny-imagenet-200/."""
    if path.is_dir():
        root = path if (path / "words.txt").is_file() else path / ROOT

        def read_file(name: str) -> bytes:
            try:
                return (root / name).read_bytes()
            except OSError:
                raise DataError(f"{root / name}: missing (expected the official Tiny ImageNet layout; "
                                f"{TINYIMAGENET_USAGE})") from None
        return read_file, str(root), lambda: None
    if path.is_file():
        try:
            archive = tarfile.open(path)
            members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # EOFError: a cut archive (click: "Aborted.")
            raise DataError(f"{path}: not a readable tar archive (truncated or damaged?): "
                            f"{type(e).__name__}: {e}") from None
        prefix = ROOT + "/" if f"{ROOT}/words.txt" in members else ""

        def read_member(name: str) -> bytes:
            member = members.get(prefix + name)
            if member is None:
                raise DataError(f"{path}: no member {prefix + name} (expected the official Tiny ImageNet layout)")
            try:
                handle = archive.extractfile(member)
                return handle.read() if handle is not None else b""
            except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                raise DataError(f"{path}: member {member.name} cannot be read (truncated or damaged archive?): "
                                f"{type(e).__name__}: {e}") from None
        return read_member, str(path), archive.close
    raise DataError(f"{path}: no such folder or archive ({TINYIMAGENET_USAGE})")


def parse_annotations(text: str, source: str) -> list[tuple[str, str]]:
    """``val_annotations.txt`` -> [(file name, wnid)] in file order; a malformed line is a DataError naming it."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(f"{source} line {number}: expected 'file<TAB>wnid<TAB>box...', got {line[:80]!r}")
        rows.append((fields[0].strip(), fields[1].strip()))
    if not rows:
        raise DataError(f"{source}: no annotation")
    return rows


def class_names(wnids: list[str], words: str) -> tuple[str, ...]:
    """The first ``words.txt`` name of each wnid (the wnid when it has none), made unique with the wnid."""
    first = {}
    for line in words.splitlines():
        wnid, _, names = line.partition("\t")
        if wnid.strip():
            first[wnid.strip()] = names.split(",")[0].strip()
    names = [first.get(w) or w for w in wnids]
    return tuple(n if names.count(n) == 1 else f"{n} ({w})" for n, w in zip(names, wnids))


@register_dataset("tinyimagenet", TINYIMAGENET_USAGE)
def load_tinyimagenet(path: str = "", *, resize: int | None = None) -> ImageDataset:
    """The labelled Tiny ImageNet validation images as a training split (see the module docstring); ``resize=S``
    resizes them to S x S (Python API: ``load_dataset(spec, resize=32)``)."""
    if not path:
        raise DataError(f"tinyimagenet needs a path: {TINYIMAGENET_USAGE}")
    resize = _check_resize(resize)
    source = Path(path).expanduser()
    read, where, close = _reader(source)
    try:
        annotations = parse_annotations(read("val/val_annotations.txt").decode("utf-8", "replace"),
                                        f"{where}: val/val_annotations.txt")
        words = read("words.txt").decode("utf-8", "replace")
        blobs = [read(f"val/images/{name}") for name, _ in annotations]
    finally:
        close()
    names = [f"{where}: val/images/{name}" for name, _ in annotations]
    (images,) = stack_images([(names, decode_all(names, resize, blobs))])  # grey ones replicated into RGB
    wnids = sorted({w for _, w in annotations})
    index = {w: k for k, w in enumerate(wnids)}
    labels = np.array([index[w] for _, w in annotations], dtype=np.int64)
    classes = class_names(wnids, words)
    train = make_split(images, labels, len(classes), source=f"{where} (val)")
    return ImageDataset("tinyimagenet", classes, train, None, meta={"root": where, "wnids": tuple(wnids)})
