"""What a run shows while it trains: a live progress bar on a terminal, one log line per epoch."""

from __future__ import annotations

import time
from typing import Callable


class ProgressBar:
    """A rich progress bar with live loss / accuracy / throughput on a terminal; nothing otherwise."""

    REFRESH_S = 0.5

    def __init__(self, enabled: bool, total: int, description: str):
        self.enabled = enabled
        self.last = 0.0
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[stats]}", markup=False), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(description, total=total, stats="")

    def advance(self, stats: Callable[[], dict]) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        fields = {}
        if now - self.last > self.REFRESH_S:  # reading the stats synchronises the device: not every step
            self.last = now
            fields["stats"] = "  ".join(f"{k} {v:.3g}" for k, v in stats().items())
        self.progress.update(self.task, advance=1, **fields)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


def epoch_line(row: dict, epochs: int) -> str:
    """One line for the log: epoch, loss, train accuracies, validation and test accuracy, throughput."""
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"loss {row['train_loss']:.4f}",
             f"train(noisy) {row['train_acc_noisy']:.4f}"]
    if row.get("train_acc_clean") is not None:
        parts.append(f"train(clean) {row['train_acc_clean']:.4f}")
    if row.get("val_acc") is not None:
        parts.append(f"val {row['val_acc']:.4f}")
    if row.get("test_acc") is not None:
        parts.append(f"test {row['test_acc']:.4f}")
    parts.append(f"{row['img_per_s']:.0f} img/s")
    return "  ".join(parts)
