"""The memory training may take: the available memory (page cache counted), within a cgroup's limit."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from visionops.core import memory


def _cgroup(tmp_path: Path, limit: str, usage: int) -> tuple[tuple[str, str], ...]:
    (tmp_path / "memory.max").write_text(f"{limit}\n")
    (tmp_path / "memory.current").write_text(f"{usage}\n")
    return ((str(tmp_path / "memory.max"), str(tmp_path / "memory.current")),)


def test_a_cgroup_limit_leaves_its_headroom(tmp_path: Path) -> None:
    assert memory.cgroup_headroom_bytes(_cgroup(tmp_path, str(8 * 2**30), 3 * 2**30)) == 5 * 2**30
    # Over the limit (the kernel reclaims first): no headroom, never a negative figure.
    assert memory.cgroup_headroom_bytes(_cgroup(tmp_path, str(2**30), 2 * 2**30)) == 0


@pytest.mark.parametrize("limit", ["max", str(2**63 - 4096)])
def test_no_limit_is_no_headroom_figure(tmp_path: Path, limit: str) -> None:
    assert memory.cgroup_headroom_bytes(_cgroup(tmp_path, limit, 2**30)) is None


def test_unreadable_cgroup_files_are_no_limit(tmp_path: Path) -> None:
    missing = ((str(tmp_path / "nope.max"), str(tmp_path / "nope.current")),)
    assert memory.cgroup_headroom_bytes(missing) is None


def test_the_smaller_of_the_machines_available_memory_and_the_cgroups_headroom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    machine = psutil.virtual_memory().available
    monkeypatch.setattr(memory, "cgroup_headroom_bytes", lambda: 2**20)
    assert memory.available_memory_bytes() == 2**20
    monkeypatch.setattr(memory, "cgroup_headroom_bytes", lambda: None)
    # The page cache is counted: at least the free memory, as the kernel reports both.
    available = memory.available_memory_bytes()
    assert available >= psutil.virtual_memory().free * 0.9 and available > 0
    assert abs(available - machine) < 2**30


def _rss_file_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("RssFile")).split()[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_released_pages_leave_the_resident_set_and_keep_the_data(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "split.npy"
    written = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(64, 2**20))
    for i in range(64):
        written[i] = i  # 64 MiB written through the map
    before = _rss_file_kib()
    assert memory.release_pages(written[8:16])  # a view finds the map behind it
    assert before - _rss_file_kib() > 48 * 1024  # most of the 64 MiB left this process
    del written  # never flushed: the written pages reached the file through the page cache
    read = np.load(path, mmap_mode="r")
    assert [int(read[i, :: 2**16].sum()) for i in (0, 1, 63)] == [0, 16, 63 * 16]
    assert int(np.asarray(read).sum(dtype=np.int64)) == sum(range(64)) * 2**20
    before = _rss_file_kib()
    assert memory.release_pages(np.asarray(read))
    assert before - _rss_file_kib() > 48 * 1024


def test_copy_on_write_maps_and_arrays_in_memory_are_left_alone(tmp_path: Path) -> None:
    import numpy as np

    np.save(tmp_path / "a.npy", np.zeros((4, 4), np.uint8))
    private = np.load(tmp_path / "a.npy", mmap_mode="c")
    private[0, 0] = 9  # a change only this map holds: releasing would lose it
    assert not memory.release_pages(private) and private[0, 0] == 9
    assert not memory.release_pages(np.zeros(4))


def test_a_releaser_gives_pages_back_once_every_so_many_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    calls: list[object] = []
    monkeypatch.setattr(memory, "release_pages", calls.append)
    x = np.zeros(10, np.uint8)
    pages = memory.PageReleaser(x, every_bytes=100)
    for _ in range(7):
        pages.add(30)  # 120 bytes: released, the count starts again; 90 more: not yet
    assert calls == [x]
    pages.add(30)
    assert calls == [x, x]
