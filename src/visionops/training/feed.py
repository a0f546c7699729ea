"""How a split reaches the training loop: whole on the device when it fits the memory budget, else
streamed from its memory-mapped ``.npy`` file one batch at a time.

On small data the whole split as one tensor on the device is the fastest feed (a batch is one
index operation), so it stays the default below the budget. Past it (``train.max_memory_gb``, by
default half of the memory available, and of the GPU's free memory on CUDA) the split stays on disk: a
``DataLoader`` with worker processes reads each batch's rows from the memory-mapped file (in
file order, then put back in the batch's order), pinned on CUDA and copied without blocking, so
memory holds a few batches whatever the size of the split. Both feeds give the same batches in the
same order: a run is the same whichever one it takes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from visionops.core.memory import PageReleaser, available_memory_bytes

__all__ = ["StreamedImages", "memory_budget_bytes", "device_feed", "rows_of"]

log = logging.getLogger(__name__)


class _Rows(Dataset):
    """Rows of a (memory-mapped) array by a batch of indices: one read in file order per batch."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        # Each loader worker reads the whole split over an epoch: its pages are given back as it goes.
        self.pages = PageReleaser(x)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        idx = np.asarray(idx)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), *self.x.shape[1:]), self.x.dtype)
        out[order] = self.x[idx[order]]
        self.pages.add(out.nbytes)
        return torch.from_numpy(out)


class StreamedImages:
    """A split left in its memory-mapped file; ``iterate`` yields the rows of each index batch on
    ``device``. Has the ``device``, ``ndim``, ``shape`` and ``len`` the loop reads off a tensor."""

    def __init__(self, x: np.ndarray, device: torch.device, workers: int) -> None:
        self.x, self.device, self.workers = x, device, workers
        self.ndim, self.shape = x.ndim, tuple(x.shape)

    def __len__(self) -> int:
        return len(self.x)

    def iterate(self, batches: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        loader = DataLoader(
            _Rows(self.x),
            batch_size=None,  # each item of the sampler is a whole batch of indices
            sampler=batches,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None,
            # Its own generator: drawing worker seeds must not move the global RNG, or the
            # augmentation of a streamed run would differ from the same run fed from memory.
            generator=torch.Generator(),
        )
        for xb in loader:
            yield xb.to(self.device, non_blocking=True)


def rows_of(
    x: torch.Tensor | StreamedImages, batches: Sequence[torch.Tensor]
) -> Iterator[torch.Tensor]:
    """The rows of ``x`` for each index batch, in order, on ``x``'s device."""
    if isinstance(x, StreamedImages):
        yield from x.iterate(batches)
    else:
        for idx in batches:
            yield x[idx]


def memory_budget_bytes(max_memory_gb: float | None, device: torch.device) -> float:
    """``train.max_memory_gb`` in bytes, or half of the available memory (``core.memory``: the page
    cache counted, within a container's limit), and of the GPU's free memory on CUDA, where a split
    fed from memory lives."""
    if max_memory_gb is not None:
        return max_memory_gb * 2**30
    budget = available_memory_bytes() / 2
    if device.type == "cuda":
        budget = min(budget, torch.cuda.mem_get_info(device)[0] / 2)
    return budget


def device_feed(
    splits: dict[str, np.ndarray], device: torch.device, budget: float, workers: int
) -> tuple[dict[str, torch.Tensor | StreamedImages], bool]:
    """Each split's images as the loop takes them: tensors on ``device`` when all of them fit in
    ``budget`` bytes, else left streamed from their files. Also returns whether they stream."""
    total = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in splits.values())
    if total <= budget:
        # np.array copies a memory-mapped split into writable memory that torch can share.
        return {k: torch.from_numpy(np.array(x)).to(device) for k, x in splits.items()}, False
    log.info(
        "training data: %.2f GB of images over the memory budget of %.2f GB "
        "(train.max_memory_gb): streamed from the memory-mapped splits, %d loader workers",
        total / 2**30,
        budget / 2**30,
        workers,
    )
    return {k: StreamedImages(x, device, workers) for k, x in splits.items()}, True
