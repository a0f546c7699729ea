"""visionops.core.storage: atomic, fingerprinted, run-scoped stage outputs on local and fsspec roots."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from visionops.core.storage import MARKER, RunStore, fingerprint, run_key_from, visionops_home


def _write_stage(store: RunStore, stage: str, fp: str, files: dict[str, bytes], meta: dict) -> Path:
    with store.writing(stage, fp) as pending:
        scratch = pending.path
        for name, data in files.items():
            target = pending.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        pending.meta = meta
    assert pending.output is not None
    return scratch


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writing_commits_files_and_marker_atomically(tmp_path: Path) -> None:
    root = tmp_path / "data"
    store = RunStore("run_a", str(root))
    final = root / "runs" / "run_a" / "ingest"
    with store.writing("ingest", "fp1") as pending:
        (pending.path / "manifest.csv").write_text("a,b\n")
        (pending.path / "sub").mkdir()
        (pending.path / "sub" / "x.bin").write_bytes(b"\x00\x01")
        pending.meta = {"rows": 1}
        # Nothing is visible to readers until the block exits.
        assert not final.exists()
        assert store.find("ingest", "fp1") is None
        scratch = pending.path
    assert not scratch.exists()
    assert pending.output is not None
    assert pending.output.uri == str(final)
    assert pending.output.fingerprint == "fp1"
    assert pending.output.meta == {"rows": 1}
    assert pending.output.reused is False
    assert _entries(final) == sorted([MARKER, "manifest.csv", "sub"])
    assert (final / "sub" / "x.bin").read_bytes() == b"\x00\x01"
    marker = json.loads((final / MARKER).read_text())
    assert marker == {"fingerprint": "fp1", "stage": "ingest", "meta": {"rows": 1}}
    # No temporary or old folders are left beside the output.
    assert _entries(root / "runs" / "run_a") == ["ingest"]
    index = json.loads((root / "index" / "ingest" / "fp1.json").read_text())
    assert index["run_key"] == "run_a"


def test_rewrite_replaces_the_output_and_leaves_no_leftovers(tmp_path: Path) -> None:
    store = RunStore("r", str(tmp_path))
    _write_stage(store, "s", "fp1", {"old.txt": b"old"}, {"v": 1})
    _write_stage(store, "s", "fp2", {"new.txt": b"new"}, {"v": 2})
    final = tmp_path / "runs" / "r" / "s"
    assert _entries(final) == sorted([MARKER, "new.txt"])
    assert _entries(tmp_path / "runs" / "r") == ["s"]
    assert store.find("s", "fp2").meta == {"v": 2}


def test_error_inside_writing_leaves_no_output(tmp_path: Path) -> None:
    store = RunStore("r", str(tmp_path))
    with pytest.raises(RuntimeError, match="boom"):
        with store.writing("train", "fp1") as pending:
            (pending.path / "partial.bin").write_bytes(b"half")
            scratch = pending.path
            raise RuntimeError("boom")
    assert not scratch.exists()
    assert pending.output is None
    assert not (tmp_path / "runs" / "r" / "train").exists()
    assert not (tmp_path / "index" / "train" / "fp1.json").exists()
    assert store.find("train", "fp1") is None


def test_error_keeps_an_earlier_complete_output_intact(tmp_path: Path) -> None:
    store = RunStore("r", str(tmp_path))
    _write_stage(store, "train", "fp_old", {"model.bin": b"good"}, {"acc": 0.9})
    final = tmp_path / "runs" / "r" / "train"
    with pytest.raises(ValueError):
        with store.writing("train", "fp_new") as pending:
            (pending.path / "model.bin").write_bytes(b"broken")
            raise ValueError("stage failed")
    assert (final / "model.bin").read_bytes() == b"good"
    assert json.loads((final / MARKER).read_text())["fingerprint"] == "fp_old"
    assert _entries(tmp_path / "runs" / "r") == ["train"]
    found = store.find("train", "fp_old")
    assert found is not None and found.meta == {"acc": 0.9}
    assert store.find("train", "fp_new") is None


def test_find_own_output(tmp_path: Path) -> None:
    store = RunStore("r1", str(tmp_path))
    _write_stage(store, "preprocess", "abc", {"x.npy": b"1"}, {"n": 3})
    found = store.find("preprocess", "abc")
    assert found is not None
    assert found.uri == str(tmp_path / "runs" / "r1" / "preprocess")
    assert found.meta == {"n": 3}
    assert found.fingerprint == "abc"
    assert found.reused is True
    assert found.local_path() == tmp_path / "runs" / "r1" / "preprocess"


def test_find_another_runs_output_through_the_index(tmp_path: Path) -> None:
    _write_stage(RunStore("first", str(tmp_path)), "preprocess", "abc", {"x.npy": b"1"}, {"n": 3})
    later = RunStore("second", str(tmp_path))
    found = later.find("preprocess", "abc")
    assert found is not None
    assert found.uri == str(tmp_path / "runs" / "first" / "preprocess")
    assert found.reused is True
    assert found.meta == {"n": 3}
    assert (found.local_path() / "x.npy").read_bytes() == b"1"


def test_find_with_another_fingerprint_is_none(tmp_path: Path) -> None:
    _write_stage(RunStore("first", str(tmp_path)), "preprocess", "abc", {"x": b"1"}, {})
    assert RunStore("first", str(tmp_path)).find("preprocess", "xyz") is None
    assert RunStore("second", str(tmp_path)).find("preprocess", "xyz") is None
    assert RunStore("second", str(tmp_path)).find("ingest", "abc") is None


def test_index_entry_is_ignored_once_the_output_was_replaced(tmp_path: Path) -> None:
    first = RunStore("first", str(tmp_path))
    _write_stage(first, "s", "fp_a", {"x": b"a"}, {})
    _write_stage(first, "s", "fp_b", {"x": b"b"}, {})
    # The index still points at first/s for fp_a, but that folder now holds fp_b.
    assert RunStore("second", str(tmp_path)).find("s", "fp_a") is None
    assert RunStore("second", str(tmp_path)).find("s", "fp_b") is not None


def test_output_without_marker_does_not_count(tmp_path: Path) -> None:
    half = tmp_path / "runs" / "r" / "s"
    half.mkdir(parents=True)
    (half / "x.npy").write_bytes(b"partial")
    assert RunStore("r", str(tmp_path)).find("s", "fp") is None


@pytest.fixture()
def memory_root() -> Iterator[str]:
    root = f"memory://visionops-test-{uuid.uuid4().hex[:8]}/data"
    yield root
    fs, path = fsspec.core.url_to_fs(root)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def test_memory_root_write_find_and_download(memory_root: str) -> None:
    store = RunStore("run_a", memory_root)
    assert not store.is_local
    _write_stage(
        store, "preprocess", "fpm", {"train_x.npy": b"xx", "nested/y.json": b"{}"}, {"n": 2}
    )
    fs, path = fsspec.core.url_to_fs(memory_root)
    assert fs.exists(f"{path}/runs/run_a/preprocess/{MARKER}")
    assert fs.cat_file(f"{path}/runs/run_a/preprocess/nested/y.json") == b"{}"

    found = RunStore("run_b", memory_root).find("preprocess", "fpm")
    assert found is not None
    assert found.reused is True
    assert found.meta == {"n": 2}
    assert found.uri.startswith("memory://")
    assert found.uri.endswith("/runs/run_a/preprocess")

    local = found.local_path()
    assert local.is_dir()
    assert local.is_relative_to(visionops_home() / "cache")
    assert (local / "train_x.npy").read_bytes() == b"xx"
    assert (local / "nested" / "y.json").read_bytes() == b"{}"
    assert json.loads((local / MARKER).read_text())["fingerprint"] == "fpm"
    # A second call uses the cached copy.
    assert found.local_path() == local
    assert not [p for p in local.parent.iterdir() if ".tmp-" in p.name]


def test_memory_root_failed_write_leaves_nothing(memory_root: str) -> None:
    store = RunStore("r", memory_root)
    with pytest.raises(RuntimeError):
        with store.writing("train", "fp") as pending:
            (pending.path / "m.bin").write_bytes(b"1")
            raise RuntimeError("fail")
    assert store.find("train", "fp") is None
    fs, path = fsspec.core.url_to_fs(memory_root)
    assert not fs.exists(f"{path}/runs/r/train")


@pytest.mark.parametrize(
    ("run_id", "key"),
    [
        ("manual__2026-01-01T00:00:00+00:00", "manual__2026-01-01T00_00_00_00_00"),
        (
            "scheduled__2026-03-04T05:06:07.123456+00:00",
            "scheduled__2026-03-04T05_06_07.123456_00_00",
        ),
        ("dataset_triggered__a/b c", "dataset_triggered__a_b_c"),
        ("plain-run_1.2", "plain-run_1.2"),
        ("../../etc", "etc"),
    ],
)
def test_run_key_from_sanitises(run_id: str, key: str) -> None:
    assert run_key_from(run_id) == key
    assert run_key_from(key) == key  # idempotent


@pytest.mark.parametrize("run_id", ["", "///", "..", "._."])
def test_run_key_from_rejects_empty_keys(run_id: str) -> None:
    with pytest.raises(ValueError, match="empty run key"):
        run_key_from(run_id)


def test_fingerprint_is_stable_and_order_sensitive() -> None:
    a = fingerprint("ingest", {"b": 2, "a": 1}, [1, 2])
    assert a == fingerprint("ingest", {"a": 1, "b": 2}, [1, 2])  # dict key order is irrelevant
    assert len(a) == 64 and int(a, 16) >= 0
    assert a != fingerprint({"a": 1, "b": 2}, "ingest", [1, 2])  # argument order matters
    assert a != fingerprint("ingest", {"a": 1, "b": 2}, [2, 1])  # list order matters
    assert a != fingerprint("ingest", {"a": 1, "b": 3}, [1, 2])
    # Parts are delimited: ("ab",) and ("a", "b") differ.
    assert fingerprint("ab") != fingerprint("a", "b")
    # Known value: sha256 of the JSON of each part followed by NUL.
    import hashlib

    assert fingerprint(1) == hashlib.sha256(b"1\0").hexdigest()


def test_memory_root_local_path_is_not_stale_after_the_output_is_replaced(memory_root: str) -> None:
    store = RunStore("r", memory_root)
    _write_stage(store, "preprocess", "fp1", {"x.txt": b"v1"}, {})
    assert (store.find("preprocess", "fp1").local_path() / "x.txt").read_bytes() == b"v1"
    _write_stage(store, "preprocess", "fp2", {"x.txt": b"v2"}, {})
    newer = store.find("preprocess", "fp2")
    assert newer is not None and newer.fingerprint == "fp2"
    assert (newer.local_path() / "x.txt").read_bytes() == b"v2"


def test_memory_root_failed_upload_keeps_the_earlier_output(
    memory_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore("r", memory_root)
    _write_stage(store, "train", "fp_old", {"model.bin": b"good"}, {"acc": 0.9})
    real_put = store.fs.put_file

    def failing_put(lpath: str, rpath: str, *args, **kwargs):
        if rpath.endswith("/model.bin"):
            raise OSError("connection reset during upload")
        return real_put(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(store.fs, "put_file", failing_put)
    with pytest.raises(OSError, match="connection reset"):
        with store.writing("train", "fp_new") as pending:
            (pending.path / "model.bin").write_bytes(b"new")
    monkeypatch.undo()
    found = RunStore("r", memory_root).find("train", "fp_old")
    assert found is not None and found.meta == {"acc": 0.9}
