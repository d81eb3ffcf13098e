"""What a run must match to continue, and what its processes must agree on.

A resumed run continues the same run: the checkpoint it starts from holds a whole training state of the current
layout (:func:`check_resumable`), was written by as many processes (:func:`check_same_world_size`) and with the
same config in everything that changes the result (:func:`check_same_run`; only :data:`RESUME_MAY_CHANGE` may
differ). A new run starts only in a new or empty folder (:func:`claim_new_run`).

A distributed run splits its global batch over its processes (:func:`check_world_size`), and every process must
train on the same config and data (:func:`check_same_config`, :func:`check_same_data`): their fingerprints
are compared before the first step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import RunConfig
from ..errors import CheckpointError, ConfigError, OutputError
from .checkpoint import find_resume_checkpoint, load_checkpoint
from .distributed import Processes
from .runfolder import RunFolder

if TYPE_CHECKING:
    from .setup import PreparedData

#: Version of the checkpoint layout. Formats 1 (before network roles) and 2 (before the stratified validation
#: split: a run resumed from it would train on other samples) still load for evaluation, not to resume.
CHECKPOINT_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
#: Config keys that may differ between a run and its resumption: where it runs and writes, not what it computes.
RESUME_MAY_CHANGE = ("out_dir", "device", "data_on_device", "eval_batch_size", "expected", "threads", "log",
                     "distributed.backend", "distributed.timeout_s")
log = logging.getLogger("noisykd.engine")


# --- the run folder and the checkpoint to resume from ---------------------------------------------------------
def claim_new_run(folder: RunFolder) -> None:
    """Claim ``folder`` for a new (not resumed) run: clear what a run killed before its first checkpoint left
    there, then write the claim marker before anything else.

    Raises OutputError when the folder already holds a run (resumable or finished: continue it with --resume)
    or holds other files (a new run writes only into an empty or new folder).
    """
    state = folder.state()
    if state in ("resumable", "finished"):
        raise OutputError(f"{folder.path} already holds a run; continue it with --resume, or choose another "
                          "output folder")
    if state == "foreign":
        shown = ", ".join(folder.foreign_entries()[:5])
        raise OutputError(f"{folder.path} is not empty (it holds {shown}); a new run writes only into an empty "
                          "or new folder: choose another one")
    folder.clear_leftovers()  # a run killed before its first checkpoint: start again
    folder.claim()  # before anything else is written: these files are the run's own
    return None


def resume_checkpoint(target: str | Path, config: RunConfig, world_size: int, extend: bool) -> tuple[Path, dict]:
    """The checkpoint to resume from, checked against this run: (its path, its contents).

    ``target`` is a run folder (its ``last.pt``, else ``previous.pt``) or a checkpoint file; ``config`` and
    ``world_size`` are this run's, ``extend`` lets ``optim.epochs`` grow. Raises CheckpointError when there is
    no checkpoint to resume from, when it is damaged, holds the weights only or an earlier layout
    (:func:`check_resumable`), was written by another number of processes (:func:`check_same_world_size`) or
    with another config (:func:`check_same_run`).
    """
    path = find_resume_checkpoint(target)
    checkpoint = load_checkpoint(path)
    check_resumable(checkpoint, path)
    check_same_world_size(checkpoint, path, world_size)
    check_same_run(checkpoint["config"], config, extend=extend, epochs_done=checkpoint["epoch"])
    log.info(f"resuming from {path} (epoch {checkpoint['epoch']} done)")
    return path, checkpoint


def checkpoint_on_every_rank(processes: Processes, path: str, checkpoint: dict | None) -> dict:
    """The checkpoint rank 0 checked (``checkpoint`` on rank 0, read from ``path``), on every rank: every other
    rank reads the file itself where it sees it (a shared run folder); only when some rank cannot does rank 0
    send it its copy. Raises nothing of its own: a rank that cannot read the file gets rank 0's copy."""
    procs = processes
    if procs.world_size == 1:
        return checkpoint
    if not procs.is_writer:
        try:
            checkpoint = load_checkpoint(Path(path))
        except (OSError, CheckpointError):
            checkpoint = None
    if all(procs.all_gather_object(checkpoint is not None, "the reading of the checkpoint")):
        return checkpoint
    sent = procs.broadcast_object(checkpoint if procs.is_writer else None, "the sending of the checkpoint")
    return checkpoint if checkpoint is not None else sent


# --- a checkpoint against this run ----------------------------------------------------------------------------
def check_resumable(state: dict, path: Path) -> None:
    """Whether the checkpoint ``state`` (read from ``path``) holds a whole training state of the current layout.

    Raises CheckpointError for a weights-only checkpoint (``best.pt``: no optimiser or random states) and for one
    of another format than :data:`CHECKPOINT_FORMAT` (written by an earlier noisykd).
    """
    if "optimizer" not in state or "rng" not in state:
        raise CheckpointError(f"{path}: holds the weights only (best.pt is for `noisykd eval --best`); resume from "
                              f"{path.with_name('last.pt')}")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state.get('format')} was written by an earlier noisykd; "
                              f"resume it with that version, or start the run again (`noisykd eval` still reads it)")


def check_same_world_size(state: dict, path: Path, world_size: int) -> None:
    """Whether the checkpoint ``state`` (read from ``path``) was written by ``world_size`` processes, as exact
    resumption needs: each rank's part of every batch and its random streams depend on their number.

    A checkpoint without ``world_size`` counts as one process. Raises CheckpointError naming the number to resume
    with and the command that does.
    """
    saved = int(state.get("world_size", 1))
    if saved != world_size:
        how = ("noisykd train --resume RUN (one process)" if saved == 1 else
               f"torchrun --nproc_per_node={saved} -m noisykd train --resume RUN, or noisykd train --devices {saved} "
               "--resume RUN")
        raise CheckpointError(f"{path}: written by a run of {saved} process{'es' if saved > 1 else ''}, resumed "
                              f"with {world_size}; resume with {saved} ({how}): the per-process parts of every batch "
                              "and the per-process random streams depend on the number of processes, so another "
                              "number would not continue the same run")


def check_same_run(saved: dict, config: RunConfig, extend: bool = False, epochs_done: int = 0) -> None:
    """Whether ``config`` equals the checkpoint's ``saved`` config (a dict, as ``RunConfig.to_dict`` writes it) in
    everything that changes the result: method and its arguments, data, labels, noise, model, optimiser,
    augmentation, seeds, precision, ... (all but :data:`RESUME_MAY_CHANGE`).

    Only ``optim.epochs`` may differ, only with ``extend``, and not below ``epochs_done`` (the epochs the
    checkpoint holds). Raises CheckpointError naming every key that differs (six at most, then a count).
    """
    from ..config import from_dict

    old = _flatten(from_dict(saved).to_dict())
    new = _flatten(config.to_dict())
    differ = [k for k in sorted(set(old) | set(new))
              if old.get(k) != new.get(k) and k.split(".")[0] not in RESUME_MAY_CHANGE and k not in RESUME_MAY_CHANGE]
    if "optim.epochs" in differ and extend:
        if new["optim.epochs"] < epochs_done:
            raise CheckpointError(f"optim.epochs {new['optim.epochs']} is below the {epochs_done} epochs done")
        differ.remove("optim.epochs")
    if differ:
        shown = "; ".join(f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in differ[:6])
        more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
        hint = " (train on past its planned end with --extend)" if differ == ["optim.epochs"] else ""
        raise CheckpointError(f"cannot resume with another config: {shown}{more}{hint}. Resume with the run's own "
                              "config (noisykd train --resume RUN), or start a new run in another folder")


def config_fingerprint(config: RunConfig | dict) -> dict:
    """The keys of ``config`` (a RunConfig or its plain dict, as saved in config.yaml; flattened, ``section.key``)
    that decide what a run computes, with their values: all but :data:`RESUME_MAY_CHANGE` (where it runs or
    writes). Equal on every rank of a run; raises nothing."""
    data = config if isinstance(config, dict) else config.to_dict()
    return {k: v for k, v in _flatten(data).items()
            if k.split(".")[0] not in RESUME_MAY_CHANGE and k not in RESUME_MAY_CHANGE}


def _flatten(data: dict, prefix: str = "") -> dict:
    """``data`` (nested dicts) as one dict of ``a.b.c`` keys; ``method_args``, ``kwargs`` and ``views`` stay whole
    (their entries are compared as one value)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and key not in ("method_args", "kwargs", "views"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# --- the processes of a distributed run -----------------------------------------------------------------------
def check_world_size(config: RunConfig, processes: Processes) -> None:
    """Whether the ``processes`` (their number) can split ``config.optim.batch_size``, the global batch.

    Raises ConfigError when the batch is below 2 per process (BatchNorm needs 2 samples) or is not divisible by
    the number of processes (naming the nearest batch sizes that are).
    """
    n, batch = processes.world_size, config.optim.batch_size
    if n > 1 and batch < 2 * n:
        raise ConfigError(f"optim.batch_size {batch} is the global batch: {n} processes need at least {2 * n} (BatchNorm "
                          "needs 2 samples per process)")
    if batch % n:
        lower, upper = batch - batch % n, batch + n - batch % n
        raise ConfigError(f"optim.batch_size {batch} is the global batch and must be divisible by the {n} processes "
                          f"(each trains on batch_size / {n}); use {lower or upper} or {upper}")


def check_same_data(processes: Processes, data: PreparedData) -> None:
    """Distributed runs: whether every rank loaded the same training data (:func:`data_fingerprint`); one
    process checks nothing (hashing every training image is for agreeing with other processes only).

    Raises DistributedError (``Processes.check_same``) naming the ranks whose data differ from rank 0's.
    """
    if processes.world_size > 1:
        processes.check_same(data_fingerprint(data), "the training data (images, labels, split)")


def check_same_config(processes: Processes, config: RunConfig, frozen_fingerprints: dict) -> None:
    """Distributed runs: whether every rank runs the same config (:func:`config_fingerprint`) with the same
    frozen networks (``frozen_fingerprints``: name -> digest, e.g. a loaded teacher); one process checks nothing.

    Raises DistributedError (``Processes.check_same``) naming the ranks that differ from rank 0.
    """
    if processes.world_size > 1:
        processes.check_same((config_fingerprint(config), frozen_fingerprints),
                             "the run's config (method, data, labels, network, optimiser, seeds...) or a frozen teacher")


def data_fingerprint(data: PreparedData) -> str:
    """A digest of what the ranks must agree on: training images, given labels and indices (and the number of
    samples). Raises nothing."""
    import hashlib

    digest = hashlib.sha256()
    for array in (data.train.indices, data.train.labels, data.train.images):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(str(data.num_samples).encode())
    return digest.hexdigest()
