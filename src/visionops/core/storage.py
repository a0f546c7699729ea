"""Where state lives, and run-scoped, atomic, fingerprinted stage outputs.

The data root is a local folder or an fsspec URL. A stage writes into a local temporary folder;
``commit`` moves it under ``<data_root>/runs/<run_key>/<stage>/`` in one rename (local) or an
upload followed by a marker file (object stores, where rename is not atomic), so readers never see
a half-written output: an output counts only when its ``_COMPLETE.json`` marker is there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

MARKER = "_COMPLETE.json"


def project_dir() -> Path:
    """The repository root (the package is installed in editable mode from it)."""
    env = os.environ.get("VISIONOPS_PROJECT_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[3]


def visionops_home() -> Path:
    """Local state: ``$VISIONOPS_HOME`` or ``<repo>/.visionops``."""
    env = os.environ.get("VISIONOPS_HOME")
    return Path(env).resolve() if env else project_dir() / ".visionops"


def data_root() -> str:
    """``$VISIONOPS_DATA_ROOT`` (path or fsspec URL) or ``<home>/data``."""
    return os.environ.get("VISIONOPS_DATA_ROOT") or str(visionops_home() / "data")


def run_key_from(run_id: str) -> str:
    """A folder-safe key for an Airflow run id (``manual__2026-01-01T00:00:00+00:00`` ...)."""
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("._")
    if not key:
        raise ValueError(f"run id {run_id!r} gives an empty run key")
    return key


def fingerprint(*parts: Any) -> str:
    """sha256 over JSON-serialised parts: the identity of a stage's inputs."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StageOutput:
    """A complete stage output: where it is and what produced it."""

    uri: str
    fingerprint: str
    meta: dict[str, Any]
    reused: bool = False

    def local_path(self) -> Path:
        """A local folder with the output's files (downloaded once when the root is remote)."""
        fs, path = fsspec.core.url_to_fs(self.uri)
        if isinstance(fs, LocalFileSystem):
            return Path(path)
        # Keyed by content identity too: a stage rewritten with new inputs must not serve stale files.
        key = hashlib.sha256(f"{self.uri}\0{self.fingerprint}".encode()).hexdigest()[:24]
        cache = visionops_home() / "cache" / key
        if not (cache / MARKER).exists():
            tmp = cache.with_name(cache.name + f".tmp-{uuid.uuid4().hex[:8]}")
            fs.get(path.rstrip("/") + "/", str(tmp), recursive=True)
            shutil.rmtree(cache, ignore_errors=True)
            os.replace(tmp, cache)
        return cache


class RunStore:
    """Stage outputs of one pipeline run under ``<root>/runs/<run_key>/``."""

    def __init__(self, run_key: str, root: str | None = None) -> None:
        self.root = (root or data_root()).rstrip("/")
        self.run_key = run_key
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def _join(self, *parts: str) -> str:
        return "/".join([self._root_path.rstrip("/"), *parts])

    def _uri(self, path: str) -> str:
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def stage_path(self, stage: str) -> str:
        return self._join("runs", self.run_key, stage)

    def _read_marker(self, path: str) -> dict[str, Any] | None:
        marker = f"{path}/{MARKER}"
        if not self.fs.exists(marker):
            return None
        with self.fs.open(marker, "r") as fh:
            return json.load(fh)

    def find(self, stage: str, fp: str) -> StageOutput | None:
        """A complete output of ``stage`` with fingerprint ``fp``: this run's first, then any earlier run's."""
        own = self._read_marker(self.stage_path(stage))
        if own and own["fingerprint"] == fp:
            return StageOutput(
                self._uri(self.stage_path(stage)), fp, own.get("meta", {}), reused=True
            )
        index = self._join("index", stage, f"{fp}.json")
        if self.fs.exists(index):
            with self.fs.open(index, "r") as fh:
                earlier = json.load(fh)["path"]
            marker = self._read_marker(earlier)
            if marker and marker["fingerprint"] == fp:
                return StageOutput(self._uri(earlier), fp, marker.get("meta", {}), reused=True)
        return None

    @contextmanager
    def writing(self, stage: str, fp: str) -> Iterator[_Pending]:
        """Yield a local temp folder; on normal exit it becomes the stage output, on error it is dropped.

        An earlier complete output of this stage in this run is replaced only after the new one is
        complete, so a failure never loses it.
        """
        scratch = Path(tempfile.mkdtemp(prefix=f"visionops-{stage}-"))
        pending = _Pending(scratch)
        try:
            yield pending
            pending.output = self._commit(stage, fp, scratch, pending.meta)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _commit(self, stage: str, fp: str, scratch: Path, meta: dict[str, Any]) -> StageOutput:
        (scratch / MARKER).write_text(json.dumps({"fingerprint": fp, "stage": stage, "meta": meta}))
        final = self.stage_path(stage)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        old = f"{final}.old-{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(self._join("runs", self.run_key), exist_ok=True)
        if self.is_local:
            shutil.copytree(scratch, tmp)
            if os.path.exists(final):
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            # Object stores have no atomic folder rename. Upload everything beside the old output
            # first (a failed upload leaves it intact), then swap, writing the marker last.
            self._upload(scratch, tmp)
            if self.fs.exists(final):
                self.fs.rm(f"{final}/{MARKER}")
                self.fs.rm(final, recursive=True)
            self._upload(scratch, final)
            self.fs.rm(tmp, recursive=True)
        index_dir = self._join("index", stage)
        self.fs.makedirs(index_dir, exist_ok=True)
        with self.fs.open(f"{index_dir}/{fp}.json", "w") as fh:
            json.dump({"path": final, "run_key": self.run_key}, fh)
        return StageOutput(self._uri(final), fp, meta)

    def _upload(self, scratch: Path, target: str) -> None:
        """Copy a local folder to ``target``, the completion marker last."""
        for file in sorted(p for p in scratch.rglob("*") if p.is_file() and p.name != MARKER):
            self.fs.makedirs(
                f"{target}/{file.parent.relative_to(scratch).as_posix()}", exist_ok=True
            )
            self.fs.put_file(str(file), f"{target}/{file.relative_to(scratch).as_posix()}")
        self.fs.put_file(str(scratch / MARKER), f"{target}/{MARKER}")


class _Pending:
    """A stage output being written: files go into ``path``, small facts into ``meta``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta: dict[str, Any] = {}
        self.output: StageOutput | None = None
