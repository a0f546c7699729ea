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

from visionops import registry, tracking
from visionops.data.ingest import build_manifest, list_items, source_fingerprint_parts
from visionops.data.preprocess import load_labels, load_split, load_stats, preprocess_to
from visionops.gate import GateDecision, decide
from visionops.runs import RunContext, code_version, new_run_key, resolve_config, write_config
from visionops.storage import StageOutput, data_root, fingerprint
from visionops.summary import build_summary

log = logging.getLogger("visionops")
T = tracking.TAG_PREFIX
STAGE_VERSION = "1"  # bump to invalidate earlier outputs when a stage's logic changes


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
    """List the source and record hash, size, mode and decodability of every file."""
    ctx = RunContext.from_dict(context)
    cfg, store = ctx.config(), ctx.store()
    tracking.configure()
    with tracking.stage_run(ctx.parent_run_id, "ingest"):
        items = list_items(cfg.data)
        fp = fingerprint("ingest", STAGE_VERSION, cfg.data.source, source_fingerprint_parts(items))
        out = store.find("ingest", fp)
        if out is None:
            with store.writing("ingest", fp) as pending:
                manifest = build_manifest(items)
                manifest.to_parquet(pending.path / "manifest.parquet", index=False)
                labelled = manifest.dropna(subset=["sha256"]).sort_values("sha256")
                pending.meta = {
                    "n_images": len(manifest),
                    "n_classes": int(manifest["label"].nunique()),
                    "data_fingerprint": fingerprint(list(zip(labelled["sha256"], labelled["label"])))[:16],
                }
            out = pending.output
        mlflow.log_metrics({"n_images": out.meta["n_images"], "n_classes": out.meta["n_classes"]})
        mlflow.set_tag(f"{T}reused_output", str(out.reused).lower())
        mlflow.tracking.MlflowClient().set_tag(ctx.parent_run_id, f"{T}data_fingerprint",
                                               out.meta["data_fingerprint"])
    log.info("ingest: %d images in %d classes (%s)", out.meta["n_images"], out.meta["n_classes"],
             "reused" if out.reused else "new")
    return _ref(out)


def validate(context: dict[str, str], ingested: dict[str, Any]) -> dict[str, Any]:
    """Run the Great Expectations suite on the manifest; stop the run naming the offending files."""
    from visionops.data.validate import DataValidationError, validate_manifest

    ctx = RunContext.from_dict(context)
    cfg = ctx.config()
    tracking.configure()
    manifest = pd.read_parquet(_output(ingested).local_path() / "manifest.parquet")
    with tracking.stage_run(ctx.parent_run_id, "validate"), tempfile.TemporaryDirectory() as tmp:
        report = validate_manifest(manifest, min_images_per_class=cfg.validate_.min_images_per_class,
                                   docs_dir=Path(tmp) / "data_docs")
        if report.data_docs_index is not None:
            mlflow.log_artifacts(str(Path(report.data_docs_index).parent), "data_docs")
        tracking.log_json(report.to_dict(), "validation/report.json")
        mlflow.log_metrics({"validation_success": float(report.success), "n_issues": len(report.issues)})
        if not report.success:
            raise DataValidationError(report)
    log.info("validate: %d images passed the suite", len(manifest))
    return {"success": True, "statistics": report.statistics}


def preprocess(context: dict[str, str], ingested: dict[str, Any]) -> dict[str, Any]:
    """Decode, convert, resize and split; uint8 arrays and the label map under the run."""
    ctx = RunContext.from_dict(context)
    cfg, store = ctx.config(), ctx.store()
    tracking.configure()
    fp = fingerprint("preprocess", STAGE_VERSION, ingested["fingerprint"], cfg.data.image_size,
                     cfg.data.channels, cfg.preprocess.model_dump())
    with tracking.stage_run(ctx.parent_run_id, "preprocess"):
        out = store.find("preprocess", fp)
        if out is None:
            manifest = pd.read_parquet(_output(ingested).local_path() / "manifest.parquet")
            with store.writing("preprocess", fp) as pending:
                result = preprocess_to(manifest, pending.path, size=cfg.data.image_size,
                                       channels=cfg.data.channels, **cfg.preprocess.model_dump())
                pending.meta = {"counts": result.counts, "n_classes": len(result.labels)}
            out = pending.output
        folder = out.local_path()
        mlflow.log_metrics({f"n_{k}": v for k, v in out.meta["counts"].items()})
        mlflow.log_artifact(str(folder / "label_map.json"))
        mlflow.log_artifact(str(folder / "stats.json"))
    return _ref(out)


def tune(context: dict[str, str], preprocessed: dict[str, Any]) -> dict[str, Any]:
    """Optuna search over learning rate, weight decay and dropout; returns the best parameters."""
    ctx = RunContext.from_dict(context)
    cfg = ctx.config()
    tracking.configure()
    defaults = {"learning_rate": cfg.train.learning_rate, "weight_decay": cfg.train.weight_decay,
                "dropout": cfg.model.dropout}
    with tracking.stage_run(ctx.parent_run_id, "tune") as run_id:
        if cfg.tune.n_trials == 0:
            mlflow.set_tag(f"{T}tuning", "skipped (tune.n_trials = 0)")
            mlflow.log_params({f"best.{k}": v for k, v in defaults.items()})
            return {"best_params": defaults, "best_value": None, "tuning_run_id": run_id}
        from visionops.storage import visionops_home
        from visionops.tuning import journal_storage, run_study

        folder = _output(preprocessed).local_path()
        stats = load_stats(folder)
        result = run_study(cfg, load_split(folder, "train"), load_split(folder, "val"),
                           mean=stats["mean"], std=stats["std"], num_classes=len(load_labels(folder)),
                           storage=journal_storage(visionops_home() / "optuna" / "journal.log"),
                           study_name=f"{ctx.run_key}__{preprocessed['fingerprint'][:12]}",
                           tuning_run_id=run_id)
        mlflow.log_params({f"best.{k}": v for k, v in result.best_params.items()})
        mlflow.log_metrics({"best_val_accuracy": result.best_value, "n_complete": result.n_complete,
                            "n_pruned": result.n_pruned, "n_failed": result.n_failed})
    log.info("tune: best %s -> val_accuracy %.4f", result.best_params, result.best_value)
    return {"best_params": {**defaults, **result.best_params}, "best_value": result.best_value,
            "tuning_run_id": run_id}


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
    with tracking.stage_run(ctx.parent_run_id, "gate"):
        decision = decide(evaluated["metrics"], evaluated.get("champion"), cfg.gate)
        tracking.log_json(decision.to_dict(), "gate/decision.json")
        mlflow.set_tags({f"{T}gate": "passed" if decision.passed else "rejected",
                         f"{T}gate_reasons": "; ".join(decision.reasons)[:4900]})
        mlflow.log_metric("gate_passed", float(decision.passed))
    client = mlflow.tracking.MlflowClient()
    client.set_tag(ctx.parent_run_id, f"{T}gate", "passed" if decision.passed else "rejected")
    client.set_tag(ctx.parent_run_id, f"{T}gate_reasons", "; ".join(decision.reasons)[:4900])
    (log.info if decision.passed else log.warning)("%s", decision.summary())
    return decision.to_dict()


def next_step(decision: dict[str, Any]) -> str:
    """The branch after registration: ``promote`` when the gate passed, else ``reject``."""
    return "promote" if GateDecision.from_dict(decision).passed else "reject"


def register(context: dict[str, str], trained: dict[str, Any], evaluated: dict[str, Any],
             decision: dict[str, Any]) -> dict[str, Any]:
    from visionops.promotion import register_stage

    return register_stage(RunContext.from_dict(context), trained, evaluated, GateDecision.from_dict(decision))


def promote(context: dict[str, str], registered: dict[str, Any], evaluated: dict[str, Any]) -> dict[str, Any]:
    from visionops.promotion import promote_stage

    return promote_stage(RunContext.from_dict(context), registered, evaluated)


def reject(context: dict[str, str], registered: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    from visionops.promotion import reject_stage

    return reject_stage(RunContext.from_dict(context), registered, GateDecision.from_dict(decision))


def finish(context: dict[str, str]) -> dict[str, Any]:
    """Close the parent run and store the run's summary (MLflow and the run folder)."""
    ctx = RunContext.from_dict(context)
    tracking.configure()
    tracking.end_parent_run(ctx.parent_run_id, "FINISHED")
    summary = build_summary(ctx.parent_run_id)
    tracking.log_json(summary, "summary.json", run_id=ctx.parent_run_id)
    log.info("summary:\n%s", json.dumps(summary, indent=2))
    return summary
