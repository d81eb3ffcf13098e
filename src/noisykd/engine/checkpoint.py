"""Checkpoints: written atomically, loaded without executing pickles (``weights_only=True``).

A run folder keeps ``checkpoints/last.pt`` and the one before it, ``checkpoints/previous.pt``: a checkpoint
that is corrupt (a disk full, a copy cut short) leaves the previous one usable.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import CheckpointError

LAST = "last.pt"
PREVIOUS = "previous.pt"
BEST = "best.pt"


def save_atomic(obj: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, flush to disk, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    """Load a checkpoint on the CPU with ``weights_only=True``; a missing, truncated or corrupt file raises
    :class:`CheckpointError` naming it (and the previous checkpoint, when there is one)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError... for damaged files
        hint = ""
        previous = path.with_name(PREVIOUS)
        if path.name == LAST and previous.is_file():
            hint = f"; the previous checkpoint {previous} is intact: resume from it with --resume {previous}"
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated or corrupt: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}){hint}") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path}: not a noisykd checkpoint (no 'format' entry)")
    return state


def find_resume_checkpoint(target: str | Path) -> Path:
    """``target`` is a checkpoint file or a run folder; return the checkpoint to resume from."""
    target = Path(target)
    if target.is_file():
        return target
    for candidate in (target / "checkpoints" / LAST, target / "checkpoints" / PREVIOUS):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{target}: no checkpoint to resume from (looked for checkpoints/{LAST} and {PREVIOUS})")
