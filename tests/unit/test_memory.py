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
