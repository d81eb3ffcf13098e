"""The collapse guard and early stopping: what the noisy-validation accuracy of a run's history says about it.

Pure functions of the per-epoch history (``metrics.jsonl`` rows: ``epoch`` 1-based, ``val_acc`` where the epoch
was evaluated, ``phase`` where the method names the phase it trained the epoch in), so that a resumed run
decides exactly what an uninterrupted one does.

* A **collapse** is a fall of the noisy-validation accuracy by more than ``drop`` (a fraction: 0.05 = 5 points)
  below its best so far (``from_best``: once per best epoch), or, after a method's phase change (BKD's split into
  its robust stage, ProSelfLC's trust passing to the prediction, ...), below its value before the change
  (``phase_change``: once per change). The run's log and ``summary.json`` say so and name the best checkpoint.
* **Early stopping**: after ``patience`` evaluated epochs in a row without a better noisy-validation accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CollapseEvent:
    """A fall of the noisy-validation accuracy.

    kind:            ``"phase_change"`` or ``"from_best"``.
    epoch:           the (1-based) epoch at which the fall was first seen.
    val_acc:         the noisy-validation accuracy then.
    reference_epoch: the epoch it fell from (the best so far, or the last one evaluated before the change).
    reference_acc:   its noisy-validation accuracy.
    best_epoch:      the best epoch so far (what ``checkpoints/best.pt`` holds at that point).
    phase:           the new phase, for ``phase_change`` (its first epoch is ``phase_epoch``).
    """

    kind: str
    epoch: int
    val_acc: float
    reference_epoch: int
    reference_acc: float
    best_epoch: int
    phase: str | None = None
    phase_epoch: int | None = None

    @property
    def points(self) -> float:
        """The fall, in accuracy points."""
        return 100 * (self.reference_acc - self.val_acc)

    def message(self, method: str = "the method", run: str = "RUN") -> str:
        """One line for the log and the summary; ``run`` names the run folder in the commands it suggests."""
        if self.kind == "phase_change":
            what = (f"after {method}'s phase change at epoch {self.phase_epoch} ({self.phase}), noisy-validation "
                    f"accuracy fell from {100 * self.reference_acc:.1f}% (epoch {self.reference_epoch}, before the "
                    f"change) to {100 * self.val_acc:.1f}% at epoch {self.epoch}")
        else:
            what = (f"noisy-validation accuracy fell {self.points:.1f} points below its best: from "
                    f"{100 * self.reference_acc:.1f}% (epoch {self.reference_epoch}) to {100 * self.val_acc:.1f}% at "
                    f"epoch {self.epoch}")
        return (f"{what}; the best checkpoint so far is epoch {self.best_epoch} (checkpoints/best.pt: noisykd eval "
                f"{run} --best, noisykd predict {run} --best)")

    def to_dict(self, method: str = "the method", run: str = "RUN") -> dict:
        return {**asdict(self), "points": round(self.points, 2), "message": self.message(method, run)}


def _evaluated(history: list[dict]) -> list[dict]:
    return [row for row in history if row.get("val_acc") is not None]


def best_validated(history: list[dict]) -> dict | None:
    """The row of the best noisy-validation accuracy (the later of equals: the epoch ``best.pt`` holds); None
    without validation."""
    rows = _evaluated(history)
    return max(rows, key=lambda r: (r["val_acc"], r["epoch"])) if rows else None


def collapse_events(history: list[dict], drop: float) -> list[CollapseEvent]:
    """Every collapse in ``history`` (module docstring), in the order they were seen. ``drop`` in [0, 1]."""
    events: list[CollapseEvent] = []
    best: dict | None = None
    reported_best: set[int] = set()
    reference: dict | None = None  # the last evaluated row before the current phase began
    phase_start: dict | None = None
    reported_phase: set[int] = set()
    last_evaluated: dict | None = None
    previous_phase = history[0].get("phase") if history else None
    for row in history:
        phase = row.get("phase")
        if phase != previous_phase:
            reference, phase_start = last_evaluated, row
        previous_phase = phase
        if row.get("val_acc") is None:
            continue
        value = row["val_acc"]
        if best is None or value >= best["val_acc"]:  # the later of equals, as best.pt keeps
            best = row
        if (best["val_acc"] - value > drop) and best["epoch"] not in reported_best:
            reported_best.add(best["epoch"])
            events.append(CollapseEvent("from_best", row["epoch"], value, best["epoch"], best["val_acc"],
                                        best["epoch"]))
        if (reference is not None and phase_start is not None and phase_start["epoch"] not in reported_phase
                and reference["val_acc"] - value > drop):
            reported_phase.add(phase_start["epoch"])
            events.append(CollapseEvent("phase_change", row["epoch"], value, reference["epoch"],
                                        reference["val_acc"], best["epoch"], phase=phase,
                                        phase_epoch=phase_start["epoch"]))
        last_evaluated = row
    return events


def epochs_without_improvement(history: list[dict]) -> int:
    """Evaluated epochs since the first one that reached the best noisy-validation accuracy (0 without any)."""
    rows = _evaluated(history)
    if not rows:
        return 0
    values = [row["val_acc"] for row in rows]
    first_best = values.index(max(values))
    return len(rows) - 1 - first_best


def should_stop_early(history: list[dict], patience: int | None) -> bool:
    """True when ``patience`` evaluated epochs in a row brought no better noisy-validation accuracy."""
    return patience is not None and epochs_without_improvement(history) >= patience


def selection_summary(history: list[dict]) -> dict | None:
    """Which epoch had the best noisy-validation accuracy and how far the last evaluated epoch trails it (points
    of noisy-validation accuracy, and of test accuracy when both were measured); None without validation."""
    best = best_validated(history)
    if best is None:
        return None
    last = _evaluated(history)[-1]
    out = {"best_epoch": best["epoch"], "last_epoch": last["epoch"],
           "last_trails_best_val_points": round(100 * (best["val_acc"] - last["val_acc"]), 2)}
    if best.get("test_acc") is not None and last.get("test_acc") is not None:
        out["last_trails_best_test_points"] = round(100 * (best["test_acc"] - last["test_acc"]), 2)
    return out
