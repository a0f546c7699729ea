"""The data stages after ingest (``visionops.data.ingest_stage``): validate (Great Expectations),
preprocess (split, resize).

Each writes its output under the run (``<data_root>/runs/<run_key>/<stage>/``) and reuses an
earlier output whose inputs have the same fingerprint.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

import mlflow
from visionops.core import tracking
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.context import RunContext
from visionops.core.contracts import Validated
from visionops.core.storage import StageOutput, fingerprint
from visionops.data.preprocess import preprocess_to
from visionops.data.split import plan_split
from visionops.data.split_datasets import log_split_datasets

log = logging.getLogger("visionops")
VALIDATION_PAGE = "validation_report.html"  # at the artifact root of the validate run
STAGE_VERSION = "3"  # bump to invalidate earlier outputs when a stage's logic changes


def validate_stage(
    ctx: RunContext, ingested: StageOutput, reference: dict[str, Any] | None
) -> Validated:
    """Run the Great Expectations suite on the manifest; stop the run naming the offending files.

    ``reference`` is the champion's label map and training-data profile (None when no model is in
    service): classes added or removed, and drift against it, are reported.
    """
    from visionops.data.validate import DataValidationError, validate_manifest

    cfg = ctx.config()
    tracking.configure()
    manifest = pd.read_parquet(ingested.local_path() / "manifest.parquet")
    ingest_report = ingested.local_path() / "ingest_report.json"
    faces = json.loads(ingest_report.read_text()).get("faces") if ingest_report.exists() else None
    try:  # the split preprocess will make, so that leakage across it is checked before any training
        plan = plan_split(manifest, cfg.preprocess, cfg.validate_)
    except ValueError as exc:  # too few images to split, or a bad split column: reported here
        log.warning("validate: no leakage check, the data cannot be split (%s)", exc)
        plan = None
    with (
        tracking.stage_run(ctx.parent_run_id, "validate") as run_id,
        tempfile.TemporaryDirectory() as tmp,
    ):
        report = validate_manifest(
            manifest,
            config=cfg.validate_,
            docs_dir=Path(tmp) / "data_docs",
            report_html=Path(tmp) / VALIDATION_PAGE,
            plan=plan,
            reference=reference,
            faces=faces,
        )
        if report.data_docs_index is not None:  # GX's own pages: they need its CDNs to render
            mlflow.log_artifacts(str(Path(report.data_docs_index).parent), "data_docs")
        if report.html_report is not None:  # the one page that renders offline
            mlflow.log_artifact(str(report.html_report))
            log.info("validate: report at %s of MLflow run %s", VALIDATION_PAGE, run_id)
        tracking.log_json(report.to_dict(), "validation/report.json")
        planned = report.statistics.get("split_plan", {})
        mlflow.log_metrics(
            {
                "validation_success": float(report.success),
                "n_issues": len(report.issues),
                "n_validation_warnings": report.statistics["n_warnings"],
                **{
                    k: planned[k]
                    for k in (
                        "n_duplicates_dropped",
                        "n_links_across_split",
                        "n_held_out_with_train_copy",
                    )
                    if k in planned
                },
            }
        )
        record_quality(ctx.parent_run_id, report.statistics)
        if not report.success:
            raise DataValidationError(report)
    warnings = [f"{i.expectation} on {i.column}: {i.description}" for i in report.issues]
    if report.issues:  # warnings only: recorded (the task log, the run summary), the run goes on
        log.warning("%s", report.summary())
        mlflow.tracking.MlflowClient().set_tag(
            ctx.parent_run_id, f"{T}validation_warnings", tracking.clip("\n".join(warnings))
        )
    log.info("validate: %d images passed the suite", len(manifest))
    return Validated(success=True, statistics=report.statistics, warnings=warnings)


def record_quality(parent_run_id: str, statistics: dict[str, Any]) -> None:
    """The policy's table and one line on it (``data quality: 1 class dropped (s2), ...``): in the
    task log, as metrics of the validate run, and as tags of the parent run (summary, model card,
    gate)."""
    from visionops.data.quality import summary_line

    problems = statistics.get("quality", [])
    line = summary_line(problems)
    (log.warning if line != "clean" else log.info)("data quality: %s", line)
    mlflow.log_metrics({f"n_{p['kind']}": p["count"] for p in problems})
    client = mlflow.tracking.MlflowClient()
    for key, value in {
        "data_quality": line,
        "data_quality_table": json.dumps(problems),
        "dropped_classes": json.dumps(statistics.get("dropped_classes", {})),
    }.items():
        client.set_tag(parent_run_id, f"{T}{key}", tracking.clip(value))


def preprocess_stage(ctx: RunContext, ingested: StageOutput) -> StageOutput:
    """Decode, convert, resize and split (the plan validate checked); uint8 arrays and the label map under the run."""
    cfg, store = ctx.config(), ctx.store()
    tracking.configure()
    near = (
        cfg.validate_.near_duplicate_bits,
        cfg.validate_.near_duplicate_max_diff,
    )  # they shape the groups
    fp = fingerprint(
        "preprocess",
        STAGE_VERSION,
        ingested.fingerprint,
        cfg.data.image_size,
        cfg.data.channels,
        cfg.preprocess.model_dump(exclude={"workers"}),
        near,
        (cfg.validate_.min_images_per_class, cfg.validate_.classes),  # they decide the quarantine
    )  # any worker count
    with tracking.stage_run(ctx.parent_run_id, "preprocess"):
        out = store.find("preprocess", fp)
        if out is None:
            manifest = pd.read_parquet(ingested.local_path() / "manifest.parquet")
            with store.writing("preprocess", fp) as pending:
                plan = plan_split(manifest, cfg.preprocess, cfg.validate_)
                result = preprocess_to(
                    manifest,
                    pending.path,
                    size=cfg.data.image_size,
                    channels=cfg.data.channels,
                    workers=cfg.preprocess.workers,
                    plan=plan,
                )
                pending.meta = {
                    "counts": result.counts,
                    "n_classes": len(result.labels),
                    "n_test_clean": int((~plan.near_copy_in_train[plan.split == "test"]).sum()),
                    "n_duplicates_dropped": plan.stats["n_duplicates_dropped"],
                    "quality": {
                        "exact_copies": plan.stats["n_duplicates_dropped"],
                        "label_conflicts": plan.stats["n_label_conflicts"],
                        "dropped_classes": len(plan.stats["dropped_classes"]),
                        "quarantined": plan.stats["n_quarantined"],
                    },
                }
            out = pending.output
        folder = out.local_path()
        mlflow.log_metrics({f"n_{k}": v for k, v in out.meta["counts"].items()})
        if "n_test_clean" in out.meta:
            mlflow.log_metrics({k: out.meta[k] for k in ("n_test_clean", "n_duplicates_dropped")})
        mlflow.log_artifact(str(folder / "label_map.json"))
        mlflow.log_artifact(str(folder / "stats.json"))
        if (
            folder / "data_profile.json"
        ).exists():  # the next run's drift reference (release.lineage.champion_reference)
            mlflow.log_artifact(str(folder / "data_profile.json"))
        log_split_datasets(out, cfg.data, ctx.parent_run_id)  # "Datasets" on the parent run
    return out
