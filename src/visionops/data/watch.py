"""Noticing that a data source changed, without reading its images: a snapshot of its file names,
sizes and modification times (and the manifest's own hash), compared with the last one seen.

The ``watch_sources`` DAG calls this every few minutes for each watched config and emits the
source's asset event only when something changed; ingest then reads what is new (and only that:
unchanged files are not hashed again).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from visionops.core.config import DataConfig
from visionops.core.contracts import SourceChange
from visionops.core.storage import file_sha256, fingerprint, visionops_home
from visionops.data.ingest import list_items

EXAMPLES = 5  # file names listed per kind of change in the event


def snapshot(data: DataConfig) -> dict[str, list[Any]]:
    """``path -> [label, size, mtime_ns]`` of every file of the source (a manifest: its sha256)."""
    files: dict[str, list[Any]] = {}
    if data.source in ("csv", "urls"):
        manifest = Path(str(data.path))
        files[str(manifest)] = ["<manifest>", manifest.stat().st_size, file_sha256(manifest)]
        if data.source == "urls":
            return files  # the images are downloads: the manifest is what changes
    for item in list_items(data):
        try:
            st = os.stat(item.path)
            files[item.path] = [item.label, st.st_size, st.st_mtime_ns]
        except OSError:
            files[item.path] = [item.label, -1, -1]
    return files


def compare(before: dict[str, list[Any]], after: dict[str, list[Any]]) -> dict[str, list[str]]:
    """The paths added, changed (size, time or label) and removed between two snapshots."""
    return {
        "added": sorted(set(after) - set(before)),
        "changed": sorted(p for p in set(after) & set(before) if after[p] != before[p]),
        "removed": sorted(set(before) - set(after)),
    }


def state_file(config_file: str) -> Path:
    """Where the last snapshot of a config's source is kept (one file per config)."""
    key = fingerprint(str(Path(config_file).resolve()))[:12]
    return visionops_home() / "watch" / f"{Path(config_file).stem}-{key}.json"


def watch_source(config_file: str, data: DataConfig) -> SourceChange:
    """Snapshot the source, compare with the last snapshot, keep the new one. The first look at a
    source records it without calling it a change (nothing is known to have changed)."""
    files = snapshot(data)
    source_fp = fingerprint(sorted(files.items()))[:16]
    state = state_file(config_file)
    previous = json.loads(state.read_text()) if state.is_file() else None
    changes = compare(previous["files"], files) if previous else {}
    changed = previous is not None and previous["fingerprint"] != source_fp
    if previous is None or changed:
        state.parent.mkdir(parents=True, exist_ok=True)
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fingerprint": source_fp, "files": files}))
        tmp.replace(state)  # atomic: a crash leaves the previous snapshot
    return SourceChange(
        config=str(config_file),
        source=f"{data.source}:{data.path or 'embedded'}",
        changed=changed,
        first_seen=previous is None,
        n_files=len(files),
        added=len(changes.get("added", [])),
        modified=len(changes.get("changed", [])),
        removed=len(changes.get("removed", [])),
        fingerprint=source_fp,
        examples=[
            f"{kind} {Path(p).name}" for kind, paths in changes.items() for p in paths[:EXAMPLES]
        ],
    )
