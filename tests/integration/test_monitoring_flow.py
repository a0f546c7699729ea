"""Monitoring through the real stages: registration stores the version's reference, batch scoring
records what it saw and answered, and the monitor's check finds drift in inverted digits and none in
held-out digits like the reference, logging its report to MLflow and on the model version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import mlflow
from visionops.core.storage import StageOutput
from visionops.data.preprocess import load_split
from visionops.serving.model import to_raw_images

NAME = "monitor-flow"


def _write(images: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
    return folder


def test_a_registered_version_is_monitored_batch_by_batch(mlflow_store, repo, tmp_path):
    from visionops.pipeline import batch, continuous
    from visionops.pipeline import stages as pipeline

    params = {
        "config": str(repo / "conf" / "digits.yaml"),
        "overrides": {
            "train.max_epochs": 4,
            "tune.n_trials": 0,
            "data.image_size": 8,
            "gate.min_accuracy": 0.0,
            "gate.min_macro_f1": 0.0,
            "gate.compare_with_baselines": False,
            "experiment": NAME,
            "registry.model_name": NAME,
        },
    }
    context = pipeline.start(params, dag_id="train_pipeline", airflow_run_id="manual__monitor")
    pre = pipeline.preprocess(context, pipeline.ingest(context))
    trained = pipeline.train(context, pre, pipeline.tune(context, pre))
    evaluated = pipeline.evaluate(context, pre, trained)
    registered = pipeline.register(context, trained, evaluated, pipeline.gate(context, evaluated))
    client = mlflow.tracking.MlflowClient()
    version = registered["version"]
    tags = client.get_model_version(NAME, version).tags
    assert tags["visionops.reference_uri"].endswith("/reference")
    assert tags["visionops.config_file"].endswith("digits.yaml")

    val = load_split(StageOutput(**pre).local_path(), "val")
    # 200 validation images drawn at random, like a served batch: the first 200 in the split's
    # stored order need not have the classes in their shares (a shift the check rightly finds).
    drawn = np.random.default_rng(0).permutation(len(val.x))[:200]
    held_out = _write(to_raw_images(np.asarray(val.x)[drawn]), tmp_path / "held_out")
    inverted = _write(255 - to_raw_images(np.asarray(val.x)[drawn]), tmp_path / "inverted")
    ref = batch.resolve(NAME, "challenger")
    verdicts = {}
    for folder in (held_out, inverted):
        scored = batch.score(ref, str(folder), None, run_id=f"manual__{folder.name}")
        recorded = batch.record(scored, run_id=f"manual__{folder.name}")
        assert recorded["n_images"] == 200 and recorded["model_version"] == version
        verdicts[folder.name] = continuous.check_drift(recorded)

    assert verdicts["held_out"]["drifted"] is False, verdicts["held_out"]["summary"]
    drifted = verdicts["inverted"]
    assert drifted["drifted"] is True and drifted["summary"].startswith("DRIFT in 200 images")
    assert drifted["config"].endswith("digits.yaml")  # retraining reads the version's config
    assert any(name.startswith("input:") for name in drifted["extra"]["drifted_checks"])
    run = client.get_run(drifted["report_run_id"])
    assert run.data.tags["visionops.model_version"] == version
    report = Path(client.download_artifacts(run.info.run_id, "drift_report.html")).read_text()
    assert "Drift found" in report and "http://" not in report and "https://" not in report
    tags = client.get_model_version(NAME, version).tags
    assert tags["visionops.drift"] == "true"
    assert tags["visionops.drift_report_run"] == drifted["report_run_id"]
