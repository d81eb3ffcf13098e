"""What a run shows while it trains: a live progress bar on a terminal, one log line per epoch with the time
elapsed and the time left (the only progress a log file or a pipe sees)."""

from __future__ import annotations

import math
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


def format_duration(seconds: float) -> str:
    """``seconds`` rounded to the second, as ``M:SS`` below an hour and ``H:MM:SS`` from an hour on
    (12 -> ``0:12``, 754.4 -> ``12:34``, 3725 -> ``1:02:05``). Raises ValueError for a negative or non-finite
    value (a duration is neither)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration is a finite number of seconds >= 0, got {seconds!r}")
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def eta_seconds(elapsed: float, done: int, total: int) -> float | None:
    """Seconds left when ``done`` of ``total`` units of work (epochs) took ``elapsed`` seconds: their mean time
    times the units left, ``elapsed / done * (total - done)``; None while none is done (nothing to average).
    Raises ValueError unless ``0 <= done <= total`` and ``elapsed >= 0``."""
    if not 0 <= done <= total:
        raise ValueError(f"done must lie in [0, total={total}], got {done}")
    if not elapsed >= 0:
        raise ValueError(f"elapsed must be >= 0 seconds, got {elapsed!r}")
    return None if done == 0 else elapsed / done * (total - done)


def lines_every(total: int, at_most: int) -> int:
    """Every how many of ``total`` steps (epochs) to print a line so that at most ``at_most`` lines come out:
    ``ceil(total / at_most)`` (60 epochs, 10 lines: every 6th). Raises ValueError unless both are >= 1."""
    if total < 1 or at_most < 1:
        raise ValueError(f"total and at_most must be >= 1, got {total} and {at_most}")
    return -(-total // at_most)


class EpochClock:
    """The time of one session of a run: started when its first epoch of this session (``first_epoch``, 0-based;
    the epochs done before, on resume) starts, out of ``total`` epochs. A resumed run's ETA thus comes from the
    epochs it trains now, never from the earlier sessions' times (another machine, another load)."""

    def __init__(self, first_epoch: int, total: int, clock: Callable[[], float] = time.perf_counter):
        self.first_epoch, self.total, self.clock = first_epoch, total, clock
        self.start = clock()

    def timing(self, epochs_done: int) -> tuple[float, float | None]:
        """(seconds since this session started, seconds left by the mean epoch time of this session) once
        ``epochs_done`` epochs of the run (counted from 0, earlier sessions' included) are done. Raises nothing: a
        count outside [first_epoch, total] is clipped to it (a log line must never stop a run)."""
        elapsed = max(0.0, self.clock() - self.start)
        session_total = max(0, self.total - self.first_epoch)
        done = min(max(0, epochs_done - self.first_epoch), session_total)
        return elapsed, eta_seconds(elapsed, done, session_total)


def timing_text(elapsed: float, eta: float | None) -> str:
    """``elapsed 0:12 eta 0:48`` (``eta ?`` while there is no estimate)."""
    return f"elapsed {format_duration(elapsed)} eta {'?' if eta is None else format_duration(eta)}"


def epoch_line(row: dict, epochs: int, timing: tuple[float, float | None] | None = None) -> str:
    """One line for the log: epoch, loss, train accuracies, validation and test accuracy, throughput, and with
    ``timing`` (seconds elapsed, seconds left or None: :meth:`EpochClock.timing`) the session's elapsed time and
    ETA."""
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"loss {row['train_loss']:.4f}",
             f"train(noisy) {row['train_acc_noisy']:.4f}"]
    if row.get("train_acc_clean") is not None:
        parts.append(f"train(clean) {row['train_acc_clean']:.4f}")
    if row.get("val_acc") is not None:
        parts.append(f"val {row['val_acc']:.4f}")
    if row.get("test_acc") is not None:
        parts.append(f"test {row['test_acc']:.4f}")
    parts.append(f"{row['img_per_s']:.0f} img/s")
    if timing is not None:
        parts.append(timing_text(*timing))
    return "  ".join(parts)
