"""Device-side sums over one epoch of training batches, read once at the end of the epoch.

Reading a device tensor waits for the device, so the meters only add tensors during the epoch; ``reduce``
turns the sums into means once. In a distributed run the sums of every rank are added first (one all-reduce
per epoch, :meth:`EpochMeter.all_reduce`), so every rank reports the epoch's means over the whole training set.
"""

from __future__ import annotations

import torch

from ..errors import ContractError
from ..methods import StepOutput

#: What the engine measures itself; a method's metric may not take these names.
ENGINE_METRICS = ("loss", "acc_noisy", "acc_clean", "fit_wrong_labels")


class EpochMeter:
    """Per-epoch means of the training loss, the train accuracy on the given and (when known) clean labels, the
    share of wrongly labelled samples fitted, and the method's own metrics (``StepOutput.metrics``).

    clean_by_index / noisy_by_index: int64 / bool tensors by dataset index on the device (the ground truth,
    when known), or None.
    """

    def __init__(self, device: torch.device, clean_by_index: torch.Tensor | None = None,
                 noisy_by_index: torch.Tensor | None = None):
        self.device = device
        self.clean_by_index, self.noisy_by_index = clean_by_index, noisy_by_index
        self.seen = 0
        self.loss = torch.zeros((), device=device)
        self.correct_noisy = torch.zeros((), device=device)  # predicted == the given (possibly noisy) label
        self.correct_clean = torch.zeros((), device=device)
        self.fit_wrong = torch.zeros((), device=device)  # wrongly labelled samples predicted as their wrong label
        self.seen_wrong = torch.zeros((), device=device)
        self.metric_sums: dict[str, torch.Tensor] = {}
        self.metric_counts: dict[str, int] = {}
        self.check_correct: dict[str, torch.Tensor] = {}
        self.check_selected: dict[str, torch.Tensor] = {}

    def update(self, out: StepOutput, labels: torch.Tensor, indices: torch.Tensor) -> None:
        """Add one batch: the method's step output, the given labels (B,) and dataset indices (B,)."""
        b = len(labels)
        self.loss += out.loss.detach().float() * b
        self.seen += b
        if out.logits is not None:
            predicted = out.logits.detach().argmax(1)
            self.correct_noisy += (predicted == labels).sum()
            if self.clean_by_index is not None:
                self.correct_clean += (predicted == self.clean_by_index[indices]).sum()
                wrong = self.noisy_by_index[indices]
                self.fit_wrong += ((predicted == labels) & wrong).sum()
                self.seen_wrong += wrong.sum()
        for key, value in out.metrics.items():
            if key in ENGINE_METRICS:
                raise ContractError(f"StepOutput.metrics[{key!r}]: {key!r} is measured by the engine; rename it")
            value = torch.as_tensor(value, device=self.device)
            if value.ndim == 0:  # a batch mean: weighted by the batch size
                self.metric_sums[key] = self.metric_sums.get(key, 0) + value.detach().float() * b
                self.metric_counts[key] = self.metric_counts.get(key, 0) + b
            elif value.shape == (b,):  # one value per sample
                self.metric_sums[key] = self.metric_sums.get(key, 0) + value.detach().float().sum()
                self.metric_counts[key] = self.metric_counts.get(key, 0) + b
            else:
                raise ContractError(f"StepOutput.metrics[{key!r}] must be a scalar or hold one value per sample "
                                    f"({b}), got shape {tuple(value.shape)}")

        for key, check in out.checks.items():
            if key in ENGINE_METRICS or key in out.metrics:
                raise ContractError(f"StepOutput.checks[{key!r}]: the name is taken by a metric; rename it")
            if check.predicted.shape != (b,) or check.selected.shape != (b,):
                raise ContractError(f"StepOutput.checks[{key!r}]: predicted and selected must hold one value per "
                                    f"sample ({b}), got {tuple(check.predicted.shape)} and "
                                    f"{tuple(check.selected.shape)}")
            if self.clean_by_index is not None:
                selected = check.selected.to(torch.bool)
                correct = (check.predicted == self.clean_by_index[indices]) & selected
                self.check_correct[key] = self.check_correct.get(key, 0) + correct.sum()
                self.check_selected[key] = self.check_selected.get(key, 0) + selected.sum()

    def all_reduce(self, processes) -> None:
        """Replace this rank's sums by the sums over every rank (``processes``: the run's
        :class:`~noisykd.engine.distributed.Processes`); a no-op on one process. Call it once, before ``reduce``
        and ``checks``. A metric only some ranks reported counts with zeros on the others."""
        if processes.world_size == 1:
            return
        names = processes.all_gather_object((sorted(self.metric_sums), sorted(self.check_correct)),
                                            "the exchange of metric names")
        metrics = sorted({k for m, _ in names for k in m})
        checks = sorted({k for _, c in names for k in c})
        zero = torch.zeros((), device=self.device)
        values = [torch.as_tensor(float(self.seen), device=self.device), self.loss, self.correct_noisy,
                  self.correct_clean, self.fit_wrong, self.seen_wrong]
        values += [torch.as_tensor(self.metric_sums.get(k, zero), device=self.device) for k in metrics]
        values += [torch.as_tensor(float(self.metric_counts.get(k, 0)), device=self.device) for k in metrics]
        values += [torch.as_tensor(self.check_correct.get(k, zero), device=self.device) for k in checks]
        values += [torch.as_tensor(self.check_selected.get(k, zero), device=self.device) for k in checks]
        flat = processes.all_reduce_sum_(torch.stack([v.double().reshape(()) for v in values]),
                                         "the reduction of the epoch's metrics")
        it = iter(flat)
        self.seen = int(round(next(it).item()))
        self.loss, self.correct_noisy, self.correct_clean, self.fit_wrong, self.seen_wrong = (next(it) for _ in range(5))
        sums = [next(it) for _ in metrics]
        counts = [int(round(next(it).item())) for _ in metrics]
        self.metric_sums = dict(zip(metrics, sums))
        self.metric_counts = dict(zip(metrics, counts))
        self.check_correct = {k: next(it) for k in checks}
        self.check_selected = {k: next(it) for k in checks}

    def running(self) -> dict[str, float]:
        """Loss and accuracy so far (synchronises the device: call it rarely)."""
        seen = max(self.seen, 1)
        return {"loss": self.loss.item() / seen, "acc": self.correct_noisy.item() / seen}

    def reduce(self) -> dict[str, float | None]:
        """The epoch's means: ``loss``, ``acc_noisy`` (on the given labels), ``acc_clean`` and ``fit_wrong_labels``
        (None when the truth is unknown or no wrong label was seen), then each method metric by its name."""
        seen = max(self.seen, 1)
        known = self.clean_by_index is not None
        out: dict[str, float | None] = {
            "loss": self.loss.item() / seen,
            "acc_noisy": self.correct_noisy.item() / seen,
            "acc_clean": self.correct_clean.item() / seen if known else None,
            # memorisation: share of the wrongly labelled training samples predicted as their wrong label
            "fit_wrong_labels": (self.fit_wrong / self.seen_wrong).item() if known and self.seen_wrong.item() else None,
        }
        out.update({k: v.item() / self.metric_counts[k] for k, v in self.metric_sums.items()})
        return out

    def checks(self) -> dict[str, float | None]:
        """Each :class:`LabelCheck`'s share of selected samples whose label is the clean one (None when nothing
        was selected). Empty when the truth is unknown. Kept apart from ``reduce``: it uses the clean labels,
        which a method must never see."""
        return {k: (v / self.check_selected[k]).item() if self.check_selected[k].item() else None
                for k, v in self.check_correct.items()}
