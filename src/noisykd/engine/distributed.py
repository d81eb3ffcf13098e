"""The processes of a data-parallel run, and every collective the engine makes between them.

A run started by ``torchrun`` (or ``noisykd train --devices N``, which calls torch's own elastic launcher) has
one process per device. :func:`join_processes` joins them into a process group from the environment torchrun
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...); a plain ``noisykd train`` is one process
and every method of :class:`Processes` is then the identity, so the single-process path does nothing new.

What the engine does with the processes (docs/distributed.md says it for users):

* Each epoch's global permutation comes from the run's shuffle generator, the same on every rank; global batch
  k is split into ``world_size`` contiguous, near-equal parts and rank r trains on part r (:func:`rank_part`).
* After backward, the gradients of every trainable parameter are averaged over the ranks with one flat
  all-reduce (:meth:`Processes.average_gradients`), each rank's loss being weighted by its share of the global
  batch first, so the update is the gradient of the global batch's mean loss, as on one process. This is what
  torch's DistributedDataParallel computes; the engine does it itself rather than wrapping the networks in DDP
  because methods here call a network several times per step, some of them on a data-dependent subset of the
  batch, and DDP's reducer either refuses that or needs ``find_unused_parameters``, which fails when a
  parameter is used in one forward call and not in another. The price: communication does not overlap the
  backward pass.
* Per-sample store writes are exchanged after every step (:meth:`SampleStore.synchronize`), so every rank
  holds the full store; epoch metrics are summed over ranks; evaluation is sharded and gathered.
* Only rank 0 writes the run folder.

Every collective runs under :meth:`Processes.collective`, which turns a dead or silent peer (gloo's timeout or a
closed connection) into one :class:`DistributedError` line instead of a hang or a C++ traceback.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist

from ..errors import ConfigError, DistributedError

#: Environment variables torchrun sets in every worker; RANK and WORLD_SIZE make a process part of a group.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# dtypes gloo cannot all-gather are sent as a wider type and cast back (lossless)
_TRANSPORT = {torch.bool: torch.uint8, torch.float16: torch.float32, torch.bfloat16: torch.float32}


@dataclass
class Processes:
    """This process's place in the run: rank, world size, backend (None: a single process without a process
    group), the timeout of a collective. (Its GPU, the local rank's, is chosen by :func:`process_device`.)"""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None
    timeout_s: float = 1800.0

    @property
    def distributed(self) -> bool:
        """True when a process group exists (also with ``torchrun --nproc_per_node=1``)."""
        return self.backend is not None

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the run folder, checkpoints, logs and plots; the other ranks write nothing."""
        return self.rank == 0

    # --- error handling -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Run collectives; a peer that died or stopped answering becomes one DistributedError naming ``what``."""
        try:
            yield
        except DistributedError:
            raise
        except RuntimeError as e:  # gloo: timeouts, closed connections (DistBackendError is a RuntimeError)
            first = (str(e).strip().splitlines() or [""])[0][:240]
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: no answer from the other processes during {what} (did a "
                f"process die, or hang? the timeout is {self.timeout_s:g} s, distributed.timeout_s): {first}"
            ) from None

    # --- collectives (identity on a single process) ---------------------------------------------------------
    def all_reduce_sum_(self, tensor: torch.Tensor, what: str = "a sum over the processes") -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place; returns it."""
        if self.world_size > 1:
            with self.collective(what):
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_rows(self, rows: torch.Tensor, counts: Sequence[int] | None = None,
                    what: str = "a gather") -> torch.Tensor:
        """Concatenate every rank's ``rows`` (b_r, *tail) in rank order -> (sum b_r, *tail), on every rank. The
        ranks may hold different numbers of rows (``counts``, when every rank knows them; else exchanged)."""
        if self.world_size == 1:
            return rows
        with self.collective(what):
            if counts is None:
                sizes = [torch.zeros(1, dtype=torch.int64, device=rows.device) for _ in range(self.world_size)]
                dist.all_gather(sizes, torch.tensor([len(rows)], dtype=torch.int64, device=rows.device))
                counts = [int(s.item()) for s in sizes]
            dtype = rows.dtype
            send = rows.to(_TRANSPORT.get(dtype, dtype))
            longest = max(counts)
            if longest == 0:
                return rows[:0]
            padded = send.new_zeros((longest, *send.shape[1:]))
            padded[:len(send)] = send
            parts = [torch.empty_like(padded) for _ in range(self.world_size)]
            dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(dtype)

    def all_gather_object(self, obj: Any, what: str = "an exchange") -> list:
        """Every rank's ``obj`` (picklable; between this run's own processes only), in rank order."""
        if self.world_size == 1:
            return [obj]
        out: list = [None] * self.world_size
        with self.collective(what):
            dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, what: str = "a broadcast") -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        with self.collective(what):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_writer(self, fn: Callable[[], Any], what: str) -> Any:
        """Run ``fn`` on rank 0 only and return its result on every rank; an exception it raised is raised on
        every rank (so a refused output folder stops all processes with the same message, none waits)."""
        if self.world_size == 1:
            return fn()
        result, error = None, None
        if self.is_writer:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                error = e
        result, error = self.broadcast_object((result, _picklable(error)), what)
        if error is not None:
            raise error
        return result

    def average_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its mean over the ranks: one all-reduce per dtype of a flat
        buffer of every gradient plus one flag per parameter, so that a parameter without a gradient on some
        ranks gets the mean of the others' (over all ranks) and one without a gradient anywhere keeps None (an
        optimiser then skips it, as on one process)."""
        if self.world_size == 1:
            return
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in parameters:
            by_dtype.setdefault(p.dtype, []).append(p)
        with self.collective("the gradient all-reduce"):
            for dtype, params in by_dtype.items():
                flags = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=params[0].device)
                flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                  for p in params] + [flags])
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                flat /= self.world_size
                offset = 0
                for p, present in zip(params, flat[-len(params):].tolist()):
                    n = p.numel()
                    if present > 0:
                        grad = flat[offset:offset + n].view_as(p)
                        if p.grad is None:
                            p.grad = grad.clone()
                        else:
                            p.grad.copy_(grad)
                    offset += n

    def broadcast_tensors(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Overwrite ``tensors`` with rank 0's values (in place)."""
        if self.world_size == 1:
            return
        with self.collective(what), torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def average_tensors(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Replace floating ``tensors`` by their mean over the ranks (in place)."""
        if self.world_size == 1:
            return
        with self.collective(what), torch.no_grad():
            for t in tensors:
                dist.all_reduce(t.data, op=dist.ReduceOp.SUM)
                t.data /= self.world_size

    def check_same(self, value: Any, what: str) -> None:
        """A DistributedError unless ``value`` (picklable) is equal on every rank, e.g. the data's fingerprint:
        ranks that loaded different data would silently train on a mixture."""
        if self.world_size == 1:
            return
        digest = hashlib.sha256(pickle.dumps(value)).hexdigest()
        digests = self.all_gather_object(digest, what)
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise DistributedError(f"{what} differs between rank 0 and rank(s) {differ}; every process must see the "
                                   "same data, config and files (same paths on every machine)")


def _picklable(error: Exception | None) -> Exception | None:
    """``error`` itself when it pickles (noisykd's errors do), else a DistributedError with its message."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return DistributedError(f"rank 0: {type(error).__name__}: {error}")


# ------------------------------------------------------------------------------------------------------------
# Joining the processes

def launched_by_torchrun() -> bool:
    """True in a process torchrun (or ``noisykd train --devices``) started."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> ``nccl`` for CUDA devices, ``gloo`` otherwise; a ConfigError for NCCL without CUDA."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and (device.type != "cuda" or not torch.cuda.is_available()):
        raise ConfigError("distributed.backend=nccl needs CUDA GPUs, but this run is on the CPU (device="
                          f"{device}); use distributed.backend=gloo (or auto, which picks gloo on the CPU)")
    if backend == "nccl" and not dist.is_nccl_available():
        raise ConfigError("distributed.backend=nccl: this torch build has no NCCL; use gloo")
    return backend


def process_device(device: torch.device) -> torch.device:
    """The device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun (one GPU per process);
    a fixed ``cuda:N`` with several processes would put them all on one GPU: a ConfigError."""
    several = launched_by_torchrun() and int(os.environ.get("WORLD_SIZE", 1)) > 1
    if device.type == "cuda" and device.index is not None and several:
        raise ConfigError(f"device={device} would put every process on one GPU; with several processes use device=cuda "
                          "(or auto): process r of a machine takes GPU r (its LOCAL_RANK)")
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        local = int(os.environ.get("LOCAL_RANK", 0))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local} has no GPU: this machine has {torch.cuda.device_count()}; start "
                              "at most that many processes per machine (--nproc_per_node)")
        return torch.device("cuda", local)
    return device


@contextlib.contextmanager
def join_processes(backend: str, device: torch.device, timeout_s: float) -> Iterator[Processes]:
    """The :class:`Processes` of this run: a process group already initialised by the caller is used as it
    is; under torchrun one is created (and destroyed at the end); otherwise a single process."""
    if dist.is_available() and dist.is_initialized():
        if device.type == "cuda":  # object collectives use the current device: this process's GPU
            torch.cuda.set_device(device)
        yield Processes(dist.get_rank(), dist.get_world_size(), dist.get_backend(), timeout_s)
        return
    if not launched_by_torchrun():
        yield Processes()
        return
    name = resolve_backend(backend, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(name, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": device} if device.type == "cuda" else {}))
    except (RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:240]
        raise DistributedError(f"could not join the other processes ({name}, rank {os.environ.get('RANK')} of "
                               f"{os.environ.get('WORLD_SIZE')}, master {os.environ.get('MASTER_ADDR')}:"
                               f"{os.environ.get('MASTER_PORT')}): {first}") from None
    try:
        yield Processes(dist.get_rank(), dist.get_world_size(), name, timeout_s)
        # a normal end: every rank waits for the others (rank 0 writes the run's outputs last) before any tears the
        # group down; a rank that tore down its gloo group while rank 0 was still writing aborted once in CI (SIGABRT,
        # "terminate called without an active exception"; not reproduced in 3 reruns)
        with contextlib.suppress(Exception):
            dist.barrier()
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------------------
# Splitting a global batch

def rank_part(rows: torch.Tensor, world_size: int, rank: int) -> torch.Tensor:
    """Rank ``rank``'s part of a global batch ``rows``: the r-th of ``world_size`` contiguous parts whose sizes
    differ by at most one (``torch.tensor_split``), e.g. 65 rows on 2 ranks: 33 and 32."""
    if world_size == 1:
        return rows
    return torch.tensor_split(rows, world_size)[rank]
