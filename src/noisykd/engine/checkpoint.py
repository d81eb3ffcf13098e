"""Checkpoints: written atomically, verified when read, loaded without executing pickles (``weights_only=True``).

A run folder keeps ``checkpoints/last.pt`` and the one before it, ``checkpoints/previous.pt``: a checkpoint
that is corrupt (a disk full, a copy cut short, flipped bits) leaves the previous one usable. A checkpoint is a
zip archive (``torch.save``) whose every member carries a CRC-32; torch does not check them when it reads, so
:func:`load_checkpoint` does, and refuses a damaged file instead of loading wrong weights.
"""

from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError, DataError, OutputError
from ..safe_pickle import check_checkpoint_pickle, read_zip_member

LAST = "last.pt"
PREVIOUS = "previous.pt"
BEST = "best.pt"


def run_checkpoint(target: str | Path, best: bool = False) -> Path:
    """The checkpoint a command reads: ``target`` itself when it is a file, else the run folder's
    ``checkpoints/best.pt`` (``best``) or ``checkpoints/last.pt``; a CheckpointError says what is missing and why."""
    target = Path(target)
    if target.is_file():
        return target
    path = target / "checkpoints" / (BEST if best else LAST)
    if path.is_file():
        return path
    if not target.is_dir():
        raise CheckpointError(f"{target}: no such run folder or checkpoint file")
    if best and (target / "checkpoints" / LAST).is_file():
        raise CheckpointError(f"{target}: no checkpoints/best.pt: the run has no validation split and was made "
                              "by an earlier noisykd (runs now always write best.pt) or has not finished; use its "
                              "last epoch (drop --best)")
    raise CheckpointError(f"{target}: no checkpoints/{path.name}; is it a noisykd run folder (noisykd train "
                          f"--out {target})?")


def save_atomic(obj: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, flush to disk, then rename over ``path``. A full
    disk is an :class:`OutputError` naming the path (and the temporary file is removed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        raise output_error(e, path) from None


def output_error(e: Exception, path: Path) -> Exception:
    """A write failure as one clear error: no space left, read-only, no permission; others unchanged."""
    code = getattr(e, "errno", None)
    text = str(e)
    if code == errno.ENOSPC or "No space left" in text or "file write failed" in text:
        return OutputError(f"no space left on the device of {path}; free some space and continue with --resume")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(f"cannot write {path}: {os.strerror(code)}")
    return e


def save_rotating(obj: dict, folder: str | Path) -> Path:
    """Save ``obj`` as ``folder/last.pt``, keeping the former last as ``folder/previous.pt``."""
    folder = Path(folder)
    last = folder / LAST
    tmp = folder / (LAST + ".tmp")
    folder.mkdir(parents=True, exist_ok=True)
    save_atomic(obj, tmp)  # fully written before anything is renamed
    if last.exists():
        os.replace(last, folder / PREVIOUS)
    os.replace(tmp, last)
    return last


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint on the CPU with ``weights_only=True`` after checking every member's CRC; a missing,
    empty, truncated, damaged or foreign file raises :class:`CheckpointError` naming it (and the previous
    checkpoint, when there is one)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    problem = _damage(path)
    if problem is None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError... for damaged files
            first = (str(e).strip().splitlines() or [""])[0][:200]
            problem = f"cannot read it ({type(e).__name__}{': ' + first if first else ''})"
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}{_previous_hint(path)}") from None
    if not isinstance(state, dict) or "format" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a noisykd checkpoint (no 'format' or 'config' entry)")
    return state


#: torch.save stores its members uncompressed; a little slack for the zip's own headers
_INFLATE_SLACK = 2**20


def _damage(path: Path) -> str | None:
    """Why ``path`` is not an intact checkpoint archive, or None. Refuses a zip bomb (members declaring more
    bytes than the file holds) before inflating anything, checks every member's CRC-32, then checks the pickle
    stream of ``data.pkl`` with the safe unpickler's limits (:func:`noisykd.safe_pickle.check_checkpoint_pickle`)
    before torch reads it."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (its write was cut short)"
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            declared = sum(info.file_size for info in infos)
            if declared > 2 * size + _INFLATE_SLACK:
                return (f"refused: its members declare {declared:,} bytes once inflated, far more than the file's "
                        f"{size:,} (torch.save stores them uncompressed); not a genuine checkpoint")
            bad = archive.testzip()  # reads every member and compares its CRC-32
            if bad is not None:
                return f"damaged: the data of {bad} fails its checksum (CRC-32)"
            pickles = [info.filename for info in infos if info.filename.endswith("data.pkl")]
            if len(pickles) != 1:
                return f"not a torch checkpoint archive (expected one data.pkl, found {len(pickles)})"
            check_checkpoint_pickle(read_zip_member(archive, pickles[0], source=str(path)),
                                    source=f"{path}:{pickles[0]}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        if isinstance(e, DataError):  # the pickle check's own message: unsafe or unreadable
            return str(e).split(": ", 1)[-1] if str(e).startswith(str(path)) else str(e)
        return f"not an intact checkpoint archive (truncated or corrupt: {e})"
    return None


def _previous_hint(path: Path) -> str:
    previous = path.with_name(PREVIOUS)
    if path.name == LAST and previous.is_file() and _damage(previous) is None:
        return f"; the previous checkpoint {previous} is intact: resume from it with --resume {previous}"
    return ""


def find_resume_checkpoint(target: str | Path) -> Path:
    """``target`` is a checkpoint file or a run folder; return the checkpoint to resume from."""
    target = Path(target)
    if target.is_file():
        return target
    if not target.exists():
        raise CheckpointError(f"{target}: no such run folder or checkpoint")
    for candidate in (target / "checkpoints" / LAST, target / "checkpoints" / PREVIOUS):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{target}: no checkpoint to resume from (the run stopped before its first epoch ended); "
                          "start it again with the same command")


def run_folder_of(target: str | Path) -> Path:
    """The run folder of a resume target: the folder itself, or RUN for RUN/checkpoints/last.pt."""
    target = Path(target)
    if target.is_file():
        return target.parent.parent if target.parent.name == "checkpoints" else target.parent
    return target


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether a run folder holds a checkpoint to resume from (temporary files of a cut write do not count)."""
    folder = Path(run_dir) / "checkpoints"
    return (folder / LAST).is_file() or (folder / PREVIOUS).is_file()
