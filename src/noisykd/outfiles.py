"""Files a command writes outside a run folder (predictions, cleaned data sets): checked before any work,
never replacing a file, never inside a data tree or a run folder, and written atomically.

A data tree gains nothing (a ``cleaned/`` folder inside a class-folder tree would become a class); a run
folder holds only its run's files (:mod:`noisykd.engine.runfolder`); an existing file is the user's and stays.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from .errors import OutputError


def is_inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def enclosing_run(path: Path) -> Path | None:
    """The run folder ``path`` lies in (itself or an ancestor that a run claimed, finished or checkpointed), or
    None."""
    from .engine.checkpoint import has_checkpoint
    from .engine.runfolder import RunFolder

    for folder in [path, *path.parents]:
        run = RunFolder(folder)
        if folder.is_dir() and (run.claimed or run.finished or has_checkpoint(folder)):
            return folder
    return None


def data_root(spec: str | None) -> Path | None:
    """The folder a data spec reads from (``folder:ROOT``, ``cifar10:ROOT``, a manifest's folder, a plain folder
    of images), or None (``digits``, an npz file: no tree to protect)."""
    if not spec:
        return None
    kind, sep, rest = spec.partition(":")
    if not sep:  # a plain folder of images (predict --data DIR)
        path = Path(spec).expanduser()
        return path if path.is_dir() else None
    if kind == "npz" or not rest:
        return None
    path = Path(rest.split(":")[0]).expanduser()
    return path if path.is_dir() else path.parent


def check_output_place(path: Path, *, data_roots: Iterable[Path | None] = (), option: str = "--out") -> None:
    """Refuse, before any work, an output (file or folder) ``path`` inside a run folder or a data tree: one line
    naming it and what to do."""
    run = enclosing_run(path.parent)
    if run is not None:
        raise OutputError(f"{path} would land inside the run folder {run}, which holds its run's files only; "
                          f"choose a place outside it ({option})")
    for root in (r for r in data_roots if r is not None):
        if is_inside(path, root):
            raise OutputError(f"{path} would land inside the data folder {root}, which would then read it as "
                              f"data; choose a place outside it ({option})")


def check_new_files(paths: Iterable[Path], *, data_roots: Iterable[Path | None] = (), option: str = "--out") -> None:
    """Refuse, before any work, a file that exists, lies inside a run folder or a data tree
    (:func:`check_output_place`), or whose folder cannot be written: one line naming it and what to do."""
    roots = list(data_roots)
    for path in paths:
        path = Path(path)
        if path.exists() or path.is_symlink():
            raise OutputError(f"{path} exists; choose another {option} (noisykd never replaces a file)")
        check_output_place(path, data_roots=roots, option=option)
        existing = path.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write {path}: {existing} is not a writable folder")


def write_new_files(files: list[tuple[Path, Callable[[BinaryIO], None]]]) -> list[Path]:
    """Write each ``(path, write)`` through ``write(file)`` into a hidden temporary file next to it; only when every
    one is complete, link them into place, which fails rather than replace a file that appeared meanwhile. An
    error or a Ctrl-C while writing leaves none of them (and no temporary file)."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, write in files:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            temps.append((tmp, path))
            with open(tmp, "xb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in temps:
            _link_new(tmp, path)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
    return [path for _, path in temps]


def _link_new(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)  # atomic, and never replaces
    except FileExistsError:
        raise OutputError(f"{path} appeared while it was being written; nothing was replaced") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if path.exists():  # a file system without hard links: check, then rename
            raise OutputError(f"{path} appeared while it was being written; nothing was replaced") from None
        os.replace(tmp, path)
