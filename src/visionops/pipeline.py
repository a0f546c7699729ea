"""The pipeline's stages as plain functions: each DAG task is one call into this module.

Every function takes and returns small JSON-able dicts (references, ids, metrics), never data.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Param

from visionops import tracking
from visionops.data.ingest import (build_manifest, list_items, load_catalog, save_catalog,
                                   source_fingerprint_parts)
from visionops.data.preprocess import preprocess_to
from visionops.gate import GateDecision, decide
from visionops.runs import RunContext, code_version, new_run_key, resolve_config, write_config
from visionops.storage import StageOutput, data_root, fingerprint
from visionops.summary import build_summary

log = logging.getLogger("visionops")
T = tracking.TAG_PREFIX
STAGE_VERSION = "2"  # bump to invalidate earlier outputs when a stage's logic changes


def start(params: dict[str, Any], *, dag_id: str, airflow_run_id: str) -> dict[str, str]:
    """Resolve and validate the config, open the MLflow parent run, store the config under the run."""
    cfg, config_file = resolve_config(params)
    tracking.configure()
    run_key = new_run_key(dag_id, airflow_run_id)
    root = data_root()
    config_uri = write_config(run_key, cfg, root)
    exp_id = tracking.experiment_id(cfg.experiment)
    tags = {f"{T}dag_id": dag_id, f"{T}airflow_run_id": airflow_run_id, f"{T}run_key": run_key,
            f"{T}config_hash": cfg.config_hash(), f"{T}config_file": config_file,
            f"{T}code_version": code_version(), f"{T}model_name": cfg.registry.model_name}
    if params.get("request_id"):
        tags[f"{T}request_id"] = str(params["request_id"])
    parent = tracking.start_parent_run(exp_id, f"{dag_id}/{airflow_run_id}", tags)
    logged = set(mlflow.tracking.MlflowClient().get_run(parent).data.params)  # a retried task logs nothing twice
    params_to_log = {k: str(v)[:6000] for k, v in tracking.flatten("", cfg.to_dict()).items() if k not in logged}
    mlflow.tracking.MlflowClient().log_batch(parent, params=[Param(k, v) for k, v in params_to_log.items()])
    tracking.log_json(cfg.to_dict(), "config/config.json", run_id=parent)
    log.info("run %s: experiment %s, parent MLflow run %s, config %s (hash %s)",
             run_key, cfg.experiment, parent, config_file, cfg.config_hash())
    return RunContext(run_key, dag_id, airflow_run_id, config_uri, cfg.config_hash(), exp_id, parent,
                      root).to_dict()


def _output(result: dict[str, Any]) -> StageOutput:
    return StageOutput(result["uri"], result["fingerprint"], result.get("meta", {}))


def _ref(out: StageOutput, **extra: Any) -> dict[str, Any]:
    return {"uri": out.uri, "fingerprint": out.fingerprint, "reused": out.reused, "meta": out.meta, **extra}


def ingest(context: dict[str, str]) -> dict[str, Any]:
    """List (or download) the source and record hash, size, mode, statistics and decodability of every file.

    Files unchanged since the last ingest of the same source are not read again. URL rows that could
    not be used, and photos without exactly one usable face (faces.enabled), are recorded in
    ``ingest_report.json``; the stage fails when too many URL rows were rejected, or when face
    detection left a class below ``validate.min_images_per_class`` (an ``InputError`` naming the class,
    its counts and the reasons, raised here rather than by validate so that the reasons are at hand).
    """
    ctx = RunContext.from_dict(context)
    cfg, store = ctx.config(), ctx.store()
    tracking.configure()
    with tracking.stage_run(ctx.parent_run_id, "ingest"):
        report: dict[str, Any] = {}
        if cfg.data.source == "urls":
            from visionops.data.urls import download_dir, ingest_urls

            items, report["urls"] = ingest_urls(cfg.data, download_dir(cfg.data))
        else:
            items = list_items(cfg.data)
        faces = None
        if cfg.faces.enabled:
            from visionops.data.faces import face_settings

            faces = {**cfg.faces.model_dump(), **face_settings(cfg.faces)}  # settings carry the crop version
        fp = fingerprint("ingest", STAGE_VERSION, cfg.data.source, source_fingerprint_parts(items),
                         cfg.data.max_pixels, faces)
        out = store.find("ingest", fp)
        if out is None:
            with store.writing("ingest", fp) as pending:
                manifest = build_manifest(items, load_catalog(cfg.data), max_pixels=cfg.data.max_pixels)
                save_catalog(cfg.data, manifest)
                reread = manifest.attrs.get("reread", len(manifest))
                if cfg.faces.enabled:
                    from visionops.data.faces import crop_faces, faces_dir

                    manifest, report["faces"] = crop_faces(manifest, faces_dir(cfg.faces), cfg.faces,
                                                           seed=cfg.preprocess.seed)
                manifest.to_parquet(pending.path / "manifest.parquet", index=False)
                (pending.path / "ingest_report.json").write_text(json.dumps(report, indent=2, default=str))
                labelled = manifest.dropna(subset=["sha256"]).sort_values("sha256")
                pending.meta = {
                    "n_images": len(manifest),
                    "n_classes": int(manifest["label"].nunique()),
                    "n_reread": int(reread),
                    "data_fingerprint": fingerprint(list(zip(labelled["sha256"], labelled["label"])))[:16],
                }
            out = pending.output
        mlflow.log_metrics({"n_images": out.meta["n_images"], "n_classes": out.meta["n_classes"],
                            "n_reread": out.meta.get("n_reread", 0)})
        report_file = out.local_path() / "ingest_report.json"
        faces_report = None
        if report_file.exists():
            mlflow.log_artifact(str(report_file))
            faces_report = json.loads(report_file.read_text()).get("faces")
        if faces_report:
            mlflow.log_metrics({"n_photos": faces_report["photos"],
                                "n_faces_rejected": len(faces_report["rejected"])})
        mlflow.set_tag(f"{T}reused_output", str(out.reused).lower())
        mlflow.tracking.MlflowClient().set_tag(ctx.parent_run_id, f"{T}data_fingerprint",
                                               out.meta["data_fingerprint"])
        if faces_report:  # on reuse too: validate.min_images_per_class is not part of the fingerprint
            from visionops.data.faces import check_class_losses

            check_class_losses(faces_report, cfg.validate_.min_images_per_class)
    log.info("ingest: %d images in %d classes (%s)", out.meta["n_images"], out.meta["n_classes"],
             "reused" if out.reused else "new")
    return _ref(out)


def validate(context: dict[str, str], ingested: dict[str, Any]) -> dict[str, Any]:
    """Run the Great Expectations suite on the manifest; stop the run naming the offending files."""
    from visionops.data.drift import champion_reference
    from visionops.data.split import plan_split
    from visionops.data.validate import DataValidationError, validate_manifest

    ctx = RunContext.from_dict(context)
    cfg = ctx.config()
    tracking.configure()
    manifest = pd.read_parquet(_output(ingested).local_path() / "manifest.parquet")
    try:  # the split preprocess will make, so that leakage across it is checked before any training
        plan = plan_split(manifest, cfg.preprocess, cfg.validate_)
    except ValueError as exc:  # too few images to split, or a bad split column: reported here
        log.warning("validate: no leakage check, the data cannot be split (%s)", exc)
        plan = None
    reference = champion_reference(cfg.registry.model_name)
    with tracking.stage_run(ctx.parent_run_id, "validate"), tempfile.TemporaryDirectory() as tmp:
        report = validate_manifest(manifest, config=cfg.validate_, docs_dir=Path(tmp) / "data_docs",
                                   plan=plan, reference=reference)
        if report.data_docs_index is not None:
            mlflow.log_artifacts(str(Path(report.data_docs_index).parent), "data_docs")
        tracking.log_json(report.to_dict(), "validation/report.json")
        planned = report.statistics.get("split_plan", {})
        mlflow.log_metrics({"validation_success": float(report.success), "n_issues": len(report.issues),
                            "n_validation_warnings": report.statistics["n_warnings"],
                            **{k: planned[k] for k in ("n_duplicates_dropped", "n_links_across_split",
                                                       "n_held_out_with_train_copy") if k in planned}})
        if not report.success:
            raise DataValidationError(report)
    warnings = [f"{i.expectation} on {i.column}: {i.description}" for i in report.issues]
    if report.issues:  # warnings only: recorded (the task log, the run summary), the run goes on
        log.warning("%s", report.summary())
        mlflow.tracking.MlflowClient().set_tag(ctx.parent_run_id, f"{T}validation_warnings",
                                               "\n".join(warnings)[:4900])
    log.info("validate: %d images passed the suite", len(manifest))
    return {"success": True, "statistics": report.statistics, "warnings": warnings}


def preprocess(context: dict[str, str], ingested: dict[str, Any]) -> dict[str, Any]:
    """Decode, convert, resize and split (the plan validate checked); uint8 arrays and the label map under the run."""
    from visionops.data.split import plan_split

    ctx = RunContext.from_dict(context)
    cfg, store = ctx.config(), ctx.store()
    tracking.configure()
    near = (cfg.validate_.near_duplicate_bits, cfg.validate_.near_duplicate_max_diff)  # they shape the groups
    fp = fingerprint("preprocess", STAGE_VERSION, ingested["fingerprint"], cfg.data.image_size,
                     cfg.data.channels, cfg.preprocess.model_dump(exclude={"workers"}), near)  # any worker count
    with tracking.stage_run(ctx.parent_run_id, "preprocess"):
        out = store.find("preprocess", fp)
        if out is None:
            manifest = pd.read_parquet(_output(ingested).local_path() / "manifest.parquet")
            with store.writing("preprocess", fp) as pending:
                plan = plan_split(manifest, cfg.preprocess, cfg.validate_)
                result = preprocess_to(manifest, pending.path, size=cfg.data.image_size,
                                       channels=cfg.data.channels, workers=cfg.preprocess.workers, plan=plan)
                pending.meta = {"counts": result.counts, "n_classes": len(result.labels),
                                "n_test_clean": int((~plan.near_copy_in_train[plan.split == "test"]).sum()),
                                "n_duplicates_dropped": plan.stats["n_duplicates_dropped"]}
            out = pending.output
        folder = out.local_path()
        mlflow.log_metrics({f"n_{k}": v for k, v in out.meta["counts"].items()})
        if "n_test_clean" in out.meta:
            mlflow.log_metrics({k: out.meta[k] for k in ("n_test_clean", "n_duplicates_dropped")})
        mlflow.log_artifact(str(folder / "label_map.json"))
        mlflow.log_artifact(str(folder / "stats.json"))
        if (folder / "data_profile.json").exists():  # the next run's drift reference (drift.champion_reference)
            mlflow.log_artifact(str(folder / "data_profile.json"))
    return _ref(out)


def tune(context: dict[str, str], preprocessed: dict[str, Any]) -> dict[str, Any]:
    """The whole tune stage in one process (plan, each worker in turn, reduce); the best parameters."""
    from visionops.tuning.stage import tune_stage

    return tune_stage(RunContext.from_dict(context), _output(preprocessed))


def tune_plan(context: dict[str, str], preprocessed: dict[str, Any]) -> list[dict[str, Any]]:
    """Open the tuning run and the shared Optuna study; one item per worker (``tune.workers``)."""
    from visionops.tuning.stage import plan_stage

    return plan_stage(RunContext.from_dict(context), _output(preprocessed))


def tune_worker(context: dict[str, str], preprocessed: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """One tuning worker: trials of the shared study until it has ``tune.n_trials``."""
    from visionops.tuning.stage import worker_stage

    return worker_stage(RunContext.from_dict(context), _output(preprocessed), item)


def tune_reduce(context: dict[str, str], workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The study's best parameters (over the configured values), counts and plots in the tuning run."""
    from visionops.tuning.stage import reduce_stage

    return reduce_stage(RunContext.from_dict(context), list(workers))


def train(context: dict[str, str], preprocessed: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    from visionops.training.stage import train_stage

    return train_stage(RunContext.from_dict(context), _output(preprocessed), tuned["best_params"])


def evaluate(context: dict[str, str], preprocessed: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    from visionops.evaluation import evaluate_stage

    return evaluate_stage(RunContext.from_dict(context), _output(preprocessed), trained)


def gate(context: dict[str, str], evaluated: dict[str, Any]) -> dict[str, Any]:
    """Decide with the configured thresholds and the champion comparison; record the decision."""
    ctx = RunContext.from_dict(context)
    cfg = ctx.config()
    tracking.configure()
    paired = None
    if evaluated.get("champion") and evaluated.get("predictions"):
        from visionops.evaluation import load_paired

        paired = load_paired(evaluated["predictions"])  # both models on the same test images
    with tracking.stage_run(ctx.parent_run_id, "gate"):
        decision = decide(evaluated["metrics"], evaluated.get("champion"), cfg.gate, paired)
        tracking.log_json(decision.to_dict(), "gate/decision.json")
        mlflow.set_tags({f"{T}gate": "passed" if decision.passed else "rejected",
                         f"{T}gate_reasons": "; ".join(decision.reasons)[:4900]})
        mlflow.log_metric("gate_passed", float(decision.passed))
    client = mlflow.tracking.MlflowClient()
    client.set_tag(ctx.parent_run_id, f"{T}gate", "passed" if decision.passed else "rejected")
    client.set_tag(ctx.parent_run_id, f"{T}gate_reasons", "; ".join(decision.reasons)[:4900])
    (log.info if decision.passed else log.warning)("%s", decision.summary())
    return decision.to_dict()


def next_step(decision: dict[str, Any], registered: dict[str, Any] | None = None) -> str:
    """The branch after registration: ``reject`` when the gate failed, else ``promote``, or ``approve``
    (a person decides first) when the run's config sets ``gate.require_approval``."""
    if not GateDecision.from_dict(decision).passed:
        return "reject"
    return "approve" if (registered or {}).get("require_approval") else "promote"


def register(context: dict[str, str], trained: dict[str, Any], evaluated: dict[str, Any],
             decision: dict[str, Any]) -> dict[str, Any]:
    from visionops.promotion import register_stage

    return register_stage(RunContext.from_dict(context), trained, evaluated, GateDecision.from_dict(decision))


def promote(context: dict[str, str], registered: dict[str, Any], evaluated: dict[str, Any],
            approval: dict[str, Any] | None = None) -> dict[str, Any]:
    from visionops.promotion import promote_stage

    return promote_stage(RunContext.from_dict(context), registered, evaluated, approval)


def reject(context: dict[str, str], registered: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    from visionops.promotion import reject_stage

    return reject_stage(RunContext.from_dict(context), registered, GateDecision.from_dict(decision))


def finish(context: dict[str, str], registered: dict[str, Any] | None = None,
           approval: dict[str, Any] | None = None) -> dict[str, Any]:
    """Close the parent run and store the run's summary (MLflow and the run folder).

    ``approval`` is the answer of the ``approve`` task when the run asked a person; a rejection (or no
    answer before the deadline) is recorded on the run and the version here, since promote was skipped.
    """
    ctx = RunContext.from_dict(context)
    tracking.configure()
    if approval is not None and registered is not None:
        from visionops.approval import record_answer

        record_answer(ctx.parent_run_id, registered["model_name"], registered["version"], approval)
    tracking.end_parent_run(ctx.parent_run_id, "FINISHED")
    summary = build_summary(ctx.parent_run_id)
    tracking.log_json(summary, "summary.json", run_id=ctx.parent_run_id)
    log.info("summary:\n%s", json.dumps(summary, indent=2))
    return summary
