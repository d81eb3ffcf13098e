"""Per-sample state kept across epochs, keyed by the dataset index.

Methods keep histories (BKD's P_T/P_S/P_A per epoch), groups (MODUL), refined labels, scores... here. The
store lives on the training device, is written from batches by index, saved in every checkpoint, and
exported at the end of a run (NPZ with every entry, CSV with the one-value-per-sample entries).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, ContractError


class SampleStore:
    """Named tensors of shape (num_samples, *tail), row i belonging to dataset index i.

    Rows of samples never written (e.g. held-out validation samples) keep the fill value (NaN for floats).
    """

    def __init__(self, num_samples: int, device: torch.device | str = "cpu"):
        self.num_samples = int(num_samples)
        self.device = torch.device(device)
        self._tensors: dict[str, torch.Tensor] = {}

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
        if name not in self._tensors:
            raise ContractError(f"no sample-state entry {name!r}; entries: {sorted(self._tensors)} (add it first)")
        return self._tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def names(self) -> list[str]:
        return list(self._tensors)

    def write(self, name: str, indices: torch.Tensor, values: torch.Tensor, column: int | None = None) -> None:
        """Set rows ``indices`` (B dataset indices) of ``name`` to ``values`` (B x *tail), or one column of a
        (N x E) history when ``column`` is given (e.g. the epoch)."""
        target = self._tensors[name]
        values = values.detach().to(device=target.device, dtype=target.dtype)
        indices = indices.to(target.device)
        if column is None:
            target[indices] = values
        else:
            target[indices, column] = values

    def state_dict(self) -> dict[str, torch.Tensor]:
        """CPU copies of every entry (for checkpoints)."""
        return {name: t.detach().cpu().clone() for name, t in self._tensors.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore entries saved by :meth:`state_dict` (entries are created if missing)."""
        for name, tensor in state.items():
            if tensor.shape[0] != self.num_samples:
                raise CheckpointError(f"sample-state entry {name!r} has {tensor.shape[0]} rows, expected "
                                      f"{self.num_samples} (a checkpoint of another data set?)")
            current = self._tensors.get(name)
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
