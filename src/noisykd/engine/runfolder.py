"""A run folder that never loses work: checked before anything loads, locked while a process trains into it,
never mixed with other files, and finished only when its marker is written, last.

States of a folder, as :meth:`RunFolder.state` reads them:

* ``new``: absent or empty (a ``.lock`` aside);
* ``restartable``: what a run killed before its first checkpoint leaves (its config, its noisy labels, a cut
  temporary checkpoint), in a folder the run claimed (``.noisykd-run``, written before anything else): a new
  run clears it and starts;
* ``resumable``: holds a checkpoint (``--resume`` continues it);
* ``finished``: holds the marker ``finished.json`` (written after every other output);
* ``foreign``: holds other files, or files a run would write (``config.yaml``, ``train.log``...) in a folder no
  run claimed: a new run refuses to write there. Nothing in a folder is ever removed unless the folder's claim
  marker says a run created it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..errors import OutputError
from .checkpoint import has_checkpoint, output_error

LOCK = ".lock"
#: written by a new run before any other output: the folder's files are the run's own (and only then removable)
OWNER = ".noisykd-run"
FINISHED = "finished.json"
#: What a run writes before its first checkpoint: a folder holding only these may be started again.
PRE_CHECKPOINT = frozenset({"config.yaml", "noisy_labels.npz", "inputs.json", "run_info.json", "train.log",
                            "tensorboard", LOCK})


def _own_before_checkpoint(entry: Path) -> bool:
    """Whether ``entry`` is something a run writes before its first checkpoint, in a folder it claimed: its
    inputs and log, the claim marker, or a temporary file cut short by a kill (``*.tmp``)."""
    return entry.name in PRE_CHECKPOINT or entry.name == OWNER or (entry.name.endswith(".tmp") and entry.is_file())


class RunFolder:
    """The output folder of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- before anything else ----------------------------------------------------------------------------
    def check_writable(self) -> None:
        """An OutputError unless the folder is (or can be made) a writable folder: not a file, no file on the
        way to it, not read-only. Checked before any data loads."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path}: the output folder is a file; choose a folder")
        existing = path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise OutputError(f"{path}: cannot be a folder: {existing} on the way to it is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: cannot write there: {existing} is read-only for this user")

    def state(self) -> str:
        """``new``, ``restartable``, ``resumable``, ``finished`` or ``foreign`` (module docstring)."""
        if (self.path / FINISHED).is_file():
            return "finished"
        if has_checkpoint(self.path):
            return "resumable"
        entries = self.foreign_entries()
        if entries:
            return "foreign"
        own = [p for p in self._entries() if p.name != LOCK]
        return "restartable" if own else "new"

    @property
    def claimed(self) -> bool:
        """Whether a run created this folder's files (its claim marker is there)."""
        return (self.path / OWNER).is_file()

    def claim(self) -> None:
        """Mark the folder as a run's own, before the run writes anything else into it."""
        try:
            (self.path / OWNER).write_text(json.dumps({"claimed": datetime.now(timezone.utc).isoformat(
                timespec="seconds"), "pid": os.getpid()}) + "\n")
        except OSError as e:
            raise output_error(e, self.path / OWNER) from None

    def foreign_entries(self) -> list[str]:
        """Names of what a run killed before its first checkpoint would not have left there: everything (the
        lock aside) in a folder no run claimed."""
        claimed = self.claimed
        out = []
        for entry in self._entries():
            if entry.name == LOCK or (claimed and _own_before_checkpoint(entry)):
                continue
            if entry.name == "checkpoints" and entry.is_dir() and all(p.name.endswith(".tmp") for p in entry.iterdir()):
                continue
            out.append(entry.name)
        return sorted(out)

    def clear_leftovers(self) -> None:
        """Remove what a run killed before its first checkpoint left (config, noisy labels, cut temporary
        files, the claim marker last), only in a folder a run claimed: nothing of anyone else's. The lock
        stays."""
        if not self.claimed:
            return
        for entry in self._entries():
            if entry.name == "checkpoints" and entry.is_dir() and all(p.name.endswith(".tmp") for p in entry.iterdir()):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name == "tensorboard" and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name != LOCK and _own_before_checkpoint(entry) and not entry.is_dir():
                entry.unlink(missing_ok=True)
        (self.path / OWNER).unlink(missing_ok=True)

    def _entries(self) -> list[Path]:
        return list(self.path.iterdir()) if self.path.is_dir() else []

    # --- while training ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the folder (``.lock``, released by the OS if the process dies): a second
        process training into the same folder is refused at once, naming the first one."""
        import fcntl

        try:
            self.path.mkdir(parents=True, exist_ok=True)
            created = not (self.path / LOCK).exists()
            handle = open(self.path / LOCK, "a+")
        except OSError as e:
            raise output_error(e, self.path / LOCK) from None
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise OutputError(f"{self.path} is in use by another noisykd run ({holder}); wait for it, or "
                                  "choose another output folder") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield
        finally:
            handle.close()  # closing releases the lock
            if created and not self.claimed and not has_checkpoint(self.path) and not self.finished:
                (self.path / LOCK).unlink(missing_ok=True)  # a refused folder is left as it was found

    # --- at the end --------------------------------------------------------------------------------------
    def mark_finished(self, epochs: int) -> None:
        """Write ``finished.json`` atomically, after every other output: only then is the run finished."""
        text = json.dumps({"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "epochs": epochs})
        tmp = self.path / (FINISHED + ".tmp")
        try:
            tmp.write_text(text + "\n")
            os.replace(tmp, self.path / FINISHED)
        except OSError as e:
            raise output_error(e, self.path / FINISHED) from None

    def clear_finished(self) -> None:
        """A resumed run is not finished until it writes its marker again."""
        (self.path / FINISHED).unlink(missing_ok=True)

    @property
    def finished(self) -> bool:
        return (self.path / FINISHED).is_file()
