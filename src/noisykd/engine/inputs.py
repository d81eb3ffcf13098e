"""What a run was trained on, recorded so that later readers can tell when it changed.

``RUN/inputs.json`` holds the SHA-256 of ``config.yaml`` and ``noisy_labels.npz`` as the run wrote them, and a
fingerprint of its data (the files it read: their paths and sizes). ``noisykd detect`` and ``clean`` and a resume
check them first: an edited config (another data spec), edited noisy labels (every cleaned label would then
differ from what the run trained on) or a changed data folder (an image removed and one added shifts every row
after it) is one line naming what changed, instead of a result that silently mixes two data sets. Runs written
before this file existed are not checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import DataError
from .report import write_json

INPUTS = "inputs.json"
#: folders of more files than this are not fingerprinted file by file (the data's own list is, when it has one)
MAX_WALK = 20_000


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(meta: dict) -> dict | None:
    """The files a data set was read from, as ``{"files": N, "bytes": total, "sha256": digest of the sorted
    (path, size) list}``: the source's own file lists when it has them (image folders, manifests), else the
    files under its root (a file: itself). None for built-in data (no root) or a root too large to walk."""
    listed = [name for key in ("train_files", "val_files", "test_files") for name in meta.get(key) or ()]
    if listed:
        paths = [Path(p) for p in listed]
    elif meta.get("root"):
        root = Path(meta["root"])
        if root.is_file():
            paths = [root]
        elif root.is_dir():
            paths = []
            for folder, _, names in os.walk(root):
                paths += [Path(folder) / n for n in names]
                if len(paths) > MAX_WALK:
                    return None
        else:
            return None
    else:
        return None
    entries = sorted(f"{p}\t{p.stat().st_size if p.exists() else -1}" for p in paths)
    return {"files": len(entries), "bytes": sum(max(int(e.rsplit("\t", 1)[1]), 0) for e in entries),
            "sha256": hashlib.sha256("\n".join(entries).encode("utf-8", "surrogatepass")).hexdigest()}


def record_inputs(run_dir: Path, meta: dict) -> None:
    """Write ``RUN/inputs.json`` (atomically) from the run's config.yaml and noisy_labels.npz as written, and its
    data's fingerprint."""
    record = {"config.yaml": file_digest(run_dir / "config.yaml"),
              "noisy_labels.npz": file_digest(run_dir / "noisy_labels.npz"),
              "data": data_fingerprint(meta)}
    write_json(record, run_dir / INPUTS)


def verify_inputs(run_dir: str | Path, meta: dict | None = None, spec: str = "") -> None:
    """Raise a DataError naming what changed since the run recorded its inputs: its config.yaml, its
    noisy_labels.npz, or (with ``meta``, the data set loaded now) its data. Nothing to check without inputs.json."""
    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / INPUTS).read_text())
    except (OSError, ValueError):
        return
    for name, why in (("config.yaml", "another data spec or labels would mix two data sets"),
                      ("noisy_labels.npz", "its labels are the ones the run trained on")):
        path = run_dir / name
        if name in record and (not path.is_file() or file_digest(path) != record[name]):
            state = "is missing" if not path.is_file() else "was changed after the run wrote it"
            raise DataError(f"{path} {state} ({why}); restore it, or train a new run on what you changed")
    if meta is not None and record.get("data") is not None:
        now = data_fingerprint(meta)
        then = record["data"]
        if now is None or now["sha256"] != then["sha256"]:
            detail = ("" if now is None else f": {then['files']:,} files of {then['bytes']:,} bytes when it was "
                      f"trained, {now['files']:,} files of {now['bytes']:,} bytes now")
            raise DataError(f"the data of {run_dir} ({spec or 'its data spec'}) changed since the run was trained"
                            f"{detail}; its per-sample outputs would no longer match the images row by row: train a "
                            "new run on the data as it is now")
