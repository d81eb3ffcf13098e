"""Images for the training loop, gathered by index with no per-image Python work.

The uint8 training set lives on the training device when it fits (one ``index_select`` per batch). When it
does not, it stays in pinned host memory and batches are gathered there and copied asynchronously, the next
batch being gathered in a background thread while the device works on the current one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch

from ..data import ImageSplit
from .distributed import rank_part

# keep at most this share of the free device memory for the data set (the rest is for networks/activations)
DEVICE_MEMORY_SHARE = 0.4


class ImageFeed:
    """A split as tensors: images uint8 (N, H, W, C), labels int64 (N,), indices int64 (N,).

    ``batches(order, batch_size)`` yields (images_u8, labels, indices) on the device for consecutive chunks
    of ``order`` (positions into the split).
    """

    def __init__(self, split: ImageSplit, device: torch.device, on_device: str = "auto"):
        self.device = device
        self.size = len(split)
        images = torch.from_numpy(np.ascontiguousarray(split.images))
        self.on_device = _decide_on_device(images.numel(), device, on_device)
        if self.on_device:
            self.images = images.to(device)
        else:
            self.images = images.pin_memory() if device.type == "cuda" else images
        self.labels = torch.from_numpy(split.labels).to(device)
        self.indices = torch.from_numpy(split.indices).to(device)

    def __len__(self) -> int:
        return self.size

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images_u8 (B, H, W, C), labels (B,), indices (B,)) for positions ``rows``, all on the device."""
        rows_dev = rows.to(self.device)
        if self.on_device:
            images = self.images.index_select(0, rows_dev)
        else:
            images = self._host_gather(rows.cpu())
        return images, self.labels.index_select(0, rows_dev), self.indices.index_select(0, rows_dev)

    def _host_gather(self, rows: torch.Tensor) -> torch.Tensor:
        chunk = self.images.index_select(0, rows)
        if self.device.type == "cuda":
            return chunk.pin_memory().to(self.device, non_blocking=True)
        return chunk.to(self.device)

    def batches(self, order: torch.Tensor, batch_size: int, fold_lone_last: bool = False, world_size: int = 1,
                rank: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Consecutive batches of ``order`` (every position exactly once). With ``fold_lone_last`` (training:
        BatchNorm cannot train on one sample) a last batch too small to give each of ``world_size`` processes
        two samples joins the batch before it; see :func:`training_batch_sizes`. With ``world_size`` > 1 each
        (global) batch is split into contiguous near-equal parts and this ``rank``'s part is yielded."""
        if fold_lone_last:
            chunks = [rank_part(c, world_size, rank)
                      for c in torch.split(order, training_batch_sizes(len(order), batch_size, world_size))]
        else:
            chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if self.on_device or len(chunks) < 2:
            for rows in chunks:
                yield self.gather(rows)
            return
        # host streaming: gather the next batch while the current one is being used
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.gather, chunks[0])
            for nxt in chunks[1:]:
                current = pending.result()
                pending = pool.submit(self.gather, nxt)
                yield current
            yield pending.result()


def training_batch_sizes(num_samples: int, batch_size: int, world_size: int = 1) -> list[int]:
    """The sizes of one epoch's (global) training batches: full batches, then the rest; a rest smaller than
    ``2 * world_size`` (one process: a lone sample, on which BatchNorm cannot train; N processes: a rest that
    would leave a process fewer than 2 samples) is folded into the batch before it. No sample is dropped, none
    is seen twice. E.g. 1153 samples at 64: 17 batches of 64 and one of 65; on 4 processes 1159 samples at 64:
    17 batches of 64 and one of 71 (a rest of 7 < 8)."""
    sizes = [batch_size] * (num_samples // batch_size) + ([num_samples % batch_size] if num_samples % batch_size else [])
    if len(sizes) >= 2 and sizes[-1] < 2 * world_size:
        sizes = sizes[:-2] + [sizes[-2] + sizes[-1]]
    return sizes


def _decide_on_device(num_bytes: int, device: torch.device, policy: str) -> bool:
    if policy == "no":  # forced streaming (also on the CPU, where it exercises the same code path)
        return False
    if policy == "yes" or device.type == "cpu":
        return True
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return num_bytes <= DEVICE_MEMORY_SHARE * free
    return True
