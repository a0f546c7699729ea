"""How much memory this process may still take (the machine's available memory, within the limit of
the control group, or container, it runs in), and giving back the pages of a memory-mapped split.

The free memory (``MemFree``, ``SC_AVPHYS_PAGES``) leaves out the page cache the kernel gives back
on demand, so after reading a data set it reads a few hundred MB on a machine with tens of GB to
spare. The available memory (``MemAvailable``, psutil's ``available``) counts it. In a container the
machine's figure is the host's: the cgroup's limit less its usage is what the kernel will allow
before it kills the process, so the smaller of the two is taken.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np
import psutil

# A sequential pass over a memory-mapped split releases its pages after every this many bytes.
RELEASE_EVERY_BYTES = 256 * 2**20

# cgroup v2 (one unified hierarchy), then v1's memory controller; "max" or a huge v1 value = no limit.
CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
    ),
)


def cgroup_headroom_bytes(files: tuple[tuple[str, str], ...] = CGROUP_FILES) -> int | None:
    """The cgroup's memory limit less its usage, or None where no limit is set (or none is readable)."""
    for limit_file, usage_file in files:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:  # v1 writes "no limit" as a page-rounded 2**63
            return None
        return max(0, int(limit) - usage)
    return None


def available_memory_bytes() -> int:
    """Memory this process can still take without swapping or being killed by its container."""
    available = int(psutil.virtual_memory().available)
    headroom = cgroup_headroom_bytes()
    return available if headroom is None else min(available, headroom)


def _mapping_of(array: np.ndarray) -> tuple[mmap.mmap, str] | None:
    """The memory map behind ``array`` (a ``np.memmap`` or a view of one) and its numpy mode."""
    base: Any = array
    while base is not None:
        if isinstance(base, np.memmap) and isinstance(getattr(base, "_mmap", None), mmap.mmap):
            return base._mmap, base.mode
        base = getattr(base, "base", None)
    return None


def release_pages(array: np.ndarray) -> bool:
    """Drop the pages of the file mapped behind ``array`` from this process's resident set.

    A split read (or written) through its memory map keeps every page it touched resident until
    the map is closed, so a pass over a split of several GB shows as several GB of resident memory
    although the kernel could reclaim it. ``MADV_DONTNEED`` unmaps them from this process; the page
    cache keeps them (written ones included, written back as usual), and a later read maps them
    again. Only for shared maps: on a copy-on-write one (mode ``c``) it would discard the changes.
    Returns whether pages were released (False for an array in memory, or where madvise is absent).
    """
    found = _mapping_of(array)
    if found is None or found[1] == "c" or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    found[0].madvise(mmap.MADV_DONTNEED)
    return True


class PageReleaser:
    """Calls ``release_pages`` on an array once every ``every_bytes`` read from it: a sequential pass
    over a memory-mapped split then holds at most that much of it resident."""

    def __init__(self, array: np.ndarray, every_bytes: int = RELEASE_EVERY_BYTES) -> None:
        self.array, self.every, self.read = array, every_bytes, 0

    def add(self, nbytes: int) -> None:
        self.read += nbytes
        if self.read >= self.every:
            release_pages(self.array)
            self.read = 0
