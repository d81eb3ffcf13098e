"""Per-sample state kept across epochs, keyed by the dataset index.

Methods keep histories (BKD's P_T/P_S/P_A per epoch), groups (MODUL), refined labels, scores... here. The
store lives on the training device, is written from batches by index, saved in every checkpoint, and
exported at the end of a run (NPZ with every entry, CSV with the one-value-per-sample entries).

In a distributed run every rank holds the whole store: a write is applied at once on the rank that made it and
kept; the engine calls :meth:`SampleStore.synchronize` after every training step and after each hook that may
write (a collective every rank makes at the same points, however many writes each made), which replays every
rank's writes of that window on every rank, in rank order. Writes from training steps touch disjoint indices
(each sample is in one rank's part of one batch per epoch); writes made by every rank alike (from full-store
decisions such as BKD's Otsu split) end as the highest rank's, the same everywhere even if a GPU computed them
with other rounding on another rank.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import CheckpointError, ContractError

if TYPE_CHECKING:
    from .distributed import Processes


class SampleStore:
    """Named tensors of shape (num_samples, *tail), row i belonging to dataset index i.

    Rows of samples never written (e.g. held-out validation samples) keep the fill value (NaN for floats).
    """

    def __init__(self, num_samples: int, device: torch.device | str = "cpu", processes: "Processes | None" = None):
        self.num_samples = int(num_samples)
        self.device = torch.device(device)
        self._tensors: dict[str, torch.Tensor] = {}
        self.processes = processes
        #: writes since the last synchronize (distributed runs): (name, column or -1, indices, values)
        self._pending: list[tuple[str, int, torch.Tensor, torch.Tensor]] = []

    def add(self, name: str, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32,
            fill: float | int = float("nan")) -> torch.Tensor:
        """Create entry ``name`` of shape (num_samples, *shape), filled with ``fill``; returns it."""
        if name in self._tensors:
            raise ContractError(f"sample-state entry {name!r} exists already")
        if not dtype.is_floating_point and isinstance(fill, float) and np.isnan(fill):
            fill = -1  # integers have no NaN: -1 marks "never written"
        tensor = torch.full((self.num_samples, *shape), fill, dtype=dtype, device=self.device)
        self._tensors[name] = tensor
        return tensor

    def __getitem__(self, name: str) -> torch.Tensor:
        """The entry, to read (write with :meth:`write`: in a distributed run only writes reach every process)."""
        if name not in self._tensors:
            raise ContractError(f"no sample-state entry {name!r}; entries: {sorted(self._tensors)} (add it first)")
        return self._tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def names(self) -> list[str]:
        return list(self._tensors)

    def write(self, name: str, indices: torch.Tensor, values: torch.Tensor | float, column: int | None = None) -> None:
        """Set rows ``indices`` of ``name`` to ``values``, or one column of a (N x E) history when ``column`` is
        given (e.g. the epoch). ``indices``: (B,) integer dataset indices, or a (num_samples,) boolean mask;
        ``values``: (B x *tail), or anything that broadcasts to it (a scalar for every row)."""
        target = self._tensors[name]
        indices = torch.as_tensor(indices, device=target.device)
        if indices.dtype == torch.bool:
            if indices.shape != (self.num_samples,):
                raise ContractError(f"store.write({name!r}): a boolean mask must have one value per sample "
                                    f"({self.num_samples}), got shape {tuple(indices.shape)}")
            indices = indices.nonzero()[:, 0]
        if indices.is_floating_point() or indices.is_complex() or indices.ndim != 1:
            raise ContractError(f"store.write({name!r}): indices must be a 1-D integer tensor of dataset indices (or a "
                                f"boolean mask), got {indices.dtype} of shape {tuple(indices.shape)}")
        indices = indices.long()
        shape = (len(indices), *(target.shape[1:] if column is None else target.shape[2:]))
        values = torch.as_tensor(values).detach().to(device=target.device, dtype=target.dtype)
        try:
            values = values.expand(shape)
        except RuntimeError:
            raise ContractError(f"store.write({name!r}): values of shape {tuple(values.shape)} do not fit {len(indices)} "
                                f"rows of entry {name!r} {tuple(target.shape)}"
                                f"{'' if column is None else f' at column {column}'}") from None
        if column is None:
            target[indices] = values
        else:
            target[indices, column] = values
        if self.processes is not None and self.processes.world_size > 1:
            self._pending.append((name, -1 if column is None else int(column), indices.clone(), values.clone()))

    def synchronize(self) -> None:
        """Make the store equal on every rank (module docstring); a no-op on one process. Sums the number of
        writes first (nothing more when no rank wrote), then exchanges the list of writes (name, column,
        length), gathers their indices and values per entry and column, and replays every write, this rank's
        own included, in rank order and each rank's order: every rank ends with the same rows, also where two
        ranks wrote the same row differently (the highest rank's write is the last)."""
        procs = self.processes
        if procs is None or procs.world_size == 1:
            return
        pending, self._pending = self._pending, []
        # most steps of most methods write nothing: one small sum says so without the exchange of a listing
        count = torch.tensor([len(pending)], dtype=torch.int64, device=self.device)
        if procs.all_reduce_sum_(count, "the count of per-sample store writes").item() == 0:
            return
        listing = procs.all_gather_object([(name, column, len(idx)) for name, column, idx, _ in pending],
                                          "the exchange of per-sample store writes")
        gathered: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        for name, column in sorted({(name, column) for writes in listing for name, column, _ in writes}):
            target = self._tensors[name]
            tail = target.shape[1:] if column < 0 else target.shape[2:]
            mine = [(idx, val) for n, c, idx, val in pending if (n, c) == (name, column)]
            idx = torch.cat([i for i, _ in mine]) if mine else torch.zeros(0, dtype=torch.int64, device=self.device)
            val = (torch.cat([v for _, v in mine]) if mine
                   else torch.zeros((0, *tail), dtype=target.dtype, device=self.device))
            counts = [sum(n for nm, c, n in writes if (nm, c) == (name, column)) for writes in listing]
            what = f"the gather of store entry {name!r}"
            gathered[(name, column)] = (procs.gather_rows(idx, counts, what), procs.gather_rows(val, counts, what))
        offset = dict.fromkeys(gathered, 0)
        for writes in listing:  # rank 0's writes in its order, then rank 1's, ...
            for name, column, n in writes:
                all_idx, all_val = gathered[(name, column)]
                start = offset[(name, column)]
                rows, values = all_idx[start:start + n], all_val[start:start + n]
                offset[(name, column)] = start + n
                if column < 0:
                    self._tensors[name][rows] = values
                else:
                    self._tensors[name][rows, column] = values

    def digests(self) -> dict[str, str]:
        """SHA-256 of every entry's bytes, by name (distributed runs compare them between ranks)."""
        return {name: hashlib.sha256(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()
                for name, t in self._tensors.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """CPU copies of every entry (for checkpoints)."""
        return {name: t.detach().cpu().clone() for name, t in self._tensors.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore entries saved by :meth:`state_dict` (entries are created if missing). An entry saved in a
        narrower float type than this run's (float16 histories of an older version, now float32) is widened,
        which keeps every value; any other shape or dtype change is a CheckpointError."""
        for name, tensor in state.items():
            if tensor.shape[0] != self.num_samples:
                raise CheckpointError(f"sample-state entry {name!r} has {tensor.shape[0]} rows, expected "
                                      f"{self.num_samples} (a checkpoint of another data set?)")
            current = self._tensors.get(name)
            if current is not None and current.shape == tensor.shape and _exact_upcast(tensor.dtype, current.dtype):
                tensor = tensor.to(current.dtype)  # e.g. float16 histories of an older version: every value kept
            if current is not None and (current.shape != tensor.shape or current.dtype != tensor.dtype):
                raise CheckpointError(f"sample-state entry {name!r} is {tuple(tensor.shape)} {tensor.dtype} in the "
                                      f"checkpoint but {tuple(current.shape)} {current.dtype} in this run (another "
                                      "number of epochs, or another method's options?)")
            self._tensors[name] = tensor.to(self.device)

    def export(self, npz_path: str | Path, csv_path: str | Path | None = None,
               columns: dict[str, np.ndarray] | None = None, rows: np.ndarray | None = None) -> None:
        """Write every entry to ``npz_path`` and, to ``csv_path``, one row per sample with ``columns`` (extra
        N-length arrays, written first) and every one-value-per-sample entry. ``rows`` restricts the CSV to
        those dataset indices (e.g. the training samples, without the held-out ones)."""
        extra = dict(columns or {})
        # explicit columns first; a store entry of the same name is the same data in its raw form
        arrays = {**extra, **{name: t.detach().cpu().numpy() for name, t in self._tensors.items()
                              if name not in extra}}
        npz_path = Path(npz_path)
        tmp = npz_path.with_name(npz_path.name + ".tmp")
        with open(tmp, "wb") as f:  # written whole, then renamed: a reader never sees half a file
            np.savez_compressed(f, index=np.arange(self.num_samples), **arrays)
        os.replace(tmp, npz_path)
        if csv_path is None:
            return
        flat = {k: v for k, v in arrays.items() if v.ndim == 1}
        rows = np.arange(self.num_samples) if rows is None else np.asarray(rows)
        csv_path = Path(csv_path)
        tmp = csv_path.with_name(csv_path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", *flat])
            cols = [flat[k][rows] for k in flat]
            for j, i in enumerate(rows):
                writer.writerow([int(i), *(_fmt(c[j]) for c in cols)])
        os.replace(tmp, csv_path)


def _fmt(value) -> str:
    if isinstance(value, (np.floating, float)):
        return "" if np.isnan(value) else f"{float(value):.6g}"
    return str(value.item() if hasattr(value, "item") else value)


def _exact_upcast(saved: torch.dtype, wanted: torch.dtype) -> bool:
    """Whether every ``saved`` value is exactly a ``wanted`` value: float16 / bfloat16 into float32 or float64,
    float32 into float64."""
    widening = {torch.float16: (torch.float32, torch.float64), torch.bfloat16: (torch.float32, torch.float64),
                torch.float32: (torch.float64,)}
    return wanted in widening.get(saved, ())
