"""noisykd: training image classifiers on noisy labels with knowledge distillation."""

__version__ = "0.1.0"
