"""TensorBoard scalars of a run (``log.tensorboard=true``): every epoch's numeric metrics under ``RUN/tensorboard``,
written by rank 0 only. Needs the tensorboard package (``RunConfig.validate`` says so when it is missing)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def tensorboard_writer(folder: Path) -> Iterator:
    """A ``SummaryWriter`` writing into ``folder`` for the run, closed after it.

    Raises ImportError without the tensorboard package (a config with ``log.tensorboard`` was refused before)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        yield writer
    finally:
        writer.close()


def add_epoch_scalars(writer, row: dict, epoch: int) -> None:
    """Every numeric value of an epoch's metrics ``row`` (the row of metrics.csv, but its ``epoch``) as the scalar
    of its column name at step ``epoch`` (1-based, as in the row). Raises nothing of its own."""
    for key, value in row.items():
        if isinstance(value, (int, float)) and key != "epoch":
            writer.add_scalar(key, value, epoch)
