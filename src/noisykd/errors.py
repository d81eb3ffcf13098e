"""Exceptions raised for bad input. Each message names the file or field and what was expected."""


class NoisyKDError(Exception):
    """Base class of every error noisykd raises on purpose."""


class DataError(NoisyKDError, ValueError):
    """A data set, label file or noise specification is missing, malformed or inconsistent."""


class UnsafePickleError(DataError):
    """A pickle asked for a global outside the allow-list; nothing in it was executed."""


class ConfigError(NoisyKDError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class DivergedError(NoisyKDError):
    """Training produced a loss that is not a finite number (NaN or infinite): the run stops at that epoch."""


class CheckpointError(NoisyKDError):
    """A checkpoint is missing, truncated or does not match the run."""


class OutputError(NoisyKDError):
    """An output folder or file cannot be written: not a folder, read-only, in use, not empty, disk full."""


class ContractError(NoisyKDError):
    """A method (or a network given through the Python API) broke the engine's contract: it asked for a view
    it did not declare, returned outputs of the wrong length, switched a frozen network to train mode..."""


class DistributedError(NoisyKDError):
    """The processes of a distributed run cannot work together: one died or stopped answering, they could not
    join, or they see different data."""
