"""The ingest stage in three steps that Airflow can spread over workers: plan, read chunks, merge.

``plan_ingest`` lists (or downloads) the source, decides which files an earlier manifest still
describes and cuts the rest into chunks of ``data.ingest_chunk_files``; ``read_chunk`` decodes and
hashes one chunk (on any worker: its input and output live under the data root), and
``merge_ingest`` puts the manifest together, finds the faces and records the stage in MLflow.
Each step writes under the run and reuses an earlier output with the same fingerprint, so a retried
or repeated chunk costs nothing and a chunk that failed is the only one read again. ``ingest_stage``
runs the three in one process (the CLI, tests, benches): the same files, the same manifest.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pandas as pd

import mlflow
from visionops.core import tracking
from visionops.core.config import PipelineConfig
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.contracts import IngestChunk, IngestChunkDone
from visionops.core.errors import InputError
from visionops.core.run_view import data_params, log_params_once
from visionops.core.storage import StageOutput, fingerprint
from visionops.data.ingest import (
    assemble_manifest,
    list_items,
    load_catalog,
    plan_manifest,
    read_files,
    save_catalog,
    source_fingerprint_parts,
)
from visionops.data.sources import with_slices

log = logging.getLogger("visionops")
STAGE_VERSION = "3"  # bump to invalidate earlier outputs when the stage's logic changes
PLAN_STAGE = "ingest-plan"


def _chunk_stage(index: int) -> str:
    return f"ingest-chunk-{index:05d}"


def _source(cfg: PipelineConfig) -> tuple[list[Any], dict[str, Any], str]:
    """The source's items (URL manifests downloaded first), the report so far, the ingest fingerprint."""
    report: dict[str, Any] = {}
    if cfg.data.source == "urls":
        from visionops.data.urls import download_dir, ingest_urls

        items, report["urls"] = ingest_urls(cfg.data, download_dir(cfg.data))
    else:
        items = list_items(cfg.data)
    items = with_slices(items, cfg.data.slices)
    faces = None
    if cfg.faces.enabled:
        from visionops.data.faces import face_settings

        faces = {**cfg.faces.model_dump(), **face_settings(cfg.faces)}  # with the crop version
    fp = fingerprint(
        "ingest",
        STAGE_VERSION,
        cfg.data.source,
        source_fingerprint_parts(items),
        cfg.data.max_pixels,
        faces,
        *([[item.slices for item in items]] if any(item.slices for item in items) else []),
    )
    return items, report, fp


def plan_ingest(ctx: RunContext) -> list[IngestChunk]:
    """The chunks of files to read, at least one (an empty one when the whole ingest is reused or
    every file is described by the last manifest: Airflow skips a task mapped over nothing, and the
    merge after it would be skipped too)."""
    cfg, store = ctx.config(), ctx.store()
    items, report, fp = _source(cfg)
    if store.find("ingest", fp) is not None:
        return [IngestChunk(ingest_fingerprint=fp, plan=None, index=0, n_chunks=1)]
    kept, todo = plan_manifest(items, load_catalog(cfg.data))
    size = cfg.data.ingest_chunk_files
    n_chunks = max(1, -(-len(todo) // size))
    # The plan's identity is what it asks to read and how it cuts it: a plan (found in any run of
    # this data root) and its chunks are reused only for the same files in the same chunks.
    plan_fp = fingerprint(fp, size, todo[["at", "path", "old_sha256"]].astype(str).values.tolist())
    plan = store.find(PLAN_STAGE, plan_fp)
    if plan is None:
        with store.writing(PLAN_STAGE, plan_fp) as pending:
            kept.to_parquet(pending.path / "kept.parquet", index=False)
            for index in range(n_chunks):
                part = todo.iloc[index * size : (index + 1) * size]
                part.to_parquet(pending.path / f"todo-{index:05d}.parquet", index=False)
            (pending.path / "report.json").write_text(json.dumps(report, default=str))
            pending.meta = {"now": time.time(), "n_kept": len(kept), "n_todo": len(todo)}
        plan = pending.output
    log.info(
        "ingest: %d files, %d described by the last manifest, %d to read in %d chunk(s) of at most %d",
        len(items),
        len(kept),
        len(todo),
        n_chunks,
        size,
    )
    return [
        IngestChunk(ingest_fingerprint=fp, plan=plan, index=i, n_chunks=n_chunks)
        for i in range(n_chunks)
    ]


def read_chunk(ctx: RunContext, chunk: IngestChunk) -> IngestChunkDone:
    """Decode and hash the files of one chunk (``preprocess.workers`` processes) into its own output."""
    done = {"host": socket.gethostname(), **chunk.model_dump()}
    if chunk.plan is None:
        return IngestChunkDone(**done, records=None, n_files=0)
    cfg, store = ctx.config(), ctx.store()
    chunk_fp = fingerprint(chunk.plan.fingerprint, chunk.index)
    out = store.find(_chunk_stage(chunk.index), chunk_fp)
    if out is None:
        todo = pd.read_parquet(chunk.plan.local_path() / f"todo-{chunk.index:05d}.parquet")
        with store.writing(_chunk_stage(chunk.index), chunk_fp) as pending:
            records = read_files(todo, cfg.data.max_pixels, cfg.preprocess.workers)
            pd.DataFrame(records).to_parquet(pending.path / "records.parquet", index=False)
            pending.meta = {"n_files": len(todo)}
        out = pending.output
    log.info(
        "ingest: chunk %d of %d, %d files (%s)",
        chunk.index + 1,
        chunk.n_chunks,
        out.meta["n_files"],
        "reused" if out.reused else "read",
    )
    return IngestChunkDone(**done, records=out, n_files=out.meta["n_files"])


def _merged_manifest(plan: StageOutput, chunks: list[IngestChunkDone]) -> pd.DataFrame:
    """The manifest from the plan's kept rows and every chunk's records, checked complete."""
    by_index = {c.index: c for c in chunks}
    n_chunks = chunks[0].n_chunks
    if sorted(by_index) != list(range(n_chunks)) or any(
        c.plan != plan or c.records is None for c in chunks
    ):
        raise InputError(
            f"ingest: the chunks do not make up one plan (got {sorted(by_index)} of {n_chunks}, "
            f"plan {plan.uri}); clear the run's ingest_plan task and run it again"
        )
    folder = plan.local_path()
    todo = pd.concat(
        [pd.read_parquet(folder / f"todo-{i:05d}.parquet") for i in range(n_chunks)],
        ignore_index=True,
    )
    records: list[dict[str, Any]] = []
    for i in range(n_chunks):
        frame = pd.read_parquet(by_index[i].records.local_path() / "records.parquet")  # type: ignore[union-attr]
        records += frame.astype(object).where(frame.notna(), None).to_dict("records")
    kept = pd.read_parquet(folder / "kept.parquet")
    return assemble_manifest(kept, todo, records, plan.meta["now"])


def merge_ingest(ctx: RunContext, chunks: list[IngestChunkDone]) -> StageOutput:
    """Put the manifest together from the chunks, find the faces (``faces.enabled``), write the
    stage's output and record it in MLflow. The URL rows that could not be used and the photos
    without exactly one usable face are in ``ingest_report.json``."""
    if not chunks:
        raise InputError("ingest: no chunk reached the merge (ingest_chunk mapped over nothing)")
    cfg, store = ctx.config(), ctx.store()
    fp, plan = chunks[0].ingest_fingerprint, chunks[0].plan
    tracking.configure()
    with tracking.stage_run(ctx.parent_run_id, "ingest"):
        out = store.find("ingest", fp)
        if out is None:
            if plan is None:
                raise InputError(f"ingest: no output with fingerprint {fp} and no plan to make one")
            manifest = _merged_manifest(plan, chunks)
            out = _write_ingest(cfg, store, fp, manifest, plan)
        _record_ingest(ctx, out, chunks)
    return out


def _write_ingest(
    cfg: PipelineConfig, store: Any, fp: str, manifest: pd.DataFrame, plan: StageOutput
) -> StageOutput:
    report = json.loads((plan.local_path() / "report.json").read_text())
    with store.writing("ingest", fp) as pending:
        save_catalog(cfg.data, manifest)
        reread = manifest.attrs.get("reread", len(manifest))
        if cfg.faces.enabled:
            from visionops.data.faces import crop_faces, faces_dir

            manifest, report["faces"] = crop_faces(
                manifest, faces_dir(cfg.faces), cfg.faces, seed=cfg.preprocess.seed
            )
        manifest.to_parquet(pending.path / "manifest.parquet", index=False)
        (pending.path / "ingest_report.json").write_text(json.dumps(report, indent=2, default=str))
        labelled = manifest.dropna(subset=["sha256"]).sort_values("sha256")
        pending.meta = {
            "n_images": len(manifest),
            "n_classes": int(manifest["label"].nunique()),
            "n_reread": int(reread),
            "data_fingerprint": fingerprint(list(zip(labelled["sha256"], labelled["label"])))[:16],
        }
    return pending.output


def _record_ingest(ctx: RunContext, out: StageOutput, chunks: list[IngestChunkDone]) -> None:
    mlflow.log_metrics(
        {
            "n_images": out.meta["n_images"],
            "n_classes": out.meta["n_classes"],
            "n_reread": out.meta.get("n_reread", 0),
            "n_ingest_chunks": len(chunks),
        }
    )
    mlflow.set_tag(f"{T}ingest_hosts", ",".join(sorted({c.host for c in chunks})))
    report_file = out.local_path() / "ingest_report.json"
    faces_report = None
    if report_file.exists():
        mlflow.log_artifact(str(report_file))
        faces_report = json.loads(report_file.read_text()).get("faces")
    if faces_report:
        mlflow.log_metrics(
            {
                "n_photos": faces_report["photos"],
                "n_faces_rejected": len(faces_report["rejected"]),
            }
        )
        # A class left too small is dropped by validate's policy, not stopped here.
        log.info(
            "ingest: a usable face in %d of %d photos (%d left out; ingest_report.json says why)",
            faces_report["faces"],
            faces_report["photos"],
            len(faces_report["rejected"]),
        )
    mlflow.set_tag(f"{T}reused_output", str(out.reused).lower())
    mlflow.tracking.MlflowClient().set_tag(
        ctx.parent_run_id, f"{T}data_fingerprint", out.meta["data_fingerprint"]
    )
    log_params_once(
        ctx.parent_run_id,
        data_params(out.meta["data_fingerprint"], out.meta["n_images"], out.meta["n_classes"]),
    )
    log.info(
        "ingest: %d images in %d classes (%s)",
        out.meta["n_images"],
        out.meta["n_classes"],
        "reused" if out.reused else "new",
    )


def ingest_stage(ctx: RunContext) -> StageOutput:
    """List (or download) the source and record hash, size, mode, statistics and decodability of
    every file, in this process: ``plan_ingest``, ``read_chunk`` of each chunk, ``merge_ingest``.

    Files unchanged since the last ingest of the same source are not read again. The stage fails
    when too many URL rows were rejected; a class that face detection left too small is dropped by
    validate's policy.
    """
    chunks = [read_chunk(ctx, chunk) for chunk in plan_ingest(ctx)]
    return merge_ingest(ctx, chunks)
