"""Evaluating a saved run or checkpoint on a test split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .config import from_dict
from .data import Normalization
from .engine import Trainer
from .engine.checkpoint import load_checkpoint, run_checkpoint
from .engine.setup import prepare_data
from .errors import DataError


def _shape(shape: dict) -> str:
    h, w, c = shape["image_shape"]
    return f"{h}x{w}x{c} images of {shape['num_classes']} classes"


def evaluate_checkpoint(target: str | Path, data_spec: str | None = None, best: bool = False) -> dict:
    """Test accuracy of every head of the method saved in ``target`` (a run folder or a checkpoint file).

    ``data_spec`` evaluates on another source's test split (same classes and image size expected);
    ``best`` picks ``checkpoints/best.pt`` of a run folder instead of ``last.pt``.
    Returns {"checkpoint", "epoch", "test_samples", "accuracy": {head: accuracy}, "ece": the main head's
    expected calibration error (15 bins)}.
    """
    target = Path(target)
    path = run_checkpoint(target, best)
    state = load_checkpoint(path)
    cfg = from_dict(state["config"]).validate()
    data = None
    if data_spec is not None:
        cfg.data.spec, cfg.data.labels, cfg.data.noise, cfg.data.noise_file = data_spec, None, "none", None
        cfg.data.val_fraction, cfg.data.train_subset, cfg.data.test_subset = 0.0, None, None  # only its test split
        data = prepare_data(cfg.data)
        if "normalization" in state:  # the images are normalised as the network was trained, not by their own stats
            saved = state["normalization"]
            trained_with = Normalization(tuple(saved["mean"]), tuple(saved["std"]), saved.get("source", ""))
            data = dataclasses.replace(data, dataset=dataclasses.replace(data.dataset, normalization=trained_with))
        trained_on = state.get("data_shape")
        shape = {"image_shape": list(data.dataset.image_shape), "num_classes": data.num_classes}
        if trained_on is not None and {k: trained_on[k] for k in shape} != shape:
            raise DataError(f"{data_spec}: {_shape(shape)}, but the network was trained on {_shape(trained_on)}")
    trainer = Trainer(cfg, data=data, progress=False)
    trainer.build()
    if trainer.data.test is None:
        raise DataError(f"{cfg.data.spec}: this data source has no test split to evaluate on")
    trainer.load_networks(state)
    row = trainer.evaluate()
    accuracy = {("main" if k == "test_acc" else k.removeprefix("test_acc_")): v
                for k, v in row.items() if k.startswith("test_acc")}
    return {"checkpoint": str(path), "epoch": state["epoch"], "test_samples": len(trainer.data.test),
            "accuracy": accuracy, "ece": row["test_ece"]}
