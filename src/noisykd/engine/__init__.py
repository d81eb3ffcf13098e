"""The training engine: data feed, per-sample store, checkpoints, the loop, reports."""

from .setup import PreparedData, prepare_data
from .state import SampleStore
from .trainer import RunResult, Trainer, train

__all__ = ["PreparedData", "prepare_data", "SampleStore", "RunResult", "Trainer", "train"]
