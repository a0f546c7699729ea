"""How much memory this process may still take: the machine's available memory, within the limit of
the control group (container) it runs in.

The free memory (``MemFree``, ``SC_AVPHYS_PAGES``) leaves out the page cache the kernel gives back
on demand, so after reading a data set it reads a few hundred MB on a machine with tens of GB to
spare. The available memory (``MemAvailable``, psutil's ``available``) counts it. In a container the
machine's figure is the host's: the cgroup's limit less its usage is what the kernel will allow
before it kills the process, so the smaller of the two is taken.
"""

from __future__ import annotations

from pathlib import Path

import psutil

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
