"""The simple baselines through the real stages: evaluate fits and records them, the gate judges
the model against the best one by the champion comparison's policy (or not, when turned off), and the
registered version's model card shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

import mlflow
from visionops.core.storage import StageOutput
from visionops.evaluation.paired import PREDICTIONS_FILE


def _run(repo: Path, name: str, **overrides: object) -> tuple[dict, dict, dict, dict]:
    from visionops.pipeline import stages as pipeline

    params = {
        "config": str(repo / "conf" / "digits.yaml"),
        "overrides": {
            # One epoch on 8 px digits: a weak network, far below PCA + SVM (about 0.97 here).
            "train.max_epochs": 1,
            "tune.n_trials": 0,
            "data.image_size": 8,
            "gate.min_accuracy": 0.0,
            "gate.min_macro_f1": 0.0,
            "experiment": name,
            "registry.model_name": name,
            **overrides,
        },
    }
    context = pipeline.start(params, dag_id="train_pipeline", airflow_run_id=f"manual__{name}")
    pre = pipeline.preprocess(context, pipeline.ingest(context))
    trained = pipeline.train(context, pre, pipeline.tune(context, pre))
    evaluated = pipeline.evaluate(context, pre, trained)
    decision = pipeline.gate(context, evaluated)
    return context, trained, evaluated, decision


def test_a_model_below_the_best_baseline_is_recorded_rejected_and_carded(mlflow_store, repo):
    from visionops.pipeline import stages as pipeline

    context, trained, evaluated, decision = _run(repo, "baseline-gate")
    names = [b["name"] for b in evaluated["baselines"]]
    assert names == ["logistic_regression", "pca_svm"]
    best = max(evaluated["baselines"], key=lambda b: b["accuracy"])
    assert best["accuracy"] > 0.9 > evaluated["metrics"]["accuracy"]
    assert best["paired"]["n"] == len(
        pd.read_parquet(StageOutput(**evaluated["predictions"]).local_path() / PREDICTIONS_FILE)
    )

    # The gate refuses it as it would a champion that far ahead (beyond gate.max_regression),
    # naming the baseline, with the paired evidence.
    assert decision["passed"] is False
    assert decision["baseline"]["best"] == best["name"]
    assert decision["baseline"]["policy"] == "non_inferiority"
    assert any(
        r.startswith("accuracy ") and f"points below best simple baseline {best['name']}" in r
        for r in decision["reasons"]
    )
    assert any(
        f"best simple baseline {best['name']} alone right on" in r and "McNemar exact p" in r
        for r in decision["reasons"]
    )

    # The evaluate run and the parent run carry the figures; the report has the table.
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(evaluated["evaluate_run_id"])
    for b in names:
        assert 0.9 < run.data.metrics[f"baseline_{b}_test_accuracy"] <= 1.0
        assert f"baseline_{b}" in run.data.params  # the setting chosen on validation
    assert run.data.metrics["gain_over_best_baseline_points"] < 0
    parent = client.get_run(context["parent_run_id"])
    assert parent.data.tags["visionops.best_baseline"] == best["name"]
    assert parent.data.metrics["best_baseline_test_accuracy"] == best["accuracy"]
    for b in evaluated["baselines"]:  # each baseline on the parent: the run summary lists them
        assert parent.data.metrics[f"baseline_{b['name']}_test_accuracy"] == b["accuracy"]
    report = Path(client.download_artifacts(run.info.run_id, "evaluation/report.md")).read_text()
    assert "## Against simple baselines" in report and "PCA + RBF SVM" in report
    stored = json.loads(
        Path(client.download_artifacts(run.info.run_id, "evaluation/report.json")).read_text()
    )
    assert [b["name"] for b in stored["baselines"]] == names

    # Rejected versions are registered too: the card says why, beside the baselines.
    registered = pipeline.register(context, trained, evaluated, decision)
    version = client.get_model_version("baseline-gate", registered["version"])
    assert version.tags["visionops.best_baseline"] == best["name"]
    assert float(version.tags["visionops.gain_over_baseline"]) < 0
    assert "## Against simple baselines" in version.description
    assert f"points below best simple baseline {best['name']}" in version.description


def test_the_same_model_passes_with_the_baseline_check_turned_off(mlflow_store, repo):
    _, _, evaluated, decision = _run(repo, "baseline-off", **{"gate.compare_with_baselines": False})
    assert evaluated["baselines"]  # still fitted and reported
    assert decision["passed"] is True and decision["baseline"] == {}
    assert any("gate.compare_with_baselines is false" in r for r in decision["reasons"])


def test_no_baselines_configured_fits_none_and_says_the_check_did_not_apply(mlflow_store, repo):
    _, _, evaluated, decision = _run(repo, "baseline-none", **{"baseline.models": []})
    assert evaluated["baselines"] == []
    assert decision["passed"] is True
    assert any("no simple baseline was fitted" in r for r in decision["reasons"])
