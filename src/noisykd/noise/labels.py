"""The result of every noise generator: the labels to train on, the ground truth, and how they were made.

:class:`NoisyLabels` is plain numpy in and out and can be written to / read from an ``.npz`` file, so that
runs that should compare on identical labels really do (``noisy.save(path)``, ``NoisyLabels.load(path)``).
"""

from __future__ import annotations

import json
import os
import re
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

#: Written into every file; bumped if the layout ever changes, so old files fail loudly instead of silently.
FILE_FORMAT = "noisykd.noise/1"
_REQUIRED_KEYS = ("format", "labels", "is_open_set", "kind", "params")
# Lists longer than this are shortened in :meth:`NoisyLabels.summary` (e.g. the OOD rows of open-set noise).
_SUMMARY_MAX_LIST = 32


@dataclass(frozen=True, eq=False)
class NoisyLabels:
    """Training labels with their provenance.

    labels:      int64 N, the (possibly noisy) labels to train on.
    clean:       int64 N or None, the ground-truth labels when known. For an open-set sample this is the
                 in-distribution label it carries (its image is out-of-distribution, so it has no true class).
    is_open_set: bool N, True where the image was replaced by an out-of-distribution one (open-set noise).
                 Such samples count as noisy whatever their label.
    kind:        the generator, e.g. ``"symmetric"``, ``"asymmetric_cifar10"``, ``"real"``, ``"open_set"``.
    params:      JSON-able dict of how they were made (rate, seed, convention, num_classes ...).

    The arrays are copied on construction (the caller's arrays can change later without touching these);
    ``params`` is normalised through JSON, so what you read back from a file equals what you put in.
    """

    labels: np.ndarray
    clean: np.ndarray | None = None
    is_open_set: np.ndarray | None = None
    kind: str = "unknown"
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = _as_int64(self.labels, "labels")
        n = len(labels)
        clean = None if self.clean is None else _as_int64(self.clean, "clean")
        if clean is not None and len(clean) != n:
            raise DataError(f"NoisyLabels: clean has {len(clean)} entries, labels has {n}; lengths must match")
        if self.is_open_set is None:
            is_open = np.zeros(n, dtype=bool)
        else:
            is_open = np.asarray(self.is_open_set)
            if is_open.dtype != bool or is_open.ndim != 1 or len(is_open) != n:
                raise DataError(f"NoisyLabels: is_open_set must be a bool array of length {n}, "
                                f"got dtype {is_open.dtype} and shape {is_open.shape}")
            is_open = is_open.copy()
        if not isinstance(self.kind, str) or not self.kind:
            raise DataError(f"NoisyLabels: kind must be a non-empty string, got {self.kind!r}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "clean", clean)
        object.__setattr__(self, "is_open_set", is_open)
        object.__setattr__(self, "params", _json_normalise(self.params))

    def __len__(self) -> int:
        return len(self.labels)

    # ---- realised noise ---------------------------------------------------------------------------------

    @property
    def is_noisy(self) -> np.ndarray | None:
        """bool N: label differs from the clean one, or the sample is open-set. None when ``clean`` is unknown."""
        if self.clean is None:
            return None
        return (self.labels != self.clean) | self.is_open_set

    @property
    def noise_rate(self) -> float | None:
        """Realised fraction of noisy samples (closed- plus open-set); None when ``clean`` is unknown."""
        noisy = self.is_noisy
        if noisy is None or len(noisy) == 0:
            return None if noisy is None else 0.0
        return float(noisy.mean())

    @property
    def open_set_rate(self) -> float:
        """Fraction of samples whose image is out-of-distribution."""
        return float(self.is_open_set.mean()) if len(self) else 0.0

    @property
    def closed_set_rate(self) -> float | None:
        """Fraction of in-distribution samples with a wrong label (of all N); None when ``clean`` is unknown."""
        if self.clean is None:
            return None
        closed = (self.labels != self.clean) & ~self.is_open_set
        return float(closed.mean()) if len(self) else 0.0

    def describe(self) -> str:
        """One line for logs: the kind and the realised counts (closed- and open-set apart when there are open-set
        samples), e.g. ``open_set noise: 2,500 of 5,000 samples noisy (50.00%): 1,250 closed-set, 1,250 open-set``."""
        n = len(self)
        noisy = self.is_noisy
        if noisy is None:
            return f"{self.kind} labels on {n:,} samples: noise unknown (no clean labels)"
        line = f"{self.kind} noise: {int(noisy.sum()):,} of {n:,} samples noisy ({100 * (self.noise_rate or 0):.2f}%)"
        n_open = int(self.is_open_set.sum())
        if n_open:
            line += f": {int(noisy.sum()) - n_open:,} closed-set (wrong label), {n_open:,} open-set (foreign image)"
        return line

    def transition_matrix(self, num_classes: int) -> np.ndarray:
        """Realised noise transition matrix T, float64 C x C.

        T[i, j] = fraction of the closed-set samples (open-set ones excluded: their images have no true class)
        with clean label i that carry label j. Rows sum to 1; a class without samples gets a row of zeros.
        Needs ``clean``.
        """
        if self.clean is None:
            raise DataError(f"transition_matrix: the clean labels of this {self.kind!r} label set are unknown")
        num_classes = _check_num_classes(num_classes)
        keep = ~self.is_open_set
        for name, arr in (("labels", self.labels), ("clean", self.clean)):
            if len(arr) and (arr.min() < 0 or arr.max() >= num_classes):
                raise DataError(f"transition_matrix: {name} has values outside [0, {num_classes - 1}]")
        counts = np.zeros((num_classes, num_classes), dtype=np.float64)
        np.add.at(counts, (self.clean[keep], self.labels[keep]), 1.0)
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    def summary(self) -> dict[str, Any]:
        """JSON-able overview for logs: kind, params, counts and realised rates."""
        noisy = self.is_noisy
        params = {k: (f"<{len(v)} values>" if isinstance(v, list) and len(v) > _SUMMARY_MAX_LIST else v)
                  for k, v in self.params.items()}
        return {
            "kind": self.kind,
            "params": params,
            "num_samples": len(self),
            "has_clean": self.clean is not None,
            "num_noisy": None if noisy is None else int(noisy.sum()),
            "num_open_set": int(self.is_open_set.sum()),
            "noise_rate": self.noise_rate,
            "closed_set_rate": self.closed_set_rate,
            "open_set_rate": self.open_set_rate,
        }

    # ---- files ------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` (no pickles) atomically: a temp file in the same folder, then ``os.replace``.

        Keys: format, labels (int64 N), clean (int64 N, only when known), is_open_set (bool N), kind (str),
        params (str, JSON). A crash midway leaves the old file (or none), never a half-written one.
        Returns the path written (exactly ``path``; no ``.npz`` is appended).
        """
        path = Path(path)
        arrays = {
            "format": np.array(FILE_FORMAT),
            "labels": self.labels,
            "is_open_set": self.is_open_set,
            "kind": np.array(self.kind),
            "params": np.array(json.dumps(self.params, sort_keys=True)),
        }
        if self.clean is not None:
            arrays["clean"] = self.clean
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique hidden name next to the target (same file system, so os.replace is atomic); opened with
        # open(..., "xb") rather than mkstemp so the file gets the usual umask permissions, not 0600.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "xb") as fh:
                np.savez(fh, **arrays)  # a file object: numpy does not append '.npz' to the name
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, num_samples: int | None = None,
             num_classes: int | None = None) -> "NoisyLabels":
        """Read a file written by :meth:`save` (``np.load(allow_pickle=False)``).

        Checks keys, dtypes, lengths (against ``num_samples`` when given) and label ranges (against
        ``num_classes`` when given, and against ``params['num_classes']`` when the file records one).
        Raises :class:`DataError` naming the file and the offending field.
        """
        path = Path(path)
        src = f"noise file {path}"
        if not path.is_file():
            raise DataError(f"{src}: not found (expected an .npz written by NoisyLabels.save)")
        not_npz = f"{src}: not an .npz archive (expected one written by NoisyLabels.save)"
        try:
            npz = np.load(path, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):  # a plain .npy loads as an array
                raise DataError(not_npz)
            with npz:
                missing = [k for k in _REQUIRED_KEYS if k not in npz.files]
                if missing:
                    raise DataError(f"{src}: missing field(s) {', '.join(missing)}; found {sorted(npz.files)}")
                # Reading every member here surfaces truncation / CRC errors now, as a DataError.
                raw = {k: npz[k] for k in npz.files}
        except DataError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(f"{src}: unreadable or truncated .npz ({type(exc).__name__}: {exc})") from exc
        return cls._from_arrays(raw, src, num_samples, num_classes)

    @classmethod
    def _from_arrays(cls, raw: dict[str, np.ndarray], src: str, num_samples: int | None,
                     num_classes: int | None) -> "NoisyLabels":
        """Validate the arrays read from a file and build the object."""
        fmt = _read_str(raw, "format", src)
        if fmt != FILE_FORMAT:
            raise DataError(f"{src}: field 'format' is {fmt!r}, expected {FILE_FORMAT!r}")
        kind = _read_str(raw, "kind", src)
        try:
            params = json.loads(_read_str(raw, "params", src))
        except json.JSONDecodeError as exc:
            raise DataError(f"{src}: field 'params' is not valid JSON ({exc})") from exc
        if not isinstance(params, dict):
            raise DataError(f"{src}: field 'params' must be a JSON object, got {type(params).__name__}")

        labels = _read_labels(raw, "labels", src)
        n = len(labels)
        if num_samples is not None and n != num_samples:
            raise DataError(f"{src}: field 'labels' has {n} entries, expected {num_samples} (the training set)")
        clean = _read_labels(raw, "clean", src, expected_len=n) if "clean" in raw else None
        is_open = raw["is_open_set"]
        if is_open.dtype != bool or is_open.shape != (n,):
            raise DataError(f"{src}: field 'is_open_set' must be bool of shape ({n},), "
                            f"got {is_open.dtype} {is_open.shape}")

        recorded = params.get("num_classes")
        if num_classes is not None and recorded is not None and recorded != num_classes:
            raise DataError(f"{src}: field 'params' records num_classes={recorded}, expected {num_classes}")
        limit = num_classes if num_classes is not None else recorded
        for name, arr in (("labels", labels), ("clean", clean)):
            if arr is None or not len(arr):
                continue
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or (isinstance(limit, int) and hi >= limit):
                bound = f"[0, {limit - 1}]" if isinstance(limit, int) else "[0, inf)"
                raise DataError(f"{src}: field {name!r} must lie in {bound}, found values in [{lo}, {hi}]")
        return cls(labels=labels, clean=clean, is_open_set=is_open, kind=kind, params=params)


# ---- helpers shared by the generators -------------------------------------------------------------------

def rate_from_text(text: str) -> float:
    """A rate written in a spec (``"0.4"``, ``"4e-1"``) as a float; ValueError for anything but ASCII digits,
    sign, point and exponent (Python's float() would also take "٠.٤" or " 0.4 ")."""
    if not re.fullmatch(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", text):
        raise ValueError(text)
    return float(text)


def check_rate(rate: float, name: str = "rate") -> float:
    """``rate`` as a float in [0, 1]; DataError naming the argument otherwise."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise DataError(f"{name} must be a number in [0, 1], got {rate!r}")
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        hint = f" (a percentage? use {rate / 100:g})" if 1.0 < rate <= 100.0 else ""
        raise DataError(f"{name} must lie in [0, 1], got {rate:g}{hint}")
    return rate


def check_seed(seed: int) -> int:
    """``seed`` as a non-negative int (seeds are recorded in files, so they must be plain integers)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_clean_labels(clean_labels: np.ndarray, num_classes: int, name: str = "clean_labels") -> np.ndarray:
    """1-D int64 copy of ``clean_labels`` with values in [0, num_classes); DataError naming ``name`` otherwise."""
    num_classes = _check_num_classes(num_classes)
    labels = _as_int64(clean_labels, name)
    if len(labels):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(f"{name} must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
                            f"found values in [{lo}, {hi}]")
    return labels


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}")
    return int(num_classes)


def _as_int64(values: Any, name: str) -> np.ndarray:
    """A 1-D int64 copy; integral floats are accepted (labels read from CSV/JSON often are)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        raise DataError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=True)


def _json_normalise(params: Any) -> dict:
    """A JSON round trip of ``params``: numpy scalars become Python ones, tuples lists; errors name the key."""
    if not isinstance(params, dict):
        raise DataError(f"NoisyLabels: params must be a dict, got {type(params).__name__}")

    def plain(value):
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON-able")

    try:
        return json.loads(json.dumps(params, default=plain, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DataError(f"NoisyLabels: params must be JSON-able (numbers, strings, lists, dicts): {exc}") from exc


def _read_str(raw: dict[str, np.ndarray], key: str, src: str) -> str:
    arr = raw[key]
    if arr.shape != () or arr.dtype.kind != "U":
        raise DataError(f"{src}: field {key!r} must be a string, got {arr.dtype} of shape {arr.shape}")
    return str(arr)


def _read_labels(raw: dict[str, np.ndarray], key: str, src: str, expected_len: int | None = None) -> np.ndarray:
    arr = raw[key]
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{src}: field {key!r} must be a 1-D integer array, got {arr.dtype} of shape {arr.shape}")
    if expected_len is not None and len(arr) != expected_len:
        raise DataError(f"{src}: field {key!r} has {len(arr)} entries, 'labels' has {expected_len}")
    return arr.astype(np.int64, copy=False)
